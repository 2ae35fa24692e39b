"""Softmax, log-softmax and the softmax's Jacobian-vector product (NumPy reference)."""

from __future__ import annotations   # signatures show the aliases' names

import numpy as np

from .._typing import FloatArray, FloatArrayLike, Optional, SupportsIndex
from ._checks import (_check_ndim, _check_out, _check_same_shape, _common_dtype, _float_array,
                      _normalize_axis, _store)


def _softmax_input(z, axis, out):
    z = _float_array("z", z)
    _check_ndim("z", z, (1, 2))
    axis = _normalize_axis(axis, z.ndim)
    _check_out(out, z.shape, z.dtype)
    return z, axis


def _shifted(z, axis):
    """z - max(z) along ``axis``, so that exp() cannot overflow."""
    # initial=-inf gives empty rows a maximum instead of an error; a row of
    # -inf (or with a NaN) becomes NaN, as in PyTorch.
    return z - np.max(z, axis=axis, keepdims=True, initial=-np.inf)


def softmax(z: FloatArrayLike, axis: SupportsIndex = -1,
            out: Optional[FloatArray] = None) -> FloatArray:
    """p_j = e^(z_j - max) / sum_k e^(z_k - max) along ``axis``."""
    z, axis = _softmax_input(z, axis, out)
    with np.errstate(invalid="ignore"):  # inf - inf in rows holding +-inf
        exp_shifted = np.exp(_shifted(z, axis))
        p = exp_shifted / np.sum(exp_shifted, axis=axis, keepdims=True)
    return _store(p, z.dtype, out)


def log_softmax(z: FloatArrayLike, axis: SupportsIndex = -1,
                out: Optional[FloatArray] = None) -> FloatArray:
    """log p_j = z_j - max - log sum_k e^(z_k - max) along ``axis``."""
    z, axis = _softmax_input(z, axis, out)
    with np.errstate(invalid="ignore"):
        shifted = _shifted(z, axis)
        log_p = shifted - np.log(np.sum(np.exp(shifted), axis=axis,
                                        keepdims=True))
    return _store(log_p, z.dtype, out)


def softmax_backward(grad: FloatArrayLike, p: FloatArrayLike, axis: SupportsIndex = -1,
                     out: Optional[FloatArray] = None) -> FloatArray:
    """p * (grad - sum_axis grad * p): the softmax Jacobian-vector product."""
    grad = _float_array("grad", grad)
    p = _float_array("p", p)
    dtype = _common_dtype(grad=grad, p=p)
    _check_ndim("p", p, (1, 2))
    _check_same_shape("grad", grad, "p", p)
    axis = _normalize_axis(axis, p.ndim)
    _check_out(out, p.shape, dtype)
    dot = np.sum(grad * p, axis=axis, keepdims=True)
    return _store(p * (grad - dot), dtype, out)
