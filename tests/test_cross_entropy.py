"""softmax_cross_entropy and softmax_cross_entropy_backward: the semantics of
their options.

The plain case's closed form, one-hot targets, a 32,000-class vocabulary,
every combination of target kind (every integer dtype, probabilities),
ignore_index (default, custom, in and outside the class range), class
weights, label smoothing, reduction and class axis against
torch.nn.functional.cross_entropy and the reference; rows that are all
ignored, ignored NaN rows, ±1e4 logits, NaN rows, and the class-index
labels the contract refuses.  Values over the table's options, finite
differences, layouts, out= and the generic bad inputs are checked for every
kernel by the concern modules over kernel_table.py.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import nnkernels as nk
import nnkernels.reference as ref
from _nkutil import (DTYPES, SHAPES, assert_close, layout, names_in, snapshot,
                     assert_unchanged, assert_scalar_loss, tt, tn, torch_module, rand_logits,
                     rand_probs)

REDUCTIONS = ["mean", "sum", "none"]
INT_DTYPES = [np.int8, np.int16, np.int32, np.int64,
              np.uint8, np.uint16, np.uint32, np.uint64]


def to_nc(a, axis):
    """(N, C) view of a logits-shaped array with class axis ``axis``."""
    return a if axis in (-1, 1) else a.T


def from_nc(a, axis):
    return a if axis in (-1, 1) else a.T


def logits_shape(N, C, axis):
    return (N, C) if axis in (-1, 1) else (C, N)


def make_target(rng, kind, N, C, dtype, axis, ignore_index=None,
                ignore_frac=0.0):
    """Class indices of integer dtype ``kind`` or probabilities ('probs')."""
    if kind == "probs":
        return from_nc(rand_probs(rng, (N, C), np.float64), axis).astype(dtype)
    t = rng.integers(0, C, size=N)
    if ignore_index is not None and ignore_frac > 0:
        ign = rng.random(N) < ignore_frac
        ign[0] = True
        if N > 1:
            ign[-1] = False
        t = np.where(ign, ignore_index, t)
    return t.astype(kind)


def exact_plain_ce(logits_nc, t):
    """No options, class indices: loss_i = lse_i - z_{i,t}, grad = p - onehot."""
    z = np.asarray(logits_nc, dtype=np.float64)
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    rows = np.arange(z.shape[0])
    loss = lse - z[rows, t]
    p = np.exp(z - lse[:, None])
    onehot = np.zeros_like(z)
    onehot[rows, t] = 1.0
    return loss, p - onehot


def torch_ce(logits, target, *, axis=-1, reduction="mean", weight=None,
             ignore_index=-100, label_smoothing=0.0):
    """torch.nn.functional.cross_entropy loss and d(sum of loss)/d logits."""
    torch = torch_module()
    F = torch.nn.functional
    x = tt(to_nc(logits, axis), requires_grad=True)
    kwargs = dict(reduction=reduction, label_smoothing=label_smoothing)
    if weight is not None:
        kwargs["weight"] = tt(weight)
    if target.dtype.kind == "f":
        t = tt(to_nc(target, axis))
    else:
        t = tt(target.astype(np.int64))
        kwargs["ignore_index"] = int(ignore_index)
    loss = F.cross_entropy(x, t, **kwargs)
    (loss.sum() if reduction == "none" else loss).backward()
    return tn(loss), from_nc(tn(x.grad), axis)


def call_both(logits, target, **kw):
    """Run the fused kernel and the gradient-only kernel; they must agree."""
    loss, grad = nk.softmax_cross_entropy(logits, target, **kw)
    grad_only = nk.softmax_cross_entropy_backward(logits, target, **kw)
    assert grad_only.dtype == grad.dtype and grad_only.shape == grad.shape
    np.testing.assert_allclose(grad_only, grad, rtol=1e-12 if grad.dtype ==
                               np.float64 else 1e-6, atol=0, equal_nan=True)
    return loss, grad


def check_loss_type(loss, reduction, N, dtype):
    if reduction == "none":
        assert isinstance(loss, np.ndarray)
        assert loss.shape == (N,) and loss.dtype == dtype
    else:
        assert_scalar_loss(loss, dtype)


# ------------------------------------------------------- vs reference, plain
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_plain_case_closed_form(dtype, axis, reduction, rng):
    """No options, class indices: loss_i = lse_i - z_{i,t}, grad = p - onehot
    (docs/equations.md), scaled by 1/N for the mean; both kernels agree."""
    for N, C in SHAPES:
        base = rand_logits(rng, logits_shape(N, C, axis), dtype, scale=4.0)
        t = make_target(rng, np.int64, N, C, dtype, axis)
        loss, grad = call_both(base, t, axis=axis, reduction=reduction)
        check_loss_type(loss, reduction, N, dtype)
        eloss, egrad = exact_plain_ce(to_nc(base, axis), t)
        if reduction == "mean":
            eloss, egrad = eloss.mean(), egrad / N
        elif reduction == "sum":
            eloss = eloss.sum()
        assert_close(loss, eloss, dtype, n=C)
        assert_close(grad, from_nc(egrad, axis), dtype, n=C)


@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_wide_vocabulary(dtype, axis, threads, rng):
    """C = 32000 (a language model's vocabulary), the bench's wide case."""
    N, C = 3, 32000
    z = rand_logits(rng, logits_shape(N, C, axis), dtype, scale=5.0)
    t = rng.integers(0, C, N)
    # against the float64 reference: the float32 one's own rounding over
    # 32,000 classes (3.6e-5 relative, measured) can exceed the tolerance
    z64 = z.astype(np.float64)
    for kw in (dict(), dict(label_smoothing=0.1, reduction="none")):
        loss, grad = call_both(z, t, axis=axis, **kw)
        rl, rg = ref.softmax_cross_entropy(z64, t, axis=axis, **kw)
        assert_close(loss, rl, dtype, n=C)
        assert_close(grad, rg, dtype, n=C)
    assert_close(nk.softmax(z, axis=axis), ref.softmax(z64, axis=axis), dtype,
                 n=C)
    assert_close(nk.log_softmax(z, axis=axis), ref.log_softmax(z64, axis=axis),
                 dtype, n=C, scale=float(np.abs(z).max()) + np.log(C))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_one_hot_target_gives_p_minus_y_over_n(dtype, threads, rng):
    N, C = 40, 13
    z = rand_logits(rng, (N, C), dtype)
    t = rng.integers(0, C, N)
    y = np.eye(C, dtype=dtype)[t]
    loss_p, grad_p = nk.softmax_cross_entropy(z, y)
    loss_i, grad_i = nk.softmax_cross_entropy(z, t)
    p = ref.softmax(z.astype(np.float64))
    assert_close(grad_p, (p - y) / N, dtype)
    assert_close(grad_i, (p - y) / N, dtype)
    assert_close(loss_p, loss_i, dtype)
    assert_close(loss_i, -np.mean(np.log(p[np.arange(N), t])), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_defaults(dtype, rng):
    """Default options equal the explicit axis=-1, mean, -100, 0.0."""
    z = rand_logits(rng, (9, 6), dtype)
    t = rng.integers(0, 6, 9)
    t[3] = -100
    loss, grad = nk.softmax_cross_entropy(z, t)
    loss2, grad2 = nk.softmax_cross_entropy(
        z, t, axis=-1, reduction="mean", weight=None, ignore_index=-100,
        label_smoothing=0.0, out=None)
    np.testing.assert_array_equal(grad, grad2)
    assert loss == loss2
    rl, rg = ref.softmax_cross_entropy(z, t)
    assert_close(loss, rl, dtype)
    assert_close(grad, rg, dtype)
    assert np.all(grad[3] == 0)


# -------------------------------------------------- every option vs torch
def _option_cases():
    targets = [np.int64, np.int32, np.uint8, np.int16, "probs"]
    ignores = ["none", "default", "custom"]
    for kind, ign, w, ls, red, axis, dt in itertools.product(
            targets, ignores, [False, True], [0.0, 0.1, 1.0], REDUCTIONS,
            [-1, 0], ["f64", "f32"]):
        if kind == "probs" and ign != "none":
            continue  # torch: ignore_index is for class indices only
        if dt == "f32" and (axis == 0 or ls == 1.0):
            continue  # keep the matrix small: f32 runs the core combinations
        yield pytest.param(kind, ign, w, ls, red, axis, dt, id="-".join(
            [kind if isinstance(kind, str) else np.dtype(kind).name, ign,
             "w" if w else "now", f"ls{ls}", red, f"axis{axis}", dt]))


def _ignore_value(kind, ign):
    if ign == "none":
        return -100, 0.0
    if ign == "default":
        if np.dtype(kind).kind == "u":
            return -100, 0.0  # -100 cannot occur in an unsigned target
        return -100, 0.3
    # a custom value: a valid class index for some, -1 / the dtype's max
    # for others, so both "in range" and "outside" ignore values are used
    if np.dtype(kind) == np.int32:
        return 2, 0.3
    if np.dtype(kind).kind == "u":
        return int(np.iinfo(kind).max), 0.3
    return -1, 0.3


@pytest.mark.parametrize("kind,ign,use_w,ls,reduction,axis,dt",
                         list(_option_cases()))
def test_options_vs_torch_and_reference(kind, ign, use_w, ls, reduction, axis,
                                        dt, rng):
    torch_module()
    dtype = np.dtype(np.float64 if dt == "f64" else np.float32)
    N, C = 23, 7
    z = rand_logits(rng, logits_shape(N, C, axis), dtype, scale=3.0)
    ignore_index, frac = (-100, 0.0) if kind == "probs" else _ignore_value(
        kind, ign)
    target = make_target(rng, kind, N, C, dtype, axis, ignore_index, frac)
    weight = (rng.random(C) * 2 + 0.1).astype(dtype) if use_w else None
    kw = dict(axis=axis, reduction=reduction, weight=weight,
              label_smoothing=ls)
    if kind != "probs":
        kw["ignore_index"] = ignore_index
    copies = snapshot(z, target, weight)
    loss, grad = call_both(z, target, **kw)
    assert_unchanged([z, target, weight], copies)
    check_loss_type(loss, reduction, N, dtype)
    tloss, tgrad = torch_ce(z, target, **kw)
    rloss, rgrad = ref.softmax_cross_entropy(z, target, **kw)
    if dtype == np.float64:
        assert_close(loss, tloss, dtype)
        assert_close(grad, tgrad, dtype)
    else:  # torch float32 itself is a few ulp off
        assert_close(loss, tloss, dtype, rtol=1e-5)
        assert_close(grad, tgrad, dtype, rtol=1e-5, atol=1e-6)
    assert_close(loss, rloss, dtype)
    assert_close(grad, rgrad, dtype)
    if kind != "probs" and frac > 0:
        ignored = target == ignore_index
        assert np.all(to_nc(grad, axis)[ignored] == 0)
        if reduction == "none":
            assert np.all(loss[ignored] == 0)


@pytest.mark.parametrize("kind", INT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_every_integer_target_dtype(kind, dtype, rng):
    N, C = 30, 9
    z = rand_logits(rng, (N, C), dtype)
    t64 = rng.integers(0, C, N)
    target = t64.astype(kind)
    for reduction in REDUCTIONS:
        loss, grad = call_both(z, target, reduction=reduction,
                               label_smoothing=0.05)
        rl, rg = ref.softmax_cross_entropy(z, t64, reduction=reduction,
                                           label_smoothing=0.05)
        assert_close(loss, rl, dtype)
        assert_close(grad, rg, dtype)
    # strided and negative-stride class-index targets
    for tview in (layout(target, "strided"), layout(target, "neg")):
        loss, grad = call_both(z, tview, reduction="none")
        rl, rg = ref.softmax_cross_entropy(z, t64, reduction="none")
        assert_close(loss, rl, dtype)
        assert_close(grad, rg, dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ls", [0.0, 0.2])
@pytest.mark.parametrize("use_w", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_all_rows_ignored(dtype, use_w, ls, reduction, threads, rng):
    N, C = 6, 4
    z = rand_logits(rng, (N, C), dtype)
    weight = (rng.random(C) + 0.5).astype(dtype) if use_w else None
    for ignore_index, kind in ((-100, np.int64), (3, np.uint8), (-7, np.int8)):
        t = np.full(N, ignore_index, kind)
        loss, grad = call_both(z, t, reduction=reduction, weight=weight,
                               ignore_index=ignore_index, label_smoothing=ls)
        np.testing.assert_array_equal(grad, np.zeros((N, C), dtype))
        if reduction == "mean":
            assert_scalar_loss(loss, dtype)
            assert np.isnan(loss), "mean over no rows is NaN (as torch)"
        elif reduction == "sum":
            assert loss == 0
        else:
            np.testing.assert_array_equal(loss, np.zeros(N, dtype))
        if kind == np.int64 and _has_torch():
            tl, tg = torch_ce(z, t, reduction=reduction, weight=weight,
                              ignore_index=ignore_index, label_smoothing=ls)
            assert_close(loss, tl, dtype)
            assert_close(grad, tg, dtype)


def _has_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_ignore_index_ignores_nan_rows(dtype):
    """An ignored row contributes nothing, not even the NaN of its logits."""
    z = np.array([[1.0, 2.0, 3.0], [np.nan, 0.0, 1.0], [0.5, 0.5, -1.0]],
                 dtype)
    t = np.array([0, -100, 2])
    for reduction in REDUCTIONS:
        loss, grad = call_both(z, t, reduction=reduction)
        assert np.isfinite(loss).all()
        np.testing.assert_array_equal(grad[1], 0)
        rl, rg = ref.softmax_cross_entropy(z, t, reduction=reduction)
        assert_close(loss, rl, dtype)
        assert_close(grad, rg, dtype)


# ------------------------------------------------------ out= and read-only


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_out_reused_across_steps(dtype, rng):
    """A training loop reuses one out buffer: every call overwrites it."""
    N, C = 32, 10
    out = np.empty((N, C), dtype)
    for step in range(3):
        z = rand_logits(rng, (N, C), dtype)
        t = rng.integers(0, C, N)
        loss, grad = nk.softmax_cross_entropy(z, t, out=out)
        assert grad is out
        rl, rg = ref.softmax_cross_entropy(z, t)
        assert_close(out, rg, dtype)
        assert_close(loss, rl, dtype)


# ------------------------------------------------------ extreme and NaN
@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_logits_1e4_exact(dtype, axis):
    rows = np.array([[1e4, -1e4, 0.0],
                     [1e4, -1e4, 0.0],
                     [-1e4, -1e4, -1e4],
                     [1e4, 1e4, -1e4],
                     [-1e4, 1e4, 1e4]], dtype)
    t = np.array([0, 1, 2, 2, 0])
    z = rows if axis == -1 else np.ascontiguousarray(rows.T)
    loss, grad = call_both(z, t, axis=axis, reduction="none")
    g = to_nc(grad, axis)
    assert np.isfinite(loss).all() and np.isfinite(g).all()
    ln2, ln3 = np.log(2.0), np.log(3.0)
    expected = np.array([0.0, 2e4, ln3, 2e4 + ln2, 2e4 + ln2])
    np.testing.assert_allclose(loss, expected,
                               rtol=1e-12 if dtype == np.float64 else 2e-6)
    expected_grad = np.array([[0, 0, 0], [1, -1, 0],
                              [1 / 3, 1 / 3, -2 / 3], [.5, .5, -1],
                              [-1, .5, .5]])
    assert_close(g, expected_grad, dtype)
    loss_m, grad_m = call_both(z, t, axis=axis)
    assert_close(loss_m, expected.mean(), dtype)
    assert_close(to_nc(grad_m, axis), expected_grad / 5, dtype)
    # probabilities, label smoothing and weights keep it finite too
    y = np.eye(3, dtype=dtype)[t]
    y = y if axis == -1 else np.ascontiguousarray(y.T)
    w = np.array([1.0, 2.0, 0.5], dtype)
    for kw in (dict(), dict(label_smoothing=0.1), dict(weight=w)):
        l2, g2 = call_both(z, y, axis=axis, reduction="none", **kw)
        assert np.isfinite(l2).all() and np.isfinite(g2).all()
        rl, rg = ref.softmax_cross_entropy(z, y, axis=axis, reduction="none",
                                           **kw)
        assert_close(l2, rl, dtype)
        assert_close(g2, rg, dtype)


@pytest.mark.parametrize("kind", ["int64", "probs"])
@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_nan_row(dtype, axis, kind, threads, rng):
    """A NaN logit makes its row's loss and gradient NaN, the others stay
    finite and correct (as torch)."""
    N, C = 8, 5
    zn = rand_logits(rng, (N, C), dtype)
    zn[3, 1] = np.nan
    t_nc = make_target(rng, np.int64 if kind == "int64" else "probs", N, C,
                       dtype, -1)
    z = from_nc(zn, axis).copy()
    target = t_nc if kind == "int64" else from_nc(t_nc, axis).copy()
    loss, grad = call_both(z, target, axis=axis, reduction="none")
    g = to_nc(grad, axis)
    assert np.isnan(loss[3]) and np.isnan(g[3]).all()
    keep = np.arange(N) != 3
    assert np.isfinite(loss[keep]).all() and np.isfinite(g[keep]).all()
    rl, rg = ref.softmax_cross_entropy(zn[keep], t_nc[keep], reduction="none")
    assert_close(loss[keep], rl, dtype)
    assert_close(g[keep], rg, dtype)
    # mean: the loss is NaN, the other rows' gradient is (p - y) / N
    loss_m, grad_m = call_both(z, target, axis=axis)
    g = to_nc(grad_m, axis)
    assert np.isnan(loss_m) and np.isnan(g[3]).all()
    assert_close(g[keep], rg / N, dtype)
    if _has_torch():
        tl, tg = torch_ce(z, target, axis=axis, reduction="none")
        assert_close(loss, tl, dtype, rtol=1e-5)
        assert_close(grad, tg, dtype, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- gradcheck


# ---------------------------------------------------------------- hypothesis


# ------------------------------------------------------- class-index labels
N, C = 4, 5
CE = ["softmax_cross_entropy", "softmax_cross_entropy_backward"]


def valid_args(fname):
    rng = np.random.default_rng(0)
    v = rng.random((N, C)) * 0.9 + 0.05
    return ({"logits": rng.standard_normal((N, C)), "target": v / v.sum(axis=1, keepdims=True)},
            {"weight": rng.random(C) + 0.5})


def call(fname, posargs, kwargs, **extra):
    return getattr(nk, fname)(posargs["logits"], posargs["target"], **kwargs, **extra)


@pytest.mark.parametrize("fname", CE)
def test_label_smoothing_bounds_accepted(fname):
    p, k = valid_args(fname)
    for v in (0.0, 1.0, 0, 1):
        res = call(fname, p, k, label_smoothing=v)
        grad = res[1] if isinstance(res, tuple) else res
        assert np.isfinite(grad).all()


# ----------------------------------------------------- class-index targets
BAD_INDEX_CASES = [
    # (target values, target dtype, ignore_index, bad position, bad value)
    ([0, 1, 2, 0, 1, 7], np.int64, -100, 5, 7),
    ([0, 5, 2, 0, 1, 2], np.int32, -100, 1, 5),
    ([0, 1, -1, 0, 1, 2], np.int64, -100, 2, -1),
    ([0, 1, -1, 0, -100, 2], np.int16, -1, 4, -100),
    ([0, 1, 2, 3, 9, 2], np.int64, 3, 4, 9),
    ([0, 1, 2, 200, 1, 2], np.uint8, -100, 3, 200),
    ([0, 1, 2, 0, 1, 2 ** 40], np.uint64, -100, 5, 2 ** 40),
    ([0, 1, 2, 0, 1, -128], np.int8, -100, 5, -128),
]


@pytest.mark.parametrize("case", BAD_INDEX_CASES,
                         ids=lambda c: f"{np.dtype(c[1]).name}-{c[4]}")
@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("fname", CE)
def test_class_index_out_of_range(fname, axis, case):
    values, tdtype, ignore_index, pos, val = case
    n, c = len(values), 3
    logits = np.zeros((n, c) if axis == -1 else (c, n))
    target = np.array(values).astype(tdtype)
    out = np.full(logits.shape, 5.0)
    with pytest.raises(ValueError) as exc:
        getattr(nk, fname)(logits, target, axis=axis,
                           ignore_index=ignore_index, out=out)
    names_in(str(exc.value), pos, val)
    assert (out == 5.0).all(), "out was written although the call failed"


@pytest.mark.parametrize("fname", CE)
def test_class_index_equal_to_ignore_index_is_valid(fname):
    logits = np.zeros((3, 4))
    res = getattr(nk, fname)(logits, np.array([0, 9, 3]), ignore_index=9)
    grad = res[1] if isinstance(res, tuple) else res
    np.testing.assert_array_equal(grad[1], 0.0)


@pytest.mark.parametrize("tdtype", [np.float64, np.float32])
@pytest.mark.parametrize("fname", CE)
def test_float_labels_are_not_class_indices(fname, tdtype):
    """Targets are integer indices (N,) or probabilities of the logits'
    shape; a float (N,) array is neither."""
    logits = np.zeros((N, C), dtype=tdtype)
    with pytest.raises((ValueError, TypeError)) as exc:
        getattr(nk, fname)(logits, np.array([0.0, 1.0, 2.0, 1.0], tdtype))
    names_in(str(exc.value), "target")


@pytest.mark.parametrize("fname", CE)
@pytest.mark.parametrize("target", [
    np.zeros(N + 1, np.int64), np.zeros(N - 1, np.int64),
    np.zeros((N, 1), np.int64), np.zeros((N, C), np.int64),
    np.zeros(C, np.int64), np.full((N, C + 1), 0.2), np.full((C, N), 0.2)],
    ids=["N+1", "N-1", "Nx1", "NxC-int", "C", "probs-NxC+1", "probs-CxN"])
def test_target_wrong_shape(fname, target):
    logits = np.zeros((N, C))
    with pytest.raises((ValueError, TypeError)) as exc:
        getattr(nk, fname)(logits, target)
    names_in(str(exc.value), "target")


@pytest.mark.parametrize("fname", CE)
@pytest.mark.parametrize("bad", [np.complex128, object])
def test_target_kinds(fname, bad):
    logits = np.zeros((N, C))
    with pytest.raises(TypeError) as exc:
        getattr(nk, fname)(logits, np.zeros(N, bad))
    names_in(str(exc.value), "target")


@pytest.mark.parametrize("fname", CE)
def test_ce_logits_must_be_2d(fname):
    for logits in (np.zeros(C), np.zeros((2, N, C))):
        with pytest.raises(ValueError) as exc:
            getattr(nk, fname)(logits, np.zeros(N, np.int64))
        names_in(str(exc.value), "logits")
