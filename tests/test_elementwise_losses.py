"""sigmoid_binary_cross_entropy, binary_cross_entropy and mse: the numerics
specific to them.

Closed forms (MSE, the softplus form of sigmoid-BCE), "mean" dividing by
the element count, logits of ±1e4 (exact, pos_weight too), BCE's clamped
logs, NaN in its element only, and the probabilities BCE refuses.  Values
against the reference and torch (every weight and pos_weight shape, every
reduction), finite differences, layouts, out= and bad inputs are checked
for every kernel by the concern modules over kernel_table.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import nnkernels as nk
import nnkernels.reference as ref
from _kernel_values import grad_scale, loss_inputs as make_inputs, loss_scale
from _nkutil import DTYPES, assert_close, names_in

REDUCTIONS = ["mean", "sum", "none"]
LOSSES = ["sigmoid_binary_cross_entropy", "binary_cross_entropy", "mse"]


def make_weights(wopt, rng, shape, dtype):
    kw = {}
    if "full" in wopt:
        kw["weight"] = (rng.random(shape) * 2 + 0.1).astype(dtype)
    if "column" in wopt:
        kw["weight"] = (rng.random(shape[-1]) * 2 + 0.1).astype(dtype)
    if "pos" in wopt:
        kw["pos_weight"] = (rng.random(shape[-1]) * 3 + 0.2).astype(dtype)
    return kw


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


# -------------------------------------------------------- probabilities
@pytest.mark.parametrize("value", [-1e-3, -1e-300, 1.0 + 1e-9, 2.0, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_probs_outside_unit_interval(value, dtype):
    rng = np.random.default_rng(0)
    probs = (rng.random((4, 5)) * 0.9 + 0.05).astype(dtype)
    target = (rng.random((4, 5)) * 0.9 + 0.05).astype(dtype)
    if dtype == np.float32 and value in (-1e-300, 1.0 + 1e-9):
        value = -1e-30 if value < 0 else 1.0000001
    probs[2, 3] = value
    out = np.full((4, 5), 5.0, dtype)
    with pytest.raises(ValueError) as exc:
        nk.binary_cross_entropy(probs, target, out=out)
    names_in(str(exc.value), "probs")
    assert (out == 5.0).all(), "out was written although the call failed"


def test_probs_bounds_accepted():
    probs = np.array([0.0, 1.0, 0.5])
    loss, grad = nk.binary_cross_entropy(probs, np.array([1.0, 0.0, 1.0]), reduction="sum")
    assert np.isfinite(loss) and np.isfinite(grad).all()
