"""Helpers of the dense-layer tests (test_dense.py, test_dense_buffers.py); not a
test module: the float64 reference, its rounding bounds, layouts."""

from __future__ import annotations

import numpy as np

import nnkernels.reference as ref
from _kernel_values import dense_layer_output, dense_problem as rand_problem, exact_activation
from _nkutil import EPS, assert_within, backward_bounds, f64, forward_bound, layout

__all__ = ["rand_problem"]

ACTIVATIONS = [None, "sigmoid", "tanh", "relu"]
ACT_IDS = ["linear", "sigmoid", "tanh", "relu"]
DT_IDS = ["f64", "f32"]


# ------------------------------------------------------------------ helpers
def eps_of(dtype):
    return EPS[np.dtype(dtype)]


def lay(base, kind):
    """``base``'s values in memory layout ``kind`` (_nkutil.layout, on a copy)."""
    return layout(np.array(base, copy=True), kind)


def exact_act(name, z):
    return f64(z).copy() if name is None else exact_activation(name, z)


def make_a(rng, act, shape, dtype):
    return dense_layer_output(rng, act, shape, dtype)


def expected_forward(x, w, b, act):
    return ref.dense_forward(f64(x), f64(w), f64(b), act)


def expected_backward(ga, x, w, a, act, need_input_grad=True):
    return ref.dense_backward(f64(ga), f64(x), f64(w), f64(a), act,
                              need_input_grad=need_input_grad)


def check_forward(got, x, w, b, act, dtype, what=""):
    exp = expected_forward(x, w, b, act)
    assert isinstance(got, np.ndarray)
    assert got.dtype == dtype, (what, got.dtype)
    assert_within(got, exp, forward_bound(x, w, b, dtype, exp), what)


def check_backward(res, ga, x, w, a, act, dtype, need_input_grad=True,
                   what=""):
    assert isinstance(res, tuple) and len(res) == 3, type(res)
    gw, gb, gx = res
    ew, eb, ex = expected_backward(ga, x, w, a, act, need_input_grad)
    bw, bb, bx = backward_bounds(ga, x, w, a, act, dtype)
    for name, g in (("grad_w", gw), ("grad_b", gb), ("grad_x", gx)):
        if g is not None:
            assert isinstance(g, np.ndarray), (name, type(g))
            assert g.dtype == dtype, (what, name, g.dtype)
    assert_within(gw, ew, bw, f"{what} grad_w")
    assert_within(gb, eb, bb, f"{what} grad_b")
    if need_input_grad:
        assert_within(gx, ex, bx, f"{what} grad_x")
    else:
        assert gx is None
