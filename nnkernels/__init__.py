"""nnkernels: fused Cython kernels for neural-network backpropagation on the CPU.

Batch-first arrays of float32 or float64; every function validates its
arguments, releases the GIL and splits large work over OpenMP threads.
``nnkernels.reference`` holds the same functions in plain NumPy.
"""

__version__ = "0.1.0"     # the one place the version is written (pyproject reads it)


def _require_compiled_modules():
    """A clear ImportError when this is a source tree without compiled modules.

    Python finds an unbuilt ``nnkernels/`` folder first when it runs from the
    repository root, and would otherwise fail with a circular-import message.
    """
    import importlib.util
    import os
    if importlib.util.find_spec("nnkernels._runtime") is None:
        here = os.path.dirname(os.path.abspath(__file__))
        raise ImportError(
            f"nnkernels is being imported from its source tree ({here}), which has no "
            "compiled modules. Install it with `pip install .` and use the `nnkernels` "
            "command, or run Python from another folder (from the repository root the "
            "source folder shadows the installed package); to work in the source tree, "
            "build in place with `python setup.py build_ext --inplace`.")


_require_compiled_modules()

from ._api_activations import sigmoid, relu, sigmoid_backward, tanh_backward, relu_backward
from ._api_activations_z import tanh, gelu, gelu_backward, silu, silu_backward
from ._api_activations_param import (leaky_relu, leaky_relu_backward, elu, elu_backward,
                                     softplus, softplus_backward)
from ._api_softmax import softmax, log_softmax, softmax_backward
from ._api_cross_entropy import softmax_cross_entropy, softmax_cross_entropy_backward
from ._api_losses import sigmoid_binary_cross_entropy, binary_cross_entropy, mse
from ._api_dense import dense_forward, dense_backward
from ._api_optim import sgd_update, adam_update
from ._dispatch import set_num_threads, get_num_threads, build_info
from ._api_blas import set_blas, get_blas
from ._gradcheck import gradcheck, GradcheckResult

__all__ = [
    "sigmoid", "relu", "sigmoid_backward", "tanh_backward", "relu_backward",
    "tanh", "gelu", "gelu_backward", "silu", "silu_backward",
    "leaky_relu", "leaky_relu_backward", "elu", "elu_backward",
    "softplus", "softplus_backward",
    "softmax", "log_softmax", "softmax_backward",
    "softmax_cross_entropy", "softmax_cross_entropy_backward",
    "sigmoid_binary_cross_entropy", "binary_cross_entropy", "mse",
    "dense_forward", "dense_backward",
    "sgd_update", "adam_update",
    "set_num_threads", "get_num_threads", "build_info", "set_blas", "get_blas",
    "gradcheck", "GradcheckResult",
]
