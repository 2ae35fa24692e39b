"""Every compiled SIMD variant computes the same results.

NNKERNELS_ISA selects the compiled variant at import.  For each variant
the package was built with, a subprocess forces it and computes a few
kernels on fixed inputs; the parent compares them with nnkernels.reference.
A variant the CPU cannot run is skipped (forcing it raises ImportError or
RuntimeError saying so).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import nnkernels as nk
import nnkernels.reference as ref
from _nkutil import assert_close

ISAS = ["baseline", "avx2", "avx512"]

_CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    import nnkernels as nk
    sys.path.insert(0, {testdir!r})
    from test_isa import make_inputs
    path = sys.argv[1]
    res = {{"isa": np.array(nk.build_info()["isa"])}}
    for dt in ("float64", "float32"):
        z, t, g, a, zt = make_inputs(np.dtype(dt))
        loss, grad = nk.softmax_cross_entropy(z, t)
        res["ce_loss_" + dt] = np.asarray(loss)
        res["ce_grad_" + dt] = grad
        loss, grad = nk.softmax_cross_entropy(zt, t, axis=0, reduction="none",
                                              label_smoothing=0.1)
        res["ce0_loss_" + dt] = loss
        res["ce0_grad_" + dt] = grad
        res["softmax_" + dt] = nk.softmax(z)
        res["log_softmax_" + dt] = nk.log_softmax(z)
        res["softmax0_" + dt] = nk.softmax(zt, axis=0)
        res["sigmoid_" + dt] = nk.sigmoid(z)
        res["sigmoid_backward_" + dt] = nk.sigmoid_backward(g, a)
        res["tanh_backward_" + dt] = nk.tanh_backward(g, a)
    np.savez(path, **res)
    print("ok", res["isa"])
""")


def make_inputs(dtype):
    """Fixed random inputs: odd sizes so that vector tails are exercised."""
    rng = np.random.default_rng(1234)
    z = (rng.standard_normal((67, 1003)) * 6).astype(dtype)
    z[0, :4] = [1e4, -1e4, 80.0, -90.0]
    z[1, :] = -1e4
    t = rng.integers(0, 1003, 67)
    t[5] = -100
    g = rng.standard_normal((67, 1003)).astype(dtype)
    a = rng.random((67, 1003)).astype(dtype)
    zt = np.ascontiguousarray(z.T)
    return z, t, g, a, zt


def _cpu_has(isa):
    """Whether /proc/cpuinfo lists the instruction set (None if unknown)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set()
            for line in f:
                if line.startswith("flags"):
                    flags.update(line.split(":", 1)[1].split())
                    break
    except OSError:
        return None
    if not flags:
        return None
    need = {"baseline": set(),
            "avx2": {"avx2", "fma", "bmi2"},
            "avx512": {"avx512f", "avx512dq", "avx512bw", "avx512vl"}}[isa]
    return need <= flags


@pytest.fixture(scope="module")
def info():
    bi = nk.build_info()
    assert "isa" in bi and "isas_compiled" in bi, bi
    assert bi["isa"] in bi["isas_compiled"]
    return bi


def test_selected_isa_is_known(info):
    assert info["isa"] in ISAS
    assert set(info["isas_compiled"]) <= set(ISAS)
    cpu = _cpu_has(info["isa"])
    assert cpu in (True, None), f"selected {info['isa']} but the CPU lacks it"


def run_forced(isa, info, tmp_path):
    """The child's results under NNKERNELS_ISA=isa (skips if not runnable)."""
    if isa not in info["isas_compiled"]:
        pytest.skip(f"{isa} not compiled in this build")
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(nk.__file__)))
    testdir = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, NNKERNELS_ISA=isa)
    env["PYTHONPATH"] = os.pathsep.join(
        [pkg_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                      if p])
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = str(tmp_path / "res.npz")
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD.format(testdir=testdir), path],
        env=env, capture_output=True, text=True, timeout=300,
        cwd=str(tmp_path))
    if proc.returncode != 0:
        lacks = _cpu_has(isa)
        cpu_refused = ("ImportError" in proc.stderr
                       or "RuntimeError" in proc.stderr)
        if cpu_refused and lacks is not True:
            pytest.skip(f"CPU cannot run {isa}: {proc.stderr.strip()[-200:]}")
        pytest.fail(f"NNKERNELS_ISA={isa} failed:\n{proc.stderr}")
    res = dict(np.load(path))
    assert str(res["isa"]) == isa, "NNKERNELS_ISA did not select the variant"
    return res


@pytest.mark.parametrize("isa", ISAS)
def test_forced_isa_matches_reference(isa, info, tmp_path):
    res = run_forced(isa, info, tmp_path)
    worst = {}
    for dt in (np.float64, np.float32):
        dt = np.dtype(dt)
        z, t, g, a, zt = make_inputs(dt)
        rl, rg = ref.softmax_cross_entropy(z, t)
        rl0, rg0 = ref.softmax_cross_entropy(zt, t, axis=0, reduction="none",
                                             label_smoothing=0.1)
        expected = {
            "ce_loss": rl, "ce_grad": rg, "ce0_loss": rl0, "ce0_grad": rg0,
            "softmax": ref.softmax(z), "log_softmax": ref.log_softmax(z),
            "softmax0": ref.softmax(zt, axis=0), "sigmoid": ref.sigmoid(z),
            "sigmoid_backward": ref.sigmoid_backward(g, a),
            "tanh_backward": ref.tanh_backward(g, a),
        }
        for key, exp in expected.items():
            got = res[f"{key}_{dt.name}"]
            assert got.dtype == dt, (key, got.dtype)
            err = np.max(np.abs(got.astype(np.float64) - exp)) / max(
                1.0, float(np.max(np.abs(exp))))
            worst[f"{key}_{dt.name}"] = err
            scale = 2e4 if key == "log_softmax" else None
            assert_close(got, exp, dt, scale=scale, n=1003,
                         err_msg=f"{key} {dt.name} under NNKERNELS_ISA={isa}")
    print(f"NNKERNELS_ISA={isa}: max scaled error "
          + ", ".join(f"{k}={v:.2e}" for k, v in worst.items()))


# The builds agree to within this many ulps of each result's largest
# magnitude (the documented bound): they differ only where the compiler
# contracts a multiply and an add into one FMA, which the wider ISAs have.
ISA_AGREEMENT_ULPS = 4


def test_isa_builds_agree(info, tmp_path):
    runnable = [isa for isa in ISAS if isa in info["isas_compiled"] and _cpu_has(isa)]
    if len(runnable) < 2:
        pytest.skip(f"fewer than two ISA builds runnable here: {runnable}")
    results = {isa: run_forced(isa, info, tmp_path / isa) for isa in runnable}
    base = results[runnable[0]]
    for isa in runnable[1:]:
        for key, got in results[isa].items():
            if key == "isa":
                continue
            want = base[key]
            eps = np.finfo(want.dtype).eps
            scale = max(float(np.max(np.abs(want.astype(np.float64)))), np.finfo(want.dtype).tiny)
            ulps = float(np.max(np.abs(got.astype(np.float64) - want))) / (eps * scale)
            assert ulps <= ISA_AGREEMENT_ULPS, (
                f"{key}: {isa} and {runnable[0]} differ by {ulps:.2f} ulps of the largest value")
