"""Element-wise losses (sigmoid + BCE, BCE, MSE): validate, prepare, one
kernel call."""

from __future__ import annotations   # signatures show the aliases' names

import numpy as np

from . import _dispatch, _layout as layout, _runtime, _team
from . import _validation as v
from ._typing import (FloatArray, FloatArrayLike, Loss, Optional, Reduction)

_el = _dispatch.elementwise_losses
_THREADS_FROM = _runtime.THREAD_THRESHOLDS["rows"]


def _elementwise_loss(op, x, x_name, target, reduction, weight, pos_weight, out):
    x = v.float_array(x, x_name)
    target = v.float_array(target, "target", like=x.dtype)
    v.same_dtype((x_name, x), ("target", target))
    v.same_shape(x_name, x, "target", target)
    if x.ndim not in (1, 2):
        raise ValueError(f"{x_name} must be a 1-D or 2-D array, got shape {x.shape}")
    red = v.reduction_code(reduction)
    shape2 = (1, x.size) if x.ndim == 1 else x.shape
    cols = shape2[1]
    x2 = layout.c_contiguous(x).reshape(shape2)
    t2 = layout.c_contiguous(target).reshape(shape2)
    if op == _el.Op.BCE:
        v.probability(x2, x_name)

    w2, w_row_stride = None, 0
    if weight is None:
        w2 = np.ones(cols, x.dtype)
    else:
        weight = v.float_array(weight, "weight", like=x.dtype)
        v.same_dtype((x_name, x), ("weight", weight))
        try:
            full = np.broadcast_to(weight, x.shape)
        except ValueError:
            raise ValueError(f"weight of shape {weight.shape} does not broadcast "
                             f"to {x_name}'s shape {x.shape}") from None
        full = full.reshape(shape2)
        if full.strides[0] == 0 and full.shape[0] > 0:   # one row for every row: per column
            w2 = layout.c_contiguous(full[0])
        else:
            w2, w_row_stride = layout.c_contiguous(full), cols
    pw = np.ones(cols, x.dtype)
    if pos_weight is not None:
        pos_weight = v.float_array(pos_weight, "pos_weight", like=x.dtype)
        v.same_dtype((x_name, x), ("pos_weight", pos_weight))
        if pos_weight.shape != (cols,):
            raise ValueError(f"pos_weight must hold one value per column ({cols},), "
                             f"got shape {pos_weight.shape}")
        pw = layout.c_contiguous(pos_weight)

    grad = v.output(out, x.shape, x.dtype)
    work = grad
    if not (grad.flags.c_contiguous and grad.flags.aligned) or layout.overlaps(grad, x2, t2, w2, pw):
        work = np.empty(x.shape, x.dtype)
    loss_out = np.empty(x.shape, x.dtype) if red == v.REDUCTIONS["none"] else None
    total = _team.threaded_call(("loss", op), x2.size, _THREADS_FROM, _el.elementwise_loss,
                                op, x2, t2, w2, w_row_stride, pw, red, work.reshape(shape2),
                                None if loss_out is None else loss_out.reshape(shape2))
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
