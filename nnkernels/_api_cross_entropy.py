"""Fused softmax + cross-entropy, PyTorch's options: validate, prepare, one
kernel call."""

from __future__ import annotations   # signatures show the aliases' names

import numpy as np

from . import _dispatch, _layout as layout, _runtime, _team
from . import _validation as v
from ._typing import (ArrayLike, FloatArray, FloatArrayLike, Loss, Optional, Reduction, SupportsIndex)

INTP_MIN, INTP_MAX = int(np.iinfo(np.intp).min), int(np.iinfo(np.intp).max)
INTP_BYTES = np.dtype(np.intp).itemsize

_ce = _dispatch.cross_entropy
_THREADS_FROM = _runtime.THREAD_THRESHOLDS["rows"]


def _cross_entropy(logits, target, axis, reduction, weight, ignore_index,
                   label_smoothing, out):
    if (type(logits) is np.ndarray and logits.size < _THREADS_FROM and weight is None
            and type(axis) is int and (axis == -1 or axis == 1) and type(reduction) is str):
        # the common call: the kernel's entry checks it in C and runs it
        red = v.REDUCTIONS.get(reduction)
        if red is not None:
            result = _ce.cross_entropy_fast(logits, target, red, ignore_index,
                                            label_smoothing, out, _dispatch._num_threads)
            if result is not None:
                return result
    return _cross_entropy_checked(logits, target, axis, reduction, weight, ignore_index,
                                  label_smoothing, out)


def _cross_entropy_checked(logits, target, axis, reduction, weight, ignore_index,
                           label_smoothing, out):
    """Validate with messages; copy or use a temporary where the layout needs it."""
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
        weight = v.float_array(weight, "weight", like=logits.dtype)
        v.same_dtype(("logits", logits), ("weight", weight))
        if weight.shape != (n_classes,):
            raise ValueError(f"weight must have shape ({n_classes},), got {weight.shape}")
        weight = layout.c_contiguous(weight)

    grad = v.output(out, logits.shape, logits.dtype)
    if not layout.kernel_layout_ok(logits, target):
        logits, target = layout.c_contiguous(logits), layout.c_contiguous(target)
    work = grad
    # a fresh grad cannot overlap anything; a given one is checked
    if out is not None and (not layout.kernel_layout_ok(grad)
                            or layout.overlaps(grad, logits, target, weight)):
        work = np.empty(logits.shape, logits.dtype)
    loss_rows = np.empty(n_rows, logits.dtype) if red == v.REDUCTIONS["none"] else None
    total = _team.threaded_call(("cross_entropy", target.dtype.kind), logits.size,
                                _THREADS_FROM, _ce.cross_entropy, logits, target, weight,
                                ignore_index, eps, red, work, loss_rows, ax)
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
