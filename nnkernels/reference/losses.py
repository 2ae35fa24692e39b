"""Element-wise losses: sigmoid + BCE, BCE, MSE (NumPy reference)."""

from __future__ import annotations   # signatures show the aliases' names

import numpy as np

from .._typing import FloatArray, FloatArrayLike, Loss, Optional, Reduction
from ._checks import (_check_ndim, _check_out, _check_reduction, _check_same_shape,
                      _common_dtype, _float_array, _store)
from .activations import sigmoid


def _elementwise_loss_inputs(input_name, x, target, reduction, out,
                             weight=None, pos_weight=None):
    """Validate the arguments of an element-wise loss; return them and the dtype."""
    x = _float_array(input_name, x)
    _check_ndim(input_name, x, (1, 2))
    target = _float_array("target", target, like=x.dtype)
    _check_same_shape(input_name, x, "target", target)
    n_columns = x.shape[-1]
    if weight is not None:
        weight = _float_array("weight", weight, like=x.dtype)
        try:    # any shape that broadcasts to the input's, as in PyTorch
            np.broadcast_to(weight, x.shape)
        except ValueError:
            raise ValueError(
                f"weight must broadcast to the shape of {input_name} {x.shape} "
                f"(e.g. that shape, or one value per column ({n_columns},)), "
                f"got weight {weight.shape}") from None
    if pos_weight is not None:
        pos_weight = _float_array("pos_weight", pos_weight, like=x.dtype)
        if pos_weight.shape != (n_columns,):
            raise ValueError(
                f"pos_weight must have one value per column ({n_columns},) of "
                f"{input_name} {x.shape}, got pos_weight {pos_weight.shape}")
    dtype = _common_dtype(**{input_name: x}, target=target, weight=weight,
                          pos_weight=pos_weight)
    _check_reduction(reduction)
    _check_out(out, x.shape, dtype)
    return x, target, weight, pos_weight, dtype


def _reduce_elementwise(loss, grad, reduction, dtype, out):
    """Apply ``reduction`` to per-element losses and their gradients."""
    if reduction == "mean":
        # "mean" divides by the number of elements (NaN when there are none).
        with np.errstate(invalid="ignore"):
            loss = np.sum(loss) / loss.size
        grad = grad / max(grad.size, 1)
    elif reduction == "sum":
        loss = np.sum(loss)
    # a NumPy scalar of the input dtype, or the per-element array
    assert loss.dtype == dtype, (loss.dtype, dtype)
    return loss, _store(grad, dtype, out)


def sigmoid_binary_cross_entropy(logits: FloatArrayLike, target: FloatArrayLike, *,
                                 reduction: Reduction = "mean",
                                 weight: Optional[FloatArrayLike] = None,
                                 pos_weight: Optional[FloatArrayLike] = None,
                                 out: Optional[FloatArray] = None) -> tuple[Loss, FloatArray]:
    """Binary cross-entropy of sigmoid(logits): (loss, grad_logits).

    Same semantics as ``torch.nn.functional.binary_cross_entropy_with_logits``:
    L = -w [pw y log s + (1 - y) log(1 - s)] with s = sigmoid(z), and
    dL/dz = w [(1 - y) s - pw y (1 - s)], which is w (s - y) for pw = 1.
    """
    z, y, w, pw, dtype = _elementwise_loss_inputs(
        "logits", logits, target, reduction, out, weight, pos_weight)
    if w is None:
        w = 1.0
    if pw is None:
        pw = 1.0
    # With log s = -softplus(-z) and log(1 - s) = -z - softplus(-z), the loss
    # is w [(1 - y) z + (1 + (pw - 1) y) softplus(-z)]: PyTorch's arrangement,
    # kept so that infinite logits give PyTorch's results (NaN for a target
    # strictly between 0 and 1).  softplus by logaddexp, which cannot overflow.
    softplus_minus_z = np.logaddexp(0.0, -z)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf, 0 * inf
        loss = w * ((1.0 - y) * z + (1.0 + (pw - 1.0) * y) * softplus_minus_z)
    # 1 - s is computed as sigmoid(-z): exact where s rounds to 1.
    s = sigmoid(z)
    one_minus_s = sigmoid(-z)
    grad = w * ((1.0 - y) * s - pw * y * one_minus_s)
    return _reduce_elementwise(loss, grad, reduction, dtype, out)


def binary_cross_entropy(probs: FloatArrayLike, target: FloatArrayLike, *,
                         reduction: Reduction = "mean",
                         weight: Optional[FloatArrayLike] = None,
                         out: Optional[FloatArray] = None) -> tuple[Loss, FloatArray]:
    """Binary cross-entropy of probabilities: (loss, grad_probs).

    Same semantics as ``torch.nn.functional.binary_cross_entropy``:
    L = -w [y log p + (1 - y) log(1 - p)] with each log clamped at -100, and
    dL/dp = w (p - y) / max(p (1 - p), 1e-12).
    """
    p, y, w, _, dtype = _elementwise_loss_inputs(
        "probs", probs, target, reduction, out, weight)
    # NaN compares false here and propagates instead (the API's rule for
    # non-finite values); PyTorch would raise for it.
    outside = (p < 0.0) | (p > 1.0)
    if outside.any():
        position = tuple(int(i) for i in np.argwhere(outside)[0])
        where = ", ".join(map(str, position))
        raise ValueError(f"probs must lie in [0, 1], got probs[{where}] = "
                         f"{p[position]}")
    if w is None:
        w = 1.0
    # The clamp keeps log(0) = -inf out, so that 0 * log(0) is 0, not NaN.
    with np.errstate(divide="ignore"):
        log_p = np.maximum(np.log(p), -100.0)
        log_one_minus_p = np.maximum(np.log1p(-p), -100.0)
    loss = -w * (y * log_p + (1.0 - y) * log_one_minus_p)
    grad = w * (p - y) / np.maximum(p * (1.0 - p), 1e-12)
    return _reduce_elementwise(loss, grad, reduction, dtype, out)


def mse(pred: FloatArrayLike, target: FloatArrayLike, *, reduction: Reduction = "mean",
        out: Optional[FloatArray] = None) -> tuple[Loss, FloatArray]:
    """Squared error (pred - target)**2: (loss, grad_pred), grad = 2 (pred - target).

    Same semantics as ``torch.nn.functional.mse_loss``.
    """
    y_hat, y, _, _, dtype = _elementwise_loss_inputs(
        "pred", pred, target, reduction, out)
    diff = y_hat - y
    return _reduce_elementwise(diff * diff, 2.0 * diff, reduction, dtype, out)
