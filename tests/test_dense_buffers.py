"""Dense layer buffers: need_input_grad, accumulate (into zeroed, pre-filled
and partial buffers), partial out= triples and lists, out= buffers aliasing
inputs (x, w.T, a row of grad_a, accumulation into inputs), and no
per-call allocation with out=.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import nnkernels as nk
from _nkutil import DTYPES, assert_within, backward_bounds, f64
from _dense_checks import (ACTIVATIONS, ACT_IDS, DT_IDS, check_backward, check_forward,
                          eps_of, exact_act, expected_backward, expected_forward, lay,
                          make_a, rand_problem)


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

    # two calls into zeroed buffers give twice one call's parameter
    # gradients; grad_x is written, never accumulated
    out = tuple(lay(np.zeros(s, dtype), lo)
                for s in ((n_out, n_in), (n_out,), (n, n_in)))
    for _ in range(2):
        res = nk.dense_backward(ga, x, w, a, act, accumulate=True, out=out)
        assert all(r is o for r, o in zip(res, out))
    for k, (got, e, bnd, o1, name) in enumerate(zip(out, (ew, eb, ex), (bw, bb, bx), one,
                                                    ("grad_w", "grad_b", "grad_x"))):
        times = 2 if k < 2 else 1
        assert_within(got, times * e, times * bnd, f"2 calls {name}")
        assert_within(got, times * f64(o1), times * bnd, f"2 calls vs one {name}")

    # accumulate into pre-filled buffers adds to their content
    fill = [rng.standard_normal(s).astype(dtype)
            for s in ((n_out, n_in), (n_out,), (n, n_in))]
    out = tuple(lay(f, lo) for f in fill)
    res = nk.dense_backward(ga, x, w, a, act, accumulate=True, out=out)
    assert all(r is o for r, o in zip(res, out))
    eps = eps_of(dtype)
    for got, f, e, bnd, name in zip(out[:2], fill, (ew, eb), (bw, bb), ("grad_w", "grad_b")):
        exp = f64(f) + e
        assert_within(got, exp, bnd + 2 * eps * (np.abs(f64(f)) + np.abs(e)),
                      f"prefilled {name}")
    assert_within(out[2], ex, bx, "prefilled grad_x is overwritten")

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
        assert_within(x, ex, bx, f"grad_x into x act={act}")


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
