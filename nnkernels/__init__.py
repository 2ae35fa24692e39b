"""nnkernels: fused Cython kernels for neural-network backpropagation on the CPU.

Batch-first arrays of float32 or float64; every function validates its
arguments, releases the GIL and splits large work over OpenMP threads.
``nnkernels.reference`` holds the same functions in plain NumPy.
"""

__version__ = "0.1.0"

from ._api import (
    sigmoid, relu, sigmoid_backward, tanh_backward, relu_backward,
    softmax, log_softmax, softmax_backward,
    softmax_cross_entropy, softmax_cross_entropy_backward,
    sigmoid_binary_cross_entropy, binary_cross_entropy, mse,
    dense_forward, dense_backward,
)
from ._dispatch import set_num_threads, get_num_threads, build_info
from ._gradcheck import gradcheck, GradcheckResult

__all__ = [
    "sigmoid", "relu", "sigmoid_backward", "tanh_backward", "relu_backward",
    "softmax", "log_softmax", "softmax_backward",
    "softmax_cross_entropy", "softmax_cross_entropy_backward",
    "sigmoid_binary_cross_entropy", "binary_cross_entropy", "mse",
    "dense_forward", "dense_backward",
    "set_num_threads", "get_num_threads", "build_info",
    "gradcheck", "GradcheckResult",
]
