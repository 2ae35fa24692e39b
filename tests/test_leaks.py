"""Repeated calls of every public kernel leave RSS (and input refcounts) flat.

For each kernel of kernel_table.KERNELS one iteration makes valid calls
(default and other options, with ``out=`` buffers) and calls that must raise
(bad dtype, bad out= shape, bad option values).
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
from kernel_table import KERNELS, NOT_KERNELS

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


def _raises(exc, fn):
    def call():
        try:
            fn()
        except exc:
            return
        raise AssertionError(f"did not raise {exc}")
    return call


def build(kernel):
    """The calls of one leak-check iteration, from the kernel table: a valid
    call, one with every option at its last value, one with out= buffers,
    and calls that must raise (a bad dtype, a bad out= shape, each bad
    option value).  Returns (calls, the arrays whose refcounts must not grow)."""
    rng = np.random.default_rng(0)
    shape = LEAK_SHAPES.get(kernel.name, (N, C))
    values = kernel.make(rng, shape, DTYPE, kernel.default_options())
    last = {k: v[-1] for k, v in kernel.options.items()}
    other = kernel.make(rng, shape, DTYPE, last) if kernel.valid_options(last) else values
    calls = [lambda: kernel.call(values), lambda: kernel.call(other)]
    arrays = [v for v in list(values.values()) + list(other.values())
              if isinstance(v, np.ndarray)]
    if kernel.has_out:
        out = kernel.out_buffers(values, DTYPE)
        calls.append(lambda: kernel.call(values, out=out))
        bad_out = tuple(None if o is None else o[..., :-1] for o in out) \
            if isinstance(out, tuple) else out[..., :-1]
        calls.append(_raises(ValueError, lambda: kernel.call(values, out=bad_out)))
        arrays += [o for o in (out if isinstance(out, tuple) else (out,)) if o is not None]
    first = kernel.float_inputs[0]
    bad = dict(values, **{first: values[first].astype(np.int32)})
    calls.append(_raises(TypeError, lambda: kernel.call(bad)))
    arrays.append(bad[first])
    for arg, bad_shape in (kernel.bad_shapes or [(a, (N + 1, C)) for a in
                                               kernel.float_inputs[1:2]])[:1]:
        wrong = dict(values, **{arg: np.ones(bad_shape, np.asarray(values[arg]).dtype)})
        calls.append(_raises(ValueError, lambda wrong=wrong: kernel.call(wrong)))
    for kwargs, exc, _ in kernel.bad_options[:3]:
        wrong = dict(values, **kwargs)
        calls.append(_raises(exc, lambda wrong=wrong: kernel.call(wrong)))
    return calls, arrays


# (N, in, out) of the dense layer; the others use (N, C)
LEAK_SHAPES = {"dense_forward": (N, IN, C), "dense_backward": (N, IN, C)}


def test_every_public_kernel_is_covered():
    assert set(nk.__all__) - NOT_KERNELS == {k.name for k in KERNELS}


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
@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.name)
def test_repeated_calls_leave_rss_flat(kernel, one_thread):
    name = kernel.name
    calls, inputs = build(kernel)

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
