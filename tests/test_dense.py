"""Dense (fully connected) layer: what is specific to dense_forward / dense_backward.

need_input_grad, accumulate (into zeroed, pre-filled and partial buffers),
partial out= triples and lists, out= buffers aliasing inputs (x, w.T, a row
of grad_a, accumulation into inputs), broadcast (0-stride) views, empty and
1-sized axes (empty sums write zeros), tanh and sigmoid accuracy through
identity weights, saturation at ±1e4 and ±inf, NaN reaching its row, the
out= triple's form and a missing a, no per-call allocation with out=, the
GIL released during a call, and a hypothesis run of the options in random
layouts for nnkernels and for the reference itself.  Values against the
reference (float32 within an elementwise rounding bound c·K·eps·(|A|@|B|)),
torch, finite differences, layouts, bad dtypes and shapes, threads and
leaks are checked for every kernel by the concern modules over
kernel_table.py.
"""

from __future__ import annotations

import threading
import time
import tracemalloc
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import nnkernels as nk
import nnkernels.reference as ref
from _kernel_values import dense_layer_output, dense_problem as rand_problem, exact_activation
from _nkutil import (DTYPES, EPS, assert_unchanged, assert_within, backward_bounds, f64,
                     forward_bound, layout, names_in, snapshot)

ACTIVATIONS = [None, "sigmoid", "tanh", "relu"]
ACT_IDS = ["linear", "sigmoid", "tanh", "relu"]
DT_IDS = ["f64", "f32"]


# ------------------------------------------------------------------ helpers
def eps_of(dtype):
    return EPS[np.dtype(dtype)]


def lay(base, kind):
    """``base``'s values in memory layout ``kind`` (_nkutil.layout, on a copy)."""
    return layout(np.array(base, copy=True), kind)


def exact_act(name, z):
    return f64(z).copy() if name is None else exact_activation(name, z)


def make_a(rng, act, shape, dtype):
    return dense_layer_output(rng, act, shape, dtype)


def expected_forward(x, w, b, act):
    return ref.dense_forward(f64(x), f64(w), f64(b), act)


def expected_backward(ga, x, w, a, act, need_input_grad=True):
    return ref.dense_backward(f64(ga), f64(x), f64(w), f64(a), act,
                              need_input_grad=need_input_grad)


def check_forward(got, x, w, b, act, dtype, what=""):
    exp = expected_forward(x, w, b, act)
    assert isinstance(got, np.ndarray)
    assert got.dtype == dtype, (what, got.dtype)
    assert_within(got, exp, forward_bound(x, w, b, dtype, exp), what)


def check_backward(res, ga, x, w, a, act, dtype, need_input_grad=True,
                   what=""):
    assert isinstance(res, tuple) and len(res) == 3, type(res)
    gw, gb, gx = res
    ew, eb, ex = expected_backward(ga, x, w, a, act, need_input_grad)
    bw, bb, bx = backward_bounds(ga, x, w, a, act, dtype)
    for name, g in (("grad_w", gw), ("grad_b", gb), ("grad_x", gx)):
        if g is not None:
            assert isinstance(g, np.ndarray), (name, type(g))
            assert g.dtype == dtype, (what, name, g.dtype)
    assert_within(gw, ew, bw, f"{what} grad_w")
    assert_within(gb, eb, bb, f"{what} grad_b")
    if need_input_grad:
        assert_within(gx, ex, bx, f"{what} grad_x")
    else:
        assert gx is None


# ------------------------------------------------------- forward vs reference


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_forward_keywords_and_defaults(dtype, rng):
    x, w, b, _ = rand_problem(rng, (4, 3, 5), dtype)
    exp = expected_forward(x, w, None, None)
    bound = forward_bound(x, w, None, dtype, exp)
    assert_within(nk.dense_forward(x, w), exp, bound, "defaults")
    assert_within(nk.dense_forward(x=x, w=w, b=None, activation=None,
                                   out=None), exp, bound, "keywords")
    exp = expected_forward(x, w, b, "tanh")
    assert_within(nk.dense_forward(x, w, b, "tanh"), exp,
                  forward_bound(x, w, b, dtype, exp), "positional")


# ------------------------------------------------------ backward vs reference


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_backward_activation_none_ignores_a(dtype, rng):
    """activation=None: grad_z = grad_a whether or not a is passed."""
    x, w, _, ga = rand_problem(rng, (7, 5, 4), dtype)
    a = make_a(rng, "sigmoid", ga.shape, dtype)
    r1 = nk.dense_backward(ga, x, w)
    r2 = nk.dense_backward(ga, x, w, a, None)
    check_backward(r1, ga, x, w, None, None, dtype, what="no a")
    check_backward(r2, ga, x, w, None, None, dtype, what="a given")


# ------------------------------------------------------------ odd strides
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_odd_strides_and_broadcast_views(dtype, rng):
    """Strides that are no multiple of the item size (unaligned), and
    zero strides (broadcast views): copying is allowed, results right."""
    shape = (9, 6, 5)
    n, n_in, n_out = shape
    x0, w0, b0, g0 = rand_problem(rng, shape, dtype)
    for act in ACTIVATIONS:
        a0 = make_a(rng, act, (n, n_out), dtype)
        got = nk.dense_forward(lay(x0, "odd"), lay(w0, "odd"), lay(b0, "odd"),
                               act)
        check_forward(got, x0, w0, b0, act, dtype, f"odd act={act}")
        res = nk.dense_backward(lay(g0, "odd"), lay(x0, "odd"),
                                lay(w0, "odd"), lay(a0, "odd"), act)
        check_backward(res, g0, x0, w0, a0, act, dtype, what=f"odd act={act}")
        out = lay(np.zeros((n, n_out), dtype), "odd")
        assert nk.dense_forward(x0, w0, b0, act, out=out) is out
        check_forward(out, x0, w0, b0, act, dtype, f"odd out act={act}")
    # zero strides: every sample the same / every output unit the same
    xb = np.broadcast_to(x0[:1], x0.shape)
    wb = np.broadcast_to(w0[:, :1], w0.shape)
    gb = np.broadcast_to(g0[:1], g0.shape)
    bb = np.broadcast_to(b0[:1], b0.shape)
    got = nk.dense_forward(xb, wb, bb, "sigmoid")
    check_forward(got, xb, wb, bb, "sigmoid", dtype, "broadcast")
    res = nk.dense_backward(gb, xb, wb)
    check_backward(res, gb, xb, wb, None, None, dtype, what="broadcast")


# ------------------------------------------------------ need_input_grad
@pytest.mark.parametrize("act", ACTIVATIONS, ids=ACT_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_need_input_grad_false(dtype, act, threads, rng):
    shape = (40, 30, 20)
    n, n_in, n_out = shape
    x, w, _, ga = rand_problem(rng, shape, dtype)
    a = make_a(rng, act, (n, n_out), dtype)
    res = nk.dense_backward(ga, x, w, a, act, need_input_grad=False)
    assert res[2] is None
    check_backward(res, ga, x, w, a, act, dtype, need_input_grad=False)
    gx_buf = np.full((n, n_in), 7.0, dtype)
    out = (np.full((n_out, n_in), 7.0, dtype), np.full(n_out, 7.0, dtype),
           gx_buf)
    res = nk.dense_backward(ga, x, w, a, act, need_input_grad=False, out=out)
    assert res[0] is out[0] and res[1] is out[1] and res[2] is None
    check_backward(res, ga, x, w, a, act, dtype, need_input_grad=False)
    assert (gx_buf == 7.0).all(), \
        "out[2] was written with need_input_grad=False"
    # with accumulate as well
    res = nk.dense_backward(ga, x, w, a, act, need_input_grad=False,
                            accumulate=True, out=out)
    assert res[2] is None and (gx_buf == 7.0).all()


# ------------------------------------------------------------ accumulate
@pytest.mark.parametrize("act", ACTIVATIONS, ids=ACT_IDS)
@pytest.mark.parametrize("lo", ["C", "F", "strided"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_accumulate(dtype, lo, act, threads, rng):
    shape = (37, 300, 23)   # K = 37 and 300 (past BLAS blocking)
    n, n_in, n_out = shape
    x, w, _, ga = rand_problem(rng, shape, dtype)
    a = make_a(rng, act, (n, n_out), dtype)
    one = nk.dense_backward(ga, x, w, a, act)
    bw, bb, bx = backward_bounds(ga, x, w, a, act, dtype)
    ew, eb, ex = expected_backward(ga, x, w, a, act)

    # two calls into zeroed buffers give twice one call
    out = tuple(lay(np.zeros(s, dtype), lo)
                for s in ((n_out, n_in), (n_out,), (n, n_in)))
    for _ in range(2):
        res = nk.dense_backward(ga, x, w, a, act, accumulate=True, out=out)
        assert all(r is o for r, o in zip(res, out))
    for got, e, bnd, o1, name in zip(out, (ew, eb, ex), (bw, bb, bx), one,
                                     ("grad_w", "grad_b", "grad_x")):
        assert_within(got, 2 * e, 2 * bnd, f"2 calls {name}")
        assert_within(got, 2 * f64(o1), 2 * bnd, f"2 calls vs 2*one {name}")

    # accumulate into pre-filled buffers adds to their content
    fill = [rng.standard_normal(s).astype(dtype)
            for s in ((n_out, n_in), (n_out,), (n, n_in))]
    out = tuple(lay(f, lo) for f in fill)
    res = nk.dense_backward(ga, x, w, a, act, accumulate=True, out=out)
    assert all(r is o for r, o in zip(res, out))
    eps = eps_of(dtype)
    for got, f, e, bnd, name in zip(out, fill, (ew, eb, ex), (bw, bb, bx),
                                    ("grad_w", "grad_b", "grad_x")):
        exp = f64(f) + e
        assert_within(got, exp, bnd + 2 * eps * (np.abs(f64(f)) + np.abs(e)),
                      f"prefilled {name}")

    # partial triple: only the given buffers accumulate, others are fresh
    gw_buf = lay(fill[0].copy(), lo)
    res = nk.dense_backward(ga, x, w, a, act, accumulate=True,
                            out=(gw_buf, None, None))
    assert res[0] is gw_buf
    assert_within(res[0], f64(fill[0]) + ew,
                  bw + 2 * eps * (np.abs(f64(fill[0])) + np.abs(ew)),
                  "partial grad_w")
    assert_within(res[1], eb, bb, "partial fresh grad_b")
    assert_within(res[2], ex, bx, "partial fresh grad_x")

    # accumulate=True without out: plain results
    check_backward(nk.dense_backward(ga, x, w, a, act, accumulate=True),
                   ga, x, w, a, act, dtype, what="accumulate, no out")


# ---------------------------------------------------------------- out=
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_out_partial_triples(dtype, rng):
    shape = (11, 8, 6)
    n, n_in, n_out = shape
    x, w, _, ga = rand_problem(rng, shape, dtype)
    a = make_a(rng, "tanh", (n, n_out), dtype)
    shapes = ((n_out, n_in), (n_out,), (n, n_in))
    for mask in [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (0, 1, 1),
                 (1, 0, 1), (0, 0, 0)]:
        bufs = tuple(np.full(s, 7.0, dtype) if m else None
                     for s, m in zip(shapes, mask))
        res = nk.dense_backward(ga, x, w, a, "tanh", out=bufs)
        for r, bf, s in zip(res, bufs, shapes):
            if bf is not None:
                assert r is bf
            assert r.shape == s and r.dtype == dtype
        check_backward(res, ga, x, w, a, "tanh", dtype, what=f"mask={mask}")
    # a list of three works as well
    bufs = [np.empty(s, dtype) for s in shapes]
    res = nk.dense_backward(ga, x, w, a, "tanh", out=bufs)
    assert all(r is bf for r, bf in zip(res, bufs))
    check_backward(res, ga, x, w, a, "tanh", dtype, what="list out")
    # out=None given explicitly
    check_backward(nk.dense_backward(ga, x, w, a, "tanh", out=None),
                   ga, x, w, a, "tanh", dtype, what="out=None")


# ---------------------------------------------------------------- aliasing
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_forward_out_aliases_input(dtype, rng):
    """out may be an input (or a view of one): the result equals the
    reference's, which computes everything before writing."""
    n = k = 12
    for act in ACTIVATIONS:
        x0, w0, b0, _ = rand_problem(rng, (n, k, k), dtype)
        # out is x itself (in == out)
        x = x0.copy()
        assert nk.dense_forward(x, w0, b0, act, out=x) is x
        check_forward(x, x0, w0, b0, act, dtype, f"out=x act={act}")
        # out is the transposed view of w (N == in)
        wbuf = w0.copy()
        outv = wbuf.T
        assert nk.dense_forward(x0, wbuf, b0, act, out=outv) is outv
        check_forward(outv, x0, w0, b0, act, dtype, f"out=w.T act={act}")
        # out is w itself, F-ordered x
        wbuf = w0.copy()
        assert nk.dense_forward(lay(x0, "F"), wbuf, None, act,
                                out=wbuf) is wbuf
        check_forward(wbuf, x0, w0, None, act, dtype, f"out=w act={act}")
        # out partially overlaps x: shifted view into the same buffer
        big = np.zeros((n + 3, k), dtype)
        big[:n] = x0
        xv, ov = big[:n], big[3:]
        assert nk.dense_forward(xv, w0, b0, act, out=ov) is ov
        check_forward(ov, x0, w0, b0, act, dtype, f"shifted act={act}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_backward_out_aliases_inputs(dtype, rng):
    n = n_in = n_out = 10
    shape = (n, n_in, n_out)
    for act in ACTIVATIONS:
        x0, w0, _, g0 = rand_problem(rng, shape, dtype)
        a0 = make_a(rng, act, (n, n_out), dtype)
        ew, eb, ex = expected_backward(g0, x0, w0, a0, act)
        bw, bb, bx = backward_bounds(g0, x0, w0, a0, act, dtype)
        eps = eps_of(dtype)

        def check(res, what):
            assert_within(res[0], ew, bw, f"{what} act={act} grad_w")
            assert_within(res[1], eb, bb, f"{what} act={act} grad_b")
            assert_within(res[2], ex, bx, f"{what} act={act} grad_x")

        # grad_w into w, grad_x into x, grad_b into a row of grad_a
        x, w, ga, a = x0.copy(), w0.copy(), g0.copy(), a0.copy()
        out = (w, ga[0], x)
        res = nk.dense_backward(ga, x, w, a, act, out=out)
        assert all(r is o for r, o in zip(res, out))
        check(res, "w/ga[0]/x")
        # grad_x into grad_a, grad_w into x (N == out), grad_b into a[:, 0]
        x, w, ga, a = x0.copy(), w0.copy(), g0.copy(), a0.copy()
        out = (x, a[:, 0], ga)
        res = nk.dense_backward(ga, x, w, a, act, out=out)
        assert all(r is o for r, o in zip(res, out))
        check(res, "x/a[:,0]/ga")
        # grad_x into a, grad_w into the transposed view of grad_a
        x, w, ga, a = x0.copy(), w0.copy(), g0.copy(), a0.copy()
        out = (ga.T, None, a)
        res = nk.dense_backward(ga, x, w, a, act, out=out)
        assert res[0] is out[0] and res[2] is out[2]
        check(res, "ga.T/None/a")
        # accumulate into buffers that are inputs: old content + gradient
        x, w, ga, a = x0.copy(), w0.copy(), g0.copy(), a0.copy()
        out = (w, None, x)
        nk.dense_backward(ga, x, w, a, act, accumulate=True, out=out)
        assert_within(w, f64(w0) + ew,
                      bw + 2 * eps * (np.abs(f64(w0)) + np.abs(ew)),
                      f"acc into w act={act}")
        assert_within(x, f64(x0) + ex,
                      bx + 2 * eps * (np.abs(f64(x0)) + np.abs(ex)),
                      f"acc into x act={act}")


# ------------------------------------------------------------- empty axes
@pytest.mark.parametrize("shape", [(0, 4, 3), (5, 0, 3), (5, 4, 0),
                                   (0, 0, 3), (0, 4, 0), (5, 0, 0),
                                   (0, 0, 0)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_empty_axes(dtype, shape, rng):
    n, n_in, n_out = shape
    x, w, b, ga = rand_problem(rng, shape, dtype)
    for act in ACTIVATIONS:
        for bias in (b, None):
            a = nk.dense_forward(x, w, bias, act)
            assert a.shape == (n, n_out) and a.dtype == dtype
            check_forward(a, x, w, bias, act, dtype, f"act={act}")
            # in == 0: z = b (or 0), so a = g(b) row by row
            if n_in == 0 and n and n_out:
                zb = np.zeros(n_out) if bias is None else f64(bias)
                np.testing.assert_allclose(
                    a, np.broadcast_to(exact_act(act, zb), (n, n_out)),
                    rtol=8 * eps_of(dtype), atol=0)
            out = np.full((n, n_out), 7.0, dtype)
            assert nk.dense_forward(x, w, bias, act, out=out) is out
            check_forward(out, x, w, bias, act, dtype, f"out act={act}")
        a = make_a(rng, act, (n, n_out), dtype)
        res = nk.dense_backward(ga, x, w, a, act)
        assert res[0].shape == (n_out, n_in) and res[1].shape == (n_out,)
        assert res[2].shape == (n, n_in)
        check_backward(res, ga, x, w, a, act, dtype, what=f"act={act}")
        # into buffers full of garbage: empty sums must write zeros
        out = (np.full((n_out, n_in), 7.0, dtype), np.full(n_out, 7.0, dtype),
               np.full((n, n_in), 7.0, dtype))
        res = nk.dense_backward(ga, x, w, a, act, out=out)
        assert all(r is o for r, o in zip(res, out))
        check_backward(res, ga, x, w, a, act, dtype, what=f"out act={act}")
        if n == 0:
            assert (out[0] == 0).all() and (out[1] == 0).all()
        if n_out == 0:
            assert (out[2] == 0).all()
        # accumulate: an empty sum adds nothing to the buffers' content
        fill = tuple(np.full(o.shape, 7.0, dtype) for o in out)
        res = nk.dense_backward(ga, x, w, a, act, accumulate=True, out=fill)
        assert all(r is o for r, o in zip(res, fill))
        exp = expected_backward(ga, x, w, a, act)
        bnds = backward_bounds(ga, x, w, a, act, dtype)
        for r, e, bnd in zip(res, exp, bnds):
            assert_within(r, 7.0 + e,
                          bnd + 2 * eps_of(dtype) * (7 + np.abs(e)),
                          f"accumulate act={act}")
        if n == 0:
            assert (fill[0] == 7).all() and (fill[1] == 7).all()


# ------------------------------------------------------ special values
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_tanh_small_z_relative_accuracy(dtype, rng):
    """tanh at small |z| keeps full relative accuracy (a few ulp): a naive
    (1 - e^-2z) / (1 + e^-2z) loses most digits there.  w = I makes z = x
    exactly."""
    k = 64
    mags = np.concatenate([np.logspace(-6, -2, 40 * k // 2),
                           np.logspace(-2, 0.5, 40 * k // 2)])
    z = (mags * rng.choice([-1.0, 1.0], mags.size)).astype(dtype)
    x = rng.permutation(z).reshape(-1, k)
    w = np.eye(k, dtype=dtype)
    got = nk.dense_forward(x, w, None, "tanh")
    exact = np.tanh(f64(x))
    rel = np.abs(f64(got) - exact) / np.abs(exact)
    ulps = rel / eps_of(dtype)
    i = np.unravel_index(np.argmax(ulps), x.shape)
    assert ulps.max() <= 4.0, (
        f"tanh({x[i]!r}) = {got[i]!r}, exact {exact[i]!r}: "
        f"{ulps.max():.1f} ulp")
    # same through the bias: x = 0, z = b
    b = z[:k].copy()
    got = nk.dense_forward(np.zeros((2, 3), dtype), np.zeros((k, 3), dtype),
                           b, "tanh")
    exact = np.tanh(f64(b))
    assert (np.abs(f64(got) - exact) / np.abs(exact)).max() <= \
        4.0 * eps_of(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_activation_accuracy_identity_weights(dtype, rng):
    """With w = I each activation is applied to exact values: sigmoid and
    tanh within a few ulp relative (sigmoid also in its small tail)."""
    k = 50
    lo = -80.0 if dtype == np.float32 else -700.0
    z = np.concatenate([np.linspace(lo, 40.0, 40 * k),
                        rng.standard_normal(10 * k) * 3]).astype(dtype)
    x = z.reshape(-1, k)
    w = np.eye(k, dtype=dtype)
    for act, ulp in (("sigmoid", 8.0), ("tanh", 4.0), ("relu", 0.0)):
        got = nk.dense_forward(x, w, None, act)
        exact = exact_act(act, x)
        err = np.abs(f64(got) - exact)
        bound = ulp * eps_of(dtype) * np.abs(exact) + \
            np.finfo(dtype).smallest_subnormal
        bad = err > bound
        assert not bad.any(), (act, x[bad][:3], got[bad][:3], exact[bad][:3])


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_large_and_nonfinite_values(dtype):
    """Saturation is exact at ±1e4 and ±inf; NaN propagates to its row."""
    xv = np.array([-np.inf, -1e4, -1e3, -100.0, -0.0, 0.0, 100.0, 1e3, 1e4,
                   np.inf, np.nan], dtype)
    x = xv[:, None]                       # in = 1
    w = np.array([[1.0], [2.0], [0.5]], dtype)   # z = x * w exactly
    z = f64(x) * f64(w).T
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = nk.dense_forward(x, w, None, "sigmoid")
        t = nk.dense_forward(x, w, None, "tanh")
        r = nk.dense_forward(x, w, None, "relu")
        lin = nk.dense_forward(x, w, np.zeros(3, dtype), None)
    big = np.abs(z) >= 1e3
    np.testing.assert_array_equal(s[big], (z[big] > 0).astype(dtype))
    np.testing.assert_array_equal(t[big], np.sign(z[big]).astype(dtype))
    np.testing.assert_array_equal(r[~np.isnan(z)],
                                  np.maximum(z[~np.isnan(z)], 0).astype(dtype))
    np.testing.assert_array_equal(lin, z.astype(dtype))
    assert np.isnan(s[-1]).all() and np.isnan(t[-1]).all()
    assert np.isnan(r[-1]).all(), "relu(NaN) must be NaN (as torch)"
    fin = ~np.isnan(z)
    assert np.isfinite(s[fin]).all() and np.isfinite(t[fin]).all()
    assert (s[4:6] == 0.5).all() and (t[4:6] == 0).all()
    # through a real product too: large |z| saturates exactly
    rng = np.random.default_rng(5)
    xb = (rng.standard_normal((6, 8)) * 1e4).astype(dtype)
    wb = rng.standard_normal((5, 8)).astype(dtype)
    zb = f64(xb) @ f64(wb).T
    sb = nk.dense_forward(xb, wb, None, "sigmoid")
    tb = nk.dense_forward(xb, wb, None, "tanh")
    keep = np.abs(zb) > 800           # sigmoid(-800) underflows to 0
    assert keep.sum() > 10
    np.testing.assert_array_equal(sb[keep], (zb[keep] > 0).astype(dtype))
    keep = np.abs(zb) > 50
    np.testing.assert_array_equal(tb[keep], np.sign(zb[keep]).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_nan_propagates(dtype, rng):
    shape = (7, 6, 5)
    n, n_in, n_out = shape
    x, w, b, ga = rand_problem(rng, shape, dtype)
    x[2, 3] = np.nan
    for act in ACTIVATIONS:
        a = nk.dense_forward(x, w, b, act)
        assert np.isnan(a[2]).all(), act
        rest = np.delete(np.arange(n), 2)
        assert np.isfinite(a[rest]).all(), act
        check_forward(a, x, w, b, act, dtype, f"nan act={act}")
    # NaN in grad_a row 4 reaches all of grad_w, grad_b and row 4 of grad_x
    x[2, 3] = 0.5
    ga[4, 1] = np.nan
    for act in ACTIVATIONS:
        am = make_a(rng, act, (n, n_out), dtype)
        am[4, 1] = 0.5      # g'(a) != 0 there
        gw, gb, gx = nk.dense_backward(ga, x, w, am, act)
        assert np.isnan(gw[1]).all() and np.isnan(gb[1]), act
        assert np.isfinite(np.delete(gw, 1, axis=0)).all(), act
        assert np.isnan(gx[4]).all(), act
        assert np.isfinite(np.delete(gx, 4, axis=0)).all(), act
        check_backward((gw, gb, gx), ga, x, w, am, act, dtype,
                       what=f"nan act={act}")


# ------------------------------------------------------------ exceptions
def _args(dtype=np.float64):
    rng = np.random.default_rng(0)
    n, n_in, n_out = 4, 3, 5
    return dict(x=rng.standard_normal((n, n_in)).astype(dtype),
                w=rng.standard_normal((n_out, n_in)).astype(dtype),
                b=rng.standard_normal(n_out).astype(dtype),
                grad_a=rng.standard_normal((n, n_out)).astype(dtype),
                a=rng.random((n, n_out)).astype(dtype))


def fwd(d, **kw):
    return nk.dense_forward(d["x"], d["w"], d.get("b"), **kw)


def bwd(d, **kw):
    return nk.dense_backward(d["grad_a"], d["x"], d["w"], d.get("a"), **kw)


@pytest.mark.parametrize("out", [
    "array", "pair", "quad", "single-none", "dict", "int"])
def test_backward_out_not_a_triple(out):
    d = _args()
    bufs = (np.zeros((5, 3)), np.zeros(5), np.zeros((4, 3)))
    value = {"array": np.zeros((3, 5, 3)), "pair": bufs[:2],
             "quad": bufs + (None,), "single-none": (None,),
             "dict": {0: bufs[0], 1: bufs[1], 2: bufs[2]}, "int": 3}[out]
    with pytest.raises((ValueError, TypeError)) as exc:
        bwd(d, out=value)
    names_in(str(exc.value), "out")
    for bf in bufs:
        assert not bf.any()


@pytest.mark.parametrize("act", ["sigmoid", "tanh", "relu"])
def test_activation_without_a(act):
    d = _args()
    d["a"] = None
    out = (np.full((5, 3), 7.0), np.full(5, 7.0), np.full((4, 3), 7.0))
    with pytest.raises(ValueError) as exc:
        bwd(d, activation=act, out=out)
    names_in(str(exc.value), "a")
    for o in out:
        assert (o == 7.0).all()


# --------------------------------------------------------------- threads


def test_gil_released_during_backward(rng):
    """While dense_backward runs, another Python thread keeps running: it
    ticks inside the calls.  (Holding the GIL, no Python bytecode of any
    other thread could run in the middle of a call.)"""
    old = nk.get_num_threads()
    nk.set_num_threads(1)
    try:
        shape = (500, 500, 500)
        x, w, b, ga = rand_problem(rng, shape, np.float64)
        a = make_a(rng, "sigmoid", ga.shape, np.float64)
        out = (np.empty(w.shape), np.empty(w.shape[0]), np.empty(x.shape))
        nk.dense_backward(ga, x, w, a, "sigmoid", out=out)   # warm-up

        stop = threading.Event()
        ticks = []

        def ticker():
            while not stop.is_set():
                ticks.append(time.perf_counter())
                time.sleep(0)   # (sleep(0) releases and retakes the GIL)

        th = threading.Thread(target=ticker)
        th.start()
        time.sleep(0.02)
        calls = []
        try:
            for _ in range(6):
                t0 = time.perf_counter()
                nk.dense_backward(ga, x, w, a, "sigmoid", out=out)
                calls.append((t0, time.perf_counter()))
        finally:
            stop.set()
            th.join()
    finally:
        nk.set_num_threads(old)
    ticks = np.array(ticks)
    inside = []
    for t0, t1 in calls:      # ticks in the middle 80% of each call
        lo, hi = t0 + 0.1 * (t1 - t0), t1 - 0.1 * (t1 - t0)
        inside.append(int(((ticks > lo) & (ticks < hi)).sum()))
    durations = [round(t1 - t0, 4) for t0, t1 in calls]
    assert sum(k > 0 for k in inside) >= 3, (
        f"another Python thread did not run during dense_backward calls "
        f"(ticks inside each call: {inside}, call durations {durations} s): "
        f"the GIL seems held")


# ------------------------------------------------------------- allocations
def _traced_peak(fn, reps=2):
    """Peak of the memory traced during ``reps`` calls of fn after a
    warm-up call (whatever was allocated before is not traced)."""
    fn()                               # warm-up (scratch buffers, caches)
    tracemalloc.start()
    try:
        for _ in range(reps):
            fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("order,n_threads", [
    ("C", 1), ("F", 1), ("mixed", 1), ("mixed-a", 1), ("C", 2)],
    ids=["C", "F", "mixed", "mixed-a", "C-threads2"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_no_allocation_with_out(dtype, order, n_threads, rng):
    """With out= buffers (after a warm-up call) neither function allocates
    array-sized memory: no copy of C-/F-contiguous inputs, grad_z scratch
    reused.  NumPy reports its data allocations to tracemalloc."""
    shape = (410, 60, 170)     # (N, out) passes split over 2 threads
    n, n_in, n_out = shape
    x, w, b, ga = rand_problem(rng, shape, dtype)
    # layouts of x, w, grad_a, a, out buffers; every one C- or F-contiguous,
    # which the contract serves without a copy ("mixed-a": grad_a and a in
    # different orders)
    lx, lw, lg, la, lo = {"C": "CCCCC", "F": "FFFFF", "mixed": "FTCCF",
                          "mixed-a": "CCCFC"}[order]
    x, w, ga = lay(x, lx), lay(w, lw), lay(ga, lg)
    out_f = lay(np.empty((n, n_out), dtype), lo)
    out_b = (lay(np.zeros(w.shape, dtype), lo), np.zeros(n_out, dtype),
             lay(np.zeros(x.shape, dtype), lo))
    smallest = min(out_f.nbytes, out_b[0].nbytes, out_b[2].nbytes)
    limit = smallest // 8
    bad = {}
    old_threads = nk.get_num_threads()
    nk.set_num_threads(n_threads)
    try:
        _trace_all(x, w, b, ga, la, out_f, out_b, dtype, limit, bad, rng)
    finally:
        nk.set_num_threads(old_threads)
    assert not bad, (f"traced peak (bytes) above {limit} "
                     f"(one output: {smallest} bytes): {bad}")


def _trace_all(x, w, b, ga, la, out_f, out_b, dtype, limit, bad, rng):
    n, n_out = ga.shape
    for act in ACTIVATIONS:
        a = lay(make_a(rng, act, (n, n_out), dtype), la)
        peaks = {
            "forward": _traced_peak(
                lambda: nk.dense_forward(x, w, b, act, out=out_f)),
            "backward": _traced_peak(
                lambda: nk.dense_backward(ga, x, w, a, act, out=out_b)),
            "backward accumulate": _traced_peak(
                lambda: nk.dense_backward(ga, x, w, a, act, accumulate=True,
                                          out=out_b)),
            "backward no input grad": _traced_peak(
                lambda: nk.dense_backward(ga, x, w, a, act, out=out_b,
                                          need_input_grad=False)),
        }
        bad.update({(act, k): v for k, v in peaks.items() if v > limit})
        check_forward(out_f, x, w, b, act, dtype, "after tracing")
        res = nk.dense_backward(ga, x, w, a, act, out=out_b)
        check_backward(res, ga, x, w, a, act, dtype, what="after tracing")


# --------------------------------------------------------------- hypothesis
_LAYOUTS = ["C", "F", "T", "strided", "neg"]


@pytest.mark.parametrize("impl", ["nnkernels", "reference"])
@settings(max_examples=40)
@given(data=st.data(),
       n=st.integers(0, 9), n_in=st.integers(0, 9), n_out=st.integers(0, 9),
       dtype=st.sampled_from(DTYPES),
       act=st.sampled_from(ACTIVATIONS),
       with_bias=st.booleans(), need_input_grad=st.booleans(),
       accumulate=st.booleans(), use_out=st.booleans(),
       seed=st.integers(0, 2 ** 32 - 1))
def test_hypothesis_vs_reference(impl, data, n, n_in, n_out, dtype, act,
                                 with_bias, need_input_grad, accumulate,
                                 use_out, seed):
    mod = nk if impl == "nnkernels" else ref
    rng = np.random.default_rng(seed)
    shape = (n, n_in, n_out)
    x0, w0, b0, g0 = rand_problem(rng, shape, dtype,
                                  scale=data.draw(st.sampled_from([1e-3, 1.0,
                                                                   30.0])))
    if data.draw(st.booleans()) and x0.size:     # exact zeros
        x0.flat[::3] = 0
    b0 = b0 if with_bias else None
    pick = lambda: data.draw(st.sampled_from(_LAYOUTS))  # noqa: E731
    x, w, ga = lay(x0, pick()), lay(w0, pick()), lay(g0, pick())
    b = None if b0 is None else lay(b0, data.draw(
        st.sampled_from(["C", "strided", "neg"])))
    copies = snapshot(x, w, b, ga)

    out = lay(np.full((n, n_out), 7.0, dtype), pick()) if use_out else None
    a = mod.dense_forward(x, w, b, act, out=out)
    if use_out:
        assert a is out
    assert a.shape == (n, n_out) and a.dtype == dtype
    check_forward(a, x0, w0, b0, act, dtype, "hypothesis forward")

    a0 = np.array(a)
    bufs = None
    if use_out:
        lo = pick()
        fill = [rng.standard_normal(s).astype(dtype)
                for s in ((n_out, n_in), (n_out,), (n, n_in))]
        bufs = tuple(lay(f, lo) for f in fill)
    res = mod.dense_backward(ga, x, w, a if act else None, act,
                             need_input_grad=need_input_grad,
                             accumulate=accumulate, out=bufs)
    assert isinstance(res, tuple) and len(res) == 3
    assert_unchanged([x, w, b, ga], copies)
    np.testing.assert_array_equal(a, a0)
    ew, eb, ex = expected_backward(g0, x0, w0, a0 if act else None, act)
    bw, bb, bx = backward_bounds(g0, x0, w0, a0, act, dtype)
    eps = eps_of(dtype)
    expected = [(ew, bw), (eb, bb), (ex, bx)]
    for i, (name, (e, bnd)) in enumerate(zip(("grad_w", "grad_b", "grad_x"),
                                             expected)):
        got = res[i]
        if i == 2 and not need_input_grad:
            assert got is None
            if use_out:
                np.testing.assert_array_equal(bufs[2], fill[2])
            continue
        if use_out:
            assert got is bufs[i]
            if accumulate:
                bnd = bnd + 2 * eps * (np.abs(f64(fill[i])) + np.abs(e))
                e = f64(fill[i]) + e
        assert got.dtype == dtype
        assert_within(got, e, bnd, f"hypothesis {name}")
