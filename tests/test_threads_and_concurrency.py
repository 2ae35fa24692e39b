"""Threads: results do not depend on the OpenMP thread count, kernels called
from several Python threads at once (the GIL is released) get exactly the
results of the same calls made one after another, set_num_threads may race
with running kernels, OMP_NUM_THREADS is respected, and torch and nnkernels
(two OpenMP runtimes) coexist in one process whatever the import order.

The per-kernel checks run over kernel_table.KERNELS at each entry's
``threaded_shape`` (past its thread threshold): element-wise results
(``thread_exact``) are bit-identical for 1, 2 and 3 threads, reductions
agree to float rounding, and all of them match the float64 reference.
"""

from __future__ import annotations

import importlib.util
import os
import random
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import nnkernels as nk
import nnkernels.reference as ref
from _nkutil import DTYPES, assert_close, layout, sum_factor
from kernel_table import KERNELS

# the race test's arrays: 512 x 520 = 266 240 elements, above every kernel's
# parallel threshold
N, C = 512, 520
H_OUT = 160


def _openmp():
    return bool(nk.build_info().get("openmp", True))


def run_at(n, fn):
    old = nk.get_num_threads()
    nk.set_num_threads(n)
    try:
        return fn()
    finally:
        nk.set_num_threads(old)


def variants(kernel):
    """The defaults, and every option at its last value (where valid)."""
    out = [kernel.default_options()]
    last = {k: v[-1] for k, v in kernel.options.items()}
    if kernel.options and kernel.valid_options(last) and last != out[0]:
        out.append(last)
    return out


def _cases():
    for k in KERNELS:
        for i, o in enumerate(variants(k)):
            yield pytest.param(k, o, id=f"{k.name}-{'defaults' if i == 0 else 'last-options'}")


CASES = list(_cases())


def test_threaded_shapes_cross_the_thread_thresholds():
    thresholds = nk.build_info()["thread_thresholds"]
    assert set(thresholds) == {"elementwise", "rows"}
    for k in KERNELS:
        if k.name.startswith("dense"):      # BLAS threads; the (N, out) pass is threaded
            assert k.threaded_shape[0] * k.threaded_shape[2] > 65536
        else:
            size = int(np.prod(k.threaded_shape))
            assert size >= max(thresholds.values()), (k.name, size, thresholds)


@pytest.mark.parametrize("lay", ["C", "F"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("kernel,opts", CASES)
def test_results_do_not_depend_on_the_thread_count(kernel, opts, dtype, lay, rng):
    dtype = np.dtype(dtype)
    base = kernel.make(rng, kernel.threaded_shape, dtype, opts)
    values = {n: layout(v, lay) if isinstance(v, np.ndarray) and v.ndim == 2 else v
              for n, v in base.items()}
    runs = {t: run_at(t, lambda: kernel.run(kernel.fresh(values))) for t in (1, 2, 3)}
    exact = kernel.thread_exact(opts)
    n = max(kernel.threaded_shape)
    rtol = (1e-13 if dtype == np.float64 else 2e-6) * sum_factor(dtype, n)
    for i, r1 in enumerate(runs[1]):
        for t in (2, 3):
            rt = runs[t][i]
            if r1 is None:
                assert rt is None
            elif i < len(exact) and exact[i]:
                np.testing.assert_array_equal(rt, r1, err_msg=f"result {i}, {t} threads")
            elif not kernel.name.startswith("dense"):
                # (BLAS sums in a thread-dependent order: the dense layer's
                # runs are each held to its rounding bound below instead)
                assert np.asarray(rt).dtype == np.asarray(r1).dtype == dtype
                np.testing.assert_allclose(rt, r1, rtol=rtol, atol=float(np.max(np.abs(
                    np.asarray(r1, np.float64)), initial=0)) * rtol * 1e-2)
    expected = kernel.reference64(base)
    for t in (1, 2, 3):
        kernel.check(runs[t], expected, base, dtype, opts)


def _snap(results):
    return [None if r is None else np.array(r, copy=True) for r in results]


@pytest.mark.parametrize("kernel,opts", [c for c in CASES if c.id.endswith("defaults")])
def test_concurrent_calls_equal_serial_calls(kernel, opts, threads):
    """Python threads calling one kernel at once, each on its own inputs
    (float64 and float32, some with NaN and ±1e4), get bit for bit what the
    same calls give one after another."""
    data = []
    for i in range(6):
        rng = np.random.default_rng(1000 + i)
        dtype = np.dtype(np.float64 if i % 2 == 0 else np.float32)
        v = kernel.make(rng, kernel.threaded_shape, dtype, opts)
        first = v[kernel.float_inputs[0]]
        if kernel.name != "binary_cross_entropy":       # (probabilities stay in [0, 1])
            first.flat[7] = 1e4
        if i % 4 == 3 and kernel.name != "binary_cross_entropy":
            first.flat[rng.integers(0, first.size, 3)] = np.nan
        data.append(v)
    serial = [_snap(kernel.run(kernel.fresh(v))) for v in data]
    assert not all(np.array_equal(a, b, equal_nan=True)
                   for a, b in zip(serial[0], serial[2]) if a is not None)
    tasks = [i for _ in range(3) for i in range(len(data))]
    random.Random(kernel.name).shuffle(tasks)
    start = threading.Barrier(4)
    started, lock = set(), threading.Lock()

    def work(i):
        with lock:
            first = threading.get_ident() not in started
            started.add(threading.get_ident())
        if first:          # line the workers up so their first calls overlap
            start.wait(timeout=30)
        return i, _snap(kernel.run(kernel.fresh(data[i])))

    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(work, tasks))
    for i, got in results:
        for k, (a, e) in enumerate(zip(got, serial[i])):
            if e is None:
                assert a is None
                continue
            assert a.dtype == e.dtype and a.shape == e.shape
            assert np.array_equal(a, e, equal_nan=True), (
                f"{kernel.name}[input {i}] result {k}: the concurrent result differs")


def _make_inputs(i):
    dtype = np.float64 if i % 2 == 0 else np.float32
    rng = np.random.default_rng(1000 + i)
    z = (rng.standard_normal((N, C)) * 4).astype(dtype)
    t = rng.integers(0, C, N)
    t[::13] = -100
    x = rng.standard_normal((N, C)).astype(dtype)
    w = (rng.standard_normal((H_OUT, C)) / np.sqrt(C)).astype(dtype)
    b = rng.standard_normal(H_OUT).astype(dtype)
    return dict(z=z, t=t, x=x, w=w, b=b)


def inputs():
    return [_make_inputs(i) for i in range(4)]


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


def test_set_num_threads_races_with_running_kernels():
    """Several threads change the thread count while others run kernels."""
    old = nk.get_num_threads()
    values = (1, 2, 3)
    data = inputs()
    expected = [(ref.sigmoid(d["z"]), ref.softmax_cross_entropy(d["z"], d["t"]),
                 ref.dense_forward(d["x"], d["w"], d["b"])) for d in data]
    # element-wise results must not depend on the count at all
    nk.set_num_threads(1)
    sig_exact = [nk.sigmoid(d["z"]) for d in data]
    stop = threading.Event()
    errors = []
    calls = [0]

    def setter(k):
        rnd = random.Random(k)
        try:
            for _ in range(400):
                if stop.is_set():
                    break
                nk.set_num_threads(rnd.choice(values))
                n = nk.get_num_threads()
                assert n in values, n
        except BaseException as exc:
            errors.append(exc)

    def runner(k):
        try:
            for r in range(6):
                j = (k + r) % len(data)
                d, (rs, (rl, rg), rd) = data[j], expected[j]
                s = nk.sigmoid(d["z"])
                assert np.array_equal(s, sig_exact[j], equal_nan=True)
                assert_close(s, rs, d["z"].dtype)
                loss, grad = nk.softmax_cross_entropy(d["z"], d["t"])
                assert_close(loss, rl, d["z"].dtype, n=C)
                assert_close(grad, rg, d["z"].dtype, n=C)
                assert_close(nk.dense_forward(d["x"], d["w"], d["b"]), rd,
                             d["z"].dtype, n=C)
                calls[0] += 1
        except BaseException as exc:
            errors.append(exc)

    try:
        ts = ([threading.Thread(target=setter, args=(k,)) for k in range(3)]
              + [threading.Thread(target=runner, args=(k,)) for k in range(3)])
        for th in ts:
            th.start()
        for th in ts[3:]:
            th.join(timeout=120)
        stop.set()
        for th in ts[:3]:
            th.join(timeout=60)
        assert not any(th.is_alive() for th in ts), "a thread hung"
        assert not errors, errors
        assert calls[0] == 3 * 6
        if nk.build_info().get("openmp", True):
            assert nk.get_num_threads() in values
        else:
            assert nk.get_num_threads() == 1
        # the last value set is the one in force
        nk.set_num_threads(2)
        n = nk.get_num_threads()
        assert n == (2 if nk.build_info().get("openmp", True) else 1)
    finally:
        nk.set_num_threads(old)
    assert nk.get_num_threads() == old


_CHILD = r"""
import sys, threading
order = sys.argv[1]
if order == "torch_first":
    import torch
    import nnkernels as nk
else:
    import nnkernels as nk
    import torch
import numpy as np
import nnkernels.reference as ref

nk.set_num_threads(2)
torch.set_num_threads(2)
assert nk.get_num_threads() == 2, nk.get_num_threads()
assert torch.get_num_threads() == 2, torch.get_num_threads()
rng = np.random.default_rng(0)
z = rng.standard_normal((512, 300))
t = rng.integers(0, 300, 512)
x = rng.standard_normal((256, 300))
w = rng.standard_normal((200, 300)) / 17
b = rng.standard_normal(200)

def check():
    p = nk.softmax(z)
    pt = torch.softmax(torch.from_numpy(z), dim=-1).numpy()
    np.testing.assert_allclose(p, pt, rtol=1e-12, atol=1e-15)
    loss, grad = nk.softmax_cross_entropy(z, t)
    lt = torch.nn.functional.cross_entropy(torch.from_numpy(z),
                                           torch.from_numpy(t))
    np.testing.assert_allclose(loss, lt.item(), rtol=1e-12)
    a = nk.dense_forward(x, w, b, activation="tanh")
    at = torch.tanh(torch.nn.functional.linear(
        torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b))).numpy()
    np.testing.assert_allclose(a, at, rtol=1e-10, atol=1e-12)
    s = nk.sigmoid(z)
    np.testing.assert_array_equal(s, nk.sigmoid(z))

for _ in range(3):      # interleave the two runtimes
    check()
errs = []
def work():
    try:
        for _ in range(3):
            check()
    except BaseException as e:
        errs.append(e)
ts = [threading.Thread(target=work) for _ in range(2)]
for th in ts: th.start()
for th in ts: th.join()
assert not errs, errs
print("CHILD-OK", order, nk.get_num_threads(), torch.get_num_threads())
"""


@pytest.mark.parametrize("order", ["torch_first", "nnkernels_first"])
def test_torch_and_nnkernels_in_one_process(order, tmp_path):
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(nk.__file__)))
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    env["PYTHONPATH"] = os.pathsep.join(
        [pkg_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                      if p])
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, order], env=env, capture_output=True,
        text=True, timeout=180, cwd=str(tmp_path))
    if proc.returncode != 0 and "No module named 'torch'" in proc.stderr:
        pytest.skip("torch is not importable")
    assert proc.returncode == 0, (
        f"{order}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}")
    assert f"CHILD-OK {order} 2 2" in proc.stdout, proc.stdout
