"""Activations (sigmoid, relu) and their Hadamard backward kernels.

Checked against nnkernels.reference, against closed forms evaluated in
float64, against torch, and for layouts, out=, in place, read-only inputs,
extreme values, NaN and thread count.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import nnkernels as nk
import nnkernels.reference as ref
from _nkutil import (DTYPES, LAYOUTS, SHAPES, assert_close, layout, readonly,
                     snapshot, assert_unchanged, tt, tn, torch_module)

FORWARD = ["sigmoid", "relu"]
BACKWARD = ["sigmoid_backward", "tanh_backward", "relu_backward"]
SHAPES_1D = [(1,), (17,), (1000,)]


def exact_forward(name, z):
    """Closed form in float64 (overflow-free sigmoid)."""
    z = np.asarray(z, dtype=np.float64)
    if name == "sigmoid":
        with np.errstate(over="ignore", invalid="ignore"):
            e = np.exp(-np.abs(z))
            return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    if name == "relu":
        return np.where(np.isnan(z), z, np.maximum(z, 0.0))
    raise AssertionError(name)


def exact_backward(name, g, a):
    g = np.asarray(g, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64)
    if name == "sigmoid_backward":
        return g * a * (1.0 - a)
    if name == "tanh_backward":
        return g * (1.0 - a * a)
    if name == "relu_backward":
        return np.where(a <= 0, 0.0, g)
    raise AssertionError(name)


def make_a(name, rng, shape, dtype):
    """A plausible layer output for the backward kernel ``name``."""
    z = rng.standard_normal(shape) * 3
    if name == "sigmoid_backward":
        a = 1 / (1 + np.exp(-z))
    elif name == "tanh_backward":
        a = np.tanh(z)
    else:
        a = np.maximum(z, 0)
        a.flat[:: 7] = 0.0  # exact zeros: gradient must be 0 there
    return a.astype(dtype)


# --------------------------------------------------------------- forward
@pytest.mark.parametrize("shape", SHAPES + SHAPES_1D, ids=str)
@pytest.mark.parametrize("lay", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("name", FORWARD)
def test_forward_matches_reference(name, dtype, lay, shape, threads, rng):
    base = (rng.standard_normal(shape) * 5).astype(dtype)
    z = layout(base, lay)
    copies = snapshot(z)
    got = getattr(nk, name)(z)
    assert isinstance(got, np.ndarray)
    assert got.dtype == dtype and got.shape == shape
    assert_unchanged([z], copies)
    assert_close(got, getattr(ref, name)(base.copy()), dtype)
    assert_close(got, exact_forward(name, base), dtype)


@pytest.mark.parametrize("shape", SHAPES + SHAPES_1D, ids=str)
@pytest.mark.parametrize("lay", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("name", BACKWARD)
def test_backward_matches_reference(name, dtype, lay, shape, threads, rng):
    gbase = rng.standard_normal(shape).astype(dtype)
    abase = make_a(name, rng, shape, dtype)
    g, a = layout(gbase, lay), layout(abase, lay)
    copies = snapshot(g, a)
    got = getattr(nk, name)(g, a)
    assert isinstance(got, np.ndarray)
    assert got.dtype == dtype and got.shape == shape
    assert_unchanged([g, a], copies)
    scale = max(1.0, float(np.abs(gbase).max()))
    assert_close(got, getattr(ref, name)(gbase.copy(), abase.copy()), dtype,
                 scale=scale)
    assert_close(got, exact_backward(name, gbase, abase), dtype, scale=scale)


@pytest.mark.parametrize("name", BACKWARD)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_backward_mixed_layouts(name, dtype, rng):
    shape = (37, 45)
    gbase = rng.standard_normal(shape).astype(dtype)
    abase = make_a(name, rng, shape, dtype)
    g = layout(gbase, "F")
    a = layout(abase, "strided")
    out = layout(np.zeros(shape, dtype), "neg")
    res = getattr(nk, name)(g, a, out=out)
    assert res is out
    assert_close(out, exact_backward(name, gbase, abase), dtype,
                 scale=float(np.abs(gbase).max()))


# ------------------------------------------------------------ out= / in place
@pytest.mark.parametrize("lay", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("name", FORWARD)
def test_forward_out(name, dtype, lay, threads, rng):
    base = (rng.standard_normal((19, 33)) * 4).astype(dtype)
    z = readonly(layout(base, lay))
    out = layout(np.full(base.shape, 7.0, dtype), lay)
    res = getattr(nk, name)(z, out=out)
    assert res is out
    assert_close(out, exact_forward(name, base), dtype)
    np.testing.assert_array_equal(z, base)


@pytest.mark.parametrize("lay", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("name", FORWARD)
def test_forward_in_place(name, dtype, lay, threads, rng):
    base = (rng.standard_normal((21, 40)) * 4).astype(dtype)
    z = layout(base, lay)
    res = getattr(nk, name)(z, out=z)
    assert res is z
    assert_close(z, exact_forward(name, base), dtype)


@pytest.mark.parametrize("lay", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("name", BACKWARD)
def test_backward_out_and_in_place(name, dtype, lay, threads, rng):
    shape = (23, 50)
    gbase = rng.standard_normal(shape).astype(dtype)
    abase = make_a(name, rng, shape, dtype)
    expected = exact_backward(name, gbase, abase)
    scale = float(np.abs(gbase).max())
    # separate out, read-only inputs
    g, a = readonly(layout(gbase, lay)), readonly(layout(abase, lay))
    out = layout(np.full(shape, -3.0, dtype), lay)
    res = getattr(nk, name)(g, a, out=out)
    assert res is out
    assert_close(out, expected, dtype, scale=scale)
    np.testing.assert_array_equal(g, gbase)
    np.testing.assert_array_equal(a, abase)
    # in place: out is grad
    g2 = layout(gbase, lay)
    res = getattr(nk, name)(g2, layout(abase, lay), out=g2)
    assert res is g2
    assert_close(g2, expected, dtype, scale=scale)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("name", BACKWARD)
def test_backward_only_out_written(name, dtype, rng):
    """Nothing but out is written: grad and a keep their values."""
    shape = (8, 9)
    gbase = rng.standard_normal(shape).astype(dtype)
    abase = make_a(name, rng, shape, dtype)
    g, a = gbase.copy(), abase.copy()
    out = np.empty(shape, dtype)
    getattr(nk, name)(g, a, out=out)
    np.testing.assert_array_equal(g, gbase)
    np.testing.assert_array_equal(a, abase)


# ------------------------------------------------------------ special values
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_sigmoid_extremes(dtype):
    z = np.array([-1e4, -1e3, -745.0, -100.0, -40.0, -1.0, -0.0, 0.0, 1.0,
                  40.0, 100.0, 745.0, 1e3, 1e4, np.inf, -np.inf], dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = nk.sigmoid(z)
    assert np.all(np.isfinite(s))
    assert np.all((s >= 0) & (s <= 1))
    assert s[0] == 0.0 and s[1] == 0.0 and s[-1] == 0.0
    assert s[13] == 1.0 and s[12] == 1.0 and s[-2] == 1.0
    assert s[6] == 0.5 and s[7] == 0.5
    assert_close(s, exact_forward("sigmoid", z), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_sigmoid_relative_accuracy_in_the_tail(dtype):
    """For z << 0 sigmoid is tiny but must keep full relative accuracy."""
    lo = -700.0 if dtype == np.float64 else -85.0
    z = np.linspace(lo, 30.0, 4001).astype(dtype)
    s = nk.sigmoid(z)
    exact = exact_forward("sigmoid", z)
    rtol = 1e-13 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(s, exact, rtol=rtol, atol=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_nan_propagates_elementwise(dtype):
    z = np.array([[1.0, np.nan, -2.0], [0.5, -0.5, 3.0]], dtype)
    s = nk.sigmoid(z)
    assert np.isnan(s[0, 1]) and np.isfinite(np.delete(s.ravel(), 1)).all()
    r = nk.relu(z)
    assert np.isnan(r[0, 1]), "relu(NaN) must be NaN (as torch.relu)"
    np.testing.assert_array_equal(np.delete(r.ravel(), 1),
                                  [1.0, 0.0, 0.5, 0.0, 3.0])
    g = np.array([[1.0, 2.0, np.nan], [1.0, 1.0, 1.0]], dtype)
    a = np.array([[0.5, np.nan, 0.25], [0.5, 0.5, 0.5]], dtype)
    for name in ("sigmoid_backward", "tanh_backward"):
        out = getattr(nk, name)(g, a)
        assert np.isnan(out[0, 1]) and np.isnan(out[0, 2])
        assert_close(out[1], exact_backward(name, g[1], a[1]), dtype)
    # relu_backward: NaN a is not <= 0, so grad passes (threshold_backward)
    out = nk.relu_backward(g, a)
    assert out[0, 1] == 2.0 and np.isnan(out[0, 2])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_relu_backward_rule(dtype):
    a = np.array([-2.0, -0.0, 0.0, 1e-30, 3.0, -1e-30], dtype)
    g = np.array([5.0, 6.0, 7.0, 8.0, 9.0, 10.0], dtype)
    np.testing.assert_array_equal(nk.relu_backward(g, a),
                                  np.array([0, 0, 0, 8, 9, 0], dtype))
    # passing z instead of a gives the same
    z = np.array([-2.0, 0.0, 0.5, -0.1, 3.0, 1e-3], dtype)
    np.testing.assert_array_equal(nk.relu_backward(g, z),
                                  nk.relu_backward(g, nk.relu(z)))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_relu_values(dtype):
    z = np.array([-np.inf, -1e4, -1.0, -1e-30, 0.0, 1e-30, 2.5, 1e4, np.inf],
                 dtype)
    np.testing.assert_array_equal(
        nk.relu(z), np.array([0, 0, 0, 0, 0, 1e-30, 2.5, 1e4, np.inf], dtype))


# ------------------------------------------------------------------- torch
@pytest.mark.parametrize("lay", ["C", "F", "strided"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_torch_parity(dtype, lay, rng):
    torch = torch_module()
    shape = (33, 70)
    z = (rng.standard_normal(shape) * 4).astype(dtype)
    z[0, :5] = [-1e4, 1e4, -80, 80, 0]
    g = rng.standard_normal(shape).astype(dtype)
    zt, gt = tt(z), tt(g)
    assert_close(nk.sigmoid(layout(z, lay)), tn(torch.sigmoid(zt)), dtype)
    assert_close(nk.relu(layout(z, lay)), tn(torch.relu(zt)), dtype)
    a_s = tn(torch.sigmoid(zt))
    a_t = tn(torch.tanh(zt))
    a_r = tn(torch.relu(zt))
    aten = torch.ops.aten
    sc = float(np.abs(g).max())  # torch float32 has absolute errors ~eps|g|
    assert_close(nk.sigmoid_backward(layout(g, lay), layout(a_s, lay)),
                 tn(aten.sigmoid_backward(gt, tt(a_s))), dtype, scale=sc)
    assert_close(nk.tanh_backward(layout(g, lay), layout(a_t, lay)),
                 tn(aten.tanh_backward(gt, tt(a_t))), dtype, scale=sc)
    assert_close(nk.relu_backward(layout(g, lay), layout(a_r, lay)),
                 tn(aten.threshold_backward(gt, tt(a_r), 0.0)), dtype,
                 scale=sc)
    # and the autograd path of the whole activation
    zr = tt(z, requires_grad=True)
    torch.sigmoid(zr).backward(gt)
    assert_close(nk.sigmoid_backward(g, nk.sigmoid(z)), tn(zr.grad), dtype,
                 scale=sc)


# -------------------------------------------------------------- hypothesis
_floats64 = st.floats(-1e6, 1e6, allow_nan=False, width=64)


@given(z=hnp.arrays(np.float64,
                    hnp.array_shapes(min_dims=1, max_dims=2, max_side=40),
                    elements=_floats64))
def test_hypothesis_forward(z):
    for name in FORWARD:
        got = getattr(nk, name)(z)
        assert_close(got, exact_forward(name, z), np.float64)
        assert_close(getattr(nk, name)(z.astype(np.float32)),
                     exact_forward(name, z.astype(np.float32)), np.float32)


@given(data=st.data(),
       shape=hnp.array_shapes(min_dims=1, max_dims=2, max_side=40),
       name=st.sampled_from(BACKWARD))
def test_hypothesis_backward(data, shape, name):
    g = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(
        -1e3, 1e3, allow_nan=False)))
    a = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(
        -1.0, 1.0, allow_nan=False)))
    if name == "relu_backward":
        a = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(
            -5.0, 5.0, allow_nan=False)))
    scale = max(1.0, float(np.abs(g).max()) if g.size else 1.0)
    got = getattr(nk, name)(g, a)
    assert_close(got, exact_backward(name, g, a), np.float64, scale=scale)
    got32 = getattr(nk, name)(g.astype(np.float32), a.astype(np.float32))
    assert got32.dtype == np.float32
    assert_close(got32, exact_backward(name, g.astype(np.float32),
                                       a.astype(np.float32)),
                 np.float32, scale=scale)


# --------------------------------------------------------------- gradcheck
@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu"])
def test_gradcheck_activation_chain(name, rng):
    """d/dz sum(w * g(z)) through the backward kernels vs finite differences."""
    w = rng.standard_normal((6, 7))
    z0 = rng.standard_normal((6, 7)) * 2
    if name == "relu":  # keep away from the kink
        z0 = np.where(np.abs(z0) < 0.05, 0.5, z0)

    def f(z):
        if name == "sigmoid":
            a = nk.sigmoid(z)
            return float(np.sum(w * a)), nk.sigmoid_backward(w, a)
        if name == "tanh":
            a = np.tanh(z)
            return float(np.sum(w * a)), nk.tanh_backward(w, a)
        a = nk.relu(z)
        return float(np.sum(w * a)), nk.relu_backward(w, a)

    res = nk.gradcheck(f, z0)
    assert res and res.ok, (res.max_abs_error, res.max_rel_error)
