"""Results do not depend on the OpenMP thread count; set/get_num_threads;
OMP_NUM_THREADS; kernels are safe to call from several Python threads."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import nnkernels as nk
import nnkernels.reference as ref
from _nkutil import DTYPES, assert_close, layout, sum_factor

# Large enough that every kernel goes parallel.
BIG = (512, 1000)


def _openmp():
    info = nk.build_info()
    for key in ("openmp", "openmp_enabled", "OpenMP"):
        if key in info:
            return bool(info[key])
    return True


def run_at(n, fn):
    old = nk.get_num_threads()
    nk.set_num_threads(n)
    try:
        return fn()
    finally:
        nk.set_num_threads(old)


def big_inputs(dtype, seed=0):
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal(BIG) * 4).astype(dtype)
    g = rng.standard_normal(BIG).astype(dtype)
    s = (1 / (1 + np.exp(-z.astype(np.float64)))).astype(dtype)
    t = rng.integers(0, BIG[1], BIG[0])
    t[::17] = -100
    y = rng.random(BIG).astype(dtype)
    return z, g, s, t, y


ELEMENTWISE = {
    "sigmoid": lambda z, g, s, t, y: nk.sigmoid(z),
    "relu": lambda z, g, s, t, y: nk.relu(z),
    "sigmoid_backward": lambda z, g, s, t, y: nk.sigmoid_backward(g, s),
    "tanh_backward": lambda z, g, s, t, y: nk.tanh_backward(g, np.tanh(z)),
    "relu_backward": lambda z, g, s, t, y: nk.relu_backward(g, z),
    "sigmoid_bce_none": lambda z, g, s, t, y: nk.sigmoid_binary_cross_entropy(
        z, y, reduction="none", pos_weight=y[0] + 0.5),
    "bce_none": lambda z, g, s, t, y: nk.binary_cross_entropy(
        s, y, reduction="none", weight=y[1]),
    "mse_none": lambda z, g, s, t, y: nk.mse(z, g, reduction="none"),
    # the gradients of the "mean" element-wise losses are element-wise too
    "mse_mean_grad": lambda z, g, s, t, y: nk.mse(z, g)[1],
    "sigmoid_bce_mean_grad": lambda z, g, s, t, y:
        nk.sigmoid_binary_cross_entropy(z, y)[1],
}

REDUCING = {
    "softmax": lambda z, g, s, t, y: nk.softmax(z),
    "softmax_axis0": lambda z, g, s, t, y: nk.softmax(z, axis=0),
    "softmax_F": lambda z, g, s, t, y: nk.softmax(layout(z, "F")),
    "log_softmax": lambda z, g, s, t, y: nk.log_softmax(z),
    "log_softmax_axis0": lambda z, g, s, t, y: nk.log_softmax(z, axis=0),
    "softmax_backward": lambda z, g, s, t, y: nk.softmax_backward(
        g, ref.softmax(z)),
    "softmax_backward_axis0": lambda z, g, s, t, y: nk.softmax_backward(
        g, ref.softmax(z, axis=0), axis=0),
    "ce_mean": lambda z, g, s, t, y: nk.softmax_cross_entropy(z, t),
    "ce_sum_axis0": lambda z, g, s, t, y: nk.softmax_cross_entropy(
        np.ascontiguousarray(z.T), t, axis=0, reduction="sum"),
    "ce_none_options": lambda z, g, s, t, y: nk.softmax_cross_entropy(
        z, t, reduction="none", weight=y[0] + 0.1, label_smoothing=0.1),
    "ce_probs": lambda z, g, s, t, y: nk.softmax_cross_entropy(
        z, ref.softmax(g)),
    "ce_backward": lambda z, g, s, t, y: nk.softmax_cross_entropy_backward(
        z, t, label_smoothing=0.2),
    "sigmoid_bce_mean": lambda z, g, s, t, y: nk.sigmoid_binary_cross_entropy(
        z, y, weight=g),
    "bce_sum": lambda z, g, s, t, y: nk.binary_cross_entropy(
        s, y, reduction="sum"),
    "mse_mean": lambda z, g, s, t, y: nk.mse(z, g),
}

REFERENCE = {
    "sigmoid": lambda z, g, s, t, y: ref.sigmoid(z),
    "softmax": lambda z, g, s, t, y: ref.softmax(z),
    "softmax_axis0": lambda z, g, s, t, y: ref.softmax(z, axis=0),
    "sigmoid_backward": lambda z, g, s, t, y: ref.sigmoid_backward(g, s),
    "ce_mean": lambda z, g, s, t, y: ref.softmax_cross_entropy(z, t),
    "ce_sum_axis0": lambda z, g, s, t, y: ref.softmax_cross_entropy(
        np.ascontiguousarray(z.T), t, axis=0, reduction="sum"),
    "ce_none_options": lambda z, g, s, t, y: ref.softmax_cross_entropy(
        z, t, reduction="none", weight=y[0] + 0.1, label_smoothing=0.1),
    "sigmoid_bce_mean": lambda z, g, s, t, y:
        ref.sigmoid_binary_cross_entropy(z, y, weight=g),
    "mse_mean": lambda z, g, s, t, y: ref.mse(z, g),
}


def _as_list(r):
    return list(r) if isinstance(r, tuple) else [r]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("name", list(ELEMENTWISE))
def test_elementwise_identical_for_any_thread_count(name, dtype):
    inputs = big_inputs(dtype)
    r1 = _as_list(run_at(1, lambda: ELEMENTWISE[name](*inputs)))
    r2 = _as_list(run_at(2, lambda: ELEMENTWISE[name](*inputs)))
    r3 = _as_list(run_at(3, lambda: ELEMENTWISE[name](*inputs)))
    for a, b, c in zip(r1, r2, r3):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    if name in REFERENCE:
        for a, e in zip(r2, _as_list(REFERENCE[name](*inputs))):
            assert_close(a, e, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("name", list(REDUCING))
def test_reductions_agree_for_any_thread_count(name, dtype):
    inputs = big_inputs(dtype)
    r1 = _as_list(run_at(1, lambda: REDUCING[name](*inputs)))
    r2 = _as_list(run_at(2, lambda: REDUCING[name](*inputs)))
    rtol = (1e-13 if dtype == np.float64 else 2e-6) * sum_factor(dtype, 1000)
    for a, b in zip(r1, r2):
        assert np.asarray(a).dtype == np.asarray(b).dtype == dtype
        np.testing.assert_allclose(b, a, rtol=rtol,
                                   atol=float(np.max(np.abs(a))) * rtol * 1e-2)
    if name in REFERENCE:
        for a, e in zip(r2, _as_list(REFERENCE[name](*inputs))):
            assert_close(a, e, dtype, n=1000)


def test_threaded_test_shapes_cross_the_thread_thresholds():
    # the shapes the thread and concurrency tests use must start a team
    import test_concurrency
    thresholds = nk.build_info()["thread_thresholds"]
    assert set(thresholds) == {"elementwise", "rows"}
    for n in (BIG[0] * BIG[1], test_concurrency.N * test_concurrency.C):
        assert n >= max(thresholds.values()), (n, thresholds)


def test_set_and_get_num_threads():
    old = nk.get_num_threads()
    try:
        for n in (1, 2, 3, 1):
            nk.set_num_threads(n)
            if _openmp():
                assert nk.get_num_threads() == n
            else:  # serial build: the count is 1, or the one requested
                assert nk.get_num_threads() in (1, n)
    finally:
        nk.set_num_threads(old)
    assert nk.get_num_threads() == old


@pytest.mark.parametrize("n", [1, 3])
def test_omp_num_threads_is_respected(n):
    if not _openmp():
        pytest.skip("built without OpenMP")
    env = dict(os.environ, OMP_NUM_THREADS=str(n))
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(nk.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        [pkg_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                      if p])
    code = "import nnkernels as nk; print(nk.get_num_threads())"
    res = subprocess.run([sys.executable, "-c", code], env=env,
                         capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(pkg_root) or "/")
    assert res.returncode == 0, res.stderr
    assert int(res.stdout.split()[-1]) == n


def test_concurrent_python_threads(threads):
    """The GIL is released in the kernels: several Python threads calling
    them at once must each get their own, correct, result."""
    rng = np.random.default_rng(5)
    jobs = []
    for i in range(6):
        z = (rng.standard_normal((300, 257)) * 3).astype(
            np.float32 if i % 2 else np.float64)
        t = rng.integers(0, 257, 300)
        jobs.append((z, t))
    results = [None] * len(jobs)
    errors = []
    barrier = threading.Barrier(len(jobs))

    def work(i):
        try:
            z, t = jobs[i]
            barrier.wait()
            out = []
            for _ in range(5):
                loss, grad = nk.softmax_cross_entropy(z, t)
                p = nk.softmax(z)
                s = nk.sigmoid_backward(z, nk.sigmoid(z))
                out.append((loss, grad.copy(), p, s))
            results[i] = out
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    assert not errors, errors
    for (z, t), res in zip(jobs, results):
        rl, rg = ref.softmax_cross_entropy(z, t)
        rp = ref.softmax(z)
        rs = ref.sigmoid_backward(z, ref.sigmoid(z))
        for loss, grad, p, s in res:
            assert_close(loss, rl, z.dtype, n=257)
            assert_close(grad, rg, z.dtype, n=257)
            assert_close(p, rp, z.dtype, n=257)
            assert_close(s, rs, z.dtype, scale=float(np.abs(z).max()))
