"""Plain NumPy reference implementations of the nnkernels API.

Every function here has the name, signature, defaults and results of its
compiled counterpart and is written straight from the equations
(docs/equations.md), for clarity first, as vectorised NumPy (no Python
loop over rows). It is the baseline that the tests and the benchmarks
compare the kernels against.

All arithmetic is done in the dtype of the inputs, as a NumPy user writing
these formulas would: float32 input is computed in float32 throughout (no
float64 temporaries, constants or scalars; NumPy's reductions sum float32
pairwise), float64 in float64. So a float32 result has float32 rounding
errors, a few ulp of the values in play, and the float32 timings are those
of honest float32 NumPy code. ``out=`` buffers are only written after the
whole result is known, so any ``out`` may alias any input.

For ``reduction="none"`` a loss returns the per-row (cross-entropy) or
per-element loss, and the gradient of its sum, i.e. every term with an
upstream gradient of one.

The optimizer updates (sgd_update, adam_update) update their parameter and
state arrays in place and return the parameter, as the kernels do.
"""

from .activations import sigmoid, relu, sigmoid_backward, tanh_backward, relu_backward
from .activations import (tanh, gelu, gelu_backward, silu, silu_backward, leaky_relu,
                          leaky_relu_backward, elu, elu_backward, softplus, softplus_backward)
from .softmax import softmax, log_softmax, softmax_backward
from .cross_entropy import softmax_cross_entropy, softmax_cross_entropy_backward
from .losses import sigmoid_binary_cross_entropy, binary_cross_entropy, mse
from .dense import dense_forward, dense_backward
from .optim import sgd_update, adam_update

__all__ = [
    "sigmoid",
    "relu",
    "sigmoid_backward",
    "tanh_backward",
    "relu_backward",
    "tanh",
    "gelu",
    "gelu_backward",
    "silu",
    "silu_backward",
    "leaky_relu",
    "leaky_relu_backward",
    "elu",
    "elu_backward",
    "softplus",
    "softplus_backward",
    "softmax",
    "log_softmax",
    "softmax_backward",
    "softmax_cross_entropy",
    "softmax_cross_entropy_backward",
    "sigmoid_binary_cross_entropy",
    "binary_cross_entropy",
    "mse",
    "dense_forward",
    "dense_backward",
    "sgd_update",
    "adam_update",
]
