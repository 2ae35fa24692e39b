"""Regression tests: one per bug found and fixed, each named for the bug.

Found by the fuzz suite (test_fuzz.py), its long runs, the sanitizer build
and by hand; the comment above each says what was wrong.  They call the
kernels directly, so each stays a check of its own however the fuzz
strategies change.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import nnkernels as nk
import nnkernels.reference as ref

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
FLOAT_DTYPES = (F64, F32)


# Cases the fuzz suite found where nnkernels and the reference (or the
# contract) disagreed, each fixed and kept here as a direct regression test
# (the reason line says what was wrong).

# found: byte-swapped float arrays pass float_array (dtype.type check) and the kernels
#   read them as native: garbage
@pytest.mark.parametrize("fname", ["sigmoid", "softmax", "mse"])
def test_regression_byteswapped_floats(fname):
    z = np.array([[0.0, 1.0, 2.0]], dtype=">f8")
    args = (z,) if fname != "mse" else (z, z.copy())
    with pytest.raises(TypeError):
        ref_result = getattr(ref, fname)(*args)
    # the contract: float32/float64 arrays only -> TypeError, like the reference
    with pytest.raises(TypeError, match="z|pred"):
        getattr(nk, fname)(*args)


# found: ignore_index >= 0 with probability targets: the reference and torch refuse it,
#   nnkernels computes
def test_regression_ignore_index_with_probability_targets():
    z = np.zeros((3, 4))
    t = np.full((3, 4), 0.25)
    with pytest.raises(ValueError):
        ref.softmax_cross_entropy(z, t, ignore_index=0)
    with pytest.raises(ValueError, match="ignore_index"):
        nk.softmax_cross_entropy(z, t, ignore_index=0)


# found: nnkernels broadcasts any weight shape ((N, 1), (1, C), ()), the reference
#   accepts only (N, C) or (C,)
@pytest.mark.parametrize("wshape", [(3, 1), (1, 4), ()])
def test_regression_weight_broadcast(wshape):
    p, t, w = np.full((3, 4), 0.3), np.full((3, 4), 0.5), np.full(wshape, 2.0)
    expected = ref.binary_cross_entropy(p, t, weight=np.broadcast_to(w, (3, 4)))
    try:
        r = ref.binary_cross_entropy(p, t, weight=w)
    except ValueError:
        r = None
    got = nk.binary_cross_entropy(p, t, weight=w)
    assert r is not None, "the reference refuses a weight nnkernels accepts"
    np.testing.assert_allclose(got[1], expected[1])


# found: Python lists of ints/bools: nnkernels converted them to float64, the reference
#   raised TypeError
def test_regression_integer_lists():
    # both turn a Python list of numbers into float64, as NumPy computes
    got, want = nk.sigmoid([1, 2, 3]), ref.sigmoid([1, 2, 3])
    assert got.dtype == want.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-15)
    # booleans are not numbers, as a list, a scalar or an array; nor is an integer ndarray
    for values in ([True, False], True, np.array([True]), np.array([1, 2, 3])):
        for module in (nk, ref):
            with pytest.raises(TypeError, match="z"):
                module.sigmoid(values)


# found: axis=True: nnkernels takes it as 1, the reference raises TypeError (bool is not
#   an axis)
def test_regression_bool_axis():
    z = np.zeros((2, 3))
    with pytest.raises(TypeError):
        ref.softmax(z, axis=True)
    with pytest.raises(TypeError, match="axis"):
        nk.softmax(z, axis=True)


# found: set_num_threads accepts any n >= 1: 2**31 makes every later kernel call raise
#   OverflowError, 10**6 segfaults libgomp
@pytest.mark.parametrize("n", ["2**31", "10**6"])
def test_regression_huge_thread_count(n):
    # in a child process: the crash must not take the suite with it
    code = (f"import numpy as np, nnkernels as nk\n"
            f"try:\n    nk.set_num_threads({n})\nexcept ValueError:\n    raise SystemExit(0)\n"
            f"nk.sigmoid(np.ones(100000))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert r.returncode == 0, (r.returncode, r.stderr.decode()[-300:])


# found: bool is refused by the isinstance check but then accepted through __index__:
#   set_num_threads(True) sets 1
def test_regression_set_num_threads_bool():
    old = nk.get_num_threads()
    try:
        with pytest.raises(TypeError, match="n"):
            nk.set_num_threads(True)
    finally:
        nk.set_num_threads(old)


# found: the first dense_backward of a thread with a 0-byte scratch gets an unaligned
#   empty slice: 'internal error'
def test_regression_dense_backward_empty_first_call():
    code = ("import numpy as np, nnkernels as nk\n"
            "for _ in range(20):\n"
            "    import threading\n"
            "    err = []\n"
            "    def f():\n"
            "        try:\n"
            "            nk.dense_backward(np.zeros((0, 0)), np.zeros((0, 0)), np.zeros((0, 0)))\n"
            "        except Exception as e:\n"
            "            err.append(e)\n"
            "    t = threading.Thread(target=f); t.start(); t.join()\n"
            "    assert not err, err\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()[-400:]


# found: reference.softmax_cross_entropy indexes shifted[rows, t] with 0 classes:
#   IndexError (nnkernels returns)
def test_regression_zero_classes_all_ignored():
    z, t = np.zeros((2, 0)), np.array([-100, -100])
    got = nk.softmax_cross_entropy(z, t, reduction="sum")
    exp = ref.softmax_cross_entropy(z, t, reduction="sum")
    assert got[1].shape == exp[1].shape == (2, 0)


# found: reference: eps / n_classes with 0 classes raises ZeroDivisionError (nnkernels
#   returns)
def test_regression_zero_classes_label_smoothing():
    z, t = np.zeros((0, 0)), np.zeros((0, 0))
    nk.softmax_cross_entropy(z, t)
    ref.softmax_cross_entropy(z, t)    # eps / n_classes, even for eps = 0


# found: _elementwise_loss takes full[0] of a weight broadcast to 0 rows:
#   IndexError
@pytest.mark.parametrize("wshape", [(0, 3), (3,)])
def test_regression_weight_with_zero_rows(wshape):
    p = np.zeros((0, 3))
    exp = ref.binary_cross_entropy(p, p, weight=np.zeros(wshape))
    got = nk.binary_cross_entropy(p, p, weight=np.zeros(wshape))
    assert got[1].shape == exp[1].shape


# found: label_smoothing='0.1' (a str) is parsed by float() in
#   _validation.label_smoothing_value; the reference refuses
def test_regression_label_smoothing_string():
    z, t = np.zeros((2, 3)), np.array([0, 1])
    with pytest.raises(ValueError):
        ref.softmax_cross_entropy(z, t, label_smoothing="0.1")
    with pytest.raises((TypeError, ValueError), match="label_smoothing"):
        nk.softmax_cross_entropy(z, t, label_smoothing="0.1")


# found: sigmoid_binary_cross_entropy, logit -inf and a target not 0/1: torch and
#   nnkernels give NaN, the reference inf
def test_regression_sbce_infinite_logits():
    z, t = np.array([-np.inf, np.inf]), np.array([0.5, 0.5])
    got = nk.sigmoid_binary_cross_entropy(z, t, reduction="none")[0]
    with np.errstate(all="ignore"):
        exp = ref.sigmoid_binary_cross_entropy(z, t, reduction="none")[0]
    np.testing.assert_array_equal(got, exp)


# found (UBSan, CI's sanitizer step): an array 1 byte off its dtype's alignment
#   reached the kernels, which then read and wrote misaligned doubles (undefined
#   behaviour; a fault where the compiler uses aligned vector loads).  Every
#   input and out= below is misaligned; the kernels' entry points now refuse a
#   misaligned array with an "internal error", so a result here also proves the
#   Python layer copied each one first.
def _misaligned(arr):
    arr = np.asarray(arr)
    raw = np.empty(arr.nbytes + 1, np.uint8)
    view = raw[1:].view(arr.dtype).reshape(arr.shape)
    view[...] = arr
    assert arr.ndim == 0 or arr.size <= 1 or not view.flags.aligned
    return view


def _misaligned_calls(rng, dtype):
    z = rng.standard_normal((5, 7)).astype(dtype)
    a = rng.uniform(0.05, 0.95, (5, 7)).astype(dtype)
    t = rng.uniform(0, 1, (5, 7)).astype(dtype)
    soft = nk.softmax(rng.standard_normal((5, 7)).astype(dtype))
    labels = rng.integers(0, 7, 5)
    w7, w5 = rng.uniform(0.5, 2, 7).astype(dtype), rng.uniform(0.5, 2, 5).astype(dtype)
    x, w = rng.standard_normal((5, 3)).astype(dtype), rng.standard_normal((7, 3)).astype(dtype)
    like = np.empty((5, 7), dtype)
    calls = {   # name -> (args, kwargs, out= arrays or None)
        "sigmoid": ((z,), {}, like),
        "relu": ((z,), {}, like),
        "sigmoid_backward": ((z, a), {}, like),
        "tanh_backward": ((z, a), {}, like),
        "relu_backward": ((z, z), {}, like),
        "softmax": ((z,), {}, like),
        "log_softmax": ((z.T,), {"axis": 0}, like.T),
        "softmax_backward": ((z, soft), {}, like),
        "softmax_cross_entropy": ((z, labels), {"weight": w7, "label_smoothing": 0.1}, like),
        "softmax_cross_entropy_backward": ((z, soft), {"weight": w7}, like),
        "sigmoid_binary_cross_entropy": ((z, t), {"weight": w7, "pos_weight": w7,
                                                  "reduction": "none"}, like),
        "binary_cross_entropy": ((a, t), {"weight": w7}, like),
        "mse": ((z, t), {"reduction": "sum"}, like),
        "dense_forward": ((x, w, w7, "tanh"), {}, like),
        "dense_backward": ((z, x, w, a, "sigmoid"), {},
                           (np.empty((7, 3), dtype), np.empty(7, dtype), np.empty((5, 3), dtype))),
    }
    return calls


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("fname", sorted(_misaligned_calls(np.random.default_rng(0), F64)))
def test_regression_misaligned_arrays(fname, dtype):
    args, kw, out = _misaligned_calls(np.random.default_rng(7), dtype)[fname]
    expected = getattr(nk, fname)(*args, **kw)
    labels_too = fname == "softmax_cross_entropy"
    bad_args = [_misaligned(v) if isinstance(v, np.ndarray) and (v.dtype.kind == "f" or labels_too)
                else v for v in args]
    bad_kw = {k: _misaligned(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    bad_out = (tuple(_misaligned(o) for o in out) if isinstance(out, tuple)
               else _misaligned(out.T).T if fname == "log_softmax" else _misaligned(out))
    got = getattr(nk, fname)(*bad_args, **bad_kw, out=bad_out)
    flat = lambda r: [np.asarray(x) for x in (r if isinstance(r, tuple) else (r,))]
    for g, e in zip(flat(got), flat(expected)):
        np.testing.assert_allclose(g, e, rtol=1e-6 if dtype == F32 else 1e-13, atol=0)
    result_out = got[1] if fname in ("softmax_cross_entropy", "sigmoid_binary_cross_entropy",
                                     "binary_cross_entropy", "mse") else got
    if isinstance(bad_out, tuple):
        assert all(r is o for r, o in zip(result_out, bad_out))
    else:
        assert result_out is bad_out


def test_regression_misaligned_array_refused_at_the_kernel_entry():
    from nnkernels import _dispatch
    z = _misaligned(np.arange(12.0).reshape(3, 4))
    with pytest.raises(ValueError, match="internal error, a misaligned array"):
        _dispatch.softmax.softmax_family(_dispatch.softmax.Op.SOFTMAX, z, None,
                                                np.empty((3, 4)), 1, 1)
    x = np.ones((2, 4))
    with pytest.raises(ValueError, match="internal error, a misaligned array"):
        _dispatch.dense().forward(0, x, z, None, _misaligned(np.empty((2, 3))))
    # the element-wise fast path declines (returns False) and leaves the work
    # to the checked path, which copies
    assert _dispatch.activations.apply(_dispatch.activations.Op.SIGMOID, z, None,
                                       np.empty((3, 4)), 0.0, 0.0, 1) is False


# found (long run): an infinite class weight on a row's max class with label
#   smoothing: the loss's sum_j q_j (z_j - max) took inf * 0 = NaN; PyTorch and
#   the reference sum -q_j log p_j term by term and give inf
@pytest.mark.parametrize("target", ["index", "probs"])
def test_regression_infinite_weight_at_max_class(target):
    z = np.array([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    t = np.array([1, 2]) if target == "index" else ref.softmax(np.zeros((2, 3)))
    w = np.array([np.inf, 1.0, 0.5])
    with np.errstate(all="ignore"):
        exp = ref.softmax_cross_entropy(z, t, weight=w, label_smoothing=0.1, reduction="none")
    got = nk.softmax_cross_entropy(z, t, weight=w, label_smoothing=0.1, reduction="none")
    np.testing.assert_array_equal(got[0], exp[0])      # [inf, inf]
    assert np.isinf(got[0][0])
    np.testing.assert_array_equal(np.isnan(got[1]), np.isnan(exp[1]))


# found (long run): without smoothing, a subnormal weight sum makes "mean"'s
#   1/denominator inf, and the kernel's smoothing term (inf * eps/C, eps = 0) put
#   NaN in every gradient element; PyTorch and the reference give [inf, nan]
def test_regression_overflowing_mean_scale_without_smoothing():
    z, t, w = np.array([[-1.36, -0.42]]), np.array([1]), np.array([1e4, 5e-324])
    with np.errstate(all="ignore"):
        exp = ref.softmax_cross_entropy(z, t, weight=w)
    got = nk.softmax_cross_entropy(z, t, weight=w)
    np.testing.assert_array_equal(got[1], exp[1])
    assert np.isinf(got[1][0, 0])


# found (long run, with pos_weight = inf): the kernel's gradient
#   (1 - y) - (1 + (pw - 1) y) σ(-z) differs from PyTorch's where pw or the
#   weight is infinite, and rounds σ(z) away for z << 0 (1 - σ(-z) = 0); it is
#   now (1 - y) σ(z) - pw y σ(-z), each tail exact
def test_regression_sbce_gradient_tails():
    z, y = np.array([-100.0, -30.0, 100.0]), np.array([0.0, 0.0, 1.0])
    got = nk.sigmoid_binary_cross_entropy(z, y, reduction="sum")[1]
    np.testing.assert_allclose(got, [1 / (1 + np.exp(100.0)), 1 / (1 + np.exp(30.0)),
                                     -1 / (1 + np.exp(100.0))], rtol=1e-14)
    pw = np.array([np.inf, np.inf, np.inf])
    y = np.array([0.0, 0.5, 1.0])
    z = np.array([1.0, 1.0, 1.0])
    with np.errstate(all="ignore"):
        exp = ref.sigmoid_binary_cross_entropy(z, y, pos_weight=pw, reduction="none")[1]
    got = nk.sigmoid_binary_cross_entropy(z, y, pos_weight=pw, reduction="none")[1]
    np.testing.assert_array_equal(got, exp)          # [nan, -inf, -inf]


# found (long run): "mean" scales the gradient by 1/n; the kernel formed
#   scale * w first, which underflows to -0 for w = -5e-324: -0 * -inf gave NaN
#   where the reference's w * grad / n is inf, and -0 * -1e12 gave 0 where it
#   is 2.5e-312; the scale is now applied last
@pytest.mark.parametrize("fname, args, kw, first", [
    ("sigmoid_binary_cross_entropy", ([[-2.43, 1.0]], [[0.66, 0.5]]),
     {"pos_weight": np.array([np.inf, 1.0])}, np.inf),
    ("binary_cross_entropy", ([[0.0, 0.5]], [[1.0, 0.5]]), {}, 5e-324 * 1e12 / 2),
])
def test_regression_scale_after_weight(fname, args, kw, first):
    args = tuple(np.array(a) for a in args)
    kw = dict(kw, weight=np.array([[-5e-324, 1.0]]))
    with np.errstate(all="ignore"):
        exp = getattr(ref, fname)(*args, **kw)[1]
    got = getattr(nk, fname)(*args, **kw)[1]
    np.testing.assert_allclose(got, exp, rtol=1e-15)
    assert got[0, 0] == pytest.approx(first, rel=1e-3, abs=0)


# found (long run): sigmoid's g'(a) = a (1 - a) was formed before the product
#   with grad, and for a float32 a far outside [0, 1] it overflowed
#   (a = 1e20: -1e40 = -inf) where the reference's (grad a)(1 - a) is -1e20
def test_regression_sigmoid_grad_order():
    grad = np.array([[1e-20, 0.5]], dtype=F32)
    a = np.array([[1e20, 0.25]], dtype=F32)
    exp = ref.sigmoid_backward(grad, a)
    assert np.isfinite(exp).all()
    np.testing.assert_array_equal(nk.sigmoid_backward(grad, a), exp)
    x, w = np.ones((1, 3), dtype=F32), np.ones((2, 3), dtype=F32)
    got = nk.dense_backward(grad, x, w, a, "sigmoid")
    for g, e in zip(got, ref.dense_backward(grad, x, w, a, "sigmoid")):
        np.testing.assert_allclose(g, e, rtol=1e-6)


# found: a Python-list weight was float64 and could never be used with float32
#   inputs (a dtype-mismatch TypeError); now a list takes the input's dtype
@pytest.mark.parametrize("module", [nk, ref], ids=["nnkernels", "reference"])
def test_regression_list_weight_with_float32(module):
    z = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    labels = np.array([0, 2, 1, 0])
    loss, grad = module.softmax_cross_entropy(z, labels, weight=[1.0, 2.0, 0.5])
    want = ref.softmax_cross_entropy(z, labels, weight=np.array([1, 2, .5], np.float32))
    assert grad.dtype == np.float32 and loss.dtype == np.float32
    np.testing.assert_allclose(loss, want[0], rtol=1e-6)
    loss, grad = module.sigmoid_binary_cross_entropy(z, [[0, 1, 0]] * 4, weight=[1, 2, 3],
                                                     pos_weight=[0.5, 1, 2])
    assert grad.dtype == np.float32


# found: a torch tensor that requires grad (or a bfloat16 one) raised torch's
#   own error, which names no argument
@pytest.mark.parametrize("kind", ["requires_grad", "bfloat16"])
def test_regression_torch_tensor_names_the_argument(kind):
    torch = pytest.importorskip("torch")
    t = (torch.zeros(3, requires_grad=True) if kind == "requires_grad"
         else torch.zeros(3, dtype=torch.bfloat16))
    for module in (nk, ref):
        with pytest.raises(TypeError, match="z"):
            module.sigmoid(t)
    with pytest.raises(TypeError, match="target"):
        nk.mse(np.zeros(3), t)


# found: np.ma.MaskedArray masks were dropped without a word (a masked 1e4
#   logit dominated the softmax; masked labels still counted)
@pytest.mark.parametrize("module", [nk, ref], ids=["nnkernels", "reference"])
def test_regression_masked_arrays_are_refused(module):
    z = np.ma.masked_array([[1e4, 0.0, 1.0]], mask=[[True, False, False]])
    with pytest.raises(TypeError, match="z"):
        module.softmax(z)
    with pytest.raises(TypeError, match="grad"):
        module.sigmoid_backward(z, np.zeros((1, 3)))
    if module is nk:
        labels = np.ma.masked_array([0, 1], mask=[False, True])
        with pytest.raises(TypeError, match="target"):
            nk.softmax_cross_entropy(np.zeros((2, 3)), labels)
        with pytest.raises(TypeError, match="out"):
            nk.sigmoid(np.zeros(3), out=np.ma.masked_array(np.zeros(3)))


# Regressions found by hand: 0-d inputs on the checked (copying) path, and
# the element-wise losses' shape rules (1-D or 2-D input, one pos_weight per column).
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zero_dimensional_activation_inputs(dtype):
    z = dtype(0.3)                           # a NumPy scalar, not an ndarray
    np.testing.assert_allclose(nk.sigmoid(z), 1 / (1 + np.exp(-0.3)), rtol=1e-6)
    assert nk.relu_backward(dtype(2.0), dtype(1.0)) == 2.0
    assert nk.relu_backward(dtype(2.0), dtype(-1.0)) == 0.0


def test_elementwise_loss_rejects_0d_input():
    with pytest.raises(ValueError, match="pred must be a 1-D or 2-D array"):
        nk.mse(np.float64(1.0), np.float64(3.0))


def test_pos_weight_needs_one_value_per_column():
    with pytest.raises(ValueError, match="pos_weight must hold one value per column"):
        nk.sigmoid_binary_cross_entropy(np.zeros((2, 3)), np.ones((2, 3)),
                                        pos_weight=np.array([2.0]))


# found: a step of 2**63 or more (a valid Python int) overflowed the compiled
#   kernels' C integer and gave "RuntimeError: internal error"
@pytest.mark.parametrize("step", [2**62, 2**63, 2**100])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["f64", "f32"])
def test_optimizer_steps_past_64_bits(step, dtype):
    rng = np.random.default_rng(3)
    param, grad, m, v = (rng.standard_normal(5).astype(dtype) for _ in range(4))
    v = np.abs(v)
    got = nk.adam_update(param.copy(), grad, m.copy(), v.copy(), step=step, lr=0.1,
                         betas=(0.9, 1 - 2.0 ** -53))
    want = ref.adam_update(param.copy(), grad, m.copy(), v.copy(), step=step, lr=0.1,
                           betas=(0.9, 1 - 2.0 ** -53))
    np.testing.assert_allclose(got, want, rtol=2e-6 if dtype == F32 else 1e-14)
    buf = m.copy()
    got = nk.sgd_update(param.copy(), grad, lr=0.1, momentum=0.9, momentum_buffer=buf,
                        step=step)
    want = ref.sgd_update(param.copy(), grad, lr=0.1, momentum=0.9,
                          momentum_buffer=m.copy(), step=step)
    np.testing.assert_allclose(got, want, rtol=2e-6 if dtype == F32 else 1e-14)
