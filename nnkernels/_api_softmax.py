"""Softmax, log-softmax and the softmax's Jacobian-vector product: validate,
prepare, one kernel call."""

from __future__ import annotations   # signatures show the aliases' names

import numpy as np

from . import _dispatch, _layout as layout, _runtime, _team
from . import _validation as v
from ._typing import (FloatArray, FloatArrayLike, Optional, SupportsIndex)

_sm = _dispatch.softmax
_THREADS_FROM = _runtime.THREAD_THRESHOLDS["rows"]


def _softmax_family(op, x, x_name, b, b_name, axis, out):
    if type(x) is np.ndarray and x.size < _THREADS_FROM:
        # the common call: the kernel's entry checks it in C and runs it
        result = _sm.softmax_fast(op, x, b, out, axis, _dispatch._num_threads)
        if result is not None:
            return result
    return _softmax_family_checked(op, x, x_name, b, b_name, axis, out)


def _softmax_family_checked(op, x, x_name, b, b_name, axis, out):
    """Validate with messages; copy or use a temporary where the layout needs it."""
    x = v.float_array(x, x_name)
    x2 = v.as_matrix(x, x_name)
    if b is not None:
        b = v.float_array(b, b_name)
        v.same_dtype((x_name, x), (b_name, b))
        v.same_shape(x_name, x, b_name, b)
        b = v.as_matrix(b, b_name)
    ax = v.class_axis(axis, x.ndim)
    out = v.output(out, x.shape, x.dtype)
    out2 = v.as_matrix(out, "out")
    if not layout.kernel_layout_ok(x2, *(() if b is None else (b,))):
        x2 = layout.c_contiguous(x2)
        b = None if b is None else layout.c_contiguous(b)
    if not layout.kernel_layout_ok(out2) or layout.overlaps(out2, x2, b):
        result = np.empty(x2.shape, x2.dtype)
        _team.threaded_call(("softmax", op), x2.size, _THREADS_FROM, _sm.softmax_family,
                            op, x2, b, result, ax)
        out2[...] = result
    else:
        _team.threaded_call(("softmax", op), x2.size, _THREADS_FROM, _sm.softmax_family,
                            op, x2, b, out2, ax)
    return out


def softmax(z: FloatArrayLike, axis: SupportsIndex = -1,
            out: Optional[FloatArray] = None) -> FloatArray:
    """Softmax along the class axis, max-subtracted so that no exponential overflows.

    ::

        p_j = e^(z_j − m) / Σ_k e^(z_k − m),     m = max_k z_k

    Any 2-D strides are read without a copy (a non-contiguous class axis is
    gathered row by row).

    Parameters
    ----------
    z : array_like of float32 or float64, shape (N, C), (C, N) or (C,)
        The logits.
    axis : int, default -1
        The class axis: -1 (or 1) for batch-first ``(N, C)`` arrays, 0 for
        the one-sample-per-column ``(C, N)`` layout. A 1-D array is a single
        row of classes.
    out : ndarray, optional
        Where to write the result: the input's shape and dtype, writable. One
        that overlaps an input is computed into a temporary first. By default
        a new array.

    Returns
    -------
    p : ndarray
        The probabilities, of z's shape and dtype (`out` when given); each
        row (or column, for ``axis=0``) sums to one.

    Raises
    ------
    TypeError
        If an input is not a float32 or float64 array (integer and bool
        arrays and byte-swapped floats are refused; a list of numbers is
        computed in float64), the float inputs do not share one dtype, or
        `out` is not an ndarray of their dtype. Also if `axis` is not an
        integer.
    ValueError
        If an input is not 1-D or 2-D, or `out` does not have
        the input's shape or is read-only.
    numpy.exceptions.AxisError
        If `axis` is out of range (a subclass of ValueError and IndexError).
    MemoryError
        If the result or a temporary cannot be allocated.

    See Also
    --------
    nnkernels.reference.softmax : The same in plain NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> import nnkernels as nk
    >>> z = np.array([[1.0, 2.0, 3.0], [1e4, 0.0, -1e4]])
    >>> p = nk.softmax(z)
    >>> p.round(4)
    array([[0.09  , 0.2447, 0.6652],
           [1.    , 0.    , 0.    ]])
    >>> np.allclose(nk.softmax(z.T, axis=0), p.T)     # one sample per column
    True
    """
    return _softmax_family(_sm.Op.SOFTMAX, z, "z", None, None, axis, out)


def log_softmax(z: FloatArrayLike, axis: SupportsIndex = -1,
                out: Optional[FloatArray] = None) -> FloatArray:
    """Logarithm of the softmax along the class axis, computed without overflow.

    ::

        log p_j = (z_j − m) − log Σ_k e^(z_k − m),     m = max_k z_k

    Any 2-D strides are read without a copy (a non-contiguous class axis is
    gathered row by row).

    Parameters
    ----------
    z : array_like of float32 or float64, shape (N, C), (C, N) or (C,)
        The logits.
    axis : int, default -1
        The class axis: -1 (or 1) for batch-first ``(N, C)`` arrays, 0 for
        the one-sample-per-column ``(C, N)`` layout. A 1-D array is a single
        row of classes.
    out : ndarray, optional
        Where to write the result: the input's shape and dtype, writable. One
        that overlaps an input is computed into a temporary first. By default
        a new array.

    Returns
    -------
    log_p : ndarray
        log softmax(z), of z's shape and dtype (`out` when given).

    Raises
    ------
    TypeError
        If an input is not a float32 or float64 array (integer and bool
        arrays and byte-swapped floats are refused; a list of numbers is
        computed in float64), the float inputs do not share one dtype, or
        `out` is not an ndarray of their dtype. Also if `axis` is not an
        integer.
    ValueError
        If an input is not 1-D or 2-D, or `out` does not have
        the input's shape or is read-only.
    numpy.exceptions.AxisError
        If `axis` is out of range (a subclass of ValueError and IndexError).
    MemoryError
        If the result or a temporary cannot be allocated.

    See Also
    --------
    nnkernels.reference.log_softmax : The same in plain NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> import nnkernels as nk
    >>> z = np.array([[1.0, 2.0, 3.0]])
    >>> nk.log_softmax(z).round(4)
    array([[-2.4076, -1.4076, -0.4076]])
    >>> np.allclose(np.exp(nk.log_softmax(z)), nk.softmax(z))
    True
    """
    return _softmax_family(_sm.Op.LOG_SOFTMAX, z, "z", None, None, axis, out)


def softmax_backward(grad: FloatArrayLike, p: FloatArrayLike, axis: SupportsIndex = -1,
                     out: Optional[FloatArray] = None) -> FloatArray:
    """Gradient through a softmax, from its output p: the Jacobian-vector product.

    ::

        grad_z = p ⊙ (grad − Σ_k grad_k p_k)          (per row, along `axis`)

    Any 2-D strides are read without a copy (a non-contiguous class axis is
    gathered row by row).

    Parameters
    ----------
    grad : array_like of float32 or float64, shape (N, C), (C, N) or (C,)
        The upstream gradient ∂J/∂p.
    p : array_like, grad's shape and dtype
        The softmax's output, p = softmax(z, axis).
    axis : int, default -1
        The class axis: -1 (or 1) for batch-first ``(N, C)`` arrays, 0 for
        the one-sample-per-column ``(C, N)`` layout. A 1-D array is a single
        row of classes.
    out : ndarray, optional
        Where to write the result: the input's shape and dtype, writable. One
        that overlaps an input is computed into a temporary first. By default
        a new array.

    Returns
    -------
    grad_z : ndarray
        ∂J/∂z, of grad's shape and dtype (`out` when given).

    Raises
    ------
    TypeError
        If an input is not a float32 or float64 array (integer and bool
        arrays and byte-swapped floats are refused; a list of numbers is
        computed in float64), the float inputs do not share one dtype, or
        `out` is not an ndarray of their dtype. Also if `axis` is not an
        integer.
    ValueError
        If an input is not 1-D or 2-D, or `grad` and `p` differ in shape, or `out` does not have
        the input's shape or is read-only.
    numpy.exceptions.AxisError
        If `axis` is out of range (a subclass of ValueError and IndexError).
    MemoryError
        If the result or a temporary cannot be allocated.

    See Also
    --------
    nnkernels.reference.softmax_backward : The same in plain NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> import nnkernels as nk
    >>> p = nk.softmax(np.array([[1.0, 2.0, 3.0]]))
    >>> g = nk.softmax_backward(np.array([[1.0, 0.0, 0.0]]), p)
    >>> g.round(4)
    array([[ 0.0819, -0.022 , -0.0599]])
    >>> np.allclose(g.sum(), 0.0)
    True
    """
    return _softmax_family(_sm.Op.SOFTMAX_BACKWARD, grad, "grad", p, "p", axis, out)
