"""Plain NumPy reference implementations of the nnkernels API.

Every function here has the name, signature, defaults and results of its
compiled counterpart and is written straight from the equations
(docs/equations.md), for clarity first, as vectorised NumPy (no Python
loop over rows). It is the baseline that the tests and the benchmarks
compare the kernels against.

All arithmetic is done in the dtype of the inputs, as a NumPy user writing
these formulas would: float32 input is computed in float32 throughout (no
float64 temporaries, constants or scalars; NumPy's reductions sum float32
pairwise), float64 in float64. So a float32 result has float32 rounding
errors, a few ulp of the values in play, and the float32 timings are those
of honest float32 NumPy code. ``out=`` buffers are only written after the
whole result is known, so any ``out`` may alias any input.

For ``reduction="none"`` a loss returns the per-row (cross-entropy) or
per-element loss, and the gradient of its sum, i.e. every term with an
upstream gradient of one.
"""

from __future__ import annotations   # signatures show the aliases' names

import numbers

import numpy as np

from ._typing import (Activation, ArrayLike, FloatArray, FloatArrayLike, Loss, Optional,
                      Reduction, SupportsIndex)

__all__ = [
    "sigmoid",
    "relu",
    "sigmoid_backward",
    "tanh_backward",
    "relu_backward",
    "softmax",
    "log_softmax",
    "softmax_backward",
    "softmax_cross_entropy",
    "softmax_cross_entropy_backward",
    "sigmoid_binary_cross_entropy",
    "binary_cross_entropy",
    "mse",
    "dense_forward",
    "dense_backward",
]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_REDUCTIONS = ("mean", "sum", "none")
_ACTIVATIONS = (None, "sigmoid", "tanh", "relu")


# --------------------------------------------------------------- validation
def _float_array(name, value):
    """Return ``value`` as a float32 or float64 ndarray, else TypeError
    (booleans are not numbers here; a masked array's mask is not dropped)."""
    if isinstance(value, np.ma.MaskedArray):
        raise TypeError(f"{name} is a numpy.ma.MaskedArray; pass {name}.filled(value)")
    array = np.asarray(value)
    if not isinstance(value, np.ndarray) and array.dtype.kind in "iu":
        array = array.astype(np.float64)    # a list of numbers: float64, as NumPy computes
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


# -------------------------------------------------------------- activations
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


# ----------------------------------------------------------- softmax family
def _softmax_input(z, axis, out):
    z = _float_array("z", z)
    _check_ndim("z", z, (1, 2))
    axis = _normalize_axis(axis, z.ndim)
    _check_out(out, z.shape, z.dtype)
    return z, axis


def _shifted(z, axis):
    """z - max(z) along ``axis``, so that exp() cannot overflow."""
    # initial=-inf gives empty rows a maximum instead of an error; a row of
    # -inf (or with a NaN) becomes NaN, as in PyTorch.
    return z - np.max(z, axis=axis, keepdims=True, initial=-np.inf)


def softmax(z: FloatArrayLike, axis: SupportsIndex = -1,
            out: Optional[FloatArray] = None) -> FloatArray:
    """p_j = e^(z_j - max) / sum_k e^(z_k - max) along ``axis``."""
    z, axis = _softmax_input(z, axis, out)
    with np.errstate(invalid="ignore"):  # inf - inf in rows holding +-inf
        exp_shifted = np.exp(_shifted(z, axis))
        p = exp_shifted / np.sum(exp_shifted, axis=axis, keepdims=True)
    return _store(p, z.dtype, out)


def log_softmax(z: FloatArrayLike, axis: SupportsIndex = -1,
                out: Optional[FloatArray] = None) -> FloatArray:
    """log p_j = z_j - max - log sum_k e^(z_k - max) along ``axis``."""
    z, axis = _softmax_input(z, axis, out)
    with np.errstate(invalid="ignore"):
        shifted = _shifted(z, axis)
        log_p = shifted - np.log(np.sum(np.exp(shifted), axis=axis,
                                        keepdims=True))
    return _store(log_p, z.dtype, out)


def softmax_backward(grad: FloatArrayLike, p: FloatArrayLike, axis: SupportsIndex = -1,
                     out: Optional[FloatArray] = None) -> FloatArray:
    """p * (grad - sum_axis grad * p): the softmax Jacobian-vector product."""
    grad = _float_array("grad", grad)
    p = _float_array("p", p)
    dtype = _common_dtype(grad=grad, p=p)
    _check_ndim("p", p, (1, 2))
    _check_same_shape("grad", grad, "p", p)
    axis = _normalize_axis(axis, p.ndim)
    _check_out(out, p.shape, dtype)
    dot = np.sum(grad * p, axis=axis, keepdims=True)
    return _store(p * (grad - dot), dtype, out)


# ------------------------------------------------------ softmax cross-entropy
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
        weight = _float_array("weight", weight)
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


# ------------------------------------------------------ element-wise losses
def _elementwise_loss_inputs(input_name, x, target, reduction, out,
                             weight=None, pos_weight=None):
    """Validate the arguments of an element-wise loss; return them and the dtype."""
    x = _float_array(input_name, x)
    _check_ndim(input_name, x, (1, 2))
    target = _float_array("target", target)
    _check_same_shape(input_name, x, "target", target)
    n_columns = x.shape[-1]
    if weight is not None:
        weight = _float_array("weight", weight)
        try:    # any shape that broadcasts to the input's, as in PyTorch
            np.broadcast_to(weight, x.shape)
        except ValueError:
            raise ValueError(
                f"weight must broadcast to the shape of {input_name} {x.shape} "
                f"(e.g. that shape, or one value per column ({n_columns},)), "
                f"got weight {weight.shape}") from None
    if pos_weight is not None:
        pos_weight = _float_array("pos_weight", pos_weight)
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


# --------------------------------------------------------------- dense layer
def _check_dense_shapes(x, w):
    _check_ndim("x", x, (2,))
    _check_ndim("w", w, (2,))
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"x (N, in) and w (out, in) disagree on in_features: "
                         f"x {x.shape}, w {w.shape}")


def dense_forward(x: FloatArrayLike, w: FloatArrayLike, b: Optional[FloatArrayLike] = None,
                  activation: Activation = None,
                  out: Optional[FloatArray] = None) -> FloatArray:
    """a = g(x @ w.T + b) for a batch x (N, in) and weights w (out, in)."""
    x = _float_array("x", x)
    w = _float_array("w", w)
    b = None if b is None else _float_array("b", b)
    dtype = _common_dtype(x=x, w=w, b=b)
    _check_dense_shapes(x, w)
    if b is not None and b.shape != (w.shape[0],):
        raise ValueError(f"b must have shape ({w.shape[0]},) (out_features of "
                         f"w {w.shape}), got b {b.shape}")
    _check_activation(activation)
    _check_out(out, (x.shape[0], w.shape[0]), dtype)

    z = x @ w.T
    if b is not None:
        z += b
    if activation == "sigmoid":
        a = sigmoid(z)
    elif activation == "tanh":
        a = np.tanh(z)
    elif activation == "relu":
        a = relu(z)
    else:
        a = z
    return _store(a, dtype, out)


def dense_backward(grad_a: FloatArrayLike, x: FloatArrayLike, w: FloatArrayLike,
                   a: Optional[FloatArrayLike] = None, activation: Activation = None, *,
                   need_input_grad: bool = True, accumulate: bool = False,
                   out: Optional[tuple[Optional[FloatArray], Optional[FloatArray],
                                       Optional[FloatArray]]] = None,
                   ) -> tuple[FloatArray, FloatArray, Optional[FloatArray]]:
    """Gradients of a dense layer: (grad_w, grad_b, grad_x).

    grad_z = grad_a * g'(a), grad_w = grad_z.T @ x, grad_b = sum of grad_z
    over the batch, grad_x = grad_z @ w (None when ``need_input_grad`` is
    false). ``out`` is None or a (grad_w, grad_b, grad_x) triple of buffers,
    any of them None; with ``accumulate`` the gradients are added into them.
    The grad_x buffer is left alone when ``need_input_grad`` is false.
    """
    grad_a = _float_array("grad_a", grad_a)
    x = _float_array("x", x)
    w = _float_array("w", w)
    a = None if a is None else _float_array("a", a)
    dtype = _common_dtype(grad_a=grad_a, x=x, w=w, a=a)
    _check_dense_shapes(x, w)
    _check_activation(activation)
    n_samples, n_out = x.shape[0], w.shape[0]
    if grad_a.shape != (n_samples, n_out):
        raise ValueError(f"grad_a must have shape (N, out) = "
                         f"({n_samples}, {n_out}) for x {x.shape} and "
                         f"w {w.shape}, got grad_a {grad_a.shape}")
    if a is None and activation is not None:
        raise ValueError(f"activation {activation!r} needs the layer output a")
    if a is not None:
        _check_same_shape("grad_a", grad_a, "a", a)

    if out is None:
        out = (None, None, None)
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        raise ValueError("out must be None or a (grad_w, grad_b, grad_x) "
                         "triple of arrays or None")
    out_w, out_b, out_x = out
    _check_out(out_w, w.shape, dtype, name="out[0] (grad_w)")
    _check_out(out_b, (n_out,), dtype, name="out[1] (grad_b)")
    if need_input_grad:
        _check_out(out_x, x.shape, dtype, name="out[2] (grad_x)")

    if activation == "sigmoid":
        grad_z = sigmoid_backward(grad_a, a)
    elif activation == "tanh":
        grad_z = tanh_backward(grad_a, a)
    elif activation == "relu":
        grad_z = relu_backward(grad_a, a)
    else:
        grad_z = grad_a

    # All three results are known before any buffer is written, so that a
    # buffer may alias an input.
    grad_w = grad_z.T @ x
    grad_b = np.sum(grad_z, axis=0)
    grad_x = grad_z @ w if need_input_grad else None
    if accumulate:
        grad_w, grad_b, grad_x = (
            result if buffer is None or result is None else buffer + result
            for result, buffer in ((grad_w, out_w), (grad_b, out_b),
                                   (grad_x, out_x)))
    return (_store(grad_w, dtype, out_w), _store(grad_b, dtype, out_b),
            None if grad_x is None else _store(grad_x, dtype, out_x))
