"""nk.gradcheck itself: it passes right gradients, catches wrong ones, and
reports errors that agree with an independent finite-difference check."""

from __future__ import annotations

import numpy as np
import pytest

import nnkernels as nk


def quad(A, b):
    """f(x) = 0.5 x.A.x + b.x on a flat view: gradient A_sym x + b."""
    def f(x):
        v = x.reshape(-1).astype(np.float64)
        loss = 0.5 * v @ A @ v + b @ v
        grad = (0.5 * (A + A.T) @ v + b).reshape(x.shape)
        return loss, grad.astype(x.dtype)
    return f


@pytest.fixture
def problem(rng):
    n = 12
    A = rng.standard_normal((n, n))
    b = rng.standard_normal(n)
    x = rng.standard_normal((3, 4))
    return A, b, x


def own_fd(f, x, eps=1e-6):
    x = x.astype(np.float64)
    num = np.empty_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        num[idx] = (f(xp)[0] - f(xm)[0]) / (2 * eps)
    return num


def test_right_gradient_passes(problem):
    A, b, x = problem
    f = quad(A, b)
    res = nk.gradcheck(f, x)
    assert res.ok and bool(res) is True
    assert res.max_abs_error < 1e-6
    assert 0 <= res.max_rel_error < 1e-6
    # the reported error equals the one of an independent finite difference
    ours = np.max(np.abs(own_fd(f, x) - f(x)[1]))
    assert res.max_abs_error == pytest.approx(ours, abs=1e-7)


@pytest.mark.parametrize("where", [(0, 0), (1, 2), (2, 3)])
def test_wrong_element_is_caught_and_located(problem, where):
    A, b, x = problem
    f = quad(A, b)

    def wrong(z):
        loss, grad = f(z)
        grad = grad.copy()
        grad[where] += 0.01
        return loss, grad

    res = nk.gradcheck(wrong, x)
    assert not res.ok and bool(res) is False
    worst = res.worst_index
    if np.ndim(worst) == 0:  # a flat index is fine too
        worst = np.unravel_index(int(worst), x.shape)
    assert tuple(int(i) for i in worst) == where
    assert res.max_abs_error == pytest.approx(0.01, rel=1e-3)


def test_scaled_gradient_is_caught(problem):
    A, b, x = problem
    f = quad(A, b)
    res = nk.gradcheck(lambda z: (f(z)[0], 1.001 * f(z)[1]), x)
    assert not res
    assert res.max_rel_error == pytest.approx(1e-3, rel=0.05)


def test_tolerances_are_used(problem):
    A, b, x = problem
    f = quad(A, b)

    def wrong(z):
        loss, grad = f(z)
        return loss, grad + 1e-3

    assert not nk.gradcheck(wrong, x)
    assert nk.gradcheck(wrong, x, atol=1e-2)
    assert nk.gradcheck(wrong, x, rtol=1.0, atol=1e-3 * 1.01)
    assert nk.gradcheck(f, x, eps=1e-4)


def test_float32_input(problem):
    """For float32 x the differences are taken in float64 (f accepts it)."""
    A, b, x = problem
    res = nk.gradcheck(quad(A, b), x.astype(np.float32), rtol=1e-3,
                       atol=1e-4)
    assert res


