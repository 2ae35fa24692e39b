"""Repeated calls of every public kernel leave RSS (and input refcounts) flat.

For each computing function of ``nnkernels.__all__`` one iteration makes
a valid call without ``out=``, a valid call with ``out=`` buffers, and one or
more calls that must raise (bad dtype / bad shape / bad label / bad option).
After a warm-up the resident set size is read from ``/proc/self/statm``, the
iteration is repeated many times, and the growth must stay far below what
leaking even a fraction of one of the (64, 256) float64 arrays per iteration
would cost.  Input arrays are reused, so a leaked *reference* to an input
would not show in RSS: their refcounts are checked as well.
"""

from __future__ import annotations

import gc
import os
import sys

import numpy as np
import pytest

import nnkernels as nk

N, C, IN = 64, 256, 128          # batch, classes / features, dense in_features
WARMUP, ITERS = 200, 2000
DTYPE = np.float64
ARRAY_BYTES = N * C * np.dtype(DTYPE).itemsize      # 128 KiB
# Leaking one (N, C) array per iteration would add ITERS * ARRAY_BYTES
# (250 MiB).  Allow 1/16 of that (~15.6 MiB): a leak of even one eighth of
# an array per iteration fails, while allocator noise stays far below.
BOUND = ITERS * ARRAY_BYTES // 16

_STATM = "/proc/self/statm"


def _rss() -> int:
    """Resident set size in bytes (resident pages x page size)."""
    with open(_STATM) as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((N, C)).astype(DTYPE)
    return rng, z


def _raises(exc, fn, *args, **kw):
    def call():
        try:
            fn(*args, **kw)
        except exc:
            return
        raise AssertionError(f"{getattr(fn, '__name__', fn)} did not raise "
                             f"{exc.__name__}")
    return call


# Each builder returns (calls, inputs): calls is a list of zero-argument
# callables (valid ones and ones asserting the expected exception), inputs
# the arrays whose refcounts must not grow.  Functions are looked up on the
# module at build time.

def _unary(name):
    def build():
        rng, z = _arrays()
        fn = getattr(nk, name)
        out = np.empty_like(z)
        calls = [
            lambda: fn(z),
            lambda: fn(z, out=out),
            _raises(TypeError, fn, z.astype(np.int32)),            # bad dtype
            _raises(ValueError, fn, z, out=out[:, :-1]),           # bad out shape
        ]
        return calls, [z, out]
    return build


def _backward(name):
    def build():
        rng, z = _arrays()
        a = 1.0 / (1.0 + np.exp(-z))
        g = rng.standard_normal((N, C)).astype(DTYPE)
        a32 = a.astype(np.float32)
        fn = getattr(nk, name)
        out = np.empty_like(g)
        calls = [
            lambda: fn(g, a),
            lambda: fn(g, a, out=out),
            _raises(TypeError, fn, g, a32),                        # mixed dtypes
            _raises(ValueError, fn, g, a[:, :-1]),                 # bad shape
        ]
        return calls, [g, a, a32, out]
    return build


def _softmax_like(name):
    def build():
        rng, z = _arrays()
        fn = getattr(nk, name)
        out = np.empty_like(z)
        calls = [
            lambda: fn(z),
            lambda: fn(z, axis=0),
            lambda: fn(z, out=out),
            _raises(TypeError, fn, z.astype(np.int64)),            # bad dtype
            _raises(ValueError, fn, z, out=out.T),                 # bad out shape
        ]
        return calls, [z, out]
    return build


def _softmax_backward():
    rng, z = _arrays()
    p = nk.softmax(z)
    g = rng.standard_normal((N, C)).astype(DTYPE)
    out = np.empty_like(g)
    fn = nk.softmax_backward
    calls = [
        lambda: fn(g, p),
        lambda: fn(g, p, out=out),
        _raises(TypeError, fn, g, p.astype(np.float32)),           # mixed dtypes
        _raises(ValueError, fn, g, p[:-1]),                        # bad shape
    ]
    return calls, [g, p, out]


def _cross_entropy(name):
    def build():
        rng, z = _arrays()
        fn = getattr(nk, name)
        labels = rng.integers(0, C, N)
        bad_labels = labels.copy()
        bad_labels[N // 2] = C                                     # out of range
        probs = nk.softmax(rng.standard_normal((N, C)).astype(DTYPE))
        weight = rng.random(C).astype(DTYPE)
        out = np.empty_like(z)
        calls = [
            lambda: fn(z, labels),
            lambda: fn(z, probs, reduction="none"),
            lambda: fn(z, labels, weight=weight, label_smoothing=0.1,
                       reduction="sum", out=out),
            lambda: fn(z, probs, out=out),
            _raises(ValueError, fn, z, bad_labels),                # bad label
            _raises(TypeError, fn, z.astype(np.int32), labels),    # bad dtype
            _raises(ValueError, fn, z, labels[:-1]),               # bad shape
            _raises(ValueError, fn, z, labels, reduction="avg"),   # bad option
        ]
        return calls, [z, labels, bad_labels, probs, weight, out]
    return build


def _elementwise_loss(name):
    def build():
        rng, z = _arrays()
        fn = getattr(nk, name)
        if name == "binary_cross_entropy":
            x = 1.0 / (1.0 + np.exp(-z))                            # probs in (0,1)
            bad = x.copy()
            bad[3, 5] = 1.5                                        # prob > 1
            bad_exc = ValueError
        else:
            x = z
            bad = z.astype(np.int32)
            bad_exc = TypeError
        t = rng.random((N, C)).astype(DTYPE)
        out = np.empty_like(x)
        calls = [
            lambda: fn(x, t),
            lambda: fn(x, t, reduction="none"),
            lambda: fn(x, t, out=out),
            _raises(bad_exc, fn, bad, t),                          # bad value/dtype
            _raises(TypeError, fn, x, t.astype(np.float32)),       # mixed dtypes
            _raises(ValueError, fn, x, t[:, :-1]),                 # bad shape
        ]
        return calls, [x, t, bad, out]
    return build


def _dense_forward():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, IN)).astype(DTYPE)
    w = rng.standard_normal((C, IN)).astype(DTYPE)
    b = rng.standard_normal(C).astype(DTYPE)
    out = np.empty((N, C), DTYPE)
    fn = nk.dense_forward
    calls = [
        lambda: fn(x, w, b, "relu"),
        lambda: fn(x, w),
        lambda: fn(x, w, b, "sigmoid", out=out),
        _raises(ValueError, fn, x, w[:, :-1], b),                  # bad shape
        _raises(TypeError, fn, x, w.astype(np.float32), b),        # mixed dtypes
        _raises(ValueError, fn, x, w, b, "gelu"),                  # bad option
    ]
    return calls, [x, w, b, out]


def _dense_backward():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, IN)).astype(DTYPE)
    w = rng.standard_normal((C, IN)).astype(DTYPE)
    a = np.tanh(rng.standard_normal((N, C))).astype(DTYPE)
    ga = rng.standard_normal((N, C)).astype(DTYPE)
    gw, gb, gx = np.empty_like(w), np.empty(C, DTYPE), np.empty_like(x)
    fn = nk.dense_backward
    calls = [
        lambda: fn(ga, x, w, a, "tanh"),
        lambda: fn(ga, x, w, need_input_grad=False),
        lambda: fn(ga, x, w, a, "tanh", out=(gw, gb, gx)),
        lambda: fn(ga, x, w, a, "tanh", accumulate=True, out=(gw, gb, None)),
        _raises(ValueError, fn, ga[:, :-1], x, w),                 # bad shape
        _raises(TypeError, fn, ga, x.astype(np.int32), w),         # bad dtype
        _raises(ValueError, fn, ga, x, w, a, "tanh",
                out=(gw.T, gb, gx)),                               # bad out shape
    ]
    return calls, [x, w, a, ga, gw, gb, gx]


BUILDERS = {
    "sigmoid": _unary("sigmoid"),
    "relu": _unary("relu"),
    "sigmoid_backward": _backward("sigmoid_backward"),
    "tanh_backward": _backward("tanh_backward"),
    "relu_backward": _backward("relu_backward"),
    "softmax": _softmax_like("softmax"),
    "log_softmax": _softmax_like("log_softmax"),
    "softmax_backward": _softmax_backward,
    "softmax_cross_entropy": _cross_entropy("softmax_cross_entropy"),
    "softmax_cross_entropy_backward":
        _cross_entropy("softmax_cross_entropy_backward"),
    "sigmoid_binary_cross_entropy":
        _elementwise_loss("sigmoid_binary_cross_entropy"),
    "binary_cross_entropy": _elementwise_loss("binary_cross_entropy"),
    "mse": _elementwise_loss("mse"),
    "dense_forward": _dense_forward,
    "dense_backward": _dense_backward,
}

# Public names that compute nothing worth leak-checking here.
_NOT_KERNELS = {"set_num_threads", "get_num_threads", "build_info",
                "gradcheck", "GradcheckResult"}


def test_every_public_kernel_is_covered():
    kernels = set(nk.__all__) - _NOT_KERNELS
    assert kernels == set(BUILDERS), (
        f"leak test out of date: missing {sorted(kernels - set(BUILDERS))}, "
        f"stale {sorted(set(BUILDERS) - kernels)}")


@pytest.fixture
def one_thread():
    """Leaks do not depend on the thread count; one thread keeps the timing
    stable on a small shared machine (OpenMP + BLAS threads spinning against
    other load made the dense cases 10x slower at times)."""
    old = nk.get_num_threads()
    nk.set_num_threads(1)
    try:
        yield
    finally:
        nk.set_num_threads(old)


@pytest.mark.skipif(not os.path.exists(_STATM),
                    reason="RSS is read from /proc/self/statm (Linux only)")
@pytest.mark.skipif("-fsanitize" in nk.build_info()["compile_args"],
                    reason="AddressSanitizer's quarantine keeps freed memory resident; "
                           "the plain build runs this test and CI runs valgrind memcheck")
@pytest.mark.parametrize("name", list(BUILDERS))
def test_repeated_calls_leave_rss_flat(name, one_thread):
    calls, inputs = BUILDERS[name]()

    def run(n):
        for _ in range(n):
            for call in calls:
                call()

    run(WARMUP)
    gc.collect()
    refs_before = [sys.getrefcount(arr) for arr in inputs]
    rss_before = _rss()

    run(ITERS)
    gc.collect()
    rss_after = _rss()
    refs_after = [sys.getrefcount(arr) for arr in inputs]

    growth = rss_after - rss_before
    assert growth < BOUND, (
        f"{name}: RSS grew by {growth / 2**20:.2f} MiB over {ITERS} iterations "
        f"of {len(calls)} calls (before {rss_before / 2**20:.1f} MiB, after "
        f"{rss_after / 2**20:.1f} MiB); bound {BOUND / 2**20:.2f} MiB = "
        f"{ITERS} x {ARRAY_BYTES // 1024} KiB (one ({N}, {C}) "
        f"{np.dtype(DTYPE).name} array) / 16")
    assert refs_after == refs_before, (
        f"{name}: input refcounts changed over {ITERS} iterations: "
        f"{refs_before} -> {refs_after} (a leaked reference per call)")
