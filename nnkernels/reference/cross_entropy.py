"""Softmax cross-entropy with PyTorch's options (NumPy reference)."""

from __future__ import annotations   # signatures show the aliases' names

import numbers

import numpy as np

from .._typing import (ArrayLike, FloatArray, FloatArrayLike, Loss, Optional, Reduction,
                       SupportsIndex)
from ._checks import (_check_ndim, _check_out, _check_reduction, _check_same_shape,
                      _common_dtype, _float_array, _normalize_axis, _store)
from .softmax import _shifted


def softmax_cross_entropy(logits: FloatArrayLike, target: ArrayLike, *,
                          axis: SupportsIndex = -1, reduction: Reduction = "mean",
                          weight: Optional[FloatArrayLike] = None,
                          ignore_index: SupportsIndex = -100,
                          label_smoothing: float = 0.0,
                          out: Optional[FloatArray] = None) -> tuple[Loss, FloatArray]:
    """Cross-entropy of softmax(logits) against ``target``: (loss, grad_logits).

    Same semantics as ``torch.nn.functional.cross_entropy``. ``target`` is
    either integer class indices, shape (N,), or class probabilities of the
    logits' shape. ``axis`` is the class axis of the 2-D ``logits``.
    """
    logits = _float_array("logits", logits)
    _check_ndim("logits", logits, (2,))
    class_axis = _normalize_axis(axis, 2)
    _check_reduction(reduction)
    if (not isinstance(label_smoothing, numbers.Real)
            or not 0.0 <= label_smoothing <= 1.0):
        raise ValueError(f"label_smoothing must be in [0, 1], "
                         f"got {label_smoothing!r}")
    if (not isinstance(ignore_index, numbers.Integral)
            or isinstance(ignore_index, bool)):
        raise TypeError(f"ignore_index must be an integer, got {ignore_index!r}")
    if not -2**63 <= ignore_index < 2**63:     # PyTorch's int64
        raise ValueError(f"ignore_index must fit in a signed 64-bit integer, "
                         f"got {ignore_index}")

    # Work on an (N, C) view: one sample per row, classes along the last axis.
    z = logits if class_axis == 1 else logits.T
    n_samples, n_classes = z.shape

    target = np.asarray(target)
    class_indices = target.dtype.kind in "iu"
    if class_indices:
        if target.shape != (n_samples,):
            raise ValueError(
                f"class-index target must have shape ({n_samples},) for logits "
                f"{logits.shape} with class axis {axis}, got target "
                f"{target.shape}")
    elif target.dtype.kind == "f":
        target = _float_array("target", target)
        _check_same_shape("logits", logits, "target", target)
        if ignore_index >= 0:  # PyTorch refuses it as well
            raise ValueError("ignore_index must be negative (unused) with "
                             f"class-probability targets, got {ignore_index}")
    else:
        raise TypeError("target must be integer class indices or float class "
                        f"probabilities, got dtype {target.dtype}")
    if weight is not None:
        weight = _float_array("weight", weight, like=logits.dtype)
        if weight.shape != (n_classes,):
            raise ValueError(f"weight must have shape ({n_classes},) (one value "
                             f"per class), got weight {weight.shape}")
    dtype = _common_dtype(logits=logits,
                          target=None if class_indices else target,
                          weight=weight)
    _check_out(out, logits.shape, dtype)

    eps = float(label_smoothing)
    # PyTorch's eps / C; with no classes there is nothing to spread it over
    eps_per_class = eps / n_classes if n_classes else 0.0
    # The fused softmax + cross-entropy, one row per sample: subtract
    # the row maximum, sum e^(z - max); then p = e^(z - max) / sum and
    # log p = (z - max) - log sum. A NaN (or +inf, or a row of -inf) makes
    # its whole row NaN, as in PyTorch.
    with np.errstate(invalid="ignore"):  # inf - inf in rows holding +-inf
        shifted = _shifted(z, axis=1)
        exp_shifted = np.exp(shifted)
    sum_exp = np.sum(exp_shifted, axis=1, keepdims=True)
    p = exp_shifted / sum_exp
    with np.errstate(divide="ignore"):   # log 0 = -inf: rows with no classes
        log_sum_exp = np.log(sum_exp)

    # The loss is a sum of terms (coefficient, per-row loss, gradient). A
    # row loss -sum_c y_c log p_c has the gradient p * sum_c y_c - y
    # (the textbook p - y, for y_c that sum to one), where y is the row's
    # weighted target. The terms are reduced one by one, as PyTorch does, so
    # that a zero "mean" denominator gives the same NaN; each term's
    # gradient function takes its factor `scale` (the coefficient, over the
    # denominator for "mean") so that it is formed in one go.
    if class_indices:
        ignored = target == ignore_index
        outside = ~ignored & ((target < 0) | (target >= n_classes))
        if outside.any():
            position = int(np.flatnonzero(outside)[0])
            raise ValueError(
                f"target[{position}] = {target[position]} is not a class index "
                f"in [0, {n_classes}) nor ignore_index ({ignore_index})")
        rows = np.arange(n_samples)
        t = np.where(ignored, 0, target).astype(np.intp)  # any valid index
        # weight of each row's class, 0 for the ignored rows
        if weight is None:
            w_t = (~ignored).astype(dtype)
        elif n_classes == 0:    # every row ignored; no weight to gather
            w_t = np.zeros(n_samples, dtype)
        else:
            w_t = np.where(ignored, 0.0, weight[t])
        if n_classes:
            log_p_t = shifted[rows, t] - log_sum_exp[:, 0]
        else:   # no classes: every row is ignored (checked above), nothing to gather
            log_p_t = np.zeros(n_samples, dtype)

        def nll_gradient(scale):
            # y = w_t one_hot(t), gathered and scattered instead of built
            scaled_w_t = scale * w_t
            grad = p * scaled_w_t[:, None]
            if n_classes:
                grad[rows, t] -= scaled_w_t
            return grad

        # loss_i = (1 - eps) w_t (-log p_t) + (eps / C) sum_c w_c (-log p_c)
        with np.errstate(invalid="ignore"):  # 0 * inf where w_t = 0, p_t = 0
            nll = w_t * -log_p_t
        terms = [(1.0 - eps, nll, nll_gradient)]
        if eps > 0.0:
            log_p = shifted - log_sum_exp
            if weight is None:  # y = (1, ..., 1)
                smoothing = -np.sum(log_p, axis=1)

                def smoothing_gradient(scale):
                    return p * (scale * n_classes) - scale
            else:  # y = w, the same for every row
                with np.errstate(invalid="ignore"):
                    smoothing = -np.sum(weight * log_p, axis=1)

                def smoothing_gradient(scale):
                    return p * (scale * np.sum(weight)) - scale * weight
            terms.append((eps_per_class, smoothing, smoothing_gradient))
        # "mean" divides by the summed weight of the rows not ignored.
        denominator = np.sum(w_t)
    else:
        ignored = np.zeros(n_samples, dtype=bool)
        # y' = (1 - eps) y + eps / C, loss_i = -sum_c w_c y'_c log p_c
        y = (1.0 - eps) * target + eps_per_class
        if class_axis == 0:
            y = y.T
        weighted_y = y if weight is None else weight * y
        log_p = shifted - log_sum_exp
        with np.errstate(invalid="ignore"):  # 0 * -inf where p_c = 0
            loss_rows = -np.sum(weighted_y * log_p, axis=1)

        def soft_gradient(scale):
            total = np.sum(weighted_y, axis=1, keepdims=True)
            return scale * (p * total - weighted_y)

        terms = [(1.0, loss_rows, soft_gradient)]
        # With probabilities, "mean" divides by N whatever the weights (an
        # array scalar, so that N = 0 gives NaN rather than an exception).
        denominator = dtype.type(n_samples)

    loss = grad = None
    # 0 / 0 = NaN when every row is ignored (or N = 0), as in PyTorch.
    with np.errstate(divide="ignore", invalid="ignore"):
        for coefficient, term_rows, term_gradient in terms:
            # Ignored rows add nothing, not even a NaN of their logits.
            term_rows = np.where(ignored, 0.0, term_rows)
            if reduction == "mean":
                term_loss = coefficient * (np.sum(term_rows) / denominator)
                term_grad = term_gradient(coefficient / denominator)
            else:
                term_loss = coefficient * (
                    np.sum(term_rows) if reduction == "sum" else term_rows)
                term_grad = term_gradient(dtype.type(coefficient))
            loss = term_loss if loss is None else loss + term_loss
            grad = term_grad if grad is None else grad + term_grad
    # Ignored rows have an exactly zero gradient, even when the mean is NaN
    # or their logits hold a NaN (PyTorch would show that NaN there).
    grad[ignored] = 0.0
    # a NumPy scalar of the input dtype, or the (N,) array
    assert loss.dtype == dtype, (loss.dtype, dtype)
    if class_axis == 0:
        grad = grad.T
    return loss, _store(grad, dtype, out)


def softmax_cross_entropy_backward(logits: FloatArrayLike, target: ArrayLike, *,
                                   axis: SupportsIndex = -1,
                                   reduction: Reduction = "mean",
                                   weight: Optional[FloatArrayLike] = None,
                                   ignore_index: SupportsIndex = -100,
                                   label_smoothing: float = 0.0,
                                   out: Optional[FloatArray] = None) -> FloatArray:
    """The gradient part of :func:`softmax_cross_entropy` alone."""
    return softmax_cross_entropy(
        logits, target, axis=axis, reduction=reduction, weight=weight,
        ignore_index=ignore_index, label_smoothing=label_smoothing,
        out=out)[1]
