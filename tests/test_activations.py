"""Activations (sigmoid, relu) and their Hadamard backward kernels: the
numerics specific to them.

The overflow-free sigmoid at extreme z and its relative accuracy in the
tail, NaN propagation (relu and relu_backward's threshold_backward rule)
and relu's exact values.  Values against the reference, torch and finite
differences, layouts, out= and bad inputs are checked for every kernel by
the concern modules over kernel_table.py.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import nnkernels as nk
from _nkutil import DTYPES, assert_close


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
