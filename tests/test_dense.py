"""Dense (fully connected) layer: the numerics specific to dense_forward /
dense_backward.

Keyword defaults, activation=None ignoring a, broadcast (0-stride) and odd
strides, empty and 1-sized axes (empty sums write zeros), tanh and sigmoid
accuracy through identity weights, saturation at ±1e4 and ±inf, NaN
reaching its row, the out= triple's form and a missing a, the GIL released
during a call, and a hypothesis run of the options in random layouts for
nnkernels and for the reference itself.  The buffers (need_input_grad,
accumulate, out= triples, aliasing, no allocation) are in
test_dense_buffers.py; values against the reference (float32 within an
elementwise rounding bound c·K·eps·(|A|@|B|)), torch, finite differences,
layouts, bad dtypes and shapes, threads and leaks are checked for every
kernel by the concern modules over kernel_table.py.
"""

from __future__ import annotations

import threading
import time
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import nnkernels as nk
import nnkernels.reference as ref
from _nkutil import (DTYPES, assert_unchanged, assert_within, backward_bounds, f64,
                     forward_bound, names_in, snapshot)
from _dense_checks import (ACTIVATIONS, ACT_IDS, DT_IDS, check_backward, check_forward,
                          eps_of, exact_act, expected_backward, expected_forward, lay,
                          make_a, rand_problem)


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
        # accumulate: an empty sum adds nothing to the parameter gradients'
        # content; grad_x is written, never accumulated
        fill = tuple(np.full(o.shape, 7.0, dtype) for o in out)
        res = nk.dense_backward(ga, x, w, a, act, accumulate=True, out=fill)
        assert all(r is o for r, o in zip(res, fill))
        exp = expected_backward(ga, x, w, a, act)
        bnds = backward_bounds(ga, x, w, a, act, dtype)
        for k, (r, e, bnd) in enumerate(zip(res, exp, bnds)):
            base = 7.0 if k < 2 else 0.0
            assert_within(r, base + e,
                          bnd + 2 * eps_of(dtype) * (base + np.abs(e)),
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
            if accumulate and i < 2:        # grad_x is written, never accumulated
                bnd = bnd + 2 * eps * (np.abs(f64(fill[i])) + np.abs(e))
                e = f64(fill[i]) + e
        assert got.dtype == dtype
        assert_within(got, e, bnd, f"hypothesis {name}")
