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

import threading

import numpy as np

from . import _dispatch
from . import _validation as v

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


def sigmoid(z, out=None):
    """a = 1 / (1 + e**-z), without overflow for any z."""
    return _map(_act.Op.SIGMOID, z, "z", None, None, out)


def relu(z, out=None):
    """a = max(0, z)."""
    return _map(_act.Op.RELU, z, "z", None, None, out)


def sigmoid_backward(grad, a, out=None):
    """grad ⊙ a ⊙ (1 - a), from the sigmoid's output a."""
    return _map(_act.Op.SIGMOID_BACKWARD, grad, "grad", a, "a", out)


def tanh_backward(grad, a, out=None):
    """grad ⊙ (1 - a²), from the tanh's output a."""
    return _map(_act.Op.TANH_BACKWARD, grad, "grad", a, "a", out)


def relu_backward(grad, a, out=None):
    """grad where a > 0, else 0 (PyTorch's threshold_backward rule)."""
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


def softmax(z, axis=-1, out=None):
    """p = e**z / sum(e**z) along `axis` (max-subtracted)."""
    return _softmax_family(_sm.Op.SOFTMAX, z, "z", None, None, axis, out)


def log_softmax(z, axis=-1, out=None):
    """log p = z - max - log sum e**(z - max) along `axis`."""
    return _softmax_family(_sm.Op.LOG_SOFTMAX, z, "z", None, None, axis, out)


def softmax_backward(grad, p, axis=-1, out=None):
    """p ⊙ (grad - sum_axis grad ⊙ p): the softmax's Jacobian-vector product."""
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


def softmax_cross_entropy(logits, target, *, axis=-1, reduction="mean", weight=None,
                          ignore_index=-100, label_smoothing=0.0, out=None):
    """Fused softmax + cross-entropy: (loss, d loss / d logits), as
    torch.nn.functional.cross_entropy with the same arguments."""
    return _cross_entropy(logits, target, axis, reduction, weight, ignore_index,
                          label_smoothing, out)


def softmax_cross_entropy_backward(logits, target, *, axis=-1, reduction="mean",
                                   weight=None, ignore_index=-100, label_smoothing=0.0,
                                   out=None):
    """The gradient half of softmax_cross_entropy (same single pass)."""
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


def sigmoid_binary_cross_entropy(logits, target, *, reduction="mean", weight=None,
                                 pos_weight=None, out=None):
    """sigmoid + binary cross-entropy fused: (loss, d loss / d logits), as
    torch.nn.functional.binary_cross_entropy_with_logits."""
    return _elementwise_loss(_el.Op.BCE_WITH_LOGITS, logits, "logits", target, reduction,
                             weight, pos_weight, out)


def binary_cross_entropy(probs, target, *, reduction="mean", weight=None, out=None):
    """Binary cross-entropy on probabilities: (loss, d loss / d probs), as
    torch.nn.functional.binary_cross_entropy (logs clamped at -100)."""
    return _elementwise_loss(_el.Op.BCE, probs, "probs", target, reduction, weight, None, out)


def mse(pred, target, *, reduction="mean", out=None):
    """Mean squared error: (loss, d loss / d pred), as torch.nn.functional.mse_loss."""
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


def dense_forward(x, w, b=None, activation=None, out=None):
    """a = g(x @ w.T + b): the product on BLAS, bias and activation in one
    pass over its output."""
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


def dense_backward(grad_a, x, w, a=None, activation=None, *, need_input_grad=True,
                   accumulate=False, out=None):
    """(grad_w, grad_b, grad_x) of a dense layer: grad_z = grad_a ⊙ g'(a) and
    grad_b = Σ grad_z in one pass over grad_a, then grad_w = grad_zᵀ x and
    grad_x = grad_z w on BLAS (beta = 1 with `accumulate`)."""
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
