"""Every bad input of the contract raises the stated exception, with a
message naming the argument, before any work is done."""

from __future__ import annotations

import re

import numpy as np
import pytest

import nnkernels as nk

N, C = 4, 5

# name -> (positional float arguments, keyword-only float arguments)
SPECS = {
    "sigmoid": (["z"], []),
    "relu": (["z"], []),
    "sigmoid_backward": (["grad", "a"], []),
    "tanh_backward": (["grad", "a"], []),
    "relu_backward": (["grad", "a"], []),
    "softmax": (["z"], []),
    "log_softmax": (["z"], []),
    "softmax_backward": (["grad", "p"], []),
    "softmax_cross_entropy": (["logits", "target"], ["weight"]),
    "softmax_cross_entropy_backward": (["logits", "target"], ["weight"]),
    "sigmoid_binary_cross_entropy": (["logits", "target"],
                                     ["weight", "pos_weight"]),
    "binary_cross_entropy": (["probs", "target"], ["weight"]),
    "mse": (["pred", "target"], []),
}
LOSSES = ["softmax_cross_entropy", "softmax_cross_entropy_backward",
          "sigmoid_binary_cross_entropy", "binary_cross_entropy", "mse"]
CE = ["softmax_cross_entropy", "softmax_cross_entropy_backward"]


def valid_value(fname, arg, dtype=np.float64):
    rng = np.random.default_rng(0)
    if arg == "weight" and fname in CE:
        return (rng.random(C) + 0.5).astype(dtype)
    if arg == "pos_weight":
        return (rng.random(C) + 0.5).astype(dtype)
    if arg in ("a", "p", "probs", "weight") or (
            arg == "target" and fname != "mse"):
        v = rng.random((N, C)) * 0.9 + 0.05
        if arg in ("p",) or (arg == "target" and fname in CE):
            v = v / v.sum(axis=1, keepdims=True)
        return v.astype(dtype)
    return rng.standard_normal((N, C)).astype(dtype)


def valid_args(fname, dtype=np.float64):
    pos, kw = SPECS[fname]
    return ({a: valid_value(fname, a, dtype) for a in pos},
            {a: valid_value(fname, a, dtype) for a in kw})


def call(fname, posargs, kwargs, **extra):
    pos = [posargs[a] for a in SPECS[fname][0]]
    return getattr(nk, fname)(*pos, **kwargs, **extra)


def names_in(msg, *words):
    for w in words:
        pattern = r"(?<![A-Za-z0-9_])" + re.escape(str(w)) + \
                  r"(?![A-Za-z0-9_])"
        assert re.search(pattern, msg), f"{w!r} not named in: {msg!r}"


def float_args():
    for fname, (pos, kw) in SPECS.items():
        for a in pos + kw:
            yield fname, a


def test_all_valid_calls_work():
    """The builders above make valid calls (so the failures below are due
    to the one bad argument only)."""
    for fname in SPECS:
        for dtype in (np.float32, np.float64):
            p, k = valid_args(fname, dtype)
            res = call(fname, p, k)
            arr = res[1] if isinstance(res, tuple) else res
            assert arr.dtype == dtype and arr.shape == (N, C)


# --------------------------------------------------------------- dtypes
@pytest.mark.parametrize("fname,arg", [
    (f, a) for f, a in float_args() if a != SPECS[f][0][0]])
@pytest.mark.parametrize("first", [np.float32, np.float64],
                         ids=["f32", "f64"])
def test_float_dtype_mismatch(fname, arg, first):
    other = np.float64 if first == np.float32 else np.float32
    p, k = valid_args(fname, first)
    if arg in p:
        p[arg] = p[arg].astype(other)
    else:
        k[arg] = k[arg].astype(other)
    with pytest.raises(TypeError) as exc:
        call(fname, p, k)
    names_in(str(exc.value), SPECS[fname][0][0], arg, "float32", "float64")


BAD_DTYPES = [np.int64, np.int32, np.bool_, np.complex128, object]


def _non_float_cases():
    for fname, arg in float_args():
        for bad, bid in zip(BAD_DTYPES, ["int64", "int32", "bool", "complex",
                                         "object"]):
            if fname in CE and arg == "target" and bid in ("int64", "int32",
                                                            "bool"):
                continue  # integer targets are class indices (see below)
            yield pytest.param(fname, arg, bad, id=f"{fname}-{arg}-{bid}")


@pytest.mark.parametrize("fname,arg,bad", list(_non_float_cases()))
def test_non_float_arrays_rejected(fname, arg, bad):
    p, k = valid_args(fname)
    src = p if arg in p else k
    src[arg] = src[arg].astype(bad) if bad is not object else \
        src[arg].astype(object)
    with pytest.raises(TypeError) as exc:
        call(fname, p, k)
    names_in(str(exc.value), arg)


# --------------------------------------------------------------- shapes
@pytest.mark.parametrize("fname,arg", [
    (f, a) for f, a in float_args() if a != SPECS[f][0][0]])
def test_shape_mismatch(fname, arg):
    p, k = valid_args(fname)
    src = p if arg in p else k
    bad = np.ones((N + 1, C + 2)) if src[arg].ndim == 2 else np.ones(C + 2)
    src[arg] = bad
    first = SPECS[fname][0][0]
    with pytest.raises(ValueError) as exc:
        call(fname, p, k)
    msg = str(exc.value)
    names_in(msg, arg)
    assert str(bad.shape) in msg, msg
    if arg in p:  # both arrays' names and shapes
        names_in(msg, first)
        assert str((N, C)) in msg, msg


@pytest.mark.parametrize("fname", ["sigmoid_binary_cross_entropy",
                                   "binary_cross_entropy"])
def test_elementwise_weight_not_broadcastable(fname):
    p, k = valid_args(fname)
    for bad in (np.ones(N), np.ones((N, C + 1)), np.ones((2, N, C))):
        k["weight"] = bad
        with pytest.raises(ValueError) as exc:
            call(fname, p, k)
        names_in(str(exc.value), "weight")
    if fname == "sigmoid_binary_cross_entropy":
        k = valid_args(fname)[1]
        for bad in (np.ones(N), np.ones((N, C)), np.ones(C + 1)):
            k["pos_weight"] = bad
            with pytest.raises(ValueError) as exc:
                call(fname, p, k)
            names_in(str(exc.value), "pos_weight")


# ------------------------------------------------------------------ out=
@pytest.mark.parametrize("problem", ["shape", "dtype", "readonly", "list",
                                     "transposed-shape"])
@pytest.mark.parametrize("fname", list(SPECS))
def test_bad_out(fname, problem):
    p, k = valid_args(fname)
    if problem == "shape":
        out, exc_type = np.zeros((N, C + 1)), ValueError
    elif problem == "transposed-shape":
        out, exc_type = np.zeros((C, N)), ValueError
    elif problem == "dtype":
        out, exc_type = np.zeros((N, C), np.float32), (TypeError, ValueError)
    elif problem == "readonly":
        out = np.zeros((N, C))
        out.setflags(write=False)
        exc_type = (ValueError, TypeError)
    else:
        out, exc_type = [[0.0] * C] * N, (TypeError, ValueError)
    with pytest.raises(exc_type) as exc:
        call(fname, p, k, out=out)
    names_in(str(exc.value), "out")
    if isinstance(out, np.ndarray):
        assert not out.any(), "out was written although the call failed"


# ----------------------------------------------------- string options
@pytest.mark.parametrize("value", ["Mean", "SUM", "None", "avg", "", "mean "])
@pytest.mark.parametrize("fname", LOSSES)
def test_unknown_reduction(fname, value):
    p, k = valid_args(fname)
    with pytest.raises(ValueError) as exc:
        call(fname, p, k, reduction=value)
    names_in(str(exc.value), "reduction")


@pytest.mark.parametrize("value", [-0.1, -1e-12, 1.0000001, 2.0, np.nan])
@pytest.mark.parametrize("fname", CE)
@pytest.mark.parametrize("target_kind", ["indices", "probs"])
def test_label_smoothing_out_of_range(fname, value, target_kind):
    p, k = valid_args(fname)
    if target_kind == "indices":
        p["target"] = np.array([0, 1, 2, 3])
    with pytest.raises(ValueError) as exc:
        call(fname, p, k, label_smoothing=value)
    names_in(str(exc.value), "label_smoothing")


@pytest.mark.parametrize("fname", CE)
def test_label_smoothing_bounds_accepted(fname):
    p, k = valid_args(fname)
    for v in (0.0, 1.0, 0, 1):
        res = call(fname, p, k, label_smoothing=v)
        grad = res[1] if isinstance(res, tuple) else res
        assert np.isfinite(grad).all()


# ----------------------------------------------------- class-index targets
BAD_INDEX_CASES = [
    # (target values, target dtype, ignore_index, bad position, bad value)
    ([0, 1, 2, 0, 1, 7], np.int64, -100, 5, 7),
    ([0, 5, 2, 0, 1, 2], np.int32, -100, 1, 5),
    ([0, 1, -1, 0, 1, 2], np.int64, -100, 2, -1),
    ([0, 1, -1, 0, -100, 2], np.int16, -1, 4, -100),
    ([0, 1, 2, 3, 9, 2], np.int64, 3, 4, 9),
    ([0, 1, 2, 200, 1, 2], np.uint8, -100, 3, 200),
    ([0, 1, 2, 0, 1, 2 ** 40], np.uint64, -100, 5, 2 ** 40),
    ([0, 1, 2, 0, 1, -128], np.int8, -100, 5, -128),
]


@pytest.mark.parametrize("case", BAD_INDEX_CASES,
                         ids=lambda c: f"{np.dtype(c[1]).name}-{c[4]}")
@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("fname", CE)
def test_class_index_out_of_range(fname, axis, case):
    values, tdtype, ignore_index, pos, val = case
    n, c = len(values), 3
    logits = np.zeros((n, c) if axis == -1 else (c, n))
    target = np.array(values).astype(tdtype)
    out = np.full(logits.shape, 5.0)
    with pytest.raises(ValueError) as exc:
        getattr(nk, fname)(logits, target, axis=axis,
                           ignore_index=ignore_index, out=out)
    names_in(str(exc.value), pos, val)
    assert (out == 5.0).all(), "out was written although the call failed"


@pytest.mark.parametrize("fname", CE)
def test_class_index_equal_to_ignore_index_is_valid(fname):
    logits = np.zeros((3, 4))
    res = getattr(nk, fname)(logits, np.array([0, 9, 3]), ignore_index=9)
    grad = res[1] if isinstance(res, tuple) else res
    np.testing.assert_array_equal(grad[1], 0.0)


@pytest.mark.parametrize("tdtype", [np.float64, np.float32])
@pytest.mark.parametrize("fname", CE)
def test_float_labels_are_not_class_indices(fname, tdtype):
    """Targets are integer indices (N,) or probabilities of the logits'
    shape; a float (N,) array is neither."""
    logits = np.zeros((N, C), dtype=tdtype)
    with pytest.raises((ValueError, TypeError)) as exc:
        getattr(nk, fname)(logits, np.array([0.0, 1.0, 2.0, 1.0], tdtype))
    names_in(str(exc.value), "target")


@pytest.mark.parametrize("fname", CE)
@pytest.mark.parametrize("target", [
    np.zeros(N + 1, np.int64), np.zeros(N - 1, np.int64),
    np.zeros((N, 1), np.int64), np.zeros((N, C), np.int64),
    np.zeros(C, np.int64), np.full((N, C + 1), 0.2), np.full((C, N), 0.2)],
    ids=["N+1", "N-1", "Nx1", "NxC-int", "C", "probs-NxC+1", "probs-CxN"])
def test_target_wrong_shape(fname, target):
    logits = np.zeros((N, C))
    with pytest.raises((ValueError, TypeError)) as exc:
        getattr(nk, fname)(logits, target)
    names_in(str(exc.value), "target")


@pytest.mark.parametrize("fname", CE)
@pytest.mark.parametrize("bad", [np.complex128, object])
def test_target_kinds(fname, bad):
    logits = np.zeros((N, C))
    with pytest.raises(TypeError) as exc:
        getattr(nk, fname)(logits, np.zeros(N, bad))
    names_in(str(exc.value), "target")


@pytest.mark.parametrize("fname", CE)
def test_ce_logits_must_be_2d(fname):
    for logits in (np.zeros(C), np.zeros((2, N, C))):
        with pytest.raises(ValueError) as exc:
            getattr(nk, fname)(logits, np.zeros(N, np.int64))
        names_in(str(exc.value), "logits")


# ------------------------------------------------------------ probs range
@pytest.mark.parametrize("value", [-1e-3, -1e-300, 1.0 + 1e-9, 2.0, np.inf,
                                   -np.inf])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_probs_outside_unit_interval(value, dtype):
    p, k = valid_args("binary_cross_entropy", dtype)
    if dtype == np.float32 and value in (-1e-300, 1.0 + 1e-9):
        value = -1e-30 if value < 0 else 1.0000001
    p["probs"][2, 3] = value
    out = np.full((N, C), 5.0, dtype)
    with pytest.raises(ValueError) as exc:
        call("binary_cross_entropy", p, k, out=out)
    names_in(str(exc.value), "probs")
    assert (out == 5.0).all(), "out was written although the call failed"


def test_probs_bounds_accepted():
    probs = np.array([0.0, 1.0, 0.5])
    loss, grad = nk.binary_cross_entropy(probs, np.array([1.0, 0.0, 1.0]),
                                         reduction="sum")
    assert np.isfinite(loss) and np.isfinite(grad).all()


# ------------------------------------------------------------------ axis
@pytest.mark.parametrize("axis", [2, -3, 5, -100])
@pytest.mark.parametrize("fname", ["softmax", "log_softmax",
                                   "softmax_backward"] + CE)
def test_axis_out_of_range(fname, axis):
    p, k = valid_args(fname)
    with pytest.raises(ValueError) as exc:
        call(fname, p, k, axis=axis)
    names_in(str(exc.value), "axis")


# --------------------------------------------------------------- threads
@pytest.mark.parametrize("n", [0, -1, -8])
def test_set_num_threads_invalid(n):
    before = nk.get_num_threads()
    with pytest.raises(ValueError):
        nk.set_num_threads(n)
    assert nk.get_num_threads() == before


# Regressions found by hand: 0-d inputs on the checked (copying) path, and
# the element-wise losses' shape rules (1-D or 2-D input, one pos_weight per column).
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zero_dimensional_activation_inputs(dtype):
    z = dtype(0.3)                           # a NumPy scalar, not an ndarray
    np.testing.assert_allclose(nk.sigmoid(z), 1 / (1 + np.exp(-0.3)), rtol=1e-6)
    assert nk.relu_backward(dtype(2.0), dtype(1.0)) == 2.0
    assert nk.relu_backward(dtype(2.0), dtype(-1.0)) == 0.0


def test_elementwise_loss_rejects_0d_input():
    with pytest.raises(ValueError, match="pred must be a 1-D or 2-D array"):
        nk.mse(np.float64(1.0), np.float64(3.0))


def test_pos_weight_needs_one_value_per_column():
    with pytest.raises(ValueError, match="pos_weight must hold one value per column"):
        nk.sigmoid_binary_cross_entropy(np.zeros((2, 3)), np.ones((2, 3)),
                                        pos_weight=np.array([2.0]))
