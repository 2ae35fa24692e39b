"""Kernels called from several Python threads at once (the GIL is released):
every call gets exactly the result of the same call made serially;
set_num_threads racing with running kernels is safe; torch and nnkernels
(two OpenMP runtimes) coexist in one process whatever the import order.

Thread-count independence of the results (1 vs 2 vs 3 OpenMP threads) is
covered by test_threads.py and is not repeated here.
"""

from __future__ import annotations

import importlib.util
import os
import random
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import nnkernels as nk
import nnkernels.reference as ref
from _nkutil import assert_close

# 512 x 520 = 266 240 elements: above every kernel's parallel threshold
# (nnkernels.build_info()["thread_thresholds"]; test_threads checks it).
N, C = 512, 520
H_OUT = 160           # dense: w is (H_OUT, C), x is (N, C)
N_INPUTS = 8
N_WORKERS = 4
ROUNDS = 3


def _make_inputs(i):
    """Input set i (float64 for even i, float32 for odd); sets 3 and 7 hold
    NaNs, the others are finite so reduced losses are real numbers."""
    dtype = np.float64 if i % 2 == 0 else np.float32
    rng = np.random.default_rng(1000 + i)
    z = (rng.standard_normal((N, C)) * 4).astype(dtype)
    if i % 4 == 3:  # NaN propagates to its rows (and to mean/sum losses)
        z[rng.integers(0, N, 3), rng.integers(0, C, 3)] = np.nan
    z[5, 7] = 1e4
    z[6, 8] = -1e4
    g = rng.standard_normal((N, C)).astype(dtype)
    s = (1 / (1 + np.exp(-rng.standard_normal((N, C)) * 3))).astype(dtype)
    y = rng.random((N, C)).astype(dtype)
    t = rng.integers(0, C, N)
    t[::13] = -100
    x = rng.standard_normal((N, C)).astype(dtype)
    w = (rng.standard_normal((H_OUT, C)) / np.sqrt(C)).astype(dtype)
    b = rng.standard_normal(H_OUT).astype(dtype)
    ga = rng.standard_normal((N, H_OUT)).astype(dtype)
    a_sig = (1 / (1 + np.exp(-(x.astype(np.float64) @ w.T.astype(np.float64)
                                + b)))).astype(dtype)
    return dict(z=z, g=g, s=s, y=y, t=t, x=x, w=w, b=b, ga=ga, a_sig=a_sig,
                tanh_z=np.tanh(z), p=ref.softmax(np.nan_to_num(z)),
                yprob=ref.softmax(g))


_INPUTS = None


def inputs():
    global _INPUTS
    if _INPUTS is None:
        _INPUTS = [_make_inputs(i) for i in range(N_INPUTS)]
    return _INPUTS


def _with_out(d):
    out = np.empty_like(d["z"])
    r = nk.sigmoid(d["z"], out=out)
    assert r is out or np.shares_memory(r, out)
    return out


def _ce_out(d):
    out = np.full_like(d["z"], -7.0)
    loss, grad = nk.softmax_cross_entropy(d["z"], d["t"], out=out)
    return loss, out


KERNELS = {
    # activations and their backward
    "sigmoid": lambda d: nk.sigmoid(d["z"]),
    "sigmoid_out": _with_out,
    "relu": lambda d: nk.relu(d["z"]),
    "sigmoid_backward": lambda d: nk.sigmoid_backward(d["g"], d["s"]),
    "tanh_backward": lambda d: nk.tanh_backward(d["g"], d["tanh_z"]),
    "relu_backward": lambda d: nk.relu_backward(d["g"], d["z"]),
    # softmax family
    "softmax": lambda d: nk.softmax(d["z"]),
    "softmax_axis0": lambda d: nk.softmax(d["z"], axis=0),
    "log_softmax": lambda d: nk.log_softmax(d["z"]),
    "log_softmax_F": lambda d: nk.log_softmax(np.asfortranarray(d["z"])),
    "softmax_backward": lambda d: nk.softmax_backward(d["g"], d["p"]),
    # the 4 losses (+ the CE backward-only entry point)
    "ce_mean": lambda d: nk.softmax_cross_entropy(d["z"], d["t"]),
    "ce_out": _ce_out,
    "ce_options_none": lambda d: nk.softmax_cross_entropy(
        d["z"], d["t"], reduction="none", weight=d["y"][0] + 0.1,
        label_smoothing=0.1),
    "ce_probs_sum": lambda d: nk.softmax_cross_entropy(
        d["z"], d["yprob"], reduction="sum"),
    "ce_backward": lambda d: nk.softmax_cross_entropy_backward(
        d["z"], d["t"], label_smoothing=0.2),
    "sigmoid_bce": lambda d: nk.sigmoid_binary_cross_entropy(
        d["z"], d["y"], pos_weight=d["y"][0] + 0.5),
    "sigmoid_bce_none": lambda d: nk.sigmoid_binary_cross_entropy(
        d["z"], d["y"], reduction="none", weight=d["g"]),
    "bce": lambda d: nk.binary_cross_entropy(d["s"], d["y"], weight=d["y"][1]),
    "bce_none": lambda d: nk.binary_cross_entropy(d["s"], d["y"],
                                                  reduction="none"),
    "mse": lambda d: nk.mse(d["z"], d["g"]),
    "mse_sum": lambda d: nk.mse(d["g"], d["y"], reduction="sum"),
    # dense layer
    "dense_forward": lambda d: nk.dense_forward(d["x"], d["w"], d["b"]),
    "dense_forward_tanh": lambda d: nk.dense_forward(
        d["x"], d["w"], d["b"], activation="tanh"),
    "dense_backward": lambda d: nk.dense_backward(
        d["ga"], d["x"], d["w"], d["a_sig"], activation="sigmoid"),
    "dense_backward_no_dx": lambda d: nk.dense_backward(
        d["ga"], d["x"], d["w"], need_input_grad=False),
}


def _as_list(r):
    return list(r) if isinstance(r, (tuple, list)) else [r]


def _snap(r):
    """Copy a result so later calls cannot change what we compare."""
    return [None if a is None else np.array(a, copy=True) for a in _as_list(r)]


def _assert_identical(got, expected, what):
    assert len(got) == len(expected), what
    for k, (a, e) in enumerate(zip(got, expected)):
        if e is None:
            assert a is None, (what, k)
            continue
        assert a.dtype == e.dtype and a.shape == e.shape, (what, k)
        assert np.array_equal(a, e, equal_nan=True), (
            f"{what} output {k}: concurrent result differs from serial "
            f"(max |diff| {np.nanmax(np.abs(a.astype(float) - e)):.3g})")


def test_public_kernels_all_covered():
    """Every public kernel appears in KERNELS (so a new one is not missed)."""
    kernels = {n for n in nk.__all__ if n not in (
        "set_num_threads", "get_num_threads", "build_info", "gradcheck",
        "GradcheckResult")}
    with open(__file__) as f:
        src = f.read()
    missing = [k for k in kernels if f"nk.{k}(" not in src]
    assert not missing, missing


@pytest.mark.parametrize("name", list(KERNELS))
def test_concurrent_calls_equal_serial(name, threads):
    fn = KERNELS[name]
    data = inputs()
    serial = [_snap(fn(d)) for d in data]
    # the serial results are real (distinct inputs give distinct results)
    assert not all(np.array_equal(a, b, equal_nan=True)
                   for a, b in zip(serial[0], serial[2]) if a is not None)
    assert all(np.isfinite(a).all() for a in serial[0] if a is not None)

    tasks = [i for _ in range(ROUNDS) for i in range(N_INPUTS)]
    random.Random(name).shuffle(tasks)
    start = threading.Barrier(N_WORKERS)
    started = set()
    lock = threading.Lock()

    def work(i):
        me = threading.get_ident()
        with lock:
            first = me not in started
            started.add(me)
        if first:  # line all workers up so their first calls overlap
            start.wait(timeout=30)
        return i, _snap(fn(data[i]))

    with ThreadPoolExecutor(N_WORKERS) as ex:
        # prime: one task per worker that waits on the barrier
        results = list(ex.map(work, tasks))
    assert len(results) == len(tasks)
    for i, got in results:
        _assert_identical(got, serial[i], f"{name}[input {i}]")


def test_set_num_threads_races_with_running_kernels():
    """Several threads change the thread count while others run kernels."""
    old = nk.get_num_threads()
    values = (1, 2, 3)
    data = inputs()[:4]
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
