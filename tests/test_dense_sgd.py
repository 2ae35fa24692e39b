"""The SGD step inside the dense layer's products: dense_backward with
out=(w, b, grad_x), accumulate=True, scale=-lr updates w and b in place
(gemm's alpha and beta), with grad_x computed from w before the update.

Checked against the unfused step (the gradients, then w -= lr grad_w) over
many steps, against the float64 reference, in every weight layout, and for
no weight-sized allocation.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import nnkernels as nk
import nnkernels.reference as ref
from _nkutil import DTYPES, f64
from _dense_checks import ACTIVATIONS, ACT_IDS, DT_IDS, lay

EPS = {np.float32: np.finfo(np.float32).eps, np.float64: np.finfo(np.float64).eps}


def layer_output(x, w, b, act):
    """(a, z) of the forward pass, z for the activations whose g' takes it."""
    z = np.empty((x.shape[0], w.shape[0]), x.dtype)
    a = nk.dense_forward(x, w, b, act, z_out=z)
    return a, z


def backward_args(ga, x, w, b, act):
    a, z = layer_output(x, w, b, act)
    return dict(a=a if act else None, activation=act, z=z)


@pytest.mark.parametrize("act", ACTIVATIONS, ids=ACT_IDS)
@pytest.mark.parametrize("w_layout", ["C", "F", "strided"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_fused_step_equals_unfused_over_many_steps(dtype, w_layout, act, rng):
    n, n_in, n_out, lr, steps = 32, 48, 24, 0.05, 100
    x = rng.standard_normal((n, n_in)).astype(dtype)
    w0 = (rng.standard_normal((n_out, n_in)) * 0.2).astype(dtype)
    w_fused, b_fused = lay(w0, w_layout), np.zeros(n_out, dtype)
    w_plain, b_plain = w0.copy(), np.zeros(n_out, dtype)
    grad_x = np.empty((n, n_in), dtype)
    eps = EPS[dtype]
    bound = 0.0             # the two updates' difference so far, in absolute terms
    for step in range(steps):
        # a mean loss's gradient scale (1/N): the steps contract, so the two
        # computations' rounding differences do not grow exponentially
        ga = (rng.standard_normal((n, n_out)) / n).astype(dtype)
        # the unfused step: the gradients from the weights, then the update
        kw = backward_args(ga, x, w_plain, b_plain, act)
        gw, gb, gx_plain = nk.dense_backward(ga, x, w_plain, **kw)
        kw = backward_args(ga, x, w_fused, b_fused, act)
        res = nk.dense_backward(ga, x, w_fused, **kw, accumulate=True, scale=-lr,
                                out=(w_fused, b_fused, grad_x))
        assert res[0] is w_fused and res[1] is b_fused and res[2] is grad_x
        # grad_x from the weights before the update: as the unfused one's
        tol = 2 * eps * (1 + step)
        np.testing.assert_allclose(grad_x, gx_plain, rtol=tol, atol=tol * np.abs(gx_plain).max())
        w_plain -= dtype(lr) * gw
        b_plain -= dtype(lr) * gb
        # Per step the two differ by the roundings of w - lr grad_w (a few ulp
        # of w) and of the product itself: a BLAS may sum in another order for
        # beta = 1 than for beta = 0 (MKL does), n ulp of lr |grad_z|ᵀ|x|.
        # 1.2 bounds |g'| of every activation here.
        sums = lr * 1.2 * (np.abs(ga.astype(np.float64)).T @ np.abs(x.astype(np.float64)))
        bound += eps * (2 * np.abs(w_plain).max() + n * sums.max())
        np.testing.assert_allclose(w_fused, w_plain, rtol=0, atol=bound)
        np.testing.assert_allclose(b_fused, b_plain, rtol=0,
                                   atol=bound + eps * n * lr * np.abs(ga).sum(axis=0).max())


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_fused_step_against_float64_reference(dtype, rng):
    n, n_in, n_out, lr = 50, 70, 30, 0.1
    x = rng.standard_normal((n, n_in)).astype(dtype)
    w = rng.standard_normal((n_out, n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    a = nk.dense_forward(x, w, b, "sigmoid")
    ga = rng.standard_normal((n, n_out)).astype(dtype)
    ew, eb, ex = ref.dense_backward(f64(ga), f64(x), f64(w), f64(a), "sigmoid")
    w_next, b_next = f64(w) - lr * ew, f64(b) - lr * eb
    gw, gb, gx = nk.dense_backward(ga, x, w, a, "sigmoid", accumulate=True, scale=-lr,
                                   out=(w, b, None))
    assert gw is w and gb is b
    tol = 200 * EPS[dtype]
    np.testing.assert_allclose(w, w_next, rtol=tol, atol=tol * np.abs(w_next).max())
    np.testing.assert_allclose(b, b_next, rtol=tol, atol=tol * np.abs(b_next).max())
    np.testing.assert_allclose(gx, ex, rtol=tol, atol=tol * np.abs(ex).max())


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_scale_without_accumulate_and_fresh_results(dtype, rng):
    """scale alone multiplies grad_w and grad_b (into buffers or fresh
    arrays); grad_x is never scaled."""
    x = rng.standard_normal((9, 5)).astype(dtype)
    w = rng.standard_normal((4, 5)).astype(dtype)
    ga = rng.standard_normal((9, 4)).astype(dtype)
    one = nk.dense_backward(ga, x, w)
    tol = 16 * EPS[dtype]
    for out in (None, (np.full((4, 5), 7, dtype), np.full(4, 7, dtype), np.full((9, 5), 7, dtype))):
        res = nk.dense_backward(ga, x, w, scale=-2.5, out=out)
        for got, base, factor in zip(res, one, (-2.5, -2.5, 1.0)):
            np.testing.assert_allclose(got, factor * f64(base), rtol=tol,
                                       atol=tol * np.abs(base).max())


def test_fused_step_allocates_no_weight_sized_array(rng):
    n, n_in, n_out = 64, 512, 256
    x = rng.standard_normal((n, n_in)).astype(np.float32)
    w = rng.standard_normal((n_out, n_in)).astype(np.float32)
    b = np.zeros(n_out, np.float32)
    a = nk.dense_forward(x, w, b, "relu")
    ga = rng.standard_normal((n, n_out)).astype(np.float32)
    gx = np.empty_like(x)
    nk.dense_backward(ga, x, w, a, "relu", accumulate=True, scale=-0.01, out=(w, b, gx))
    tracemalloc.start()
    nk.dense_backward(ga, x, w, a, "relu", accumulate=True, scale=-0.01, out=(w, b, gx))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < w.nbytes // 8, f"a fused step allocated {peak} bytes (w is {w.nbytes})"


def test_w_as_buffer_of_another_layout_is_still_updated(rng):
    """A w the BLAS cannot take as it is (every other column) is copied for
    the products, and the update still lands in the caller's array."""
    base = rng.standard_normal((6, 14))
    w = base[:, ::2]
    b = np.zeros(6)
    x = rng.standard_normal((10, 7))
    ga = rng.standard_normal((10, 6))
    gw, gb, gx = ref.dense_backward(ga, x, np.array(w))
    expected = w - 0.3 * gw
    res = nk.dense_backward(ga, x, w, accumulate=True, scale=-0.3, out=(w, b, None))
    assert res[0] is w
    np.testing.assert_allclose(w, expected, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(base[:, ::2], expected, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(res[2], gx, rtol=1e-13, atol=1e-13)
