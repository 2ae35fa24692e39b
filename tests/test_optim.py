"""Optimizer updates: sgd_update and adam_update (Adam, AdamW, AMSGrad).

Checked against torch.optim.SGD / Adam / AdamW (foreach=False) over 100
steps and option grids, against nnkernels.reference, for in-place
semantics, shapes, layouts, thread-count independence, and for every bad
input's exception.

Two figures per torch case:

* per step: from torch's own state after step t-1, one nnkernels step gives
  torch's state after step t within F32_ULPS_PER_STEP ulp (float32) or
  F64_ULPS_PER_STEP (float64), in ulps of the larger of each value before
  and after the step (see step_ulps).  The state (momentum buffer, m, v, v̂) is
  bit for bit torch's in the FMA builds; θ can differ by an ulp where
  PyTorch's sqrt (MKL's, not correctly rounded) differs from this one.
* over 100 steps, nnkernels running on its own state: the largest
  element-wise relative difference of θ from torch's, at most F64_RTOL_100
  in float64 (and 100 steps' worth of per-step ulps in float32).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import nnkernels as nk
import nnkernels.reference as ref
from _nkutil import DTYPES, assert_close, layout, readonly, torch_module

STEPS = 100
F64_RTOL_100 = 1e-12
FUSED = nk._dispatch.optim.FUSED_MADD
# Measured against torch 2.13's AVX2 kernels, seed 0, the grids below: SGD 0
# ulp (bit for bit), Adam at most 2 ulp (float64) and 4 ulp (float32) per
# step, from PyTorch's sqrt; over 100 steps θ within 3.1e-15 (float64) and
# 1.8e-5 (float32) relative.  A build without FMA (x86-64 baseline) rounds
# a*b + c twice where torch rounds once; where the terms cancel that shows
# as up to 46 ulp of a step's scale (float64: 100 steps within 9.5e-14).
F64_ULPS_PER_STEP = 4 if FUSED else 64
F32_ULPS_PER_STEP = 4 if FUSED else 64

SGD_OPTIONS = [
    dict(),
    dict(momentum=0.9),
    dict(momentum=0.9, dampening=0.3),
    dict(momentum=0.9, nesterov=True),
    dict(weight_decay=0.01),
    dict(maximize=True),
    dict(momentum=0.5, weight_decay=0.1, maximize=True),
    dict(momentum=0.9, nesterov=True, weight_decay=0.05, maximize=True),
]
ADAM_OPTIONS = [
    dict(),
    dict(weight_decay=0.1),
    dict(weight_decay=0.1, decoupled_weight_decay=True),
    dict(amsgrad=True),
    dict(maximize=True),
    dict(betas=(0.3, 0.9)),           # 1 - beta1 >= 0.5: torch's other lerp formula
    dict(betas=(0.0, 0.0), eps=1e-3),
    dict(betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05, amsgrad=True, maximize=True),
    dict(weight_decay=0.01, decoupled_weight_decay=True, amsgrad=True, lr=0.1),
]


def _id(options):
    return ",".join(f"{k}={v}" for k, v in options.items()) or "defaults"


def ulps(a, b):
    """Largest distance in units in the last place between a and b (NaN = NaN)."""
    a = np.asarray(a)
    b = np.asarray(b)
    both_nan = np.isnan(a) & np.isnan(b)
    int_type = np.int32 if a.dtype == np.float32 else np.int64
    def ordered(x):
        i = x.view(int_type).astype(np.int64)
        return np.where(i < 0, np.iinfo(int_type).min - i, i)   # -0 and +0 both 0
    d = np.abs(ordered(a) - ordered(b))
    d[both_nan] = 0
    return int(d.max()) if d.size else 0


def step_ulps(got, expected, before):
    """|got - expected| in ulps of the largest of |before|, |expected| and the
    change |expected - before|: an update that cancels θ to near zero is
    measured at the scale of θ and of the update, the scale its rounding
    errors have."""
    got, expected, before = (np.asarray(x) for x in (got, expected, before))
    if not got.size:
        return 0.0
    both_nan = np.isnan(got) & np.isnan(expected)
    with np.errstate(invalid="ignore", over="ignore"):
        scale = np.maximum(np.maximum(np.abs(expected), np.abs(before)),
                           np.abs(expected.astype(np.float64) - before)).astype(got.dtype)
        d = np.abs(got.astype(np.float64) - expected) / np.spacing(scale).astype(np.float64)
    d[both_nan | (got == expected)] = 0.0
    return float(d.max())


def max_rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300))) if a.size else 0.0


# ---- the torch twin -----------------------------------------------------------

class TorchRun:
    """torch.optim on one parameter, with the state names of nnkernels."""

    def __init__(self, kind, p0, options):
        torch = torch_module()
        self.torch = torch
        self.param = torch.nn.Parameter(torch.from_numpy(p0.copy()))
        opts = dict(options)
        self.kind = kind
        if kind == "sgd":
            self.opt = torch.optim.SGD([self.param], foreach=False, **opts)
        else:
            cls = torch.optim.AdamW if opts.pop("decoupled_weight_decay", False) else \
                torch.optim.Adam
            if cls is torch.optim.AdamW:
                opts.setdefault("weight_decay", 0.0)   # AdamW's default is 0.01
            self.opt = cls([self.param], foreach=False, **opts)

    def step(self, grad):
        self.param.grad = self.torch.from_numpy(grad.copy())
        self.opt.step()

    def state(self):
        """param and the state arrays, copies, by nnkernels' names."""
        st = self.opt.state[self.param]
        out = {"param": self.param.detach().numpy().copy()}
        names = {"momentum_buffer": "momentum_buffer", "exp_avg": "exp_avg",
                 "exp_avg_sq": "exp_avg_sq", "max_exp_avg_sq": "max_exp_avg_sq"}
        for torch_name, name in names.items():
            if st.get(torch_name) is not None:
                out[name] = st[torch_name].numpy().copy()
        return out


def nk_step(kind, state, grad, step, options, module=nk):
    """One nnkernels (or reference) step on the arrays in `state`, in place."""
    options = dict(options)
    if kind == "sgd":
        options.setdefault("lr", 0.01)
        return module.sgd_update(state["param"], grad, momentum_buffer=state.get(
            "momentum_buffer"), step=step, **options)
    options.setdefault("lr", 0.01)
    return module.adam_update(state["param"], grad, state["exp_avg"], state["exp_avg_sq"],
                              step=step, max_exp_avg_sq=state.get("max_exp_avg_sq"),
                              **options)


def fresh_state(kind, p0, options):
    state = {"param": p0.copy()}
    if kind == "sgd":
        if options.get("momentum", 0.0):
            state["momentum_buffer"] = np.full_like(p0, np.nan)   # not read at step 1
    else:
        state["exp_avg"] = np.zeros_like(p0)
        state["exp_avg_sq"] = np.zeros_like(p0)
        if options.get("amsgrad"):
            state["max_exp_avg_sq"] = np.zeros_like(p0)
    return state


def compare_with_torch(kind, dtype, options, n=1003, steps=STEPS, seed=0):
    """(worst ulps of one step from torch's state, worst relative error of θ
    after `steps` steps on nnkernels' own state)."""
    rng = np.random.default_rng(seed)
    p0 = rng.standard_normal(n).astype(dtype)
    torch_opts = dict(options)
    torch_opts.setdefault("lr", 0.01)
    twin = TorchRun(kind, p0, torch_opts)
    ours = fresh_state(kind, p0, options)
    worst_step = 0
    for t in range(1, steps + 1):
        grad = rng.standard_normal(n).astype(dtype)
        start = fresh_state(kind, p0, options) if t == 1 else twin.state()
        if t > 1:
            start = {k: v for k, v in start.items() if k in ours}
        before = {k: v.copy() for k, v in start.items()}
        twin.step(grad)
        result = nk_step(kind, start, grad, t, options)
        assert result is start["param"]
        expected = twin.state()
        for name in ours:
            worst_step = max(worst_step, step_ulps(start[name], expected[name], before[name]))
        nk_step(kind, ours, grad, t, options)
    return worst_step, max_rel(ours["param"], twin.state()["param"])


@pytest.mark.parametrize("options", SGD_OPTIONS, ids=_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_sgd_matches_torch(dtype, options):
    worst_step, rel = compare_with_torch("sgd", dtype, options)
    if dtype == np.float64:
        assert worst_step <= F64_ULPS_PER_STEP, worst_step
        assert rel <= F64_RTOL_100, rel
    else:
        assert worst_step <= F32_ULPS_PER_STEP, worst_step
        assert rel <= STEPS * F32_ULPS_PER_STEP * 2.0 ** -23, rel
    if FUSED:   # every operation rounds as torch's: the same bits
        assert worst_step == 0, worst_step


@pytest.mark.parametrize("options", ADAM_OPTIONS, ids=_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_adam_matches_torch(dtype, options):
    worst_step, rel = compare_with_torch("adam", dtype, options)
    if dtype == np.float64:
        assert worst_step <= F64_ULPS_PER_STEP, worst_step
        assert rel <= F64_RTOL_100, rel
    else:
        assert worst_step <= F32_ULPS_PER_STEP, worst_step
        assert rel <= STEPS * F32_ULPS_PER_STEP * 2.0 ** -23, rel


def test_adam_state_is_torchs_bit_for_bit():
    """m, v and v̂ take no square root: in an FMA build they are torch's bits."""
    if not FUSED:
        pytest.skip("this build rounds a*b + c twice")
    rng = np.random.default_rng(3)
    p0 = rng.standard_normal(517).astype(np.float32)
    options = dict(amsgrad=True, weight_decay=0.1, betas=(0.3, 0.99))
    twin = TorchRun("adam", p0, dict(options, lr=0.01))
    for t in range(1, 21):
        grad = rng.standard_normal(p0.size).astype(np.float32)
        start = twin.state() if t > 1 else fresh_state("adam", p0, options)
        twin.step(grad)
        nk_step("adam", start, grad, t, options)
        expected = twin.state()
        for name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            np.testing.assert_array_equal(start[name], expected[name], err_msg=name)


def test_nan_and_inf_propagate_as_in_torch():
    """A NaN or inf gradient poisons θ and the state as torch's step does
    (torch.maximum propagates NaN into v̂)."""
    torch_module()
    p0 = np.linspace(-1, 1, 40)
    grad = np.ones(40)
    grad[[3, 17]] = np.nan
    grad[[5, 30]] = np.inf
    grad[9] = -np.inf
    for kind, options in (("adam", dict(amsgrad=True)), ("sgd", dict(momentum=0.9))):
        twin = TorchRun(kind, p0, dict(options, lr=0.01))
        ours = fresh_state(kind, p0, options)
        for t in (1, 2):
            twin.step(grad)
            nk_step(kind, ours, grad, t, options)
        expected = twin.state()
        for name in ours:
            np.testing.assert_array_equal(np.isnan(ours[name]), np.isnan(expected[name]))
            assert ulps(ours[name], expected[name]) <= F64_ULPS_PER_STEP, name


# ---- the reference --------------------------------------------------------------

REFERENCE_CASES = ([("sgd", o) for o in SGD_OPTIONS] + [("adam", o) for o in ADAM_OPTIONS])


@pytest.mark.parametrize("kind,options", REFERENCE_CASES,
                         ids=[f"{k}-{_id(o)}" for k, o in REFERENCE_CASES])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_matches_reference(kind, options, dtype):
    rng = np.random.default_rng(1)
    p0 = rng.standard_normal((7, 13)).astype(dtype)
    ours, theirs = fresh_state(kind, p0, options), fresh_state(kind, p0, options)
    for t in range(1, 11):
        grad = rng.standard_normal(p0.shape).astype(dtype)
        assert nk_step(kind, ours, grad, t, options) is ours["param"]
        assert nk_step(kind, theirs, grad, t, options, module=ref) is theirs["param"]
    for name in ours:
        # ten steps of a few ulp each, relative to the largest value
        assert_close(ours[name], theirs[name], rtol=0, atol=10 * 8 * np.finfo(dtype).eps
                     * max(1.0, float(np.abs(theirs[name]).max())), err_msg=name)


# ---- in place, shapes, layouts ----------------------------------------------

@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_in_place(kind):
    rng = np.random.default_rng(2)
    options = dict(momentum=0.9) if kind == "sgd" else dict(amsgrad=True)
    state = fresh_state(kind, rng.standard_normal(50), options)
    before = {k: v.copy() for k, v in state.items()}
    ids = {k: id(v) for k, v in state.items()}
    grad = readonly(rng.standard_normal(50))           # a read-only gradient is fine
    grad_before = grad.copy()
    out = nk_step(kind, state, grad, 1, options)
    assert out is state["param"]
    assert {k: id(v) for k, v in state.items()} == ids
    for name in state:
        assert not np.array_equal(state[name], before[name], equal_nan=True), name
    np.testing.assert_array_equal(grad, grad_before)
    if kind == "sgd":
        np.testing.assert_array_equal(state["momentum_buffer"], grad)   # b = g at step 1


SHAPES = [(), (1,), (17,), (3, 4, 5), (0,), (4, 0, 3)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kind", ["sgd", "adam"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_shapes(kind, shape, dtype):
    rng = np.random.default_rng(4)
    options = dict(momentum=0.9, weight_decay=0.1) if kind == "sgd" else dict(amsgrad=True)
    p0 = np.asarray(rng.standard_normal(shape), dtype=dtype)
    ours, theirs = fresh_state(kind, p0, options), fresh_state(kind, p0, options)
    for t in (1, 2, 3):
        grad = np.asarray(rng.standard_normal(shape), dtype=dtype)
        out = nk_step(kind, ours, grad, t, options)
        assert out is ours["param"] and out.shape == shape and out.dtype == dtype
        nk_step(kind, theirs, grad, t, options, module=ref)
    for name in ours:
        assert_close(ours[name], theirs[name], rtol=0, atol=64 * np.finfo(dtype).eps
                     * max(1.0, float(np.abs(theirs[name]).max(initial=0))), err_msg=name)


def _layout_run(kind, options, kinds, dtype=np.float64, shape=(6, 9)):
    """Three steps on arrays in the layouts `kinds` (param, grad, states...)."""
    rng = np.random.default_rng(5)
    p0 = rng.standard_normal(shape).astype(dtype)
    state = fresh_state(kind, p0, options)
    order = ["param", "grad"] + [name for name in state if name != "param"]
    kind_of = {name: kinds[i % len(kinds)] for i, name in enumerate(order)}
    arranged = {name: layout(state[name], kind_of[name]) for name in state}
    for t in (1, 2, 3):
        grad = layout(rng.standard_normal(shape).astype(dtype), kind_of["grad"])
        out = nk_step(kind, arranged, grad, t, options)
        assert out is arranged["param"]
    return arranged


LAYOUT_CASES = [("F",), ("strided",), ("neg",), ("C", "F"), ("F", "strided", "C"),
                ("neg", "C")]


@pytest.mark.parametrize("kinds", LAYOUT_CASES, ids="-".join)
@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_layouts_equal_c_order(kind, kinds):
    """Any strides give the bits of the C-ordered run (strided arrays are
    computed on C-ordered copies and written back; the NaNs around a
    strided view stay untouched)."""
    options = dict(momentum=0.9, nesterov=True) if kind == "sgd" else dict(amsgrad=True)
    expected = _layout_run(kind, options, ("C",))
    got = _layout_run(kind, options, kinds)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
        base = got[name].base
        if "strided" in kinds and base is not None and base.size > got[name].size:
            assert np.isnan(base).sum() == base.size - got[name].size, name


# ---- threads --------------------------------------------------------------------

@pytest.mark.parametrize("kind,options", [("sgd", dict(momentum=0.9, nesterov=True)),
                                          ("sgd", dict(weight_decay=0.1)),
                                          ("adam", dict(weight_decay=0.1)),
                                          ("adam", dict(amsgrad=True, maximize=True))],
                         ids=["sgd-nesterov", "sgd", "adam", "amsgrad"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_thread_count_independent(kind, options, dtype):
    n = nk._dispatch.optim.PARALLEL_MIN + 12345      # above the threshold: a team runs
    rng = np.random.default_rng(6)
    p0 = rng.standard_normal(n).astype(dtype)
    grads = [rng.standard_normal(n).astype(dtype) for _ in range(2)]
    old = nk.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            nk.set_num_threads(threads)
            state = fresh_state(kind, p0, options)
            for t, g in enumerate(grads, 1):
                nk_step(kind, state, g, t, options)
            results.append(state)
    finally:
        nk.set_num_threads(old)
    for name in results[0]:
        np.testing.assert_array_equal(results[0][name], results[1][name], err_msg=name)


def test_concurrent_python_threads():
    """Calls from several Python threads on their own arrays are independent."""
    from concurrent.futures import ThreadPoolExecutor
    rng = np.random.default_rng(7)
    problems = [(rng.standard_normal(20000), rng.standard_normal(20000)) for _ in range(8)]

    def run(p0, g):
        state = fresh_state("adam", p0, {})
        for t in range(1, 6):
            nk_step("adam", state, g, t, {})
        return state["param"]

    serial = [run(*pr) for pr in problems]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda pr: run(*pr), problems))
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a, b)


# ---- options that are ignored, lists -------------------------------------------

def test_unused_state_is_ignored():
    p = np.ones(4)
    junk = np.zeros(3, np.int32)        # would be refused if it were used
    nk.sgd_update(p, np.ones(4), lr=0.5, momentum_buffer=junk)
    np.testing.assert_array_equal(p, 0.5)
    m, v = np.zeros(4), np.zeros(4)
    nk.adam_update(p, np.ones(4), m, v, step=1, max_exp_avg_sq=junk)


def test_grad_as_list_and_numpy_scalars():
    p = np.ones(3, np.float32)
    nk.sgd_update(p, [1.0, 2.0, 3.0], lr=np.float32(0.5), momentum=0, step=np.int64(1),
                  nesterov=np.bool_(False))
    np.testing.assert_array_equal(p, np.array([0.5, 0.0, -0.5], np.float32))
    q = np.ones(3)
    nk.adam_update(q, [1.0, 1.0, 1.0], np.zeros(3), np.zeros(3), step=np.int32(1), lr=1,
                   betas=[0.9, 0.999], eps=0, weight_decay=0)
    np.testing.assert_allclose(q, 0.0, atol=1e-15)


# ---- bad inputs -----------------------------------------------------------------

def _sgd(**kw):
    args = dict(param=np.ones(5), grad=np.ones(5), lr=0.1)
    args.update(kw)
    p, g = args.pop("param"), args.pop("grad")
    return lambda: nk.sgd_update(p, g, **args)


def _adam(**kw):
    args = dict(param=np.ones(5), grad=np.ones(5), exp_avg=np.zeros(5),
                exp_avg_sq=np.zeros(5), step=1)
    args.update(kw)
    p, g, m, v = (args.pop(k) for k in ("param", "grad", "exp_avg", "exp_avg_sq"))
    return lambda: nk.adam_update(p, g, m, v, **args)


_shared = np.zeros(12)
_rw = np.lib.stride_tricks.as_strided(np.zeros(5), shape=(5,), strides=(0,))  # writable
_big = np.zeros(20)

BAD = [
    # hyperparameters, as torch.optim validates them (NaN refused too)
    ("sgd lr<0", _sgd(lr=-0.1), ValueError, "lr must be >= 0"),
    ("sgd lr nan", _sgd(lr=float("nan")), ValueError, "lr must be >= 0"),
    ("sgd momentum<0", _sgd(momentum=-0.5, momentum_buffer=np.zeros(5)), ValueError,
     "momentum must be >= 0"),
    ("sgd weight_decay<0", _sgd(weight_decay=-1.0), ValueError, "weight_decay must be >= 0"),
    ("sgd nesterov no momentum", _sgd(nesterov=True), ValueError,
     "nesterov=True needs momentum > 0 and dampening == 0"),
    ("sgd nesterov dampening", _sgd(nesterov=True, momentum=0.9, dampening=0.1,
                                    momentum_buffer=np.zeros(5)), ValueError, "dampening == 0"),
    ("sgd lr str", _sgd(lr="0.1"), TypeError, "lr must be a real number"),
    ("sgd lr bool", _sgd(lr=True), TypeError, "lr must be a real number"),
    ("sgd nesterov int", _sgd(nesterov=1), TypeError, "nesterov must be a bool"),
    ("sgd maximize str", _sgd(maximize="yes"), TypeError, "maximize must be a bool"),
    ("sgd step 0", _sgd(step=0), ValueError, "step must be >= 1"),
    ("sgd step float", _sgd(step=1.0), TypeError, "step must be an int"),
    ("sgd step bool", _sgd(step=True), TypeError, "step must be an int"),
    ("adam lr<0", _adam(lr=-1e-3), ValueError, "lr must be >= 0"),
    ("adam eps<0", _adam(eps=-1e-8), ValueError, "eps must be >= 0"),
    ("adam beta1=1", _adam(betas=(1.0, 0.999)), ValueError, r"betas\[0\] must lie in \[0, 1\)"),
    ("adam beta2<0", _adam(betas=(0.9, -0.1)), ValueError, r"betas\[1\] must lie in \[0, 1\)"),
    ("adam beta2 nan", _adam(betas=(0.9, float("nan"))), ValueError, r"betas\[1\]"),
    ("adam betas one", _adam(betas=(0.9,)), TypeError, "betas must be a pair"),
    ("adam betas str", _adam(betas=(0.9, "x")), TypeError, r"betas\[1\] must be a real"),
    ("adam weight_decay<0", _adam(weight_decay=-0.1), ValueError, "weight_decay must be >= 0"),
    ("adam amsgrad int", _adam(amsgrad=1), TypeError, "amsgrad must be a bool"),
    ("adam decoupled str", _adam(decoupled_weight_decay="no"), TypeError,
     "decoupled_weight_decay must be a bool"),
    ("adam step 0", _adam(step=0), ValueError, "step must be >= 1"),
    ("adam step missing", lambda: nk.adam_update(np.ones(2), np.ones(2), np.zeros(2),
                                                 np.zeros(2)), TypeError, "step"),
    # required state
    ("sgd no buffer", _sgd(momentum=0.9), ValueError, "momentum_buffer"),
    ("adam no max", _adam(amsgrad=True), ValueError, "max_exp_avg_sq"),
    # dtypes
    ("grad dtype", _sgd(grad=np.ones(5, np.float32)), TypeError,
     "param float64, grad float32"),
    ("exp_avg dtype", _adam(exp_avg=np.zeros(5, np.float32)), TypeError, "exp_avg float32"),
    ("buffer dtype", _sgd(momentum=0.9, momentum_buffer=np.zeros(5, np.float32)), TypeError,
     "momentum_buffer float32"),
    ("max dtype", _adam(amsgrad=True, max_exp_avg_sq=np.zeros(5, np.float32)), TypeError,
     "max_exp_avg_sq float32"),
    ("int param", _sgd(param=np.ones(5, np.int64)), TypeError,
     "param must be a float32 or float64 array"),
    ("int grad", _sgd(grad=np.ones(5, np.int64)), TypeError,
     "grad must be a float32 or float64 array"),
    ("int exp_avg_sq", _adam(exp_avg_sq=np.zeros(5, np.int32)), TypeError,
     "exp_avg_sq must be a float32 or float64 array"),
    ("float16 param", _adam(param=np.ones(5, np.float16)), TypeError, "param must be a float32"),
    ("swapped param", _sgd(param=np.ones(5, ">f8")), TypeError, "native byte order"),
    ("list param", _sgd(param=[1.0, 2.0, 3.0, 4.0, 5.0]), TypeError,
     "param must be a numpy.ndarray"),
    ("list exp_avg", _adam(exp_avg=[0.0] * 5), TypeError, "exp_avg must be a numpy.ndarray"),
    ("masked param", _sgd(param=np.ma.ones(5)), TypeError, "param must be a numpy.ndarray"),
    # shapes
    ("grad shape", _sgd(grad=np.ones(4)), ValueError,
     r"param and grad must have the same shape, got param \(5,\) and grad \(4,\)"),
    ("exp_avg_sq shape", _adam(exp_avg_sq=np.zeros((5, 1))), ValueError,
     r"param \(5,\) and exp_avg_sq \(5, 1\)"),
    ("buffer shape", _sgd(momentum=0.9, momentum_buffer=np.zeros(6)), ValueError,
     "momentum_buffer"),
    # writability
    ("readonly param", _sgd(param=readonly(np.ones(5))), ValueError, "param is read-only"),
    ("readonly exp_avg", _adam(exp_avg=readonly(np.zeros(5))), ValueError,
     "exp_avg is read-only"),
    ("readonly buffer", _sgd(momentum=0.9, momentum_buffer=readonly(np.zeros(5))), ValueError,
     "momentum_buffer is read-only"),
    ("readonly max", _adam(amsgrad=True, max_exp_avg_sq=readonly(np.zeros(5))), ValueError,
     "max_exp_avg_sq is read-only"),
    ("self-overlapping param", _sgd(param=_rw), ValueError, "param has elements that share"),
    ("self-overlapping exp_avg", _adam(exp_avg=_rw), ValueError, "exp_avg has elements that"),
    # memory shared between the arrays
    ("same m and v", (lambda m=np.zeros(5): nk.adam_update(np.ones(5), np.ones(5), m, m,
                                                          step=1)),
     ValueError, "exp_avg and exp_avg_sq share memory"),
    ("m overlaps param", _adam(param=_big[:5], exp_avg=_big[3:8]), ValueError,
     "param and exp_avg share memory"),
    ("grad is param", (lambda p=np.ones(5): nk.sgd_update(p, p, lr=0.1)), ValueError,
     "param and grad share memory"),
    ("buffer is grad", (lambda g=np.ones(5): nk.sgd_update(
        np.ones(5), g, lr=0.1, momentum=0.9, momentum_buffer=g)), ValueError,
     "grad and momentum_buffer share memory"),
    ("max overlaps v", _adam(amsgrad=True, exp_avg_sq=_shared[:5], max_exp_avg_sq=_shared[4:9]),
     ValueError, "exp_avg_sq and max_exp_avg_sq share memory"),
]


@pytest.mark.parametrize("call,exc,match", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_errors_leave_arrays_untouched():
    """Everything is validated before the kernel writes anything."""
    p, m = np.ones(5), np.zeros(5)
    with pytest.raises(ValueError):
        nk.adam_update(p, np.ones(5), m, readonly(np.zeros(5)), step=1)
    with pytest.raises(ValueError):
        nk.sgd_update(p, np.ones(5), lr=0.1, momentum=0.9, momentum_buffer=m, step=-3)
    np.testing.assert_array_equal(p, 1.0)
    np.testing.assert_array_equal(m, 0.0)


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_reference_validates_alike(kind):
    """The NumPy twin refuses the same hyperparameters and missing state."""
    p = np.ones(3)
    if kind == "sgd":
        calls = [lambda: ref.sgd_update(p, p.copy(), lr=-1.0),
                 lambda: ref.sgd_update(p, p.copy(), lr=0.1, nesterov=True),
                 lambda: ref.sgd_update(p, p.copy(), lr=0.1, momentum=0.9)]
    else:
        z = np.zeros(3)
        calls = [lambda: ref.adam_update(p, p.copy(), z, z.copy(), step=1, betas=(1.0, 0.9)),
                 lambda: ref.adam_update(p, p.copy(), z, z.copy(), step=0),
                 lambda: ref.adam_update(p, p.copy(), z, z.copy(), step=1, amsgrad=True)]
    for call in calls:
        with pytest.raises(ValueError):
            call()


def test_options_grid_runs_everywhere():
    """Every combination of the flags runs and stays finite (a smoke test of
    the selects in the kernel: each flag changes the result)."""
    rng = np.random.default_rng(8)
    p0, g = rng.standard_normal(33), rng.standard_normal(33)
    seen = set()
    for maximize, decay, decoupled, amsgrad in itertools.product([False, True], repeat=4):
        state = fresh_state("adam", p0, dict(amsgrad=amsgrad))
        opts = dict(maximize=maximize, weight_decay=0.5 if decay else 0.0,
                    decoupled_weight_decay=decoupled, amsgrad=amsgrad)
        for t in (1, 2):
            nk_step("adam", state, g * t, t, opts)
        assert np.isfinite(state["param"]).all()
        seen.add(state["param"].tobytes())
    # decoupled without decay is plain Adam, and amsgrad changes nothing in 2
    # steps of growing |g|: 2 * 2 * (decay: coupled / decoupled / none) = 6
    assert len(seen) == 6, len(seen)


def test_repeated_calls_leak_nothing():
    """The fast path, the checked path (strided copies) and the error paths
    leave the inputs' refcounts and the resident set flat.  (The suite-wide
    registries of test_leaks.py and test_concurrency.py list these
    functions separately.)"""
    import gc
    import os
    import sys

    rng = np.random.default_rng(9)
    p, g, m, v, vm, b = (rng.standard_normal((64, 256)) for _ in range(6))
    pf = np.asfortranarray(p)
    ps = layout(p, "strided")
    arrays = [p, g, m, v, vm, b, pf, ps]

    def once():
        nk.adam_update(p, g, m, v, step=3, amsgrad=True, max_exp_avg_sq=vm)
        nk.adam_update(ps, g, m, v, step=3)                       # copies
        nk.sgd_update(pf, g, lr=0.01, momentum=0.9, momentum_buffer=b, step=2)
        for call in (lambda: nk.adam_update(p, g, m, m, step=1),
                     lambda: nk.sgd_update(p, g.astype(np.float32), lr=0.1),
                     lambda: nk.adam_update(p, g, m, v, step=0)):
            try:
                call()
            except (TypeError, ValueError):
                pass

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    for _ in range(50):
        once()
    gc.collect()
    refs = [sys.getrefcount(a) for a in arrays]
    before = rss()
    for _ in range(2000):
        once()
    gc.collect()
    assert [sys.getrefcount(a) for a in arrays] == refs
    # leaking one (64, 256) float64 copy per iteration would be 250 MiB
    assert rss() - before < 16 << 20, (rss() - before) / 2**20
