"""Activations and their backward passes (NumPy reference)."""

from __future__ import annotations   # signatures show the aliases' names

import numbers

import numpy as np
from scipy import special

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


# ---- activations whose derivative takes the input z --------------------------
# Computed in float64 from the equations (docs/equations.md) and rounded once
# to the input dtype; scalar options are rounded to the dtype first, and
# softplus forms βz in it, as PyTorch does. ∞ · 0 is NaN where the equations
# meet it (gelu(−∞), silu(−∞), the gelu and silu derivatives at ±∞), as in
# PyTorch.

_SQRT_2_OVER_PI = np.sqrt(2.0 / np.pi)
_GELU_TANH_C = 0.044715


def _z_input(z, out):
    z = _float_array("z", z)
    _check_out(out, z.shape, z.dtype)
    return z, z.astype(np.float64)


def _z_backward_inputs(grad, z, out):
    grad, z, dtype = _activation_backward_inputs_named(grad, z, out)
    return grad.astype(np.float64), z.astype(np.float64), dtype


def _activation_backward_inputs_named(grad, z, out):
    grad = _float_array("grad", grad)
    z = _float_array("z", z)
    dtype = _common_dtype(grad=grad, z=z)
    _check_same_shape("grad", grad, "z", z)
    _check_out(out, grad.shape, dtype)
    return grad, z, dtype


def _option(value, name, dtype):
    """A numeric option as a finite float rounded to dtype (TypeError for a bool or str)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(dtype.type(value))


def _check_approximate(approximate):
    if not isinstance(approximate, str) or approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")


def _sigmoid64(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0, e) / (1.0 + e)


def _gelu_tanh_2u(x):
    with np.errstate(over="ignore", invalid="ignore"):
        return 2.0 * _SQRT_2_OVER_PI * (x + _GELU_TANH_C * x ** 3)


def tanh(z: FloatArrayLike, out: Optional[FloatArray] = None) -> FloatArray:
    """tanh(z)."""
    z, x = _z_input(z, out)
    return _store(np.tanh(x).astype(z.dtype), z.dtype, out)


def gelu(z: FloatArrayLike, *, approximate: str = "none",
         out: Optional[FloatArray] = None) -> FloatArray:
    """z Φ(z), Φ(z) = ½ erfc(−z/√2); or ½ z (1 + tanh u) = z σ(2u) for "tanh"."""
    _check_approximate(approximate)
    z, x = _z_input(z, out)
    with np.errstate(invalid="ignore"):
        if approximate == "none":
            a = x * (0.5 * special.erfc(-x / np.sqrt(2.0)))
        else:   # ½ (1 + tanh u) = σ(2u): the same number without its cancellation
            a = x * _sigmoid64(_gelu_tanh_2u(x))
    return _store(a.astype(z.dtype), z.dtype, out)


def gelu_backward(grad: FloatArrayLike, z: FloatArrayLike, *, approximate: str = "none",
                  out: Optional[FloatArray] = None) -> FloatArray:
    """grad (Φ(z) + z φ(z)); for "tanh", grad (½(1 + tanh u) + ½ z sech²u √(2/π)(1 + 3c z²))."""
    _check_approximate(approximate)
    g, x, dtype = _z_backward_inputs(grad, z, out)
    with np.errstate(over="ignore", invalid="ignore"):
        if approximate == "none":
            phi = np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi)
            d = 0.5 * special.erfc(-x / np.sqrt(2.0)) + x * phi
        else:
            two_u = _gelu_tanh_2u(x)
            sech2 = 4.0 * _sigmoid64(two_u) * _sigmoid64(-two_u)     # 1 − tanh²u
            slope = 0.5 * x * _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_TANH_C * x * x)
            # sech²u is 0 where z² overflows: that term is 0 there (∞ · 0 only at ±∞)
            term = np.where((sech2 == 0) & np.isfinite(x), 0.0, sech2 * slope)
            d = _sigmoid64(two_u) + term
    return _store((g * d).astype(dtype), dtype, out)


def silu(z: FloatArrayLike, out: Optional[FloatArray] = None) -> FloatArray:
    """z σ(z)."""
    z, x = _z_input(z, out)
    with np.errstate(invalid="ignore"):
        return _store((x * _sigmoid64(x)).astype(z.dtype), z.dtype, out)


def silu_backward(grad: FloatArrayLike, z: FloatArrayLike,
                  out: Optional[FloatArray] = None) -> FloatArray:
    """grad σ(z) (1 + z (1 − σ(z))), with 1 − σ(z) = σ(−z)."""
    g, x, dtype = _z_backward_inputs(grad, z, out)
    with np.errstate(invalid="ignore"):
        d = _sigmoid64(x) * (1.0 + x * _sigmoid64(-x))
    return _store((g * d).astype(dtype), dtype, out)


def leaky_relu(z: FloatArrayLike, *, negative_slope: float = 0.01,
               out: Optional[FloatArray] = None) -> FloatArray:
    """z where z > 0, else s z."""
    z, x = _z_input(z, out)
    s = _option(negative_slope, "negative_slope", z.dtype)
    return _store(np.where(x > 0, x, x * s).astype(z.dtype), z.dtype, out)


def leaky_relu_backward(grad: FloatArrayLike, z: FloatArrayLike, *,
                        negative_slope: float = 0.01,
                        out: Optional[FloatArray] = None) -> FloatArray:
    """grad where z > 0, else s grad (s at z = 0 and at NaN, as PyTorch)."""
    g, x, dtype = _z_backward_inputs(grad, z, out)
    s = _option(negative_slope, "negative_slope", dtype)
    return _store(np.where(x > 0, g, g * s).astype(dtype), dtype, out)


def elu(z: FloatArrayLike, *, alpha: float = 1.0,
        out: Optional[FloatArray] = None) -> FloatArray:
    """z where z > 0, else α (e^z − 1)."""
    z, x = _z_input(z, out)
    alpha = _option(alpha, "alpha", z.dtype)
    return _store(np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0))).astype(z.dtype),
                  z.dtype, out)


def elu_backward(grad: FloatArrayLike, z: FloatArrayLike, *, alpha: float = 1.0,
                 out: Optional[FloatArray] = None) -> FloatArray:
    """grad where z > 0, else grad α e^z (α at z = 0; NaN at NaN)."""
    g, x, dtype = _z_backward_inputs(grad, z, out)
    alpha = _option(alpha, "alpha", dtype)
    d = np.where(x > 0, 1.0, alpha * np.exp(np.minimum(x, 0.0)))
    return _store((g * d).astype(dtype), dtype, out)


def _softplus_t(z, beta, threshold):
    """βz formed in z's dtype and its comparison with the threshold (PyTorch's)."""
    t = z * z.dtype.type(beta)
    return t.astype(np.float64), t > z.dtype.type(threshold)


def softplus(z: FloatArrayLike, *, beta: float = 1.0, threshold: float = 20.0,
             out: Optional[FloatArray] = None) -> FloatArray:
    """(1/β) log(1 + e^(βz)), or z where βz > threshold."""
    z = _float_array("z", z)
    _check_out(out, z.shape, z.dtype)
    beta = _option(beta, "beta", z.dtype)
    threshold = _option(threshold, "threshold", z.dtype)
    t, linear = _softplus_t(z, beta, threshold)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(linear, z.astype(np.float64), np.logaddexp(0.0, t) / beta)
    return _store(a.astype(z.dtype), z.dtype, out)


def softplus_backward(grad: FloatArrayLike, z: FloatArrayLike, *, beta: float = 1.0,
                      threshold: float = 20.0,
                      out: Optional[FloatArray] = None) -> FloatArray:
    """grad σ(βz), or grad where βz > threshold."""
    grad, z, dtype = _activation_backward_inputs_named(grad, z, out)
    beta = _option(beta, "beta", dtype)
    threshold = _option(threshold, "threshold", dtype)
    t, linear = _softplus_t(z, beta, threshold)
    g = grad.astype(np.float64)
    return _store(np.where(linear, g, g * _sigmoid64(t)).astype(dtype), dtype, out)
