"""The public functions: validate, allocate, make one call into compiled code.

Nothing here loops over data.  Layout rules:

* element-wise kernels run on the arrays' memory as it is when every operand
  is C-contiguous, or every one F-contiguous; other layouts (strided views,
  mixed orders) are copied to C order first, and the result copied into
  ``out``;
* softmax-family kernels take any 2-D strides along either axis without a
  copy (a non-contiguous class axis is gathered row by row);
* an ``out`` that overlaps an input (other than exactly, in place, for the
  element-wise kernels) is computed into a temporary first.
"""

from __future__ import annotations   # signatures show the aliases' names

import threading

import numpy as np

from . import _dispatch
from . import _validation as v
from ._typing import (Activation, ArrayLike, FloatArray, FloatArrayLike, Loss, Optional,
                      Reduction, SupportsIndex)

INTP_MIN, INTP_MAX = int(np.iinfo(np.intp).min), int(np.iinfo(np.intp).max)
INTP_BYTES = np.dtype(np.intp).itemsize

_act = _dispatch.activations
_sm = _dispatch.softmax
_el = _dispatch.elementwise_losses


# Element-wise activations ------------------------------------------------------------

def _map(op, x, x_name, a, a_name, out):
    if type(x) is np.ndarray:
        # the common call: the kernel's entry checks it in C and runs it
        o = np.empty_like(x) if out is None else out
        if type(o) is np.ndarray and _act.apply(op, x, a, o, _dispatch._num_threads):
            return o
    return _map_checked(op, x, x_name, a, a_name, out)


def _map_checked(op, x, x_name, a, a_name, out):
    """Validate with messages; run on C-ordered copies where the layout needs it."""
    x = v.float_array(x, x_name)
    if a is not None:
        a = v.float_array(a, a_name)
        v.same_dtype((x_name, x), (a_name, a))
        v.same_shape(x_name, x, a_name, a)
    out = v.output(out, x.shape, x.dtype)
    result = np.empty(x.shape, x.dtype)
    ran = _act.apply(op, v.c_contiguous(x), None if a is None else v.c_contiguous(a), result,
                     _dispatch._num_threads)
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


# Softmax family ------------------------------------------------------------------------

def _softmax_family(op, x, x_name, b, b_name, axis, out):
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
    if not v.kernel_layout_ok(x2, *(() if b is None else (b,))):
        x2 = v.c_contiguous(x2)
        b = None if b is None else v.c_contiguous(b)
    if not v.kernel_layout_ok(out2) or v.overlaps(out2, x2, b):
        result = np.empty(x2.shape, x2.dtype)
        _sm.softmax_family(op, x2, b, result, ax, _dispatch._num_threads)
        out2[...] = result
    else:
        _sm.softmax_family(op, x2, b, out2, ax, _dispatch._num_threads)
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


# Softmax + cross-entropy ------------------------------------------------------------------

def _cross_entropy(logits, target, axis, reduction, weight, ignore_index,
                   label_smoothing, out):
    logits = v.float_array(logits, "logits")
    if logits.ndim != 2:
        raise ValueError(f"logits must be a 2-D array, got shape {logits.shape}")
    ax = v.class_axis(axis, 2)
    n_classes, n_rows = logits.shape[ax], logits.shape[1 - ax]
    red = v.reduction_code(reduction)
    eps = v.label_smoothing_value(label_smoothing)
    ignore_index = v.integer(ignore_index, "ignore_index")
    if not INTP_MIN <= ignore_index <= INTP_MAX:   # compared with intp labels
        raise ValueError(f"ignore_index must fit in a signed {8 * INTP_BYTES}-bit "
                         f"integer, got {ignore_index}")

    target = v.array(target, "target")
    kind = target.dtype.kind
    if kind in "iu":
        target = v.class_indices(target, n_rows)
    elif kind == "f":
        if target.shape != logits.shape:
            raise ValueError(
                f"target must be integer class indices of shape ({n_rows},) or "
                f"probabilities of the logits' shape {logits.shape}; got a float "
                f"array of shape {target.shape} (cast class labels to an integer dtype)")
        v.same_dtype(("logits", logits), ("target", target))
        if ignore_index >= 0:   # a class index means nothing here (PyTorch refuses it too)
            raise ValueError(f"ignore_index must be negative (unused) with class-"
                             f"probability targets, got {ignore_index}")
    else:
        raise TypeError(f"target must be integer class indices or float probabilities, "
                        f"got dtype {target.dtype}")

    if weight is not None:
        weight = v.float_array(weight, "weight")
        v.same_dtype(("logits", logits), ("weight", weight))
        if weight.shape != (n_classes,):
            raise ValueError(f"weight must have shape ({n_classes},), got {weight.shape}")
        weight = v.c_contiguous(weight)

    grad = v.output(out, logits.shape, logits.dtype)
    if not v.kernel_layout_ok(logits, target):
        logits, target = v.c_contiguous(logits), v.c_contiguous(target)
    work = grad
    # a fresh grad cannot overlap anything; a given one is checked
    if out is not None and (not v.kernel_layout_ok(grad)
                            or v.overlaps(grad, logits, target, weight)):
        work = np.empty(logits.shape, logits.dtype)
    loss_rows = np.empty(n_rows, logits.dtype) if red == v.REDUCTIONS["none"] else None
    total = _sm.cross_entropy(logits, target, weight, ignore_index, eps, red, work,
                              loss_rows, ax, _dispatch._num_threads)
    if work is not grad:
        grad[...] = work
    loss = loss_rows if red == v.REDUCTIONS["none"] else logits.dtype.type(total)
    return loss, grad


def softmax_cross_entropy(logits: FloatArrayLike, target: ArrayLike, *, axis: SupportsIndex = -1,
                          reduction: Reduction = "mean", weight: Optional[FloatArrayLike] = None,
                          ignore_index: SupportsIndex = -100, label_smoothing: float = 0.0,
                          out: Optional[FloatArray] = None) -> tuple[Loss, FloatArray]:
    """Fused softmax and cross-entropy: the loss and its gradient in one pass.

    The semantics of ``torch.nn.functional.cross_entropy`` with the same
    arguments (class weights, ignore_index, label smoothing, probability
    targets), computed row by row with no one-hot matrix and no temporary.

    For a target distribution y (one-hot for a class index t), with the
    options folded into a per-class vector q::

        q_j = w_j ((1 − ε) y_j + ε / C)                     (probabilities y)
        q_j = (1 − ε) w_t [j = t] + (ε / C) w_j             (class index t)
        loss = S log s − Σ_j q_j (z_j − m),   S = Σ_j q_j,  s = Σ_j e^(z_j − m)
        ∂loss/∂z_j = S p_j − q_j                 (p − y when S = 1)

    where w are the class weights (ones by default), ε the label smoothing,
    m the row's maximum and p = softmax(z). For the default mean over a batch
    the gradient is (P − Y) / N: the 1/N lives in the gradient.

    Parameters
    ----------
    logits : array_like of float32 or float64, shape (N, C) or (C, N)
        The scores of N samples over C classes; (C, N) with ``axis=0``.
    target : array_like
        Either integer class indices of shape (N,), any integer dtype, each in
        ``[0, C)`` or equal to `ignore_index`; or class probabilities of the
        logits' shape and dtype (soft or one-hot targets).
    axis : int, default -1
        The class axis of `logits`: -1 (or 1) for (N, C), 0 for (C, N).
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" divides the summed loss by the summed weight of the rows that
        are not ignored (by N for probability targets); "sum" adds it up;
        "none" returns one loss per row.
    weight : array_like, shape (C,), optional
        A rescaling weight per class, in the logits' dtype.
    ignore_index : int, default -100
        A class index whose rows add nothing to the loss and get a zero
        gradient; it must be negative (unused) with probability targets.
    label_smoothing : float, default 0.0
        ε in [0, 1]: the target becomes (1 − ε) y + ε / C.
    out : ndarray, optional
        Where to write the gradient: the logits' shape and dtype, writable;
        one that overlaps an input is computed into a temporary first. By
        default a new array.

    Returns
    -------
    loss : numpy.floating or ndarray
        A NumPy scalar of the logits' dtype; for ``reduction="none"`` an
        array of shape (N,), one loss per row (0 for ignored rows).
    grad : ndarray
        ∂loss/∂logits, of the logits' shape and dtype (`out` when given); for
        ``reduction="none"`` the gradient of the sum of the row losses.

    Raises
    ------
    TypeError
        If `logits` (or a probability `target`, or `weight`) is not a
        float32 or float64 array, they differ in dtype, `target` is neither
        integer nor float, `ignore_index` is not an integer,
        `label_smoothing` is not a real number, or `out` is not an ndarray
        of the logits' dtype.
    ValueError
        If `logits` is not 2-D, `target` or `weight` has the wrong shape, a
        label is outside ``[0, C)`` and not `ignore_index`, `reduction` is
        not one of "mean", "sum", "none", `label_smoothing` is outside
        [0, 1], `ignore_index` is not negative with probability targets or
        does not fit in a C ``intptr_t``, or `out` has the wrong shape or is
        read-only.
    numpy.exceptions.AxisError
        If `axis` is not -2, -1, 0 or 1 (a subclass of ValueError).
    MemoryError
        If the gradient, the row losses or a temporary cannot be allocated.

    See Also
    --------
    softmax_cross_entropy_backward : The gradient alone.
    nnkernels.reference.softmax_cross_entropy : The same in plain NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> import nnkernels as nk
    >>> logits = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    >>> labels = np.array([0, 2])
    >>> loss, grad = nk.softmax_cross_entropy(logits, labels)
    >>> round(float(loss), 4)
    0.6691
    >>> p = nk.softmax(logits)
    >>> np.allclose(grad, (p - np.eye(3)[labels]) / 2)       # (P − Y) / N
    True
    >>> loss, _ = nk.softmax_cross_entropy(logits, labels, reduction="none")
    >>> loss.round(4)
    array([0.2395, 1.0986])
    >>> loss, gz = nk.softmax_cross_entropy(logits.T, labels, axis=0)   # (C, N)
    >>> gz.shape
    (3, 2)
    """
    return _cross_entropy(logits, target, axis, reduction, weight, ignore_index,
                          label_smoothing, out)


def softmax_cross_entropy_backward(logits: FloatArrayLike, target: ArrayLike, *,
                                   axis: SupportsIndex = -1, reduction: Reduction = "mean",
                                   weight: Optional[FloatArrayLike] = None,
                                   ignore_index: SupportsIndex = -100,
                                   label_smoothing: float = 0.0,
                                   out: Optional[FloatArray] = None) -> FloatArray:
    """The gradient of the fused softmax cross-entropy alone.

    The same single pass as :func:`softmax_cross_entropy`, with the same
    arguments, returning only ∂loss/∂logits.

    For a target distribution y (one-hot for a class index t), with the
    options folded into a per-class vector q::

        q_j = w_j ((1 − ε) y_j + ε / C)                     (probabilities y)
        q_j = (1 − ε) w_t [j = t] + (ε / C) w_j             (class index t)
        loss = S log s − Σ_j q_j (z_j − m),   S = Σ_j q_j,  s = Σ_j e^(z_j − m)
        ∂loss/∂z_j = S p_j − q_j                 (p − y when S = 1)

    where w are the class weights (ones by default), ε the label smoothing,
    m the row's maximum and p = softmax(z). For the default mean over a batch
    the gradient is (P − Y) / N: the 1/N lives in the gradient.

    Parameters
    ----------
    logits : array_like of float32 or float64, shape (N, C) or (C, N)
        The scores of N samples over C classes; (C, N) with ``axis=0``.
    target : array_like
        Either integer class indices of shape (N,), any integer dtype, each in
        ``[0, C)`` or equal to `ignore_index`; or class probabilities of the
        logits' shape and dtype (soft or one-hot targets).
    axis : int, default -1
        The class axis of `logits`: -1 (or 1) for (N, C), 0 for (C, N).
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" divides the summed loss by the summed weight of the rows that
        are not ignored (by N for probability targets); "sum" adds it up;
        "none" returns one loss per row.
    weight : array_like, shape (C,), optional
        A rescaling weight per class, in the logits' dtype.
    ignore_index : int, default -100
        A class index whose rows add nothing to the loss and get a zero
        gradient; it must be negative (unused) with probability targets.
    label_smoothing : float, default 0.0
        ε in [0, 1]: the target becomes (1 − ε) y + ε / C.
    out : ndarray, optional
        Where to write the gradient: the logits' shape and dtype, writable;
        one that overlaps an input is computed into a temporary first. By
        default a new array.

    Returns
    -------
    grad : ndarray
        ∂loss/∂logits, of the logits' shape and dtype (`out` when given).

    Raises
    ------
    TypeError
        If `logits` (or a probability `target`, or `weight`) is not a
        float32 or float64 array, they differ in dtype, `target` is neither
        integer nor float, `ignore_index` is not an integer,
        `label_smoothing` is not a real number, or `out` is not an ndarray
        of the logits' dtype.
    ValueError
        If `logits` is not 2-D, `target` or `weight` has the wrong shape, a
        label is outside ``[0, C)`` and not `ignore_index`, `reduction` is
        not one of "mean", "sum", "none", `label_smoothing` is outside
        [0, 1], `ignore_index` is not negative with probability targets or
        does not fit in a C ``intptr_t``, or `out` has the wrong shape or is
        read-only.
    numpy.exceptions.AxisError
        If `axis` is not -2, -1, 0 or 1 (a subclass of ValueError).
    MemoryError
        If the gradient, the row losses or a temporary cannot be allocated.

    See Also
    --------
    softmax_cross_entropy : The loss and the gradient.
    nnkernels.reference.softmax_cross_entropy_backward : The same in plain NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> import nnkernels as nk
    >>> logits = np.zeros((4, 3), np.float32)
    >>> grad = nk.softmax_cross_entropy_backward(logits, np.array([0, 1, 2, 0]),
    ...                                          label_smoothing=0.1)
    >>> grad.shape, grad.dtype
    ((4, 3), dtype('float32'))
    >>> np.allclose(grad.sum(axis=1), 0.0, atol=1e-7)
    True
    """
    return _cross_entropy(logits, target, axis, reduction, weight, ignore_index,
                          label_smoothing, out)[1]


# Element-wise losses -------------------------------------------------------------------------

def _elementwise_loss(op, x, x_name, target, reduction, weight, pos_weight, out):
    x = v.float_array(x, x_name)
    target = v.float_array(target, "target")
    v.same_dtype((x_name, x), ("target", target))
    v.same_shape(x_name, x, "target", target)
    if x.ndim not in (1, 2):
        raise ValueError(f"{x_name} must be a 1-D or 2-D array, got shape {x.shape}")
    red = v.reduction_code(reduction)
    shape2 = (1, x.size) if x.ndim == 1 else x.shape
    cols = shape2[1]
    x2 = v.c_contiguous(x).reshape(shape2)
    t2 = v.c_contiguous(target).reshape(shape2)
    if op == _el.Op.BCE:
        v.probability(x2, x_name)

    w2, w_row_stride = None, 0
    if weight is None:
        w2 = np.ones(cols, x.dtype)
    else:
        weight = v.float_array(weight, "weight")
        v.same_dtype((x_name, x), ("weight", weight))
        try:
            full = np.broadcast_to(weight, x.shape)
        except ValueError:
            raise ValueError(f"weight of shape {weight.shape} does not broadcast "
                             f"to {x_name}'s shape {x.shape}") from None
        full = full.reshape(shape2)
        if full.strides[0] == 0 and full.shape[0] > 0:   # one row for every row: per column
            w2 = v.c_contiguous(full[0])
        else:
            w2, w_row_stride = v.c_contiguous(full), cols
    pw = np.ones(cols, x.dtype)
    if pos_weight is not None:
        pos_weight = v.float_array(pos_weight, "pos_weight")
        v.same_dtype((x_name, x), ("pos_weight", pos_weight))
        if pos_weight.shape != (cols,):
            raise ValueError(f"pos_weight must hold one value per column ({cols},), "
                             f"got shape {pos_weight.shape}")
        pw = v.c_contiguous(pos_weight)

    grad = v.output(out, x.shape, x.dtype)
    work = grad
    if not (grad.flags.c_contiguous and grad.flags.aligned) or v.overlaps(grad, x2, t2, w2, pw):
        work = np.empty(x.shape, x.dtype)
    loss_out = np.empty(x.shape, x.dtype) if red == v.REDUCTIONS["none"] else None
    total = _el.elementwise_loss(op, x2, t2, w2, w_row_stride, pw, red, work.reshape(shape2),
                                 None if loss_out is None else loss_out.reshape(shape2),
                                 _dispatch._num_threads)
    if work is not grad:
        grad[...] = work
    loss = loss_out if red == v.REDUCTIONS["none"] else x.dtype.type(total)
    return loss, grad


def sigmoid_binary_cross_entropy(logits: FloatArrayLike, target: FloatArrayLike, *,
                                 reduction: Reduction = "mean",
                                 weight: Optional[FloatArrayLike] = None,
                                 pos_weight: Optional[FloatArrayLike] = None,
                                 out: Optional[FloatArray] = None) -> tuple[Loss, FloatArray]:
    """Fused sigmoid and binary cross-entropy: the loss and its gradient.

    The semantics of ``torch.nn.functional.binary_cross_entropy_with_logits``,
    stable for any logit. Per element, with s = σ(z)::

        L = w [(1 − y) z + (1 + (pw − 1) y) softplus(−z)]
        ∂L/∂z = w [(1 − y) σ(z) − pw y σ(−z)]        (pw = 1: w (σ(z) − y))

    Parameters
    ----------
    logits : array_like of float32 or float64, shape (N,) or (N, K)
        The scores z.
    target : array_like, the logits' shape and dtype
        The targets y, usually in [0, 1].
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" divides the summed loss by the number of elements; "sum" adds
        it up; "none" returns the loss of every element.
    weight : array_like, optional
        A rescaling weight of any shape that broadcasts to the input's (as
        in PyTorch), in its dtype; ones by default.
    pos_weight : array_like, shape (K,), optional
        pw, a weight of the positive term per column (per element for 1-D
        logits), in the logits' dtype; ones by default.
    out : ndarray, optional
        Where to write the gradient: the input's shape and dtype, writable;
        one that overlaps an input is computed into a temporary first. By
        default a new array.

    Returns
    -------
    loss : numpy.floating or ndarray
        A NumPy scalar of the input's dtype; for ``reduction="none"`` an
        array of the input's shape, one loss per element.
    grad : ndarray
        ∂loss/∂logits, of the input's shape and dtype (`out` when given); for
        ``reduction="none"`` the gradient of the sum of the element losses.

    Raises
    ------
    TypeError
        If `logits` or `target`, `weight` or `pos_weight` is not a float32
        or float64 array, they differ in dtype, or `out` is not an ndarray
        of their dtype.
    ValueError
        If `logits` is not 1-D or 2-D, `target` does not have its shape,
        `weight` does not broadcast to it, `pos_weight` does not have one
        value per column, `reduction` is not one of "mean", "sum", "none",
        or `out` has the wrong shape or is read-only.
    MemoryError
        If the gradient, the element losses or a temporary cannot be
        allocated.

    See Also
    --------
    binary_cross_entropy : The same loss on probabilities.
    nnkernels.reference.sigmoid_binary_cross_entropy : The same in plain NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> import nnkernels as nk
    >>> z = np.array([[0.0, 2.0], [-1.0, 40.0]])
    >>> y = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> loss, grad = nk.sigmoid_binary_cross_entropy(z, y)
    >>> round(float(loss), 4)
    0.7833
    >>> np.allclose(grad, (nk.sigmoid(z) - y) / z.size)
    True
    """
    return _elementwise_loss(_el.Op.BCE_WITH_LOGITS, logits, "logits", target, reduction,
                             weight, pos_weight, out)


def binary_cross_entropy(probs: FloatArrayLike, target: FloatArrayLike, *,
                         reduction: Reduction = "mean", weight: Optional[FloatArrayLike] = None,
                         out: Optional[FloatArray] = None) -> tuple[Loss, FloatArray]:
    """Binary cross-entropy on probabilities: the loss and its gradient.

    The semantics of ``torch.nn.functional.binary_cross_entropy``, each log
    clamped at −100 so that 0 log 0 is 0. Per element::

        L = −w [y log p + (1 − y) log(1 − p)]
        ∂L/∂p = w (p − y) / max(p (1 − p), 1e-12)

    Parameters
    ----------
    probs : array_like of float32 or float64, shape (N,) or (N, K)
        The probabilities p, each in [0, 1] (NaN propagates).
    target : array_like, the probs' shape and dtype
        The targets y, usually in [0, 1].
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" divides the summed loss by the number of elements; "sum" adds
        it up; "none" returns the loss of every element.
    weight : array_like, optional
        A rescaling weight of any shape that broadcasts to the input's (as
        in PyTorch), in its dtype; ones by default.
    out : ndarray, optional
        Where to write the gradient: the input's shape and dtype, writable;
        one that overlaps an input is computed into a temporary first. By
        default a new array.

    Returns
    -------
    loss : numpy.floating or ndarray
        A NumPy scalar of the input's dtype; for ``reduction="none"`` an
        array of the input's shape, one loss per element.
    grad : ndarray
        ∂loss/∂probs, of the input's shape and dtype (`out` when given); for
        ``reduction="none"`` the gradient of the sum of the element losses.

    Raises
    ------
    TypeError
        If `probs` or `target` or `weight` is not a float32 or float64
        array, they differ in dtype, or `out` is not an ndarray of their
        dtype.
    ValueError
        If `probs` is not 1-D or 2-D, `target` does not have its shape, a
        probability lies outside [0, 1], `weight` does not broadcast to it,
        `reduction` is not one of "mean", "sum", "none", or `out` has the
        wrong shape or is read-only.
    MemoryError
        If the gradient, the element losses or a temporary cannot be
        allocated.

    See Also
    --------
    sigmoid_binary_cross_entropy : The same loss on logits, more stable.
    nnkernels.reference.binary_cross_entropy : The same in plain NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> import nnkernels as nk
    >>> p = np.array([0.9, 0.2, 0.0])
    >>> y = np.array([1.0, 0.0, 0.0])
    >>> loss, grad = nk.binary_cross_entropy(p, y, reduction="sum")
    >>> round(float(loss), 4)
    0.3285
    >>> grad.round(4)
    array([-1.1111,  1.25  ,  0.    ])
    """
    return _elementwise_loss(_el.Op.BCE, probs, "probs", target, reduction, weight, None, out)


def mse(pred: FloatArrayLike, target: FloatArrayLike, *, reduction: Reduction = "mean",
        out: Optional[FloatArray] = None) -> tuple[Loss, FloatArray]:
    """Mean squared error: the loss and its gradient.

    The semantics of ``torch.nn.functional.mse_loss``. Per element::

        L = (x − y)²,     ∂L/∂x = 2 (x − y)

    Parameters
    ----------
    pred : array_like of float32 or float64, shape (N,) or (N, K)
        The predictions x.
    target : array_like, the pred's shape and dtype
        The targets y.
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" divides the summed loss by the number of elements; "sum" adds
        it up; "none" returns the loss of every element.
    out : ndarray, optional
        Where to write the gradient: the input's shape and dtype, writable;
        one that overlaps an input is computed into a temporary first. By
        default a new array.

    Returns
    -------
    loss : numpy.floating or ndarray
        A NumPy scalar of the input's dtype; for ``reduction="none"`` an
        array of the input's shape, one loss per element.
    grad : ndarray
        ∂loss/∂pred, of the input's shape and dtype (`out` when given); for
        ``reduction="none"`` the gradient of the sum of the element losses.

    Raises
    ------
    TypeError
        If `pred` or `target` is not a float32 or float64 array, they differ
        in dtype, or `out` is not an ndarray of their dtype.
    ValueError
        If `pred` is not 1-D or 2-D, `target` does not have its shape,
        `reduction` is not one of "mean", "sum", "none", or `out` has the
        wrong shape or is read-only.
    MemoryError
        If the gradient, the element losses or a temporary cannot be
        allocated.

    See Also
    --------
    nnkernels.reference.mse : The same in plain NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> import nnkernels as nk
    >>> loss, grad = nk.mse(np.array([1.0, 2.0, 4.0]), np.array([1.0, 1.0, 1.0]))
    >>> float(loss)
    3.3333333333333335
    >>> grad.round(4)
    array([0.    , 0.6667, 2.    ])
    """
    return _elementwise_loss(_el.Op.MSE, pred, "pred", target, reduction, None, None, out)


# Dense layer ------------------------------------------------------------------------------

_BLAS_INT_MAX = 2**31 - 1                    # BLAS sizes are C ints
_ACTIVATION_NAMES = (None, "sigmoid", "tanh", "relu")


def _activation_code(activation):
    if activation is not None and (type(activation) is not str
                                   or activation not in _ACTIVATION_NAMES):
        raise ValueError(f"activation must be one of {_ACTIVATION_NAMES}, got {activation!r}")
    return _dispatch.dense().ACTIVATIONS[activation]


def _blas_matrix(arr, name):
    """A 2-D array gemm takes as it is (C or F order, or a transposed view of
    either); any other strides are copied to C order."""
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got shape {arr.shape}")
    if max(arr.shape) > _BLAS_INT_MAX:
        raise ValueError(f"{name} of shape {arr.shape} exceeds the BLAS's 32-bit sizes")
    if _dispatch.dense().blas_layout(arr) == _dispatch.dense().Layout.OTHER:
        arr = v.c_contiguous(arr)
    return arr


def _dense_shapes(x, w):
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"x (N, in) and w (out, in) disagree on in_features: "
                         f"x {x.shape}, w {w.shape}")


def _work_array(buffer, inputs, accumulate):
    """Where the kernel writes a result: `buffer` itself, or a C-ordered
    temporary when `buffer` overlaps an input or another result, or has
    strides gemm cannot take (copied back by the caller)."""
    dense = _dispatch.dense()
    if not v.overlaps(buffer, *inputs) and (
            buffer.ndim == 1 and buffer.flags.c_contiguous and buffer.flags.aligned
            or buffer.ndim == 2 and dense.blas_layout(buffer) != dense.Layout.OTHER):
        return buffer
    return np.array(buffer, order="C") if accumulate else np.empty(buffer.shape, buffer.dtype)


_scratch = threading.local()


def _scratch_memory(nbytes):
    """Scratch bytes for grad_z and the bias sums, 64-byte aligned: one buffer
    per Python thread (concurrent calls never share it), grown when a call
    needs more and then reused, so a training step allocates nothing."""
    aligned = getattr(_scratch, "aligned", None)
    if aligned is None or aligned.nbytes < nbytes:
        # never empty: NumPy gives an empty slice the base's (unaligned) address
        size = max(nbytes, 64)
        raw = np.empty(size + 64, np.uint8)
        start = -raw.ctypes.data % 64
        aligned = _scratch.aligned = raw[start:start + size]
    return aligned


def dense_forward(x: FloatArrayLike, w: FloatArrayLike, b: Optional[FloatArrayLike] = None,
                  activation: Activation = None,
                  out: Optional[FloatArray] = None) -> FloatArray:
    """Forward pass of a dense layer: a = g(x wᵀ + b).

    The product is one BLAS gemm (SciPy's) into the output; the bias and the
    activation are added in one pass over it::

        z = x wᵀ + b          x (N, in), w (out, in), b (out,), z (N, out)
        a = g(z)              g: identity, sigmoid, tanh or relu

    C- and F-ordered arrays and transposed views go to BLAS without a copy;
    other strides are copied to C order first.

    Parameters
    ----------
    x : array_like of float32 or float64, shape (N, in)
        The batch, one sample per row.
    w : array_like, shape (out, in)
        The weights, as in ``torch.nn.Linear``; x's dtype.
    b : array_like, shape (out,), optional
        The bias; x's dtype. None for no bias.
    activation : {None, "sigmoid", "tanh", "relu"}, default None
        g; None is the identity (a linear layer, e.g. the logits).
    out : ndarray, optional
        Where to write a: shape (N, out), x's dtype, writable; one that
        overlaps an input is computed into a temporary first. By default a
        new array.

    Returns
    -------
    a : ndarray, shape (N, out)
        The layer's output, in x's dtype (`out` when given).

    Raises
    ------
    TypeError
        If an input is not a float32 or float64 array (integer and bool
        arrays and byte-swapped floats are refused; a list of numbers is
        computed in float64), the float inputs do not share one dtype, or
        `out` is not an ndarray of their dtype.
    ValueError
        If `x` or `w` is not 2-D, they disagree on in_features, `b` is not
        of shape (out,), `activation` is not one of None, "sigmoid", "tanh",
        "relu", a dimension exceeds the BLAS's 32-bit sizes, or `out` has
        the wrong shape or is read-only.
    MemoryError
        If the result or a temporary cannot be allocated.

    See Also
    --------
    dense_backward : The gradients of the layer.
    nnkernels.reference.dense_forward : The same in plain NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> import nnkernels as nk
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((8, 4))
    >>> w = rng.standard_normal((3, 4))
    >>> b = np.zeros(3)
    >>> a = nk.dense_forward(x, w, b, "tanh")
    >>> a.shape
    (8, 3)
    >>> np.allclose(a, np.tanh(x @ w.T + b))
    True
    """
    dense = _dispatch.dense()
    x = v.float_array(x, "x")
    w = v.float_array(w, "w")
    named = [("x", x), ("w", w)]
    if b is not None:
        b = v.float_array(b, "b")
        named.append(("b", b))
    v.same_dtype(*named)
    g = _activation_code(activation)
    x = _blas_matrix(x, "x")
    w = _blas_matrix(w, "w")
    _dense_shapes(x, w)
    if b is not None:
        if b.shape != (w.shape[0],):
            raise ValueError(f"b must have shape ({w.shape[0]},) (out_features of "
                             f"w {w.shape}), got b {b.shape}")
        b = v.c_contiguous(b)
    out = v.output(out, (x.shape[0], w.shape[0]), x.dtype)
    work = _work_array(out, (x, w, b), False)
    dense.forward(g, x, w, b, work)
    if work is not out:
        out[...] = work
    return out


def dense_backward(grad_a: FloatArrayLike, x: FloatArrayLike, w: FloatArrayLike,
                   a: Optional[FloatArrayLike] = None, activation: Activation = None, *,
                   need_input_grad: bool = True, accumulate: bool = False,
                   out: Optional[tuple[Optional[FloatArray], Optional[FloatArray],
                                       Optional[FloatArray]]] = None,
                   ) -> tuple[FloatArray, FloatArray, Optional[FloatArray]]:
    """Backward pass of a dense layer: the gradients (grad_w, grad_b, grad_x).

    grad_z and grad_b come from one pass over grad_a, then grad_w and grad_x
    are BLAS products (gemm's beta = 1 with `accumulate`)::

        grad_z = grad_a ⊙ g'(a)       (grad_a itself without an activation)
        grad_w = grad_zᵀ x            (out, in)
        grad_b = Σ_rows grad_z        (out,)
        grad_x = grad_z w             (N, in)

    The 1/N of a mean lives in the loss gradient, so nothing is scaled here.
    grad_z is kept in a scratch buffer per Python thread, reused, so with
    `out` buffers a training step allocates nothing.

    Parameters
    ----------
    grad_a : array_like of float32 or float64, shape (N, out)
        ∂J/∂a, the upstream gradient of the layer's output.
    x : array_like, shape (N, in)
        The layer's input (the batch); grad_a's dtype.
    w : array_like, shape (out, in)
        The weights; grad_a's dtype.
    a : array_like, shape (N, out), optional
        The layer's output g(z); needed when `activation` is not None.
    activation : {None, "sigmoid", "tanh", "relu"}, default None
        The g of the forward pass; g' is computed from `a`.
    need_input_grad : bool, default True
        Whether to compute grad_x; False skips the second product and
        returns None for it (the first layer needs none).
    accumulate : bool, default False
        Add the gradients into the `out` buffers instead of overwriting them
        (two calls give the sum of two gradients).
    out : tuple of three ndarray or None, optional
        Buffers ``(grad_w, grad_b, grad_x)``, any of them None (then a new
        array is made, zeroed with `accumulate`); each must have its
        result's shape and dtype and be writable. The grad_x buffer is left
        alone when `need_input_grad` is False. One that overlaps an input
        or another buffer is computed into a temporary first.

    Returns
    -------
    grad_w : ndarray, shape (out, in)
        ∂J/∂w.
    grad_b : ndarray, shape (out,)
        ∂J/∂b.
    grad_x : ndarray, shape (N, in), or None
        ∂J/∂x; None when `need_input_grad` is False.

    Raises
    ------
    TypeError
        If an input is not a float32 or float64 array (integer and bool
        arrays and byte-swapped floats are refused; a list of numbers is
        computed in float64), the float inputs do not share one dtype, or
        `out` is not an ndarray of their dtype.
    ValueError
        If `x` or `w` is not 2-D, they disagree on in_features, `grad_a` (or
        `a`) is not of shape (N, out), `activation` is unknown or given
        without `a`, a dimension exceeds the BLAS's 32-bit sizes, `out` is
        not None nor a triple, or a buffer has the wrong shape or is read-
        only.
    MemoryError
        If a result, the scratch memory or a temporary cannot be allocated.

    See Also
    --------
    dense_forward : The forward pass.
    nnkernels.reference.dense_backward : The same in plain NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> import nnkernels as nk
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((8, 4))
    >>> w = rng.standard_normal((3, 4))
    >>> a = nk.dense_forward(x, w, None, "sigmoid")
    >>> grad_a = np.ones_like(a)
    >>> gw, gb, gx = nk.dense_backward(grad_a, x, w, a, "sigmoid")
    >>> gw.shape, gb.shape, gx.shape
    ((3, 4), (3,), (8, 4))
    >>> grad_z = grad_a * a * (1 - a)
    >>> np.allclose(gw, grad_z.T @ x), np.allclose(gx, grad_z @ w)
    (True, True)
    >>> _, _, gx = nk.dense_backward(grad_a, x, w, a, "sigmoid", need_input_grad=False)
    >>> gx is None
    True
    """
    dense = _dispatch.dense()
    grad_a = v.float_array(grad_a, "grad_a")
    x = v.float_array(x, "x")
    w = v.float_array(w, "w")
    named = [("grad_a", grad_a), ("x", x), ("w", w)]
    if a is not None:
        a = v.float_array(a, "a")
        named.append(("a", a))
    v.same_dtype(*named)
    dtype = x.dtype
    g = _activation_code(activation)
    x = _blas_matrix(x, "x")
    w = _blas_matrix(w, "w")
    _dense_shapes(x, w)
    (n, n_in), n_out = x.shape, w.shape[0]
    if grad_a.shape != (n, n_out):
        raise ValueError(f"grad_a must have shape (N, out) = ({n}, {n_out}) for x {x.shape} "
                         f"and w {w.shape}, got grad_a {grad_a.shape}")
    if a is None and activation is not None:
        raise ValueError(f"activation {activation!r} needs the layer output a")
    if a is not None:
        v.same_shape("grad_a", grad_a, "a", a)
    grad_a = _blas_matrix(grad_a, "grad_a")
    # the identity's derivative needs no a; any other reads it in either order
    a = None if g == dense.ACTIVATIONS[None] else _blas_matrix(a, "a")

    if out is None:
        out = (None, None, None)
    elif not isinstance(out, (tuple, list)) or len(out) != 3:
        raise ValueError("out must be None or a (grad_w, grad_b, grad_x) triple of arrays "
                         f"or None, got {type(out).__name__}"
                         + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
    # a fresh result starts from zero when it accumulates
    fresh = np.zeros if accumulate else np.empty
    results = []
    for buffer, shape, name in ((out[0], (n_out, n_in), "out[0] (grad_w)"),
                                (out[1], (n_out,), "out[1] (grad_b)"),
                                (out[2], (n, n_in), "out[2] (grad_x)")):
        if len(results) == 2 and not need_input_grad:
            results.append(None)
        elif buffer is None:
            results.append(fresh(shape, dtype))
        else:
            results.append(v.output(buffer, shape, dtype, name))
    grad_w, grad_b, grad_x = results
    inputs = (grad_a, x, w, a)
    work = [None if r is None else
            _work_array(r, inputs + tuple(o for o in results if o is not r), accumulate)
            for r in results]
    scratch = _scratch_memory(dense.scratch_bytes(g, grad_a))
    dense.backward(g, grad_a, x, w, a, work[0], work[1], work[2], scratch, accumulate)
    for result, where in zip(results, work):
        if where is not result:
            result[...] = where
    return grad_w, grad_b, grad_x
