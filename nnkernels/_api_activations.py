"""Element-wise activations and their backward passes: validate, prepare,
one kernel call."""

from __future__ import annotations   # signatures show the aliases' names

import numpy as np

from . import _dispatch, _layout as layout, _runtime, _team
from . import _validation as v
from ._typing import (FloatArray, FloatArrayLike, Optional)

_act = _dispatch.activations
_THREADS_FROM = _runtime.THREAD_THRESHOLDS["elementwise"]


def _map(op, x, x_name, a, a_name, out, p0=0.0, p1=0.0):
    """out = op(x[, a]; p0, p1): the one call every activation makes (the options
    p0, p1, validated by the caller, are floats)."""
    if type(x) is np.ndarray:
        # the common call: the kernel's entry checks it in C and runs it
        o = np.empty_like(x) if out is None else out
        if type(o) is np.ndarray and (
                _act.apply(op, x, a, o, p0, p1, _dispatch._num_threads)
                if x.size < _THREADS_FROM
                else _team.threaded_call(("act", op), x.size, _THREADS_FROM, _act.apply,
                                         op, x, a, o, p0, p1)):
            return o
    return _map_checked(op, x, x_name, a, a_name, out, p0, p1)


def _map_checked(op, x, x_name, a, a_name, out, p0, p1):
    """Validate with messages; run on C-ordered copies where the layout needs it."""
    x = v.float_array(x, x_name)
    if a is not None:
        a = v.float_array(a, a_name)
        v.same_dtype((x_name, x), (a_name, a))
        v.same_shape(x_name, x, a_name, a)
    out = v.output(out, x.shape, x.dtype)
    result = np.empty(x.shape, x.dtype)
    ran = _team.threaded_call(("act", op), x.size, _THREADS_FROM, _act.apply, op,
                              layout.c_contiguous(x),
                              None if a is None else layout.c_contiguous(a), result, p0, p1)
    if not ran:
        raise RuntimeError("nnkernels: internal error, validated operands were refused")
    out[...] = result
    return out


def sigmoid(z: FloatArrayLike, out: Optional[FloatArray] = None) -> FloatArray:
    """Logistic sigmoid, element by element, without overflow for any z.

    ::

        a = σ(z) = 1 / (1 + e^(−z))      (computed as e^z / (1 + e^z) for z < 0)

    Parameters
    ----------
    z : array_like of float32 or float64, any shape
        The pre-activations.
    out : ndarray, optional
        Where to write the result: z's shape and dtype, writable; it may be
        `z` itself (in place). By default a new array.

    Returns
    -------
    a : ndarray
        σ(z), of z's shape and dtype (`out` when given).

    Raises
    ------
    TypeError
        If an input is not a float32 or float64 array (integer and bool
        arrays and byte-swapped floats are refused; a list of numbers is
        computed in float64), the float inputs do not share one dtype, or
        `out` is not an ndarray of their dtype.
    ValueError
        If `out` does not have z's shape, or is read-only.
    MemoryError
        If the result, or a C-ordered copy of a strided input, cannot be
        allocated.

    See Also
    --------
    sigmoid_backward : The gradient, from the output a.
    nnkernels.reference.sigmoid : The same in plain NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> import nnkernels as nk
    >>> nk.sigmoid(np.array([-1000.0, 0.0, 2.0])).round(4)
    array([0.    , 0.5   , 0.8808])
    >>> z = np.zeros((2, 3), np.float32)
    >>> nk.sigmoid(z, out=z) is z      # in place
    True
    """
    return _map(_act.Op.SIGMOID, z, "z", None, None, out)


def relu(z: FloatArrayLike, out: Optional[FloatArray] = None) -> FloatArray:
    """Rectified linear unit, element by element; NaN stays NaN.

    ::

        a = max(0, z)

    Parameters
    ----------
    z : array_like of float32 or float64, any shape
        The pre-activations.
    out : ndarray, optional
        Where to write the result: z's shape and dtype, writable; it may be
        `z` itself (in place). By default a new array.

    Returns
    -------
    a : ndarray
        max(0, z), of z's shape and dtype (`out` when given).

    Raises
    ------
    TypeError
        If an input is not a float32 or float64 array (integer and bool
        arrays and byte-swapped floats are refused; a list of numbers is
        computed in float64), the float inputs do not share one dtype, or
        `out` is not an ndarray of their dtype.
    ValueError
        If `out` does not have z's shape, or is read-only.
    MemoryError
        If the result, or a C-ordered copy of a strided input, cannot be
        allocated.

    See Also
    --------
    relu_backward : The gradient, from the output a.
    nnkernels.reference.relu : The same in plain NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> import nnkernels as nk
    >>> nk.relu(np.array([-2.0, 0.0, 3.5]))
    array([0. , 0. , 3.5])
    """
    return _map(_act.Op.RELU, z, "z", None, None, out)


def sigmoid_backward(grad: FloatArrayLike, a: FloatArrayLike,
                     out: Optional[FloatArray] = None) -> FloatArray:
    """Gradient through a sigmoid, from its output a.

    ::

        grad_z = grad ⊙ a ⊙ (1 − a)          (σ'(z) = a (1 − a))

    Parameters
    ----------
    grad : array_like of float32 or float64, any shape
        The upstream gradient ∂J/∂a.
    a : array_like, grad's shape and dtype
        The sigmoid's output, a = σ(z).
    out : ndarray, optional
        Where to write ∂J/∂z: grad's shape and dtype, writable; it may be
        `grad` (or `a`) itself, in place. By default a new array.

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
        `out` is not an ndarray of their dtype.
    ValueError
        If `grad` and `a` differ in shape, or `out` does not have their
        shape or is read-only.
    MemoryError
        If the result, or a C-ordered copy of a strided input, cannot be
        allocated.

    See Also
    --------
    nnkernels.reference.sigmoid_backward : The same in plain NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> import nnkernels as nk
    >>> a = nk.sigmoid(np.array([0.0, 2.0]))
    >>> nk.sigmoid_backward(np.ones(2), a).round(4)
    array([0.25 , 0.105])
    """
    return _map(_act.Op.SIGMOID_BACKWARD, grad, "grad", a, "a", out)


def tanh_backward(grad: FloatArrayLike, a: FloatArrayLike,
                  out: Optional[FloatArray] = None) -> FloatArray:
    """Gradient through a tanh, from its output a.

    ::

        grad_z = grad ⊙ (1 − a²)             (tanh'(z) = 1 − a²)

    Parameters
    ----------
    grad : array_like of float32 or float64, any shape
        The upstream gradient ∂J/∂a.
    a : array_like, grad's shape and dtype
        The tanh's output, a = tanh(z).
    out : ndarray, optional
        Where to write ∂J/∂z: grad's shape and dtype, writable; it may be
        `grad` (or `a`) itself, in place. By default a new array.

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
        `out` is not an ndarray of their dtype.
    ValueError
        If `grad` and `a` differ in shape, or `out` does not have their
        shape or is read-only.
    MemoryError
        If the result, or a C-ordered copy of a strided input, cannot be
        allocated.

    See Also
    --------
    nnkernels.reference.tanh_backward : The same in plain NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> import nnkernels as nk
    >>> a = np.tanh(np.array([0.0, 1.0]))
    >>> nk.tanh_backward(np.ones(2), a).round(4)
    array([1.  , 0.42])
    """
    return _map(_act.Op.TANH_BACKWARD, grad, "grad", a, "a", out)


def relu_backward(grad: FloatArrayLike, a: FloatArrayLike,
                  out: Optional[FloatArray] = None) -> FloatArray:
    """Gradient through a relu, from its output a (PyTorch's threshold_backward rule).

    ::

        grad_z = grad where a > 0, else 0    (0 at exactly a = 0)

    Parameters
    ----------
    grad : array_like of float32 or float64, any shape
        The upstream gradient ∂J/∂a.
    a : array_like, grad's shape and dtype
        The relu's output, a = max(0, z).
    out : ndarray, optional
        Where to write ∂J/∂z: grad's shape and dtype, writable; it may be
        `grad` (or `a`) itself, in place. By default a new array.

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
        `out` is not an ndarray of their dtype.
    ValueError
        If `grad` and `a` differ in shape, or `out` does not have their
        shape or is read-only.
    MemoryError
        If the result, or a C-ordered copy of a strided input, cannot be
        allocated.

    See Also
    --------
    nnkernels.reference.relu_backward : The same in plain NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> import nnkernels as nk
    >>> nk.relu_backward(np.array([5.0, 5.0, 5.0]), np.array([0.0, 1.0, 2.0]))
    array([0., 5., 5.])
    """
    return _map(_act.Op.RELU_BACKWARD, grad, "grad", a, "a", out)
