"""sigmoid_binary_cross_entropy, binary_cross_entropy and mse.

Element-wise losses over 1-D or 2-D inputs, checked against
nnkernels.reference, torch.nn.functional (every option: weight full-shape
and per-column, pos_weight, the three reductions), closed forms, finite
differences, layouts, out=, read-only inputs, extreme values and NaN.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import nnkernels as nk
import nnkernels.reference as ref
from _nkutil import (DTYPES, LAYOUTS, assert_close, layout, readonly,
                     snapshot, assert_unchanged, assert_scalar_loss, tt, tn,
                     torch_module)

REDUCTIONS = ["mean", "sum", "none"]
LOSSES = ["sigmoid_binary_cross_entropy", "binary_cross_entropy", "mse"]
SHAPES = [(1,), (1, 1), (17,), (1, 7), (5, 1), (3, 17), (33, 1000),
          (64, 10), (1000,)]
WEIGHTS = {
    "sigmoid_binary_cross_entropy": ["none", "full", "column", "pos",
                                     "full+pos", "column+pos"],
    "binary_cross_entropy": ["none", "full", "column"],
    "mse": ["none"],
}


def make_inputs(name, rng, shape, dtype):
    if name == "sigmoid_binary_cross_entropy":
        x = rng.standard_normal(shape) * 4
        y = rng.random(shape)
        y[rng.random(shape) < 0.5] = 1.0  # hard and soft labels mixed
    elif name == "binary_cross_entropy":
        x = rng.random(shape) * 0.98 + 0.01
        y = (rng.random(shape) < 0.5).astype(np.float64)
        y.flat[::3] = rng.random(y.flat[::3].shape)
    else:
        x = rng.standard_normal(shape) * 3
        y = rng.standard_normal(shape) * 3
    return x.astype(dtype), y.astype(dtype)


def make_weights(wopt, rng, shape, dtype):
    kw = {}
    if "full" in wopt:
        kw["weight"] = (rng.random(shape) * 2 + 0.1).astype(dtype)
    if "column" in wopt:
        kw["weight"] = (rng.random(shape[-1]) * 2 + 0.1).astype(dtype)
    if "pos" in wopt:
        kw["pos_weight"] = (rng.random(shape[-1]) * 3 + 0.2).astype(dtype)
    return kw


def torch_loss(name, x, y, reduction, weight=None, pos_weight=None):
    torch = torch_module()
    F = torch.nn.functional
    xt = tt(x, requires_grad=True)
    yt = tt(y)
    kw = dict(reduction=reduction)
    if weight is not None:
        kw["weight"] = tt(weight)
    if pos_weight is not None:
        kw["pos_weight"] = tt(pos_weight)
    if name == "sigmoid_binary_cross_entropy":
        loss = F.binary_cross_entropy_with_logits(xt, yt, **kw)
    elif name == "binary_cross_entropy":
        loss = F.binary_cross_entropy(xt, yt, **kw)
    else:
        loss = F.mse_loss(xt, yt, **kw)
    (loss.sum() if reduction == "none" else loss).backward()
    return tn(loss), tn(xt.grad)


def check_types(loss, grad, reduction, shape, dtype):
    assert isinstance(grad, np.ndarray)
    assert grad.shape == shape and grad.dtype == dtype
    if reduction == "none":
        assert isinstance(loss, np.ndarray)
        assert loss.shape == shape and loss.dtype == dtype
    else:
        assert_scalar_loss(loss, dtype)


def grad_scale(name, x, y, kw):
    """Magnitude of the largest gradient term (for the absolute tolerance)."""
    s = 1.0
    if name == "binary_cross_entropy":
        p = x.astype(np.float64)
        s = float(np.max(np.abs(p - y) / np.maximum(p * (1 - p), 1e-12)))
    elif name == "mse":
        s = float(np.max(np.abs(2 * (x.astype(np.float64) - y)), initial=1))
    for v in kw.values():
        s *= float(np.max(v))
    return max(s, 1.0)


def loss_scale(name, x, y, kw, reduction):
    """Scale of the rounding error of the loss: the magnitude of the operands
    (for sigmoid-BCE, |z| cancels in max(z, 0) - z y + log1p(e^-|z|); for
    BCE on probabilities, 1 - p rounds with an absolute error of one ulp of 1,
    so log(1 - p) errs by about eps per element however small the loss)."""
    if name == "sigmoid_binary_cross_entropy":
        m = np.maximum(1.0, np.abs(np.asarray(x, dtype=np.float64)))
    elif name == "binary_cross_entropy":
        m = np.ones(np.shape(x))
    else:
        return None
    for v in kw.values():
        m = m * np.abs(np.asarray(v, dtype=np.float64))
    if m.size == 0:
        return 1.0
    return float({"none": np.max, "sum": np.sum, "mean": np.mean}[reduction](m))


# ----------------------------------------------------------- vs reference
def _ref_cases():
    for name in LOSSES:
        for wopt in WEIGHTS[name]:
            yield pytest.param(name, wopt, id=f"{name}-{wopt}")


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("lay", LAYOUTS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("name,wopt", list(_ref_cases()))
def test_matches_reference(name, wopt, dtype, reduction, lay, shape, threads,
                           rng):
    xb, yb = make_inputs(name, rng, shape, dtype)
    kwb = make_weights(wopt, rng, shape, dtype)
    x, y = layout(xb, lay), layout(yb, lay)
    kw = {k: layout(v, lay) for k, v in kwb.items()}
    copies = snapshot(x, y, *kw.values())
    loss, grad = getattr(nk, name)(x, y, reduction=reduction, **kw)
    assert_unchanged([x, y, *kw.values()], copies)
    check_types(loss, grad, reduction, shape, dtype)
    rl, rg = getattr(ref, name)(xb.copy(), yb.copy(), reduction=reduction,
                                **{k: v.copy() for k, v in kwb.items()})
    assert_close(loss, rl, dtype,
                 scale=loss_scale(name, xb, yb, kwb, reduction))
    assert_close(grad, rg, dtype, scale=grad_scale(name, xb, yb, kwb)
                 / (xb.size if reduction == "mean" else 1))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_mse_closed_form(dtype, reduction, threads, rng):
    shape = (37, 29)
    p, y = make_inputs("mse", rng, shape, dtype)
    d = p.astype(np.float64) - y
    loss, grad = nk.mse(p, y, reduction=reduction)
    eloss = {"mean": np.mean(d * d), "sum": np.sum(d * d), "none": d * d}
    egrad = 2 * d / (d.size if reduction == "mean" else 1)
    assert_close(loss, eloss[reduction], dtype)
    assert_close(grad, egrad, dtype)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_mean_divides_by_element_count(name, dtype, rng):
    x, y = make_inputs(name, rng, (12, 7), dtype)
    kw = make_weights("column", rng, (12, 7), dtype) if name != "mse" else {}
    lm, gm = getattr(nk, name)(x, y, reduction="mean", **kw)
    ls, gs = getattr(nk, name)(x, y, reduction="sum", **kw)
    ln, gn = getattr(nk, name)(x, y, reduction="none", **kw)
    assert_close(lm * 84, ls, dtype)
    assert_close(ls, np.sum(ln.astype(np.float64)), dtype)
    assert_close(gm * 84, gs, dtype, scale=grad_scale(name, x, y, kw))
    np.testing.assert_array_equal(gs, gn)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_sigmoid_bce_closed_form(dtype, rng):
    z = (rng.standard_normal((20, 9)) * 5).astype(dtype)
    y = rng.random((20, 9)).astype(dtype)
    z64, y64 = z.astype(np.float64), y.astype(np.float64)
    loss, grad = nk.sigmoid_binary_cross_entropy(z, y, reduction="none")
    # softplus form: max(z, 0) - z y + log(1 + e^-|z|)
    eloss = np.maximum(z64, 0) - z64 * y64 + np.log1p(np.exp(-np.abs(z64)))
    assert_close(loss, eloss, dtype, scale=loss_scale(
        "sigmoid_binary_cross_entropy", z, y, {}, "none"))
    assert_close(grad, 1 / (1 + np.exp(-z64)) - y64, dtype)


# ------------------------------------------------------------------- torch
def _torch_cases():
    for name in LOSSES:
        for wopt, red, dt, nd in itertools.product(
                WEIGHTS[name], REDUCTIONS, ["f64", "f32"], [1, 2]):
            if nd == 1 and "column" in wopt:
                continue  # for 1-D input a column weight is the full shape
            yield pytest.param(name, wopt, red, dt, nd,
                               id=f"{name}-{wopt}-{red}-{dt}-{nd}d")


@pytest.mark.parametrize("name,wopt,reduction,dt,nd", list(_torch_cases()))
def test_vs_torch(name, wopt, reduction, dt, nd, rng):
    torch_module()
    dtype = np.dtype(np.float64 if dt == "f64" else np.float32)
    shape = (19, 13) if nd == 2 else (31,)
    x, y = make_inputs(name, rng, shape, dtype)
    if name == "sigmoid_binary_cross_entropy":
        x.flat[:4] = [1e4, -1e4, 60.0, -60.0]
    if name == "binary_cross_entropy":
        x.flat[:4] = [0.0, 1.0, 0.0, 1.0]
        y.flat[:4] = [1.0, 0.0, 0.0, 1.0]
    kw = make_weights(wopt, rng, shape, dtype)
    loss, grad = getattr(nk, name)(x, y, reduction=reduction, **kw)
    check_types(loss, grad, reduction, shape, dtype)
    tl, tg = torch_loss(name, x, y, reduction, **kw)
    if dtype == np.float64:
        # torch clamps p(1 - p) at a float32 1e-12, 4e-9 below the contract's
        rtol = 1e-8 if name == "binary_cross_entropy" else None
        assert_close(loss, tl, dtype, rtol=rtol,
                     scale=loss_scale(name, x, y, kw, reduction))
        assert_close(grad, tg, dtype, rtol=rtol)
    else:
        assert_close(loss, tl, dtype, rtol=1e-5,
                     scale=loss_scale(name, x, y, kw, reduction))
        assert_close(grad, tg, dtype, rtol=1e-5)


# --------------------------------------------------------- out= / read-only
@pytest.mark.parametrize("lay", LAYOUTS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("name", LOSSES)
def test_out_and_readonly(name, dtype, reduction, lay, threads, rng):
    shape = (11, 23)
    xb, yb = make_inputs(name, rng, shape, dtype)
    kwb = make_weights(WEIGHTS[name][-1], rng, shape, dtype)
    x, y = readonly(layout(xb, lay)), readonly(layout(yb, lay))
    kw = {k: readonly(v) for k, v in kwb.items()}
    out = layout(np.full(shape, 4.0, dtype), lay)
    loss, grad = getattr(nk, name)(x, y, reduction=reduction, out=out, **kw)
    assert grad is out
    rl, rg = getattr(ref, name)(xb, yb, reduction=reduction, **kwb)
    assert_close(loss, rl, dtype,
                 scale=loss_scale(name, xb, yb, kwb, reduction))
    assert_close(out, rg, dtype, scale=grad_scale(name, xb, yb, kwb))
    np.testing.assert_array_equal(x, xb)
    np.testing.assert_array_equal(y, yb)


# ------------------------------------------------------- extreme and NaN
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_sigmoid_bce_large_logits_exact(dtype):
    z = np.array([1e4, 1e4, -1e4, -1e4, 1e3, -1e3], dtype)
    y = np.array([0.0, 1.0, 1.0, 0.0, 0.25, 0.25], dtype)
    loss, grad = nk.sigmoid_binary_cross_entropy(z, y, reduction="none")
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    np.testing.assert_allclose(loss, [1e4, 0, 1e4, 0, 750.0, 250.0],
                               rtol=1e-12 if dtype == np.float64 else 2e-6)
    np.testing.assert_allclose(grad, [1.0, 0.0, -1.0, 0.0, 0.75, -0.25],
                               rtol=1e-12 if dtype == np.float64 else 2e-6,
                               atol=1e-15)
    pw = np.full(6, 2.0, dtype)
    loss, grad = nk.sigmoid_binary_cross_entropy(z, y, reduction="none",
                                                 pos_weight=pw)
    np.testing.assert_allclose(loss, [1e4, 0, 2e4, 0, 750.0, 500.0],
                               rtol=1e-12 if dtype == np.float64 else 2e-6)
    np.testing.assert_allclose(grad, [1.0, 0.0, -2.0, 0.0, 0.75, -0.5],
                               rtol=1e-12 if dtype == np.float64 else 2e-6,
                               atol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_bce_clamps_logs(dtype):
    p = np.array([0.0, 1.0, 0.0, 1.0, 1e-300 if dtype == np.float64 else 0.0,
                  0.5], dtype)
    y = np.array([1.0, 0.0, 0.0, 1.0, 0.0, 1.0], dtype)
    loss, grad = nk.binary_cross_entropy(p, y, reduction="none")
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    np.testing.assert_allclose(loss, [100.0, 100.0, 0.0, 0.0, 0.0, np.log(2)],
                               rtol=1e-6, atol=1e-300)
    assert_close(grad, [-1e12, 1e12, 0.0, 0.0, 1e-300 / 1e-12
                        if dtype == np.float64 else 0.0, -2.0], dtype)


@pytest.mark.parametrize("name", ["sigmoid_binary_cross_entropy", "mse"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_nan_propagates(name, dtype, rng):
    x, y = make_inputs(name, rng, (4, 6), dtype)
    x[1, 2] = np.nan
    loss, grad = getattr(nk, name)(x, y, reduction="none")
    assert np.isnan(loss[1, 2]) and np.isnan(grad[1, 2])
    mask = np.ones(x.shape, bool)
    mask[1, 2] = False
    x2 = x.copy()
    x2[1, 2] = 0.0
    rl, rg = getattr(ref, name)(x2, y, reduction="none")
    assert_close(loss[mask], rl[mask], dtype)
    assert_close(grad[mask], rg[mask], dtype)
    lm, gm = getattr(nk, name)(x, y)
    assert np.isnan(lm)
    assert_close(gm[mask], rg[mask] / x.size, dtype)


# ---------------------------------------------------------------- gradcheck
def _gc_cases():
    for name in LOSSES:
        for wopt in WEIGHTS[name]:
            for red in ("mean", "sum"):
                yield pytest.param(name, wopt, red, id=f"{name}-{wopt}-{red}")


@pytest.mark.parametrize("name,wopt,reduction", list(_gc_cases()))
def test_gradcheck(name, wopt, reduction, rng):
    shape = (4, 5)
    x0, y = make_inputs(name, rng, shape, np.float64)
    if name == "binary_cross_entropy":
        x0 = rng.random(shape) * 0.8 + 0.1
    kw = make_weights(wopt, rng, shape, np.float64)

    def f(x):
        return getattr(nk, name)(x, y, reduction=reduction, **kw)

    res = nk.gradcheck(f, x0)
    assert res and res.ok, res


# --------------------------------------------------------------- hypothesis
@given(data=st.data(),
       shape=hnp.array_shapes(min_dims=1, max_dims=2, max_side=40),
       name=st.sampled_from(LOSSES),
       reduction=st.sampled_from(REDUCTIONS),
       wopt=st.sampled_from(["none", "full", "column", "pos"]))
def test_hypothesis_vs_reference(data, shape, name, reduction, wopt):
    if name == "binary_cross_entropy":
        x = data.draw(hnp.arrays(np.float64, shape,
                                 elements=st.floats(0.0, 1.0)))
    else:
        x = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(
            -1e3, 1e3, allow_nan=False)))
    y = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(0.0, 1.0)))
    if name == "mse" or (wopt == "pos" and name != "sigmoid_binary_cross_entropy"):
        wopt = "none"
    kw64 = make_weights(wopt, np.random.default_rng(0), shape, np.float64)
    for dtype in (np.float64, np.float32):
        xx, yy = x.astype(dtype), y.astype(dtype)
        kw = {k: v.astype(dtype) for k, v in kw64.items()}
        loss, grad = getattr(nk, name)(xx, yy, reduction=reduction, **kw)
        check_types(loss, grad, reduction, shape, dtype)
        rl, rg = getattr(ref, name)(xx, yy, reduction=reduction, **kw)
        assert_close(loss, rl, dtype,
                     scale=loss_scale(name, xx, yy, kw, reduction))
        assert_close(grad, rg, dtype, scale=grad_scale(name, xx, yy, kw))
