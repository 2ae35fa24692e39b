"""Shared helpers of the nnkernels test-suite (not a test module).

Everything here is independent of the compiled kernels: layouts are built
with NumPy, tolerances are fixed per dtype, and the PyTorch bridge only
converts arrays.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

# examples/ of the source tree; absent when the suite runs from a copy of
# tests/ against an installed wheel
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

DTYPES = [np.float64, np.float32]

# Memory layouts an input can come in.  Every one holds exactly the same
# values; only the strides differ.
#   C        C-contiguous
#   F        F-contiguous (= the transposed view of a C-contiguous array,
#            the seed notes' column layout)
#   strided  a view x[::2, ::3] into a bigger array whose other elements are
#            NaN (so reading a wrong element shows up)
#   neg      negative strides, x[::-1, ::-1] of a C-contiguous array
LAYOUTS = ["C", "F", "strided", "neg"]

# Shapes from 1x1 up: 1xC, Nx1, odd sizes that are not multiples of 16.
SHAPES = [(1, 1), (1, 7), (5, 1), (3, 17), (33, 1000), (64, 10), (7, 130)]
SMALL_SHAPES = [(1, 1), (1, 7), (5, 1), (3, 17), (16, 33), (9, 64)]


def layout(base, kind):
    """Return an array holding ``base``'s values in memory layout ``kind``."""
    base = np.asarray(base)
    if kind == "C":
        return np.ascontiguousarray(base).copy()
    if kind == "F":
        out = np.asfortranarray(base).copy(order="F")
        if base.ndim == 2 and base.shape[0] > 1 and base.shape[1] > 1:
            assert not out.flags.c_contiguous
        return out
    if kind == "strided":
        steps = (2, 3)[: base.ndim] if base.ndim <= 2 else (2,) * base.ndim
        big_shape = tuple(s * k + 1 for s, k in zip(base.shape, steps))
        if base.dtype.kind == "f":
            big = np.full(big_shape, np.nan, dtype=base.dtype)
        else:
            big = np.full(big_shape, 123, dtype=base.dtype)
        sl = tuple(slice(None, None, k) for k in steps)
        view = big[sl][tuple(slice(0, s) for s in base.shape)]
        view[...] = base
        assert view.shape == base.shape
        return view
    if kind == "neg":
        rev = tuple(slice(None, None, -1) for _ in range(base.ndim))
        # copy(): ascontiguousarray returns base's own memory when the
        # reversed view is already contiguous (an axis of size 1)
        out = np.ascontiguousarray(base[rev]).copy()[rev]
        assert all(s <= 0 for s in out.strides) or out.size <= 1
        return out
    if kind == "T":
        # the transposed view of a C-ordered array of the transposed shape
        # (what ``x.T`` of the seed notes' column layout gives)
        if base.ndim < 2:
            return base.copy()
        return np.array(base.T, order="C").T
    if kind == "odd":
        # strides that are no multiple of the item size (unaligned): a field
        # of a packed structured array
        holder = np.zeros(base.shape, np.dtype([("v", base.dtype), ("pad", "u1")]))
        view = holder["v"]
        view[...] = base
        return view
    if kind == "unaligned":
        # the data pointer one byte off the dtype's alignment, C order
        raw = np.empty(base.nbytes + 1, np.uint8)
        view = raw[1:].view(base.dtype).reshape(base.shape)
        view[...] = base
        return view
    raise AssertionError(kind)


def readonly(a):
    a = np.array(a, copy=True, order="K")
    a.setflags(write=False)
    return a


# Tolerances.  The kernels use their own vectorised exp (a couple of ulp), so
# results agree with the NumPy reference (computed in float64) to a few ulp
# of the row scale: rtol ~ 1e-12 / 2e-6, atol ~ 4.5e-14 / 3.4 ulp of the
# scale.  A result that sums n terms (softmax over n classes) may carry the
# rounding of that sum too: for float32 ~ 2 eps sqrt(n), relative.
RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 2e-6}
ATOL = {np.dtype(np.float64): 1e-14, np.dtype(np.float32): 4e-7}
EPS = {np.dtype(np.float64): 2.0 ** -52, np.dtype(np.float32): 2.0 ** -23}


def sum_factor(dtype, n):
    """How much looser than RTOL a result summing n terms may be."""
    dtype = np.dtype(dtype)
    return max(1.0, 2.0 * EPS[dtype] * np.sqrt(max(n, 1)) / RTOL[dtype])


def assert_close(got, expected, dtype=None, scale=None, rtol=None, atol=None,
                 err_msg="", n=1):
    """Compare with dtype-appropriate tolerances.

    ``atol`` is relative to ``scale`` (by default the largest finite
    magnitude of ``expected``, at least 1): errors of a few ulp of the biggest
    number in play are rounding, not bugs.  ``n`` is the length of the
    reductions behind the result (the class count of a softmax).  NaNs must
    match position by position.
    """
    got_a = np.asarray(got)
    exp_a = np.asarray(expected)
    if dtype is None:
        dtype = exp_a.dtype if exp_a.dtype.kind == "f" else np.float64
    dtype = np.dtype(dtype)
    if scale is None:
        fin = np.abs(exp_a[np.isfinite(exp_a)]) if exp_a.size else np.zeros(0)
        scale = max(1.0, float(fin.max())) if fin.size else 1.0
    k = sum_factor(dtype, n)
    r = RTOL[dtype] * k if rtol is None else rtol
    a = ATOL[dtype] * k * scale if atol is None else atol
    assert got_a.shape == exp_a.shape, (got_a.shape, exp_a.shape, err_msg)
    np.testing.assert_allclose(
        got_a.astype(np.float64), exp_a.astype(np.float64), rtol=r, atol=a,
        equal_nan=True, err_msg=err_msg)


def assert_scalar_loss(loss, dtype):
    """A reduced loss is a 0-d NumPy scalar of the input dtype."""
    assert np.ndim(loss) == 0, type(loss)
    assert isinstance(loss, (np.generic, np.ndarray)), type(loss)
    assert np.asarray(loss).dtype == np.dtype(dtype), np.asarray(loss).dtype


def snapshot(*arrays):
    return [None if a is None else np.array(a, copy=True) for a in arrays]


def assert_unchanged(arrays, copies):
    for a, c in zip(arrays, copies):
        if a is None:
            continue
        np.testing.assert_array_equal(a, c, err_msg="an input was modified")


# ---------------------------------------------------------------- torch bridge
def torch_module():
    """Import torch or skip the test."""
    return pytest.importorskip("torch")


def tt(a, requires_grad=False, dtype=None):
    """NumPy -> torch tensor (always a fresh contiguous copy)."""
    torch = torch_module()
    arr = np.ascontiguousarray(np.asarray(a))
    t = torch.from_numpy(arr.copy())
    if dtype is not None:
        t = t.to(dtype)
    if requires_grad:
        t.requires_grad_(True)
    return t


def tn(t):
    return t.detach().cpu().numpy()


def rand_logits(rng, shape, dtype, scale=3.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def rand_probs(rng, shape, dtype, axis=-1):
    z = rng.standard_normal(shape) * 2
    z = np.exp(z - z.max(axis=axis, keepdims=True))
    return (z / z.sum(axis=axis, keepdims=True)).astype(dtype)


def names_in(msg, *words):
    """Each word occurs in msg as a whole word (an argument's name)."""
    import re
    for word in words:
        pattern = r"(?<![A-Za-z0-9_])" + re.escape(str(word)) + r"(?![A-Za-z0-9_])"
        assert re.search(pattern, msg), f"{word!r} not named in: {msg!r}"


def has_torch():
    import importlib.util
    return importlib.util.find_spec("torch") is not None


# ------------------------------------------------- dense: rounding bounds
def f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def forward_bound(x, w, b, dtype, expected):
    """Rounding bound of g(x @ w.T + b) computed in ``dtype``.

    The dot products of length K carry at most ~K·eps·(|x|@|w|.T) (plus one
    rounding for the bias); the activation is 1-Lipschitz and adds a few
    ulp of its result.  Factor 2: the float64 reference rounds too.
    """
    eps = EPS[np.dtype(dtype)]
    k = x.shape[1]
    mag = np.abs(f64(x)) @ np.abs(f64(w)).T
    if b is not None:
        mag = mag + np.abs(f64(b))
    with np.errstate(invalid="ignore"):
        return (2.0 * (k + 2) * eps * mag + 8.0 * eps * np.abs(expected)
                + 4.0 * np.finfo(dtype).tiny)


def backward_bounds(ga, x, w, a, act, dtype, z=None):
    """Rounding bounds of (grad_w, grad_b, grad_x) computed in ``dtype``.

    grad_z = grad_a ⊙ g'(a) is within a few ulp of |grad_a|·M, M the
    magnitude of the terms of g'(a) (any reasonable formula); the products
    and the batch sum of length K add K·eps of the absolute products.
    """
    eps = EPS[np.dtype(dtype)]
    tiny = 4.0 * np.finfo(dtype).tiny
    ga, x, w = np.abs(f64(ga)), np.abs(f64(x)), np.abs(f64(w))
    if act is None:
        m = 1.0
    elif a is None:
        # an activation whose derivative takes z: its terms are at most
        # about 1 + |z| (gelu's Φ + z φ, silu's σ(1 + z(1 − σ)), ...), each a
        # few dozen ulp in the worst cases
        m = 32.0 * (1.0 + np.abs(f64(z)))
    else:
        a = np.abs(f64(a))
        m = {"sigmoid": a * (1 + a), "tanh": 1 + a * a, "relu": np.ones_like(a)}[act]
    gz = ga * m
    n, n_out = ga.shape
    bw = 2.0 * (n + 6) * eps * (gz.T @ x) + tiny
    bb = 2.0 * (n + 6) * eps * gz.sum(axis=0) + tiny
    bx = 2.0 * (n_out + 6) * eps * (gz @ w) + tiny
    return bw, bb, bx


def assert_within(got, expected, bound, what=""):
    """|got - expected| <= bound elementwise; NaN where expected is NaN;
    equal infinities allowed.  Reports the worst element."""
    got = np.asarray(got)
    assert got.shape == np.shape(expected), (what, got.shape, np.shape(expected))
    g, e = f64(got), f64(expected)
    bound = np.broadcast_to(f64(bound), e.shape)
    with np.errstate(invalid="ignore"):
        err = np.abs(g - e)
        ok = (err <= bound) | (g == e) | (np.isnan(g) & np.isnan(e))
    if not ok.all():
        with np.errstate(invalid="ignore", divide="ignore"):
            excess = np.where(ok, 0.0, np.nan_to_num(err / bound, nan=np.inf, posinf=np.inf))
        i = np.unravel_index(np.argmax(excess), e.shape)
        raise AssertionError(
            f"{what}: {int((~ok).sum())} of {ok.size} elements out of the "
            f"rounding bound; worst at {tuple(int(j) for j in i)}: "
            f"got {g[i]!r}, expected {e[i]!r}, |err| {err[i]!r}, bound {bound[i]!r}")


def load_example(name):
    """The module of examples/<name>.py, loaded from its file (skips the test
    where the folder is not there). examples/ goes on sys.path first: the
    examples import train_mlp's helpers from beside them."""
    path = EXAMPLES / f"{name}.py"
    if not path.is_file():
        pytest.skip(f"{path} is not here (tests run from an installed copy)")
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(f"{name}_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
