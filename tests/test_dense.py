"""Dense (fully connected) layer: dense_forward / dense_backward.

Checked against nnkernels.reference evaluated in float64 (float32 results
within an elementwise rounding bound c·K·eps·(|A|@|B|), not a blanket rtol),
against central finite differences and torch autograd; every activation,
bias or not, need_input_grad, accumulate, out= buffers (identity, partial
triples, F order, aliasing inputs), transposed / strided / negative-stride /
odd-stride inputs, empty and 1-sized axes, the contract's exceptions,
non-finite values, thread counts, no per-call allocation with out=, and
concurrent calls from several Python threads (GIL released).
"""

from __future__ import annotations

import re
import threading
import time
import tracemalloc
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import nnkernels as nk
import nnkernels.reference as ref
from _nkutil import DTYPES, EPS, layout, snapshot, assert_unchanged, tt, tn

ACTIVATIONS = [None, "sigmoid", "tanh", "relu"]
ACT_IDS = ["linear", "sigmoid", "tanh", "relu"]
DT_IDS = ["f64", "f32"]

# (N, in, out): 1-sized axes, odd sizes, a product past BLAS blocking
# (K = 257) and a layer whose (N, out) passes are split over threads
# (N * out > 65536 elements)
SHAPES = [(1, 1, 1), (1, 7, 3), (5, 1, 4), (6, 3, 1), (17, 33, 9),
          (33, 257, 65), (410, 20, 170)]
BIG = (410, 20, 170)


def shape_combos(combos, big_combos):
    """(shape, layout combo) pairs: every combo for the small shapes, a few
    for the big one (it costs the most)."""
    return [pytest.param(s, c, id=f"{s}-{c}") for s in SHAPES for c in combos
            if s != BIG or c in big_combos]


# ------------------------------------------------------------------ helpers
def eps_of(dtype):
    return EPS[np.dtype(dtype)]


def names_in(msg, *words):
    """Each word occurs in msg as a whole word (an argument's name)."""
    for word in words:
        pattern = r"(?<![A-Za-z0-9_])" + re.escape(str(word)) + \
            r"(?![A-Za-z0-9_])"
        assert re.search(pattern, msg), f"{word!r} not named in: {msg!r}"


def lay(base, kind):
    """``base``'s values in memory layout ``kind`` (see _nkutil.layout).

    Extra kinds: "T" (the transposed view of a C-contiguous array of the
    transposed shape, i.e. what ``x.T`` of the seed notes' column layout
    gives) and "odd" (strides that are not a multiple of the item size,
    unaligned: a field of a packed structured array).
    """
    base = np.asarray(base)
    if kind == "T":
        if base.ndim == 1:
            return base.copy()
        return np.array(base.T, order="C").T      # (np.array copies)
    if kind == "odd":
        st_dtype = np.dtype([("v", base.dtype), ("pad", "u1")])
        holder = np.zeros(base.shape, st_dtype)
        view = holder["v"]
        view[...] = base
        assert any(s % base.dtype.itemsize for s in view.strides) \
            or view.size <= 1
        return view
    # (a fresh copy first: for size-1 arrays layout() may return a view)
    return layout(base.copy(), kind)


def f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def exact_act(name, z):
    z = f64(z)
    if name is None:
        return z.copy()
    with np.errstate(over="ignore", invalid="ignore"):
        if name == "sigmoid":
            e = np.exp(-np.abs(z))
            return np.where(z >= 0, 1.0, e) / (1.0 + e)
        if name == "tanh":
            return np.tanh(z)
        if name == "relu":
            return np.where(np.isnan(z), z, np.maximum(z, 0.0))
    raise AssertionError(name)


def make_a(rng, act, shape, dtype):
    """A plausible layer output for ``act`` (relu: with exact zeros)."""
    z = rng.standard_normal(shape) * 2
    a = exact_act(act, z)
    if act == "relu" and a.size:
        a.flat[::5] = 0.0
    return a.astype(dtype)


def expected_forward(x, w, b, act):
    return ref.dense_forward(f64(x), f64(w), f64(b), act)


def expected_backward(ga, x, w, a, act, need_input_grad=True):
    return ref.dense_backward(f64(ga), f64(x), f64(w), f64(a), act,
                              need_input_grad=need_input_grad)


def forward_bound(x, w, b, dtype, expected):
    """Rounding bound of g(x @ w.T + b) computed in ``dtype``.

    The dot products of length K carry at most ~K·eps·(|x|@|w|.T) (plus one
    rounding for the bias); the activation is 1-Lipschitz and adds a few
    ulp of its result.  Factor 2: the float64 reference rounds too.
    """
    eps = eps_of(dtype)
    k = x.shape[1]
    mag = np.abs(f64(x)) @ np.abs(f64(w)).T
    if b is not None:
        mag = mag + np.abs(f64(b))
    with np.errstate(invalid="ignore"):
        return (2.0 * (k + 2) * eps * mag + 8.0 * eps * np.abs(expected)
                + 4.0 * np.finfo(dtype).tiny)


def backward_bounds(ga, x, w, a, act, dtype):
    """Rounding bounds of (grad_w, grad_b, grad_x) computed in ``dtype``.

    grad_z = grad_a ⊙ g'(a) is within a few ulp of |grad_a|·M, M the
    magnitude of the terms of g'(a) (any reasonable formula); the products
    and the batch sum of length K add K·eps of the absolute products.
    """
    eps = eps_of(dtype)
    tiny = 4.0 * np.finfo(dtype).tiny
    ga, x, w = np.abs(f64(ga)), np.abs(f64(x)), np.abs(f64(w))
    if act is None:
        m = 1.0
    else:
        a = np.abs(f64(a))
        m = {"sigmoid": a * (1 + a), "tanh": 1 + a * a,
             "relu": np.ones_like(a)}[act]
    gz = ga * m
    n, n_out = ga.shape
    bw = 2.0 * (n + 6) * eps * (gz.T @ x) + tiny
    bb = 2.0 * (n + 6) * eps * gz.sum(axis=0) + tiny
    bx = 2.0 * (n_out + 6) * eps * (gz @ w) + tiny
    return bw, bb, bx


def assert_within(got, expected, bound, what=""):
    """|got - expected| <= bound elementwise; NaN where expected is NaN;
    equal infinities allowed.  Reports the worst element."""
    got = np.asarray(got)
    assert got.shape == np.shape(expected), (what, got.shape,
                                             np.shape(expected))
    g, e = f64(got), f64(expected)
    bound = np.broadcast_to(f64(bound), e.shape)
    with np.errstate(invalid="ignore"):
        err = np.abs(g - e)
        ok = (err <= bound) | (g == e) | (np.isnan(g) & np.isnan(e))
    if not ok.all():
        with np.errstate(invalid="ignore", divide="ignore"):
            excess = np.where(ok, 0.0, np.nan_to_num(err / bound, nan=np.inf,
                                                     posinf=np.inf))
        i = np.unravel_index(np.argmax(excess), e.shape)
        raise AssertionError(
            f"{what}: {int((~ok).sum())} of {ok.size} elements out of the "
            f"rounding bound; worst at {tuple(int(j) for j in i)}: "
            f"got {g[i]!r}, expected {e[i]!r}, |err| {err[i]!r}, "
            f"bound {bound[i]!r}")


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


def rand_problem(rng, shape, dtype, scale=1.0):
    n, n_in, n_out = shape
    x = (rng.standard_normal((n, n_in)) * scale).astype(dtype)
    w = (rng.standard_normal((n_out, n_in)) * scale).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    ga = rng.standard_normal((n, n_out)).astype(dtype)
    return x, w, b, ga


# ------------------------------------------------------- forward vs reference
FWD_COMBOS = {   # layouts of x, w, b, out (None: no out=)
    "C": ("C", "C", "C", None),
    "F": ("F", "F", "C", "F"),
    "xT": ("T", "C", "C", "C"),
    "wT": ("C", "T", "neg", "F"),
    "strided": ("strided", "neg", "strided", "strided"),
    "neg": ("neg", "strided", "C", "neg"),
}


@pytest.mark.parametrize("shape,combo",
                         shape_combos(FWD_COMBOS, ("C", "F", "strided")))
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_forward_matches_reference(dtype, shape, combo, threads, rng):
    lx, lw, lb, lo = FWD_COMBOS[combo]
    x0, w0, b0, _ = rand_problem(rng, shape, dtype)
    x, w, b = lay(x0, lx), lay(w0, lw), lay(b0, lb)
    copies = snapshot(x, w, b)
    for act in ACTIVATIONS:
        for bias in (b, None):
            what = f"act={act} bias={bias is not None}"
            if lo is None:
                got = nk.dense_forward(x, w, bias, act)
                assert got.shape == (shape[0], shape[2])
            else:
                out = lay(np.full((shape[0], shape[2]), 7.0, dtype), lo)
                got = nk.dense_forward(x, w, bias, act, out=out)
                assert got is out
            check_forward(got, x0, w0, None if bias is None else b0, act,
                          dtype, what)
    assert_unchanged([x, w, b], copies)


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
BWD_COMBOS = {   # layouts of x, w, grad_a, a, out buffers (None: no out=)
    "C": ("C", "C", "C", "C", None),
    "F": ("F", "F", "F", "F", "F"),
    "T": ("T", "T", "C", "F", "C"),
    "mixed": ("C", "T", "F", "C", "F"),
    "strided": ("strided", "neg", "strided", "neg", "strided"),
    "neg": ("neg", "strided", "neg", "strided", "neg"),
}


@pytest.mark.parametrize("shape,combo",
                         shape_combos(BWD_COMBOS, ("C", "F", "strided")))
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_backward_matches_reference(dtype, shape, combo, threads, rng):
    lx, lw, lg, la, lo = BWD_COMBOS[combo]
    n, n_in, n_out = shape
    x0, w0, _, g0 = rand_problem(rng, shape, dtype)
    x, w, ga = lay(x0, lx), lay(w0, lw), lay(g0, lg)
    for act in ACTIVATIONS:
        a0 = make_a(rng, act, (n, n_out), dtype)
        a = lay(a0, la)
        copies = snapshot(x, w, ga, a)
        if lo is None:
            res = nk.dense_backward(ga, x, w, a, act)
        else:
            out = (lay(np.full((n_out, n_in), 7.0, dtype), lo),
                   lay(np.full(n_out, 7.0, dtype), lo),
                   lay(np.full((n, n_in), 7.0, dtype), lo))
            res = nk.dense_backward(ga, x, w, a, act, out=out)
            assert all(r is o for r, o in zip(res, out))
        check_backward(res, g0, x0, w0, a0, act, dtype, what=f"act={act}")
        assert res[0].shape == (n_out, n_in) and res[1].shape == (n_out,)
        assert res[2].shape == (n, n_in)
        assert_unchanged([x, w, ga, a], copies)


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


# ----------------------------------------------------------------- torch
@pytest.mark.parametrize("act", ACTIVATIONS, ids=ACT_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_torch_autograd(dtype, act, rng):
    torch = pytest.importorskip("torch")
    shape = (23, 31, 17)
    x, w, b, ga = rand_problem(rng, shape, dtype)
    for bias in (b, None):
        xt = tt(x, requires_grad=True)
        wt = tt(w, requires_grad=True)
        bt = None if bias is None else tt(bias, requires_grad=True)
        zt = torch.nn.functional.linear(xt, wt, bt)
        zt.retain_grad()
        at = zt if act is None else getattr(torch, act)(zt)
        at.backward(tt(ga))
        a_torch = tn(at)

        a = nk.dense_forward(x, w, bias, act)
        assert a.dtype == dtype
        exp = expected_forward(x, w, bias, act)
        assert_within(a, a_torch, forward_bound(x, w, bias, dtype, exp),
                      f"torch forward act={act} bias={bias is not None}")
        gw, gbias, gx = nk.dense_backward(ga, x, w, a_torch, act)
        bw, bb, bx = backward_bounds(ga, x, w, a_torch, act, dtype)
        assert_within(gw, tn(wt.grad), bw, f"torch grad_w act={act}")
        assert_within(gx, tn(xt.grad), bx, f"torch grad_x act={act}")
        # the bias gradient is the batch sum of grad_z, bias or not
        gb_torch = tn(zt.grad.sum(0))
        assert_within(gbias, gb_torch, bb, f"torch grad_b act={act}")
        if bias is not None:
            assert_within(gbias, tn(bt.grad), bb, f"torch bt.grad act={act}")


# ------------------------------------------------------- finite differences
def _away_from_kink(rng, x, w, b):
    """Shift b so that no |z| is below 0.05 (relu's kink)."""
    z = x @ w.T + b
    small = np.abs(z) < 0.05
    while small.any():
        b = b + 0.1 * small.any(axis=0)
        z = x @ w.T + b
        small = np.abs(z) < 0.05
    return b


@pytest.mark.parametrize("act", ACTIVATIONS, ids=ACT_IDS)
def test_gradcheck(act, rng):
    """d/dθ sum(r ⊙ dense_forward(x, w, b)) for θ = x, w, b vs central
    finite differences (float64)."""
    n, n_in, n_out = 5, 4, 3
    x = rng.standard_normal((n, n_in))
    w = rng.standard_normal((n_out, n_in))
    b = rng.standard_normal(n_out)
    if act == "relu":
        b = _away_from_kink(rng, x, w, b)
    r = rng.standard_normal((n, n_out))

    # gradcheck calls f on float64 copies; everything here is float64
    def f_x(v):
        a = nk.dense_forward(v, w, b, act)
        return float(np.sum(r * a)), nk.dense_backward(r, v, w, a, act)[2]

    def f_w(v):
        a = nk.dense_forward(x, v, b, act)
        return float(np.sum(r * a)), nk.dense_backward(r, x, v, a, act)[0]

    def f_b(v):
        a = nk.dense_forward(x, w, v, act)
        return float(np.sum(r * a)), nk.dense_backward(r, x, w, a, act)[1]

    for name, f, v0 in (("x", f_x, x), ("w", f_w, w), ("b", f_b, b)):
        res = nk.gradcheck(f, v0, eps=1e-6, rtol=1e-5, atol=1e-7)
        assert res.ok, (name, res)
    # and a wrong gradient is caught (the check can fail)
    bad = nk.gradcheck(lambda v: (f_x(v)[0], 1.01 * f_x(v)[1]), x,
                       eps=1e-6, rtol=1e-5, atol=1e-7)
    assert not bad.ok


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


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_results_are_fresh_arrays(dtype, rng):
    """Without out=, results never share memory with the inputs (e.g. with
    activation=None, grad_z must not be returned as / written into grad_a)."""
    x, w, b, ga = rand_problem(rng, (6, 5, 4), dtype)
    a = nk.dense_forward(x, w, b)
    for inp in (x, w, b):
        assert not np.shares_memory(a, inp)
    res = nk.dense_backward(ga, x, w)
    for r in res:
        for inp in (ga, x, w):
            assert not np.shares_memory(r, inp)


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


def test_valid_calls_work():
    for dtype in DTYPES:
        d = _args(dtype)
        fwd(d, activation="sigmoid")
        bwd(d, activation="sigmoid")


BAD_SHAPES = [
    ("x", (4,)), ("x", (4, 3, 1)), ("x", (4, 4)), ("x", (4, 2)),
    ("w", (5,)), ("w", (5, 4)), ("w", (3, 5)), ("w", (1, 5, 3)),
    ("b", (6,)), ("b", (4,)), ("b", (1, 5)), ("b", (5, 1)), ("b", ()),
]


@pytest.mark.parametrize("arg,shape", BAD_SHAPES, ids=str)
def test_forward_bad_shape(arg, shape):
    d = _args()
    d[arg] = np.ones(shape)
    out = np.full((4, 5), 7.0)
    with pytest.raises(ValueError) as exc:
        fwd(d, out=out)
    names_in(str(exc.value), arg)
    assert (out == 7.0).all(), "out written although the call failed"


BAD_SHAPES_BWD = [
    ("x", (4,)), ("x", (4, 4)), ("x", (3, 3)), ("w", (5, 4)), ("w", (5,)),
    ("w", (4, 3)), ("grad_a", (4, 4)), ("grad_a", (5, 5)), ("grad_a", (20,)),
    ("grad_a", (5, 4)), ("a", (4, 4)), ("a", (5, 4)), ("a", (20,)),
]


@pytest.mark.parametrize("arg,shape", BAD_SHAPES_BWD, ids=str)
def test_backward_bad_shape(arg, shape):
    d = _args()
    d[arg] = np.ones(shape)
    out = (np.full((5, 3), 7.0), np.full(5, 7.0), np.full((4, 3), 7.0))
    with pytest.raises(ValueError) as exc:
        bwd(d, activation="sigmoid", out=out)
    names_in(str(exc.value), arg)
    for o in out:
        assert (o == 7.0).all(), "out written although the call failed"


@pytest.mark.parametrize("which", [0, 1, 2])
@pytest.mark.parametrize("problem", ["shape", "transposed", "dtype",
                                     "readonly", "list"])
def test_backward_bad_out_entry(which, problem):
    d = _args()
    good = [np.full((5, 3), 7.0), np.full(5, 7.0), np.full((4, 3), 7.0)]
    shape = good[which].shape
    exc_type = (ValueError, TypeError)
    if problem == "shape":
        bad, exc_type = np.zeros(tuple(s + 1 for s in shape)), ValueError
    elif problem == "transposed":
        if len(shape) == 1:
            bad = np.zeros((1,) + shape)
        else:
            bad = np.zeros(shape[::-1])
        exc_type = ValueError
    elif problem == "dtype":
        bad = np.zeros(shape, np.float32)
    elif problem == "readonly":
        bad = np.zeros(shape)
        bad.setflags(write=False)
    else:
        bad = np.zeros(shape).tolist()
    out = list(good)
    out[which] = bad
    with pytest.raises(exc_type) as exc:
        bwd(d, activation="sigmoid", out=tuple(out))
    msg = str(exc.value)
    names_in(msg, "out")
    assert f"out[{which}]" in msg or ("grad_w", "grad_b", "grad_x")[which] \
        in msg, msg
    for i, o in enumerate(good):
        if i != which:
            assert (o == 7.0).all(), "out written although the call failed"


@pytest.mark.parametrize("problem", ["shape", "transposed", "dtype",
                                     "readonly", "list"])
def test_forward_bad_out(problem):
    d = _args()
    exc_type = (ValueError, TypeError)
    if problem == "shape":
        out, exc_type = np.zeros((4, 6)), ValueError
    elif problem == "transposed":
        out, exc_type = np.zeros((5, 4)), ValueError
    elif problem == "dtype":
        out = np.zeros((4, 5), np.float32)
    elif problem == "readonly":
        out = np.zeros((4, 5))
        out.setflags(write=False)
    else:
        out = np.zeros((4, 5)).tolist()
    with pytest.raises(exc_type) as exc:
        fwd(d, activation="relu", out=out)
    names_in(str(exc.value), "out")
    if isinstance(out, np.ndarray):
        assert not out.any()


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


BAD_DTYPES = [np.int64, np.int32, np.bool_, np.complex128, np.complex64,
              object, np.float16]


@pytest.mark.parametrize("bad", BAD_DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("arg", ["x", "w", "b"])
def test_forward_bad_dtype(arg, bad):
    d = _args()
    d[arg] = d[arg].astype(bad)
    with pytest.raises(TypeError) as exc:
        fwd(d)
    names_in(str(exc.value), arg)


@pytest.mark.parametrize("bad", BAD_DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("arg", ["grad_a", "x", "w", "a"])
def test_backward_bad_dtype(arg, bad):
    d = _args()
    d[arg] = d[arg].astype(bad)
    with pytest.raises(TypeError) as exc:
        bwd(d, activation="tanh")
    names_in(str(exc.value), arg)


@pytest.mark.parametrize("arg", ["x", "w", "b"])
def test_forward_mixed_dtypes(arg):
    d = _args(np.float64)
    d[arg] = d[arg].astype(np.float32)
    with pytest.raises(TypeError) as exc:
        fwd(d)
    msg = str(exc.value)
    names_in(msg, arg, "float32", "float64")
    out = np.zeros((4, 5), np.float32)   # out of the "other" dtype
    with pytest.raises((TypeError, ValueError)):
        fwd(_args(np.float64), out=out)


@pytest.mark.parametrize("arg", ["grad_a", "x", "w", "a"])
def test_backward_mixed_dtypes(arg):
    d = _args(np.float32)
    d[arg] = d[arg].astype(np.float64)
    with pytest.raises(TypeError) as exc:
        bwd(d, activation="sigmoid")
    names_in(str(exc.value), arg, "float32", "float64")


@pytest.mark.parametrize("value", ["Sigmoid", "TANH", "Relu", "linear",
                                   "none", "None", "", "relu ", "softmax",
                                   "identity"])
def test_unknown_activation(value):
    d = _args()
    with pytest.raises(ValueError) as exc:
        fwd(d, activation=value)
    names_in(str(exc.value), "activation")
    with pytest.raises(ValueError) as exc:
        bwd(d, activation=value)
    names_in(str(exc.value), "activation")


@pytest.mark.parametrize("value", [1, True, ("relu",), b"relu"])
def test_non_string_activation(value):
    d = _args()
    with pytest.raises((ValueError, TypeError)) as exc:
        fwd(d, activation=value)
    names_in(str(exc.value), "activation")
    with pytest.raises((ValueError, TypeError)):
        bwd(d, activation=value)


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
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_thread_counts_agree(dtype, rng):
    """1 and 2 threads give the same results up to the rounding of the
    reductions, and both are right."""
    shape = (520, 40, 160)      # (N, out) passes above the thread threshold
    n, n_in, n_out = shape
    x, w, b, ga0 = rand_problem(rng, shape, dtype)
    old = nk.get_num_threads()
    try:
        for act, lg in zip(ACTIVATIONS + ACTIVATIONS, "CCCCFFFF"):
            res = {}
            ga = lay(ga0, lg)
            a = lay(make_a(rng, act, (n, n_out), dtype), lg)
            for t in (1, 2):
                nk.set_num_threads(t)
                res[t] = (nk.dense_forward(x, w, b, act),
                          nk.dense_backward(ga, x, w, a, act))
            exp = expected_forward(x, w, b, act)
            fb = forward_bound(x, w, b, dtype, exp)
            assert_within(res[1][0], res[2][0], fb, f"a 1 vs 2 act={act}")
            bounds = backward_bounds(ga, x, w, a, act, dtype)
            for i, name in enumerate(("grad_w", "grad_b", "grad_x")):
                assert_within(res[1][1][i], res[2][1][i], bounds[i],
                              f"{name} 1 vs 2 threads act={act}")
            for t in (1, 2):
                check_forward(res[t][0], x, w, b, act, dtype, f"t={t}")
                check_backward(res[t][1], ga, x, w, a, act, dtype,
                               what=f"t={t}")
    finally:
        nk.set_num_threads(old)


def test_concurrent_python_threads(rng):
    """Python threads calling the kernels at once, each on its own data and
    buffers, get exactly what the same calls give one after the other."""
    n_workers, reps = 4, 6
    jobs = []
    for i in range(n_workers):
        dtype = DTYPES[i % 2]
        # worker 0's passes are big enough for the OpenMP threads
        shape = (600, 16, 120) if i == 0 else (96 + 8 * i, 80, 48 + 4 * i)
        x, w, b, ga = rand_problem(rng, shape, dtype)
        act = ACTIVATIONS[i % 4]
        a = make_a(rng, act, ga.shape, dtype)
        jobs.append((x, w, b, ga, a, act))

    def run(job, out_f, out_b):
        x, w, b, ga, a, act = job
        nk.dense_forward(x, w, b, act, out=out_f)
        return nk.dense_backward(ga, x, w, a, act, out=out_b)

    def buffers(job):
        x, w, b, ga, a, act = job
        return (np.empty(ga.shape, x.dtype),
                (np.empty(w.shape, x.dtype), np.empty(w.shape[0], x.dtype),
                 np.empty(x.shape, x.dtype)))

    serial = []
    for job in jobs:
        of, ob = buffers(job)
        run(job, of, ob)
        serial.append((of.copy(),) + tuple(o.copy() for o in ob))
        check_backward(ob, job[3], job[0], job[1], job[4], job[5],
                       job[0].dtype, what="serial")

    errors = []
    barrier = threading.Barrier(n_workers)

    def worker(k):
        try:
            of, ob = buffers(jobs[k])
            barrier.wait()
            for _ in range(reps):
                run(jobs[k], of, ob)
                got = (of,) + tuple(ob)
                for g, s, name in zip(got, serial[k],
                                      ("a", "grad_w", "grad_b", "grad_x")):
                    if not np.array_equal(g, s):
                        errors.append((k, name, float(np.max(np.abs(
                            f64(g) - f64(s))))))
        except Exception as e:  # pragma: no cover - reported below
            errors.append((k, repr(e)))

    threads = [threading.Thread(target=worker, args=(k,))
               for k in range(n_workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a worker hung"
    assert not errors, errors[:5]


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
