"""softmax, log_softmax and softmax_backward: the numerics specific to them.

Rows summing to one, the default axis and the notes' one-sample-per-column
layout, logits of ±1e4 (exact, no overflow), NaN confined to its row and
-inf logits as masks.  Values against the reference, torch and finite
differences over every axis, layouts, out= and bad inputs are checked for
every kernel by the concern modules over kernel_table.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import nnkernels as nk
from _nkutil import DTYPES, SHAPES, assert_close, rand_logits, sum_factor

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
@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_probabilities_sum_to_one(dtype, axis, rng):
    """Each row (column, for axis 0) of a softmax sums to one, to the
    rounding of a sum of n terms."""
    for shape in SHAPES:
        p = nk.softmax(rand_logits(rng, shape, dtype, scale=4.0), axis=axis)
        n = shape[axis]
        assert_close(p.astype(np.float64).sum(axis=axis), np.ones(shape[1 - axis % 2]),
                     dtype, rtol=0,
                     atol=(1e-13 if dtype == np.float64 else 2e-6) * sum_factor(dtype, n))


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
