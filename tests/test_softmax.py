"""softmax, log_softmax and softmax_backward along either axis of 2-D arrays."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import nnkernels as nk
import nnkernels.reference as ref
from _nkutil import (DTYPES, LAYOUTS, SHAPES, assert_close, layout, readonly,
                     sum_factor,
                     snapshot, assert_unchanged, tt, tn, torch_module,
                     rand_logits, rand_probs)

AXES = [-1, 1, 0, -2]


def exact_softmax(z, axis):
    z = np.asarray(z, dtype=np.float64)
    m = np.max(z, axis=axis, keepdims=True)
    e = np.exp(z - m)
    return e / e.sum(axis=axis, keepdims=True)


def exact_log_softmax(z, axis):
    z = np.asarray(z, dtype=np.float64)
    m = np.max(z, axis=axis, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=axis, keepdims=True))


def exact_softmax_backward(g, p, axis):
    g = np.asarray(g, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    return p * (g - np.sum(g * p, axis=axis, keepdims=True))


# ----------------------------------------------------------- vs reference
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("lay", LAYOUTS)
@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_softmax_and_log_softmax(dtype, axis, lay, shape, threads, rng):
    base = rand_logits(rng, shape, dtype, scale=4.0)
    z = layout(base, lay)
    copies = snapshot(z)
    p = nk.softmax(z, axis=axis)
    lp = nk.log_softmax(z, axis=axis)
    assert_unchanged([z], copies)
    for r in (p, lp):
        assert isinstance(r, np.ndarray)
        assert r.dtype == dtype and r.shape == shape
    n = shape[axis]
    assert_close(p, ref.softmax(base.copy(), axis=axis), dtype, n=n)
    assert_close(p, exact_softmax(base, axis), dtype, n=n)
    assert_close(p.astype(np.float64).sum(axis=axis),
                 np.ones(shape[1 - axis % 2]), dtype, rtol=0,
                 atol=(1e-13 if dtype == np.float64 else 2e-6)
                 * sum_factor(dtype, n))
    scale = float(np.abs(base).max()) + 1.0
    assert_close(lp, ref.log_softmax(base.copy(), axis=axis), dtype,
                 scale=scale, n=n)
    assert_close(lp, exact_log_softmax(base, axis), dtype, scale=scale, n=n)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("lay", LAYOUTS)
@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_softmax_backward(dtype, axis, lay, shape, threads, rng):
    gbase = rng.standard_normal(shape).astype(dtype)
    pbase = rand_probs(rng, shape, dtype, axis=axis)
    g, p = layout(gbase, lay), layout(pbase, lay)
    copies = snapshot(g, p)
    got = nk.softmax_backward(g, p, axis=axis)
    assert_unchanged([g, p], copies)
    assert got.dtype == dtype and got.shape == shape
    scale = float(np.abs(gbase).max())
    n = shape[axis]
    assert_close(got, ref.softmax_backward(gbase.copy(), pbase.copy(),
                                           axis=axis), dtype, scale=scale, n=n)
    assert_close(got, exact_softmax_backward(gbase, pbase, axis), dtype,
                 scale=scale, n=n)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_default_axis_is_last(dtype, rng):
    z = rand_logits(rng, (5, 9), dtype)
    g = rng.standard_normal((5, 9)).astype(dtype)
    assert_close(nk.softmax(z), exact_softmax(z, -1), dtype)
    assert_close(nk.log_softmax(z), exact_log_softmax(z, -1), dtype, scale=20)
    p = exact_softmax(z, -1).astype(dtype)
    assert_close(nk.softmax_backward(g, p), exact_softmax_backward(g, p, -1),
                 dtype, scale=5)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_column_layout_of_the_notes(dtype, threads, rng):
    """The notes keep one sample per column: softmax(Z, axis=0) of (C, N)
    equals the batch-first softmax of Z.T, transposed back."""
    C, N = 10, 37
    Zc = rand_logits(rng, (C, N), dtype)
    p0 = nk.softmax(Zc, axis=0)
    assert_close(p0, exact_softmax(Zc, 0), dtype)
    assert_close(p0, nk.softmax(Zc.T, axis=-1).T, dtype)
    assert_close(nk.log_softmax(Zc, axis=0),
                 nk.log_softmax(np.ascontiguousarray(Zc.T)).T, dtype, scale=30)
    G = rng.standard_normal((C, N)).astype(dtype)
    assert_close(nk.softmax_backward(G, p0, axis=0),
                 exact_softmax_backward(G, p0, 0), dtype, scale=3)
    assert_close(nk.softmax_backward(G, p0, axis=0),
                 nk.softmax_backward(G.T, p0.T, axis=1).T, dtype, scale=3)


# ---------------------------------------------------------------- out=
@pytest.mark.parametrize("lay", LAYOUTS)
@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_out_and_readonly(dtype, axis, lay, threads, rng):
    shape = (13, 29)
    base = rand_logits(rng, shape, dtype)
    z = readonly(layout(base, lay))
    out = layout(np.full(shape, 5.0, dtype), lay)
    assert nk.softmax(z, axis=axis, out=out) is out
    assert_close(out, exact_softmax(base, axis), dtype)
    out2 = layout(np.full(shape, 5.0, dtype), lay)
    assert nk.log_softmax(z, axis=axis, out=out2) is out2
    assert_close(out2, exact_log_softmax(base, axis), dtype, scale=30)
    g = readonly(layout(rng.standard_normal(shape).astype(dtype), lay))
    p = readonly(layout(exact_softmax(base, axis).astype(dtype), lay))
    out3 = layout(np.full(shape, 5.0, dtype), lay)
    assert nk.softmax_backward(g, p, axis=axis, out=out3) is out3
    assert_close(out3, exact_softmax_backward(g, p, axis), dtype, scale=5)
    np.testing.assert_array_equal(z, base)


# ------------------------------------------------------ large / non-finite
@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_large_logits_exact(dtype, axis):
    rows = np.array([[1e4, -1e4, 0.0, 5.0],
                     [-1e4, -1e4, -1e4, -1e4],
                     [1e4, 1e4, 1e4, 1e4],
                     [-1e4, 1e4, -1e4, 1e4]], dtype)
    z = rows if axis == -1 else np.ascontiguousarray(rows.T)
    p = nk.softmax(z, axis=axis)
    lp = nk.log_softmax(z, axis=axis)
    if axis == 0:
        p, lp = p.T, lp.T
    assert np.isfinite(p).all() and np.isfinite(lp).all()
    expected_p = np.array([[1, 0, 0, 0], [.25] * 4, [.25] * 4,
                           [0, .5, 0, .5]], np.float64)
    assert_close(p, expected_p, dtype)
    ln2, ln4 = np.log(2.0), np.log(4.0)
    expected_lp = np.array([[0, -2e4, -1e4, -(1e4 - 5)],
                            [-ln4] * 4, [-ln4] * 4,
                            [-2e4 - ln2, -ln2, -2e4 - ln2, -ln2]])
    # exact up to rounding of the numbers themselves
    np.testing.assert_allclose(lp, expected_lp,
                               rtol=1e-12 if dtype == np.float64 else 2e-6,
                               atol=1e-12 if dtype == np.float64 else 1e-6)


@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_nan_row_is_nan_others_exact(dtype, axis, threads, rng):
    N, C = 6, 11
    base = rand_logits(rng, (N, C), dtype)
    base[2, 4] = np.nan
    z = base if axis == -1 else np.ascontiguousarray(base.T)
    p = nk.softmax(z, axis=axis)
    lp = nk.log_softmax(z, axis=axis)
    g = rng.standard_normal(z.shape).astype(dtype)
    pb = exact_softmax(z, axis).astype(dtype)  # NaN in the affected row
    gb = nk.softmax_backward(g, pb, axis=axis)
    if axis == 0:
        p, lp, gb, g, pb = p.T, lp.T, gb.T, g.T, pb.T
    for r in (p, lp, gb):
        assert np.isnan(r[2]).all()
        assert np.isfinite(np.delete(r, 2, axis=0)).all()
    ok = np.delete(base, 2, axis=0)
    assert_close(np.delete(p, 2, axis=0), exact_softmax(ok, -1), dtype)
    assert_close(np.delete(lp, 2, axis=0), exact_log_softmax(ok, -1), dtype,
                 scale=30)
    assert_close(np.delete(gb, 2, axis=0),
                 exact_softmax_backward(np.delete(g, 2, axis=0),
                                        np.delete(pb, 2, axis=0), -1),
                 dtype, scale=5)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_minus_inf_logits_are_masked(dtype):
    """-inf (a masked logit) gives p = 0 and log p = -inf, the rest exact."""
    z = np.array([[0.0, -np.inf, 1.0, 2.0], [-np.inf, 3.0, -np.inf, -1.0]],
                 dtype)
    p = nk.softmax(z)
    lp = nk.log_softmax(z)
    assert p[0, 1] == 0 and p[1, 0] == 0 and p[1, 2] == 0
    assert lp[0, 1] == -np.inf and lp[1, 0] == -np.inf
    fin = np.isfinite(z)
    assert_close(p, exact_softmax(z, -1), dtype)
    assert_close(lp[fin], exact_log_softmax(z, -1)[fin], dtype, scale=5)


# ------------------------------------------------------------------ torch
@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("lay", ["C", "F", "strided"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_torch_parity(dtype, lay, axis, rng):
    torch = torch_module()
    shape = (17, 130)
    base = rand_logits(rng, shape, dtype, scale=5)
    base[0, :3] = [1e4, -1e4, 0]
    base[3, 5] = np.nan
    z = layout(base, lay)
    zt = tt(base, requires_grad=True)
    pt = torch.softmax(zt, dim=axis)
    assert_close(nk.softmax(z, axis=axis), tn(pt), dtype)
    assert_close(nk.log_softmax(z, axis=axis),
                 tn(torch.log_softmax(tt(base), dim=axis)), dtype, scale=2e4)
    g = rng.standard_normal(shape).astype(dtype)
    pt.backward(tt(g))
    got = nk.softmax_backward(layout(g, lay), layout(tn(pt), lay), axis=axis)
    assert_close(got, tn(zt.grad), dtype, scale=5)


# -------------------------------------------------------------- hypothesis
@given(data=st.data(),
       shape=hnp.array_shapes(min_dims=2, max_dims=2, max_side=50),
       axis=st.sampled_from(AXES),
       spread=st.sampled_from([1.0, 30.0, 1e3]))
def test_hypothesis_softmax_family(data, shape, axis, spread):
    z = data.draw(hnp.arrays(np.float64, shape,
                             elements=st.floats(-spread, spread,
                                                allow_nan=False)))
    g = data.draw(hnp.arrays(np.float64, shape,
                             elements=st.floats(-10, 10, allow_nan=False)))
    p = nk.softmax(z, axis=axis)
    assert_close(p, ref.softmax(z, axis=axis), np.float64)
    assert_close(p, exact_softmax(z, axis), np.float64)
    assert_close(nk.log_softmax(z, axis=axis), exact_log_softmax(z, axis),
                 np.float64, scale=2 * spread + 1)
    assert_close(nk.softmax_backward(g, p, axis=axis),
                 exact_softmax_backward(g, p, axis), np.float64, scale=10)
    z32 = z.astype(np.float32)
    p32 = nk.softmax(z32, axis=axis)
    assert p32.dtype == np.float32
    assert_close(p32, exact_softmax(z32, axis), np.float32)
    assert_close(nk.log_softmax(z32, axis=axis), exact_log_softmax(z32, axis),
                 np.float32, scale=2 * spread + 1)


# --------------------------------------------------------------- gradcheck
@pytest.mark.parametrize("axis", [-1, 0])
def test_gradcheck_softmax(axis, rng):
    w = rng.standard_normal((5, 8))
    z0 = rng.standard_normal((5, 8)) * 2

    def f(z):
        p = nk.softmax(z, axis=axis)
        return float(np.sum(w * p)), nk.softmax_backward(w, p, axis=axis)

    res = nk.gradcheck(f, z0)
    assert res and res.ok, (res.max_abs_error, res.max_rel_error)


@pytest.mark.parametrize("axis", [-1, 0])
def test_gradcheck_log_softmax(axis, rng):
    w = rng.standard_normal((5, 8))
    z0 = rng.standard_normal((5, 8)) * 2

    def f(z):
        lp = nk.log_softmax(z, axis=axis)
        p = nk.softmax(z, axis=axis)
        grad = w - p * np.sum(w, axis=axis, keepdims=True)
        return float(np.sum(w * lp)), grad

    res = nk.gradcheck(f, z0)
    assert res and res.ok, (res.max_abs_error, res.max_rel_error)
