"""Long reductions: the error of a loss or a row sum does not grow with length.

float32 sums are blocked (1024 values in 16 lanes, block sums in double), so
the documented bound, about 69 u of the sum of the terms' magnitudes (u =
2**-24), holds for any length; one running float32 sum would stop adding
once it passed 2**24 addends.  These tests compare with float64 formulas at
lengths from 2**24 (each test runs in about a second) up to 2**29 where
NNKERNELS_BIGMEM=1 (up to 12 GiB; about two minutes in all).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import nnkernels as nk
import nnkernels.reference as ref

U32 = 2.0 ** -24
BOUND = 69 * U32            # the documented bound, relative to sum |terms|
# random terms: measured below 1 u at every length here (rounding errors cancel)
LOSS_RTOL = 4 * U32

bigmem = pytest.mark.skipif(os.environ.get("NNKERNELS_BIGMEM") != "1",
                            reason="several GiB: set NNKERNELS_BIGMEM=1")
LENGTHS = [2 ** 24, pytest.param(2 ** 27, marks=bigmem), pytest.param(2 ** 29, marks=bigmem)]
# the element-wise losses' float64 references take minutes at 2**29
ELEMENTWISE_LENGTHS = LENGTHS[:2]


def rel_err(got, want):
    return abs(float(got) - float(want)) / abs(float(want))


def reference_loss(f_ref, args, reduction, chunk=2 ** 22):
    """The float64 reference's loss, a chunk at a time (no float64 copy of
    several GiB)."""
    n = args[0].size
    total = sum(f_ref(*(a[i:i + chunk].astype(np.float64) for a in args), reduction="sum")[0]
                for i in range(0, n, chunk))
    return total / n if reduction == "mean" else total


@pytest.mark.parametrize("n", ELEMENTWISE_LENGTHS)
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_elementwise_loss_of_a_long_1d_input(n, reduction):
    rng = np.random.default_rng(n)
    z = rng.standard_normal(n, dtype=np.float32)
    y = (rng.random(n, dtype=np.float32) > 0.5).astype(np.float32)
    p = rng.random(n, dtype=np.float32)
    np.clip(p, 1e-3, 1 - 1e-3, out=p)
    cases = {
        "mse": (nk.mse, ref.mse, (z, p)),
        "sigmoid_bce": (nk.sigmoid_binary_cross_entropy, ref.sigmoid_binary_cross_entropy, (z, y)),
        "bce": (nk.binary_cross_entropy, ref.binary_cross_entropy, (p, y)),
    }
    for name, (f, f_ref, args) in cases.items():
        got = f(*args, reduction=reduction)[0]
        want = reference_loss(f_ref, args, reduction)
        assert rel_err(got, want) <= LOSS_RTOL, (name, got, want)


@pytest.mark.parametrize("n", LENGTHS)
def test_mean_of_a_constant_is_exact_to_a_few_ulps(n):
    # the reported case: 16 float32 partial sums gave 0.009861 for 0.01
    loss = nk.mse(np.full(n, 0.1, np.float32), np.zeros(n, np.float32))[0]
    # equal terms round the same way in every lane: the systematic case
    # (measured 8.7 u at 2**24; PyTorch is as far off)
    assert rel_err(loss, np.float64(np.float32(0.1)) ** 2) <= BOUND


@pytest.mark.parametrize("n", LENGTHS)
def test_softmax_of_one_long_row(n):
    p = nk.softmax(np.zeros(n, np.float32))
    assert p[0] == p[-1] == np.float32(1 / n)      # 1/n is a power of two: exact
    log_p = nk.log_softmax(np.zeros(n, np.float32))
    assert abs(float(log_p[0]) + np.log(n)) <= 2 * U32 * np.log(n)
    if n <= 2 ** 24:
        z = np.random.default_rng(1).standard_normal(n, dtype=np.float32)
        want = ref.softmax(z.astype(np.float64))
        got = nk.softmax(z)
        assert abs(got.astype(np.float64).sum() - 1) <= LOSS_RTOL
        # per element the exponential's own error (6 u on short rows), and the
        # row sum's, which no longer grows with the length
        np.testing.assert_allclose(got, want, rtol=16 * U32, atol=0)


@pytest.mark.parametrize("n", LENGTHS)
def test_cross_entropy_of_one_long_row(n):
    rng = np.random.default_rng(2)
    z = rng.standard_normal((1, n), dtype=np.float32)
    label, eps = 7, 0.1
    got = nk.softmax_cross_entropy(z, np.array([label]), label_smoothing=eps)[0]
    # float64, a chunk at a time: loss = (1 - eps) (lse - z_t) + eps (lse - mean z)
    m = float(z.max())
    chunks = [z[0, i:i + 2 ** 22].astype(np.float64) for i in range(0, n, 2 ** 22)]
    lse = m + np.log(sum(np.exp(c - m).sum() for c in chunks))
    mean_z = sum(c.sum() for c in chunks) / n
    want = (1 - eps) * (lse - float(z[0, label])) + eps * (lse - mean_z)
    assert rel_err(got, want) <= LOSS_RTOL


def test_softmax_backward_of_a_long_row():
    n = 2 ** 24
    rng = np.random.default_rng(3)
    g = rng.standard_normal(n, dtype=np.float32)
    p = nk.softmax(rng.standard_normal(n, dtype=np.float32))
    got = nk.softmax_backward(g, p)
    want = ref.softmax_backward(g.astype(np.float64), p.astype(np.float64))
    # each element is p_j (g_j - dot): the dot's error, scaled by p_j
    assert np.max(np.abs(got - want) / (p.astype(np.float64) * (np.abs(g) + 1))) <= 8 * U32


@pytest.mark.parametrize("threads", [1, 2])
def test_a_long_loss_does_not_depend_on_the_thread_count(threads):
    n = 2 ** 22 + 123
    z = np.random.default_rng(4).standard_normal(n, dtype=np.float32)
    old = nk.get_num_threads()
    try:
        nk.set_num_threads(1)
        serial = nk.sigmoid_binary_cross_entropy(z, np.zeros_like(z), reduction="sum")
        nk.set_num_threads(threads)
        threaded = nk.sigmoid_binary_cross_entropy(z, np.zeros_like(z), reduction="sum")
    finally:
        nk.set_num_threads(old)
    assert serial[0] == threaded[0]
    np.testing.assert_array_equal(serial[1], threaded[1])
