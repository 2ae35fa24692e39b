"""Strategies and the oracle of the fuzz suite (tests/test_fuzz.py); not a test module.

A fuzz *case* is a recipe, not arrays: ``Case.build()`` makes a fresh set of
arguments every time it is called (same values, same memory layout, same
aliasing between ``out`` and the inputs), so nnkernels, nnkernels.reference
and the pristine copy used to detect writes to inputs each get their own
memory and neither implementation can see the other's writes.

Hypothesis draws the structure (function, shapes, dtypes, layouts, options,
which argument to break and how); the array values come from a NumPy
generator seeded by a drawn integer, so examples are cheap, thousands of them
run in seconds, and a failing example is reproducible from what hypothesis
prints (the seed is part of it).

The generator breaks at most one thing per example and knows which: the case
carries ``broken`` (argument names, one of which the exception message must
name) and ``exc`` (the exception class the contract gives). ``broken == ()``
means a valid call: both implementations must return and agree.

An in-place update (sgd_update, adam_update) names the arrays it updates in
``state``: the oracle (check_update) then wants ``param`` itself back, each
of those arrays as the reference leaves its own copy, and every other array
untouched; a refused call leaves every array bit for bit as it was.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import nnkernels as nk
import nnkernels.reference as ref
from _nkutil import ATOL, RTOL, sum_factor

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
FLOAT_DTYPES = (F64, F32)

# dtypes that are not float32/float64 where a float array is expected: TypeError.
# "other" is the other float dtype of the call (mixed float32/float64).
BAD_DTYPES = ("float16", "int32", "int64", "uint8", "bool", "object",
              "complex128", "complex64", "other")
LAYOUTS = ("C", "F", "strided", "neg", "unaligned")
# adversarial layouts: "bcast" a read-only view with stride 0 along axis 0
# (every row the first; np.broadcast_to), "span31" a 2-D view of a lazily
# mapped buffer whose rows lie so far apart that its span passes 2**31
# elements (the BLAS's int)
SPAN_LIMIT = 2 ** 31
# Under a sanitizer runtime every allocation's shadow memory is written: a
# span31 buffer (8-16 GiB) would cost seconds each, and BLAS, where the span
# matters, is not instrumented anyway.
_SANITIZED = "-fsanitize" in nk.build_info()["compile_args"]
INPUT_LAYOUTS = LAYOUTS + (("bcast",) if _SANITIZED else ("bcast", "span31"))
OUT_LAYOUTS = LAYOUTS + (() if _SANITIZED else ("span31",))


# ------------------------------------------------------------------ counting
class Counter:
    """Examples that actually executed, per function (read by conftest's summary)."""
    total = 0
    per_function: dict = {}

    @classmethod
    def hit(cls, fname):
        cls.total += 1
        cls.per_function[fname] = cls.per_function.get(fname, 0) + 1


# ------------------------------------------------------------------- values
def specials(dtype):
    tiny = 1e-45 if np.dtype(dtype) == F32 else 5e-324     # smallest subnormal
    sub = 1e-40 if np.dtype(dtype) == F32 else 1e-310      # a mid subnormal
    return np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, tiny, -tiny, sub, -sub,
                     0.0, -0.0, 1e4, -1e4, 1.0, -1.0, 0.5], dtype=np.float64)


def values(seed, shape, dtype, profile, lo=None, hi=None):
    """Float values of ``shape`` as ``dtype`` (float32/float64).

    profile: "normal" (N(0, 3)), "wide" (N(0, 1e4): large finite logits),
    "special" (normal with ~25% of NaN, +-inf, +-1e30, subnormals, +-0, ...).
    ``lo``/``hi`` clip the finite values (probabilities: [0, 1]).
    """
    rng = np.random.default_rng(seed)
    scale = {"normal": 3.0, "wide": 1e4, "special": 3.0}[profile]
    v = rng.standard_normal(shape) * scale
    if lo is not None:
        v = rng.random(shape) * (hi - lo) + lo
    if profile == "special" and v.size:
        sp = specials(dtype)
        if lo is not None:
            sp = sp[np.isnan(sp) | ((sp >= lo) & (sp <= hi))]
        mask = rng.random(shape) < 0.25
        v = np.where(mask, sp[rng.integers(0, sp.size, size=shape)], v)
    with np.errstate(over="ignore"):
        return np.asarray(v).astype(dtype)


def bad_dtype_values(seed, shape, kind, dtype):
    """Values of a forbidden dtype (or the other float dtype: mixed)."""
    v = values(seed, shape, F64, "normal")
    if kind == "other":
        return v.astype(F32 if np.dtype(dtype) == F64 else F64)
    if kind in ("int32", "int64", "uint8"):
        return np.abs(np.round(v)).astype(kind)
    if kind == "bool":
        return v > 0
    if kind == "object":
        return v.astype(object)
    return v.astype(kind)


# ------------------------------------------------------------------- layouts
def in_layout(vals, kind):
    """A fresh array holding ``vals`` in memory layout ``kind``."""
    vals = np.asarray(vals)
    if vals.ndim == 0 or kind == "C":
        return np.array(vals, copy=True, order="C")
    if kind == "F":
        return np.array(vals, copy=True, order="F")
    if kind == "strided":
        steps = (2, 3, 2)[: vals.ndim]
        big = np.empty(tuple(s * k + 1 for s, k in zip(vals.shape, steps)), vals.dtype)
        if vals.dtype.kind == "f":
            big[...] = np.nan               # a wrong read shows up as NaN
        view = big[tuple(slice(0, s * k, k) for s, k in zip(vals.shape, steps))]
        view[...] = vals
        return view
    if kind == "neg":
        rev = (slice(None, None, -1),) * vals.ndim
        return np.array(vals[rev], copy=True)[rev]
    if kind == "bcast":
        # a 0-stride view holds vals only where every row equals the first;
        # otherwise (a planted bad value in a later row, say) strided memory
        first = np.broadcast_to(vals[:1], vals.shape)
        if vals.shape[0] == 0 or not np.array_equal(vals, first, equal_nan=True):
            return in_layout(vals, "strided")
        return np.broadcast_to(np.array(vals[:1], copy=True), vals.shape)
    if kind == "span31":
        # a few rows only: each row touches its own (huge) page of the buffer
        if (vals.ndim != 2 or not 2 <= vals.shape[0] <= 4 or vals.shape[1] == 0
                or vals.dtype.kind != "f"):
            return in_layout(vals, "strided")
        rows, cols = vals.shape
        ld = max(cols, -(-(SPAN_LIMIT + 1 - cols) // (rows - 1)))
        buf = np.zeros((rows - 1) * ld + cols, vals.dtype)   # calloc: pages mapped on touch
        view = np.lib.stride_tricks.as_strided(buf, vals.shape, (ld * vals.itemsize,
                                                                 vals.itemsize))
        view[...] = vals
        return view
    if kind == "unaligned":                 # data pointer 1 byte off alignment
        if vals.dtype.kind == "O":
            return np.array(vals, copy=True)
        raw = np.empty(vals.nbytes + 1, np.uint8)
        view = raw[1:].view(vals.dtype).reshape(vals.shape)
        view[...] = vals
        return view
    raise AssertionError(kind)


@dataclass
class Arg:
    """An array argument: its values (already of the final dtype) and layout."""
    vals: np.ndarray
    layout: str = "C"

    def make(self):
        return in_layout(self.vals, self.layout)


@dataclass
class OutSpec:
    """How ``out`` is given.

    kind: "none"; "fresh" (own memory, any layout, filled with ``fill``);
    "same" (the very array of input ``arg``: in place); "shift" (a C-ordered
    view of one buffer with input ``arg``, offset by ``shift`` elements:
    partial overlap); "reversed" (``arg`` reversed along every axis: full
    overlap, other order); bad: "shape", "dtype", "readonly", "list".
    """
    kind: str = "none"      # also "overlapping": writable, with a 0 stride (bad)
    arg: str | None = None
    layout: str = "C"
    shift: int = 0
    fill: Any = None        # values of a fresh/bad out before the call
    shape: tuple | None = None
    dtype: Any = None


# --------------------------------------------------------------------- cases
@dataclass
class Case:
    fname: str
    pos: list                     # positional argument names, in order
    args: dict                    # name -> Arg or a plain Python value
    kw: dict = field(default_factory=dict)      # keyword name -> Arg or value
    out: OutSpec | list | None = None          # OutSpec, or 3 of them (dense_backward)
    broken: tuple = ()
    exc: type | tuple = ()
    tol: dict = field(default_factory=dict)
    module: Any = None
    # an in-place update: the arrays the call updates (compared with the
    # reference's updates; every other array must come back unchanged)
    state: tuple = ()
    # arguments made by a build_out recipe instead of an Arg, in order: the
    # very array of another argument ("same"), a view overlapping it
    # ("reversed", "shift"), "readonly", self-overlapping ("overlapping")
    views: dict = field(default_factory=dict)
    # a refusal only nnkernels makes (the plain NumPy reference looks neither
    # at memory shared between arguments nor at the type of a flag): the
    # reference may accept the call, nnkernels must refuse it
    reference_accepts: bool = False

    def build(self):
        """Fresh (args, kwargs, named arrays) for one call."""
        made = {}
        for name, a in list(self.args.items()) + list(self.kw.items()):
            made[name] = a.make() if isinstance(a, Arg) else a
        for name, spec in self.views.items():
            made[name] = build_out(spec, made, self.args | self.kw)
        outs = self.out if isinstance(self.out, list) else [self.out]
        built_outs = [build_out(o, made, self.args | self.kw) for o in outs]
        args = [made[n] for n in self.pos]
        kwargs = {n: made[n] for n in self.kw}
        if isinstance(self.out, list):
            kwargs["out"] = tuple(built_outs)
        elif self.out is not None and self.out.kind != "none":
            kwargs["out"] = built_outs[0]
        named = {n: v for n, v in made.items() if isinstance(v, np.ndarray)}
        for i, o in enumerate(built_outs):
            if isinstance(o, np.ndarray):
                named[f"out{i}"] = o
        return args, kwargs, named


def build_out(spec, made, specs):
    """The out array of ``spec``; may rebind an input in ``made`` (overlaps)."""
    if spec is None or spec.kind == "none":
        return None
    if spec.kind == "fresh":
        return in_layout(spec.fill, spec.layout)
    if spec.kind in ("same", "reversed") and not made[spec.arg].flags.writeable:
        made[spec.arg] = np.array(made[spec.arg])      # a "bcast" input: in place needs memory
    if spec.kind == "same":
        return made[spec.arg]
    if spec.kind == "reversed":
        x = made[spec.arg]
        return x[(slice(None, None, -1),) * x.ndim]
    if spec.kind == "overlapping":
        # a C-ordered out whose first axis longer than 1 has stride 0
        dtype = np.dtype(spec.dtype)
        strides = list(np.empty(spec.shape, dtype).strides)
        axis = next(i for i, n in enumerate(spec.shape) if n > 1)
        strides[axis] = 0
        base = np.zeros(math.prod(spec.shape), dtype)
        return np.lib.stride_tricks.as_strided(base, spec.shape, strides)
    if spec.kind == "shift":
        # one buffer holds the input (C order) and out, `shift` elements apart
        x_vals = specs[spec.arg].vals
        n, s = x_vals.size, spec.shift
        buf = np.full(n + abs(s), np.nan, x_vals.dtype)
        xi, oi = (0, s) if s > 0 else (-s, 0)
        x = buf[xi:xi + n].reshape(x_vals.shape)
        x[...] = x_vals
        made[spec.arg] = x
        return buf[oi:oi + n].reshape(x_vals.shape)
    if spec.kind in ("shape", "dtype"):
        return np.zeros(spec.shape, spec.dtype)
    if spec.kind == "readonly":
        o = in_layout(spec.fill, spec.layout)
        o.setflags(write=False)
        return o
    if spec.kind == "list":
        return np.asarray(spec.fill).tolist()
    raise AssertionError(spec.kind)


# -------------------------------------------------------------- comparisons
def _agree(g, e, rtol, atol, nonfinite_any):
    """Element-wise: ``g`` agrees with ``e`` (float64 arrays of one shape)."""
    with np.errstate(invalid="ignore", over="ignore"):
        gf, ef = np.isfinite(g), np.isfinite(e)
        close = gf & ef & (np.abs(g - e) <= atol + rtol * np.abs(e))
    if nonfinite_any:
        return close | (~gf & ~ef)
    return close | (np.isnan(g) & np.isnan(e)) | (np.isinf(e) & (g == e))


def mismatch(got, exp, rtol, atol, nonfinite_any=False, alt=None, free=None):
    """None if ``got`` agrees with ``exp``, else a description.

    Same shape and dtype, NaN at the same places, the same infinities, and
    finite values within atol + rtol |exp|.  With ``nonfinite_any`` NaN and
    +-inf count as one class (non-finite at the same places): a BLAS product
    of non-finite inputs may give either, depending on how it sums.  ``alt``
    (float32 results only) is the reference computed in float64 and rounded
    once: an element agreeing with either is right (see check).  ``free``:
    a mask of elements not compared (see nonfinite_preactivation and
    infinite_grad_times_underflow).  ``atol`` may be an array of ``exp``'s
    shape: a bound per element (the optimizer updates).
    """
    g, e = np.asarray(got), np.asarray(exp)
    if g.shape != e.shape:
        return f"shape {g.shape} != {e.shape}"
    if g.dtype != e.dtype:
        return f"dtype {g.dtype} != {e.dtype}"
    if e.dtype.kind != "f":
        return None if np.array_equal(g, e) else "values differ"
    g64, e64 = g.astype(np.float64), e.astype(np.float64)
    ok = _agree(g64, e64, rtol, atol, nonfinite_any)
    if alt is not None:
        ok |= _agree(g64, np.asarray(alt, np.float64), rtol, atol, nonfinite_any)
    if free is not None and free.shape == ok.shape:
        ok |= free
    if ok.all():
        return None
    i = tuple(int(k) for k in np.argwhere(~ok)[0])
    gi, ei = g64[i], e64[i]
    if np.isnan(gi) != np.isnan(ei):
        what = "NaN pattern differs"
    elif np.isinf(gi) or np.isinf(ei):
        what = "finiteness differs" if nonfinite_any else "infinity differs"
    else:
        ai = float(np.broadcast_to(atol, e.shape)[i])
        what = (f"value differs (|err| {abs(gi - ei):.3g} > atol {ai:.3g} + rtol "
                f"{rtol:.3g} |exp|)")
    return (f"{what} at {i}: got {gi!r}, expected {ei!r}"
            + ("" if alt is None else f" (float64 reference: {np.asarray(alt)[i]!r})"))


def nonfinite_preactivation(case):
    """dense_forward with an activation: the mask of elements where both
    implementations' x wᵀ + b is non-finite, else None.

    A BLAS sum and NumPy's add in different orders, so where the products
    overflow one may hold NaN and the other +-inf (nonfinite_any accepts
    that); the activation then turns inf into 1 or 0 (sigmoid, tanh) while
    NaN stays NaN.  Those elements carry no information about the kernel and
    are not compared; every other element is.
    """
    if case.fname != "dense_forward" or not case.tol.get("nonfinite_any"):
        return None
    pre = []
    for module in (nk, ref):
        args, kwargs, _ = case.build()
        kwargs.pop("out", None)
        if "activation" in kwargs:
            if kwargs["activation"] is None:
                return None
            kwargs["activation"] = None
        else:
            if args[3] is None:
                return None
            args[3] = None
        with np.errstate(all="ignore"):
            pre.append(~np.isfinite(np.asarray(getattr(module, case.fname)(*args, **kwargs),
                                               np.float64)))
    return pre[0] & pre[1]


def infinite_grad_times_underflow(case):
    """A float32 element-wise backward: the mask of elements where grad is
    +-inf and g' itself, rounded to float32, is 0, else None.

    The kernel multiplies grad by g' in float32, as PyTorch does, so there it
    gives NaN (inf * 0) where the float64 reference gives +-inf (g' is tiny
    but not 0).  Both say the step diverged; neither element is compared.
    """
    if not (case.fname.endswith("_backward") and case.fname != "dense_backward"
            and case.pos and case.pos[0] == "grad"):
        return None
    args, kwargs, _ = case.build()
    grad = args[0]
    if not isinstance(grad, np.ndarray) or grad.dtype != F32:
        return None
    kwargs.pop("out", None)
    with np.errstate(all="ignore"):
        slope = np.asarray(getattr(ref, case.fname)(np.ones_like(grad), *args[1:], **kwargs))
    return np.isinf(np.broadcast_to(grad, slope.shape)) & (slope == 0)


def either_free(*masks):
    """The union of the masks that are not None, else None."""
    masks = [m for m in masks if m is not None]
    return None if not masks else np.logical_or.reduce(masks)


def reference_in_float64(case):
    """The reference on float64 copies of a float32 call's arguments (no out=),
    each result rounded once to float32.

    The reference computes float32 in float32, as a NumPy user would; at the
    edges of the range (1e30 weights, subnormal weight sums) its float32
    intermediates overflow or underflow in an order of their own.  A kernel
    element that agrees with this correctly rounded answer instead is right.
    """
    args, kwargs, _ = case.build()
    up = lambda v: v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype == F32 else v
    with np.errstate(all="ignore"):
        res = getattr(ref, case.fname)(*[up(a) for a in args],
                                       **{k: up(v) for k, v in kwargs.items() if k != "out"})
        down = lambda r: None if r is None else np.asarray(r).astype(F32)
        return tuple(down(r) for r in res) if isinstance(res, tuple) else down(res)


def finite_max(*arrays):
    m = 0.0
    for a in arrays:
        if a is None:
            continue
        a = np.asarray(a, dtype=np.float64) if np.asarray(a).dtype.kind == "f" else None
        if a is None or a.size == 0:
            continue
        f = np.abs(a[np.isfinite(a)])
        if f.size:
            m = max(m, float(f.max()))
    return m


def names_in(msg, names):
    """Does ``msg`` name one of ``names`` (as a whole word)?"""
    for w in names:
        if re.search(r"(?<![A-Za-z0-9_])" + re.escape(w) + r"(?![A-Za-z0-9_])", msg):
            return True
    return False


def same_state(a, b):
    """Bit-for-bit the same values (NaN equal to NaN)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True))
    if a.dtype.kind == "c":
        return (bool(np.array_equal(a.real, b.real, equal_nan=True))
                and bool(np.array_equal(a.imag, b.imag, equal_nan=True)))
    return bool(np.array_equal(a, b))


def call(module, case, args, kwargs):
    try:
        return getattr(module, case.fname)(*args, **kwargs), None
    except Exception as e:  # noqa: BLE001 - every exception is judged below
        return None, e


def check(case):
    """The oracle: nnkernels and nnkernels.reference on the same fresh arguments."""
    Counter.hit(case.fname)
    nk_args, nk_kw, nk_named = case.build()
    ref_args, ref_kw, ref_named = case.build()
    _, _, pristine = case.build()
    with np.errstate(all="ignore"):
        got, nk_err = call(nk, case, nk_args, nk_kw)
        exp, ref_err = call(ref, case, ref_args, ref_kw)
    where = f"{case.fname}: broken={case.broken}"

    if case.broken:
        assert ref_err is not None or case.reference_accepts, (
            f"{where}: the reference accepted a broken call")
        assert nk_err is not None, (
            f"{where}: nnkernels accepted a call the contract refuses "
            f"(reference: {type(ref_err).__name__}: {ref_err})")
        assert isinstance(nk_err, case.exc) and type(nk_err) in (
            TypeError, ValueError, np.exceptions.AxisError), (
            f"{where}: nnkernels raised {type(nk_err).__name__}: {nk_err}; "
            f"the contract says {case.exc}")
        assert names_in(str(nk_err), case.broken), (
            f"{where}: the message does not name {case.broken}: {nk_err!r}")
        # checks come before any work: nothing was written
        for name, arr in nk_named.items():
            assert same_state(arr, pristine[name]), (
                f"{where}: nnkernels wrote into {name} before raising {nk_err!r}")
        return

    if ref_err is not None:
        raise AssertionError(f"{where}: the reference refused a valid call: "
                             f"{type(ref_err).__name__}: {ref_err}"
                             + (f" (nnkernels: {nk_err!r})" if nk_err else
                                " (nnkernels returned)"))
    if nk_err is not None:
        raise AssertionError(f"{where}: nnkernels refused a valid call the reference "
                             f"accepts: {type(nk_err).__name__}: {nk_err}") from nk_err
    if case.state:
        check_update(where, case, got, nk_args[0], nk_named, ref_named, pristine)
        return

    rtol, atol = case.tol["rtol"], case.tol["atol"]
    loss_atol = case.tol.get("loss_atol", atol)
    nonfinite_any = case.tol.get("nonfinite_any", False)
    free = either_free(nonfinite_preactivation(case), infinite_grad_times_underflow(case))
    compare_results(where, got, exp, rtol, atol, loss_atol, nonfinite_any,
                    lambda: reference_in_float64(case), free)

    # out= is what comes back, and the inputs are as the reference leaves them
    check_out_identity(where, case, got, nk_kw.get("out"))
    for name, arr in nk_named.items():
        problem = mismatch(arr, ref_named[name], rtol, atol, nonfinite_any, free=free)
        assert problem is None, f"{where}: after the call, {name}: {problem}"
        written = [o for k, o in nk_named.items() if k.startswith("out")]
        if not name.startswith("out") and not any(np.shares_memory(arr, o) for o in written):
            assert same_state(arr, pristine[name]), f"{where}: nnkernels modified input {name}"


def check_update(where, case, got, param, nk_named, ref_named, pristine):
    """An in-place update that returned: the result is ``param`` itself, each
    updated array (case.state) agrees with the reference's updated copy
    (NaN at the same places, the same infinities, finite values within the
    case's per-element bound), and every other array, unless it shares
    memory with an updated one, is bit for bit as it was."""
    assert got is param, f"{where}: the result is not param itself: {type(got).__name__}"
    rtol, atol = case.tol["rtol"], case.tol["atol"]
    free = adam_unstable(case, ref_named)
    for name in case.state:
        problem = mismatch(nk_named[name], ref_named[name], rtol, atol[name],
                           free=free.get(name))
        assert problem is None, f"{where}: after the call, {name}: {problem}"
    updated = [nk_named[n] for n in case.state]
    for name, arr in nk_named.items():
        if name not in case.state and not any(np.may_share_memory(arr, u) for u in updated):
            assert same_state(arr, pristine[name]), (
                f"{where}: nnkernels modified {name}, which it only reads")


def adam_unstable(case, ref_named):
    """adam_update: {name: mask} of the elements of param and exp_avg that are
    not compared (adam_lerp_nonfinite, and param where the step is x / 0 with
    x zero to rounding); {} for any other call.

    With ε = 0 and v (or v̂) = 0 the step is (lr / c₁) m / 0: +inf, -inf or
    NaN by the sign of m, and where m is 0 to within its rounding (the
    reference's m + (g − m) cancels to 0 where the kernel's g − β₁ (g − m)
    keeps a subnormal g) that sign is the rounding's.
    """
    if case.fname != "adam_update":
        return {}
    free = {}
    lerp = adam_lerp_nonfinite(case)
    if lerp is not None:
        free["exp_avg"] = free["param"] = lerp
    _, kwargs, _ = case.build()
    if float(kwargs.get("eps", 1e-8)) == 0.0:
        v = ref_named["max_exp_avg_sq" if "max_exp_avg_sq" in case.state else "exp_avg_sq"]
        m = np.abs(np.asarray(ref_named["exp_avg"], np.float64))
        with np.errstate(invalid="ignore"):
            zero = (np.asarray(v) == 0) & (m <= case.tol["atol"]["exp_avg"])
        free["param"] = zero if lerp is None else zero | lerp
    return free


def adam_lerp_nonfinite(case):
    """adam_update with 1 − β₁ >= 0.5: the mask of elements where g − m is
    ±inf (g the gradient after maximize and coupled weight decay, m exp_avg),
    else None.

    The kernel forms m + (1 − β₁)(g − m) as PyTorch's lerp does, which for a
    weight 1 − β₁ >= 0.5 is g − β₁ (g − m): where g is ±inf that gives NaN and
    the reference's m + (1 − β₁)(g − m) gives ±inf; where m is ±inf, the
    kernel gives ±inf and the reference NaN (docs/guarantees.md: nnkernels
    follows torch.optim.Adam there, the reference the equation).  Neither element of
    exp_avg, nor of param, which it moves, is compared there; exp_avg_sq and
    max_exp_avg_sq are.
    """
    args, kwargs, _ = case.build()
    beta1 = kwargs.get("betas", (0.9, 0.999))[0]
    if not 1.0 - float(beta1) >= 0.5:
        return None
    up = lambda a: np.asarray(a, dtype=np.float64)
    theta, g, m = up(args[0]), up(args[1]), up(args[2])
    wd = float(kwargs.get("weight_decay", 0.0))
    with np.errstate(all="ignore"):
        if kwargs.get("maximize"):
            g = -g
        if wd and not kwargs.get("decoupled_weight_decay"):
            g = g + wd * theta
        return np.isinf(g - m)


def compare_results(where, got, exp, rtol, atol, loss_atol, nonfinite_any=False,
                    float64_reference=None, free=None):
    """Every result agrees with the reference; a float32 result that does not
    is compared again, element by element, with float64_reference() as well."""
    alt = []                    # computed once, and only when needed

    def agrees(i, g, e, tol):
        problem = mismatch(g, e, rtol, tol, nonfinite_any, free=free)
        if problem is None or float64_reference is None or np.asarray(e).dtype != F32:
            return problem
        if not alt:
            r = float64_reference()
            alt.append(r if isinstance(r, tuple) else (r,))
        return mismatch(g, e, rtol, tol, nonfinite_any, alt=alt[0][i], free=free)

    if isinstance(exp, tuple):
        assert isinstance(got, tuple) and len(got) == len(exp), (where, type(got))
        for i, (g, e) in enumerate(zip(got, exp)):
            if e is None:
                assert g is None, f"{where}: result {i} should be None"
                continue
            is_loss = len(exp) == 2 and i == 0
            if is_loss and np.ndim(e) == 0:
                # a 0-d NumPy scalar of the input dtype
                assert np.ndim(g) == 0 and isinstance(g, (np.generic, np.ndarray)), (
                    f"{where}: loss is {type(g).__name__}")
            problem = agrees(i, g, e, loss_atol if is_loss else atol)
            assert problem is None, f"{where}: result {i}: {problem}"
        return
    assert isinstance(got, np.ndarray), f"{where}: got {type(got).__name__}"
    problem = agrees(0, got, exp, atol)
    assert problem is None, f"{where}: {problem}"


def check_out_identity(where, case, got, out):
    if out is None:
        return
    if isinstance(out, tuple):                      # dense_backward
        need_x = case.kw.get("need_input_grad", True)
        for i, (o, g) in enumerate(zip(out, got)):
            if o is not None and not (i == 2 and not need_x):
                assert g is o, f"{where}: result {i} is not out[{i}]"
        return
    res = got[1] if isinstance(got, tuple) else got
    assert res is out, f"{where}: the result is not the out= array"


def tolerances(dtype, scale=1.0, n=1, rel_factor=1.0):
    """The suite's tolerances (tests/_nkutil.py): RTOL, and ATOL relative to
    ``scale``, both widened for results summing ``n`` terms."""
    dtype = np.dtype(dtype)
    k = sum_factor(dtype, n)
    return dict(rtol=RTOL[dtype] * k * rel_factor, atol=ATOL[dtype] * k * scale)
