"""Argument checks shared by every public function.

Each check is cheap (attribute reads and comparisons) because it runs on every
call; the messages name the argument, what was expected and what came.
Everything that reaches compiled code has passed through here.
"""

import numbers
import operator

import numpy as np

from . import _dispatch, _layout, _overlap, _runtime

FLOAT_TYPES = (np.float32, np.float64)
REDUCTIONS = _runtime.REDUCTION_CODES


def array(x, name):
    """x as an ndarray (lists are converted; subclasses viewed as plain arrays),
    else TypeError: a masked array's mask would be dropped without a word."""
    if type(x) is np.ndarray:
        return x
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(f"{name} is a numpy.ma.MaskedArray, whose mask nnkernels would "
                        f"ignore; pass {name}.filled(value) or the unmasked values")
    if isinstance(x, np.ndarray):
        return x.view(np.ndarray)
    try:
        return np.asarray(x)
    except (TypeError, RuntimeError) as e:     # e.g. a torch tensor that requires grad
        raise TypeError(f"{name} could not be read as a NumPy array "
                        f"({type(x).__name__}: {e})") from e


def float_array(x, name, like=None):
    """x as a float32/float64 ndarray, else TypeError.  A list or scalar of
    numbers becomes float64, as NumPy computes, or the dtype `like` (the
    main input's, for a weight or a target given as a list)."""
    if type(x) is not np.ndarray:
        was_array = isinstance(x, np.ndarray)
        x = array(x, name)
        if not was_array and (x.dtype.kind in "iu" or like is not None and x.dtype.kind == "f"):
            x = x.astype(np.float64 if like is None else like)
    if x.dtype.type not in FLOAT_TYPES:
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {x.dtype}")
    if not x.dtype.isnative:
        # the kernels read machine floats: a byte-swapped array would be garbage
        raise TypeError(f"{name} must be a float32 or float64 array in native byte "
                        f"order, got dtype {x.dtype.str}")
    return x


def same_dtype(*named):
    """All (name, array) pairs share one dtype, else TypeError naming them."""
    dtype = named[0][1].dtype
    for _, arr in named[1:]:
        if arr.dtype != dtype:
            listing = ", ".join(f"{n} {a.dtype}" for n, a in named)
            raise TypeError(f"all float inputs must share one dtype, got {listing}")


def same_shape(name_a, a, name_b, b):
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, "
                         f"got {name_a} {a.shape} and {name_b} {b.shape}")


def output(out, shape, dtype, name="out"):
    """A fresh array, or `out` checked to be a writable array of that shape and dtype."""
    if out is None:
        return np.empty(shape, dtype)
    if not isinstance(out, np.ndarray) or isinstance(out, np.ma.MaskedArray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype is not dtype and out.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {out.dtype}")
    if out.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {out.shape}")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    if _overlap.overlaps_itself(out):
        raise ValueError(f"{name} has elements that share memory (strides {out.strides} "
                         f"for shape {out.shape}, as np.broadcast_arrays or as_strided "
                         f"make); pass an array whose elements are distinct")
    return out


def reduction_code(reduction):
    try:
        return REDUCTIONS[reduction]
    except (KeyError, TypeError):
        raise ValueError(f"reduction must be one of 'mean', 'sum', 'none', "
                         f"got {reduction!r}") from None


def class_axis(axis, ndim, name="axis"):
    """The class axis of a 1-D or 2-D array as 0 or 1 (1-D arrays are one row)."""
    if type(axis) is not int:
        if isinstance(axis, (bool, np.bool_)):
            raise TypeError(f"{name} must be an int, got bool")
        try:
            axis = operator.index(axis)
        except TypeError:
            raise TypeError(f"{name} must be an int, got {type(axis).__name__}") from None
    if not -ndim <= axis < ndim:
        raise np.exceptions.AxisError(axis, ndim)
    return axis % ndim if ndim == 2 else 1


def as_matrix(x, name, allow_1d=True):
    """x as a 2-D array: 1-D (C,) is one row (1, C), a view."""
    if x.ndim == 2:
        return x
    if x.ndim == 1 and allow_1d:
        return x[np.newaxis, :]
    expected = "a 1-D or 2-D" if allow_1d else "a 2-D"
    raise ValueError(f"{name} must be {expected} array, got shape {x.shape}")


def class_indices(target, n_rows, name="target"):
    """Integer class labels (any integer dtype) as a contiguous intp array."""
    if target.ndim != 1 or target.shape[0] != n_rows:
        raise ValueError(f"{name} of class indices must have shape ({n_rows},), "
                         f"got {target.shape}")
    if target.dtype == np.intp and target.flags.c_contiguous and target.flags.aligned:
        return target
    if target.dtype.kind == "u" and target.itemsize >= np.dtype(np.intp).itemsize:
        too_big = np.flatnonzero(target > np.iinfo(np.intp).max)
        if too_big.size:
            pos = int(too_big[0])
            raise ValueError(f"{name}[{pos}] = {target[pos]} is not a class index")
    return _layout.c_contiguous(target.astype(np.intp, copy=False))


def probability(x, name):
    """x (C-contiguous) in [0, 1] everywhere (NaN passes: it propagates), else ValueError."""
    pos = _dispatch.elementwise_losses.first_outside_unit_interval(x)
    if pos >= 0:
        index = tuple(int(i) for i in np.unravel_index(pos, x.shape))
        raise ValueError(f"{name} must lie in [0, 1], got {x[index]} at index {index}")


def label_smoothing_value(eps):
    if eps == 0.0 and type(eps) in (float, int):
        return 0.0
    # a real number: not a string that float() would parse, not a bool
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, numbers.Real):
        raise TypeError(f"label_smoothing must be a float, got {type(eps).__name__}")
    eps = float(eps)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1], got {eps}")
    return eps


def integer(value, name):
    if type(value) is int:
        return value
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, got bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None


def finite_float(value, name):
    """An activation's numeric option as a finite Python float: a real number
    (not a bool, not a string that float() would parse), else TypeError;
    inf or NaN, ValueError."""
    if type(value) is float and value - value == 0.0:     # the common call: finite
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    value = float(value)
    if value - value != 0.0:
        raise ValueError(f"{name} must be finite, got {value}")
    return value
