"""Activations and their backward passes (NumPy reference)."""

from __future__ import annotations   # signatures show the aliases' names

import numpy as np

from .._typing import FloatArray, FloatArrayLike, Optional
from ._checks import _check_out, _check_same_shape, _common_dtype, _float_array, _store


def sigmoid(z: FloatArrayLike, out: Optional[FloatArray] = None) -> FloatArray:
    """sigmoid(z) = 1 / (1 + e^(-z)), without overflow for any z."""
    z = _float_array("z", z)
    _check_out(out, z.shape, z.dtype)
    # e^(-z) overflows for z << 0, so there use the equal form e^z / (1 + e^z).
    # Both are (1 or e^z) / (1 + e^(-|z|)), and e^(-|z|) <= 1 cannot
    # overflow. NaN compares false and goes to the e^z branch: NaN / NaN.
    exp_minus_abs = np.exp(-np.abs(z))
    a = np.where(z >= 0, 1.0, exp_minus_abs) / (1.0 + exp_minus_abs)
    return _store(a, z.dtype, out)


def relu(z: FloatArrayLike, out: Optional[FloatArray] = None) -> FloatArray:
    """relu(z) = max(0, z); NaN stays NaN."""
    z = _float_array("z", z)
    _check_out(out, z.shape, z.dtype)
    return _store(np.maximum(z, 0.0), z.dtype, out)


def _activation_backward_inputs(grad, a, out):
    grad = _float_array("grad", grad)
    a = _float_array("a", a)
    dtype = _common_dtype(grad=grad, a=a)
    _check_same_shape("grad", grad, "a", a)
    _check_out(out, grad.shape, dtype)
    return grad, a, dtype


def sigmoid_backward(grad: FloatArrayLike, a: FloatArrayLike,
                     out: Optional[FloatArray] = None) -> FloatArray:
    """grad * a * (1 - a), where a = sigmoid(z) is the layer output."""
    grad, a, dtype = _activation_backward_inputs(grad, a, out)
    return _store(grad * a * (1.0 - a), dtype, out)


def tanh_backward(grad: FloatArrayLike, a: FloatArrayLike,
                  out: Optional[FloatArray] = None) -> FloatArray:
    """grad * (1 - a**2), where a = tanh(z) is the layer output."""
    grad, a, dtype = _activation_backward_inputs(grad, a, out)
    return _store(grad * (1.0 - a * a), dtype, out)


def relu_backward(grad: FloatArrayLike, a: FloatArrayLike,
                  out: Optional[FloatArray] = None) -> FloatArray:
    """0 where a <= 0, else grad (PyTorch's threshold_backward rule)."""
    grad, a, dtype = _activation_backward_inputs(grad, a, out)
    # Written as "a <= 0" rather than "a > 0" so that a NaN passes grad
    # through, as threshold_backward does.
    return _store(np.where(a <= 0, 0.0, grad), dtype, out)
