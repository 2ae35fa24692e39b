"""The fuzz suite's case strategy of the in-place optimizer updates (not a
test module): ``optimizer_cases`` draws a whole sgd_update or adam_update
call, as the strategies of tests/_fuzz_cases.py draw the other kernels'.

sgd_update / adam_update update param and their state in place; the oracle
(_fuzz_strategies.check_update) compares every array in Case.state with the
reference's updated copy and wants every other array untouched.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

from _nkutil import EPS
from _fuzz_strategies import F32, F64, Arg, Case, OutSpec, tolerances, values
from _fuzz_cases import (bad_dtype_arg, draw_threads, dtypes, fault_or_none, layouts,
                         other_shape, out_layouts, profiles, seeds, shapes)

OPTIM_STATES = {"sgd_update": ("momentum_buffer",),
                "adam_update": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")}
# kernel_table's _optimizer_tol: float64 RTOL, float32 2e-5 (ATOL per element below)
OPTIM_RTOL = {F64: tolerances(F64)["rtol"], F32: 2e-5}
ARRAY_FAULTS = ("param_dtype", "grad_dtype", "state_dtype", "param_list", "state_list",
                "shape", "readonly", "self_overlap", "alias", "alias")
SGD_FAULTS = ARRAY_FAULTS + ("lr", "lr_type", "momentum", "weight_decay", "dampening_type",
                             "nesterov", "no_buffer", "step", "step_type", "flag_type")
ADAM_FAULTS = ARRAY_FAULTS + ("lr", "lr_type", "eps", "betas", "betas_type", "weight_decay",
                              "no_max", "step", "step_type", "step_missing", "flag_type")
# valid values; a non-float (int, NumPy scalar) or a list of betas takes the
# checked path, a Python float the kernel's own entry
LRS = [0.1, 0.01, 1.0, 0.0, 1e-3, 2, np.float32(0.25)]
# past 2**62 every step gives the same update (and past 2**63 it is no C long long)
STEPS = [1, 1, 2, 3, 10, 2**40, 2**62, 2**63, 2**100, np.int64(2)]
BETAS = [(0.9, 0.999), (0.9, 0.999), (0.5, 0.9), (0.3, 0.99), (0.0, 0.0), (0.99, 0.9999),
         [0.8, 0.99], (np.float32(0.9), 0.999)]


def _sgd_options(draw):
    momentum = draw(st.sampled_from([0.0, 0.0, 0.9, 0.5, 1.0, 0]))
    dampening = draw(st.sampled_from([0.0, 0.0, 0.0, 0.3, 1.0, -0.5, np.float32(0.1)]))
    return {"lr": draw(st.sampled_from(LRS)), "momentum": momentum, "dampening": dampening,
            "nesterov": draw(st.booleans()) and bool(momentum > 0 and dampening == 0),
            "weight_decay": draw(st.sampled_from([0.0, 0.0, 0.05, 1.0])),
            "maximize": draw(st.sampled_from([False, True, np.bool_(True)])),
            "step": draw(st.sampled_from(STEPS))}


def _adam_options(draw):
    return {"step": draw(st.sampled_from(STEPS)),
            "lr": draw(st.sampled_from(LRS[:6] + [np.float64(1e-3)])),
            "betas": draw(st.sampled_from(BETAS)),
            "eps": draw(st.sampled_from([1e-8, 1e-8, 1e-3, 0.0, 1.0])),
            "weight_decay": draw(st.sampled_from([0.0, 0.0, 0.05, 0.5])),
            "decoupled_weight_decay": draw(st.booleans()),
            "amsgrad": draw(st.booleans()),
            "maximize": draw(st.sampled_from([False, True, np.bool_(False)]))}


DEFAULTS = {"momentum": 0.0, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0,
            "maximize": False, "step": 1, "lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8,
            "decoupled_weight_decay": False, "amsgrad": False}


def _finite64(a):
    """a in float64, non-finite as 0 (those elements are compared by class)."""
    return np.nan_to_num(np.asarray(a, np.float64), nan=0.0, posinf=0.0, neginf=0.0)


def optimizer_scales(fname, vals, o, dtype):
    """Per element, the scale of the rounding that may separate the kernel
    from the reference in each updated array (its bound is ATOL times this).

    Both run the same operations in the dtype, the kernel with FMAs and
    PyTorch's lerp: each result is a few ulp of the magnitudes of the terms
    behind it apart.  Adam's step (lr / c₁) m / (√v / √c₂ + ε) divides them
    by the denominator the update really has, which can be far below their
    magnitudes (g + λθ cancels): an ulp of m's terms, and the rounding of v
    (√ of it once v is that small), move θ by as many ulp of the step.
    """
    f = lambda k: float(o[k])
    theta, g = _finite64(vals["param"]), _finite64(vals["grad"])
    with np.errstate(all="ignore"):
        if fname == "sgd_update":
            ge = np.abs(g) + f("weight_decay") * np.abs(theta)
            if o["momentum"]:
                b = ge if o["step"] == 1 else (f("momentum")
                                               * np.abs(_finite64(vals["momentum_buffer"]))
                                               + abs(1.0 - f("dampening")) * ge)
                d = ge + f("momentum") * b if o["nesterov"] else b
                return {"param": np.abs(theta) + f("lr") * d, "momentum_buffer": b}
            return {"param": np.abs(theta) + f("lr") * ge}
        beta1, beta2 = (float(b) for b in o["betas"])
        lr, wd = f("lr"), f("weight_decay")
        decoupled = o["decoupled_weight_decay"] and wd
        t = theta * (1.0 - lr * wd) if decoupled else theta
        coupled = 0.0 if decoupled else wd
        gs = (-g if o["maximize"] else g) + coupled * t             # signed, as computed
        ge = np.abs(g) + coupled * np.abs(t)                        # its terms' magnitude
        m_old, v_old = _finite64(vals["exp_avg"]), _finite64(vals["exp_avg_sq"])
        m = m_old + (1.0 - beta1) * (gs - m_old)
        # v's rounding: of its terms, and g's rounding (an ulp of its terms) times 2|g|
        scales = {"exp_avg": np.abs(m_old) + ge,
                  "exp_avg_sq": beta2 * v_old + (1.0 - beta2) * np.abs(gs) * (np.abs(gs) + 2 * ge)}
        v = beta2 * v_old + (1.0 - beta2) * gs * gs
        if o["amsgrad"]:
            vmax = _finite64(vals["max_exp_avg_sq"])
            scales["max_exp_avg_sq"] = np.maximum(vmax, scales["exp_avg_sq"])
            v = np.maximum(vmax, v)
        step = int(o["step"])
        k, c2 = lr / (1.0 - beta1 ** step), math.sqrt(1.0 - beta2 ** step)
        denom = np.sqrt(v) / c2 + f("eps")
        # |√(v + δ) − √v| <= min(δ / (2√v), √δ), δ an ulp of v's terms
        root_err = np.minimum(scales["exp_avg_sq"] / (2.0 * np.sqrt(v)),
                              np.sqrt(scales["exp_avg_sq"] / EPS[dtype])) / c2
        moved = (k * scales["exp_avg"] + k * np.abs(m) * root_err / denom) / denom
        # (NaN: 0 / 0, a singular element: any finite values agree)
        return {"param": np.abs(theta) + np.nan_to_num(moved, nan=np.inf), **scales}


@st.composite
def optimizer_cases(draw, fname):
    sgd = fname == "sgd_update"
    states = OPTIM_STATES[fname]
    dtype = draw(dtypes)
    fault = fault_or_none(draw, SGD_FAULTS if sgd else ADAM_FAULTS, valid_weight=18)
    big = draw(st.sampled_from([False] * 30 + [True]))
    # a rare big array crosses the update's OpenMP threshold (262,144 elements)
    shape = (513, 521) if big else () if draw(st.sampled_from([False] * 9 + [True])) \
        else draw(shapes(1, 3))
    size = math.prod(shape)
    seed, prof = draw(seeds), draw(profiles)
    o = _sgd_options(draw) if sgd else _adam_options(draw)
    names = ("param", "grad") + states
    vals = {n: values(seed + i, shape, dtype, prof if i < 2 else draw(profiles))
            for i, n in enumerate(names)}
    if not sgd:
        for n in ("exp_avg_sq", "max_exp_avg_sq"):     # second moments: >= 0, NaN and +inf kept
            vals[n] = np.abs(vals[n])
        if draw(st.sampled_from([False] * 3 + [True])):    # the state of step 1: zeros
            for n in states:
                vals[n] = np.zeros(shape, dtype)
    lay = {n: draw(out_layouts) for n in names}         # written arrays: no read-only "bcast"
    lay["grad"] = draw(layouts)
    if lay["grad"] == "bcast" and shape and shape[0]:
        # grad is only read: a read-only 0-stride view (every row the first) is computed
        vals["grad"] = np.ascontiguousarray(np.broadcast_to(vals["grad"][:1], shape))
    arrays = {n: Arg(vals[n], lay[n]) for n in names}

    def used(name):
        if name in ("param", "grad"):
            return True
        if sgd:
            return o["momentum"] != 0
        return name != "max_exp_avg_sq" or o["amsgrad"] is True

    broken, exc, ref_accepts = (), (), False
    views = {}
    pass_state = {n: used(n) or draw(st.booleans()) for n in states}   # an unused one: ignored
    target = None
    if fault in ("param_dtype", "grad_dtype", "state_dtype"):
        target = fault[:-6] if fault != "state_dtype" else draw(st.sampled_from(states))
        arrays[target] = bad_dtype_arg(draw, seed, shape, dtype, lay[target])
        broken, exc = (target,), TypeError
    elif fault in ("param_list", "state_list"):
        target = "param" if fault == "param_list" else draw(st.sampled_from(states))
        arrays[target] = vals[target].tolist()        # updated in place: must be an ndarray
        broken, exc = (target,), TypeError
    elif fault == "shape":
        target = draw(st.sampled_from(names[1:]))
        arrays[target] = Arg(values(seed, other_shape(draw, shape, 0, 3), dtype, "normal"))
        broken, exc = (target,), ValueError
    elif fault == "readonly":
        target = draw(st.sampled_from(("param",) + states))
        if shape and shape[0] and draw(st.booleans()):
            # a 0-stride broadcast view: read-only, as NumPy makes it
            arrays[target] = Arg(np.ascontiguousarray(np.broadcast_to(vals[target][:1], shape)),
                                 "bcast")
        else:
            views[target] = OutSpec("readonly", fill=vals[target], layout=lay[target])
        broken, exc = (target,), ValueError
    elif fault == "self_overlap" and size >= 2:
        # writable, with a 0 stride: two elements in one place
        target = draw(st.sampled_from(("param",) + states))
        views[target] = OutSpec("overlapping", shape=shape, dtype=dtype)
        broken, exc = (target,), ValueError
    elif fault == "alias" and size >= 1:
        # the arrays must be apart in memory: one is another's very array,
        # its reversal, or shares a buffer with it, shifted
        target = draw(st.sampled_from(names[1:]))
        other = draw(st.sampled_from([n for n in names if n != target]))
        kind = draw(st.sampled_from(["same", "same", "reversed"] + ["shift"] * (size >= 2)))
        if kind == "reversed" and not shape:
            kind = "same"
        shift = draw(st.integers(1, size - 1)) * draw(st.sampled_from([1, -1])) \
            if kind == "shift" else 0
        views[target] = OutSpec(kind, arg=other, shift=shift)
        pass_state.update({n: True for n in (target, other) if n in states})
        broken, exc, ref_accepts = (other, target), ValueError, True
        if not used(other):
            target = other          # an ignored state may be anything: a valid call
    elif fault in ("lr", "weight_decay", "momentum", "eps"):
        o[fault] = draw(st.sampled_from([-0.1, -1e-300, float("nan"), -float("inf")]))
        broken, exc = (fault,), ValueError
        if fault == "momentum":
            pass_state["momentum_buffer"] = True
            o["nesterov"] = False
    elif fault == "lr_type":
        o["lr"] = draw(st.sampled_from(["0.1", None, True, np.bool_(True), 1j, [0.1]]))
        broken, exc = ("lr",), TypeError
    elif fault == "dampening_type":
        o["dampening"] = draw(st.sampled_from(["0", None, True, [0.0]]))
        o["nesterov"] = False
        broken, exc = ("dampening",), TypeError
    elif fault == "nesterov":
        o["nesterov"] = True
        if o["momentum"] and not o["dampening"]:
            o["dampening"] = 0.3
        broken, exc = ("nesterov",), ValueError
    elif fault == "no_buffer":
        o["momentum"], o["nesterov"] = draw(st.sampled_from([0.9, 1e-30])), False
        pass_state["momentum_buffer"] = False
        broken, exc = ("momentum_buffer",), ValueError
    elif fault == "no_max":
        o["amsgrad"] = True
        pass_state["max_exp_avg_sq"] = False
        broken, exc = ("max_exp_avg_sq",), ValueError
    elif fault == "step":
        o["step"] = draw(st.sampled_from([0, -1, -2**40, np.int64(0)]))
        broken, exc = ("step",), ValueError
    elif fault == "step_type":
        o["step"] = draw(st.sampled_from([1.0, 2.5, True, False, np.bool_(True), "1", None,
                                          np.float64(1.0)]))
        broken, exc = ("step",), TypeError
    elif fault == "step_missing":        # adam_update's step has no default
        o.pop("step")
        broken, exc = ("step",), TypeError
    elif fault == "betas":
        o["betas"] = draw(st.sampled_from([(1.0, 0.999), (0.9, 1.0), (-0.1, 0.9),
                                           (0.9, float("nan")), (1.5, 0.5), (0.9, -1e-300),
                                           (float("inf"), 0.9)]))
        broken, exc = ("betas",), ValueError
    elif fault == "betas_type":
        o["betas"] = draw(st.sampled_from([(0.9,), 0.9, (0.9, "x"), (0.9, 0.99, 0.999), None,
                                           (None, 0.9)]))
        broken, exc = ("betas",), TypeError
    elif fault == "flag_type":
        # not a bool: nnkernels refuses, the reference takes it as truthy
        flag = draw(st.sampled_from(["nesterov", "maximize"] if sgd else
                                    ["decoupled_weight_decay", "amsgrad", "maximize"]))
        o[flag] = draw(st.sampled_from([1, 0, "yes", None, 1.0]))
        broken, exc, ref_accepts = (flag,), TypeError, True
    if target is not None and not used(target):
        broken, exc, ref_accepts = (), (), False      # an ignored state may be anything
    if not broken and fault == "none" and size and draw(st.sampled_from([False] * 9 + [True])):
        arrays["grad"] = vals["grad"].tolist()      # a list of numbers: taken in param's dtype
    draw_threads(draw)

    args = {"param": arrays["param"], "grad": arrays["grad"]}
    kw = {}
    if not sgd:
        args["exp_avg"], args["exp_avg_sq"] = arrays["exp_avg"], arrays["exp_avg_sq"]
    for n in states:
        if n not in args and pass_state[n]:
            kw[n] = arrays[n]
        elif n not in args and n in views:
            views.pop(n)
    for k, v in o.items():
        # defaults are passed or left out; sgd_update's lr has none
        if k == "lr" and sgd or k == "step" and not sgd or k not in DEFAULTS \
                or not (type(v) is type(DEFAULTS[k]) and v == DEFAULTS[k]) or draw(st.booleans()):
            kw[k] = v
    updated = () if broken else ("param",) + tuple(n for n in states if used(n))
    tol = {"rtol": OPTIM_RTOL[dtype]}
    if not broken:
        scales = optimizer_scales(fname, vals, o, dtype)
        tol["atol"] = {n: tolerances(dtype, 1.0)["atol"] * np.maximum(1.0, scales[n])
                       for n in updated}
    return Case(fname, list(args), args, kw=kw, broken=broken, exc=exc, tol=tol,
                state=updated, views=views, reference_accepts=ref_accepts)
