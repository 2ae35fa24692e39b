"""Argument checks shared by the NumPy reference functions."""

from __future__ import annotations

import numbers

import numpy as np

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_REDUCTIONS = ("mean", "sum", "none")
_ACTIVATIONS = (None, "sigmoid", "tanh", "relu", "gelu", "gelu_tanh", "silu", "leaky_relu",
                "elu", "softplus")
# the activations whose derivative is computed from z (the others': from a)
_GRAD_TAKES_Z = ("gelu", "gelu_tanh", "silu", "leaky_relu", "elu", "softplus")


def _float_array(name, value, like=None):
    """Return ``value`` as a float32 or float64 ndarray, else TypeError
    (booleans are not numbers here; a masked array's mask is not dropped).
    A list of numbers is float64, as NumPy computes, or the dtype ``like``."""
    if isinstance(value, np.ma.MaskedArray):
        raise TypeError(f"{name} is a numpy.ma.MaskedArray; pass {name}.filled(value)")
    try:
        array = np.asarray(value)
    except (TypeError, RuntimeError) as e:
        raise TypeError(f"{name} could not be read as a NumPy array ({e})") from e
    if not isinstance(value, np.ndarray) and (
            array.dtype.kind in "iu" or like is not None and array.dtype.kind == "f"):
        array = array.astype(np.float64 if like is None else like)
    if array.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a float32 or float64 array, got dtype {array.dtype}")
    return array


def _common_dtype(**arrays):
    """The one dtype shared by the given arrays (None entries are skipped)."""
    present = {name: a for name, a in arrays.items() if a is not None}
    if len({a.dtype for a in present.values()}) > 1:
        listing = ", ".join(f"{name} {a.dtype}" for name, a in present.items())
        raise TypeError(f"all float arrays must share one dtype, got {listing}")
    return next(iter(present.values())).dtype


def _check_same_shape(name_a, a, name_b, b):
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, "
                         f"got {name_a} {a.shape} and {name_b} {b.shape}")


def _check_ndim(name, array, ndims):
    if array.ndim not in ndims:
        wanted = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{name} must be {wanted}, got shape {array.shape}")


def _normalize_axis(axis, ndim):
    if not isinstance(axis, numbers.Integral) or isinstance(axis, bool):
        raise TypeError(f"axis must be an integer, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of bounds for a {ndim}-D array")
    return int(axis) % ndim


def _check_reduction(reduction):
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, "
                         f"got {reduction!r}")


def _check_activation(activation):
    if activation is not None and (not isinstance(activation, str)
                                   or activation not in _ACTIVATIONS):
        raise ValueError(f"activation must be one of {_ACTIVATIONS}, "
                         f"got {activation!r}")


def _check_out(out, shape, dtype, name="out"):
    """Validate an output buffer before any work is done."""
    if out is None:
        return
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {out.dtype}")
    if out.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, "
                         f"got {out.shape}")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    if out.size > 1 and not (out.flags.c_contiguous or out.flags.f_contiguous):
        # every element's byte offset, and whether any two coincide
        offsets = sum(np.arange(n).reshape((-1,) + (1,) * (out.ndim - 1 - axis)) * step
                      for axis, (n, step) in enumerate(zip(out.shape, out.strides)))
        if np.unique(offsets).size != out.size:
            raise ValueError(f"{name} has elements that share memory "
                             f"(strides {out.strides} for shape {out.shape})")


def _store(result, dtype, out):
    """Return ``result`` (a fresh array of ``dtype``), or copy it into ``out``."""
    # Everything is computed in the input dtype: a float64 result for float32
    # input would be a silent upcast, a bug of this module.
    assert result.dtype == dtype, (result.dtype, dtype)
    if out is None:
        return result
    out[...] = result
    return out
