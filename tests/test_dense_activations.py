"""The dense layer with every activation name, z_out and z.

Checked against nnkernels.reference, against torch autograd of
F.linear + the activation, by finite differences, and for the validation of
z_out and z.
"""

from __future__ import annotations

import numpy as np
import pytest

import nnkernels as nk
import nnkernels.reference as ref
from _nkutil import DTYPES, assert_close, readonly, torch_module

Z_ACTS = ["gelu", "gelu_tanh", "silu", "leaky_relu", "elu", "softplus"]
A_ACTS = ["sigmoid", "tanh", "relu"]
ALL = [None] + A_ACTS + Z_ACTS


def layer(rng, dtype, n=13, n_in=7, n_out=5, scale=3.0):
    x = rng.standard_normal((n, n_in)).astype(dtype)
    w = (rng.standard_normal((n_out, n_in)) * scale / np.sqrt(n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    grad_a = rng.standard_normal((n, n_out)).astype(dtype)
    return x, w, b, grad_a


def forward_backward(module, x, w, b, grad_a, act, x_order="C"):
    z = np.empty((x.shape[0], w.shape[0]), x.dtype)
    xx = np.asfortranarray(x) if x_order == "F" else x
    a = module.dense_forward(xx, w, b, act, z_out=z)
    grads = module.dense_backward(grad_a, xx, w, a, act, z=z)
    return a, z, grads


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ALL)
@pytest.mark.parametrize("x_order", ["C", "F"])
def test_matches_reference(act, dtype, x_order):
    x, w, b, grad_a = layer(np.random.default_rng(0), dtype)
    a, z, grads = forward_backward(nk, x, w, b, grad_a, act, x_order)
    ra, rz, rgrads = forward_backward(ref, x, w, b, grad_a, act)
    assert_close(z, rz, n=x.shape[1])
    assert_close(a, ra, n=x.shape[1])
    for got, want in zip(grads, rgrads):
        assert_close(got, want, n=x.shape[0] * x.shape[1])


def torch_layer(act, x, w, b, grad_a):
    """grad_w, grad_b, grad_x and a of a = g(F.linear(x, w, b)) by autograd, float64."""
    torch = torch_module()
    F = torch.nn.functional
    fns = {None: lambda t: t, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
           "gelu": F.gelu, "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"), "silu": F.silu,
           "leaky_relu": F.leaky_relu, "elu": F.elu, "softplus": F.softplus}
    tx, tw, tb = (torch.from_numpy(v.astype(np.float64)).requires_grad_(True) for v in (x, w, b))
    a = fns[act](F.linear(tx, tw, tb))
    a.backward(torch.from_numpy(grad_a.astype(np.float64)))
    return a.detach().numpy(), tw.grad.numpy(), tb.grad.numpy(), tx.grad.numpy()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ALL)
def test_matches_torch_autograd(act, dtype):
    x, w, b, grad_a = layer(np.random.default_rng(1), dtype, n=33, n_in=17, n_out=9)
    a, _, (gw, gb, gx) = forward_backward(nk, x, w, b, grad_a, act)
    ta, tgw, tgb, tgx = torch_layer(act, x, w, b, grad_a)
    # float32: the layer's product rounds in float32, torch's here in float64
    k = 8 if dtype == np.float32 else 1
    for got, want, n in ((a, ta, 17), (gw, tgw, 33), (gb, tgb, 33), (gx, tgx, 9)):
        assert_close(got, want, dtype=dtype, n=n * k)


@pytest.mark.parametrize("act", Z_ACTS)
def test_grad_x_by_finite_differences(act):
    x, w, b, grad_a = layer(np.random.default_rng(2), np.float64, n=4, n_in=3, n_out=5)
    z = np.empty((4, 5))
    nk.dense_forward(x, w, b, act, z_out=z)
    if act in ("leaky_relu", "elu"):
        assert np.abs(z).min() > 1e-4          # off the kink
    _, _, gx = nk.dense_backward(grad_a, x, w, None, act, z=z)
    h = 1e-6
    fd = np.empty_like(x)
    for idx in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        fd[idx] = np.sum(grad_a * (nk.dense_forward(xp, w, b, act)
                                   - nk.dense_forward(xm, w, b, act))) / (2 * h)
    np.testing.assert_allclose(gx, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("act", Z_ACTS)
def test_z_out_layouts_and_overlap(act):
    x, w, b, grad_a = layer(np.random.default_rng(3), np.float64)
    want_a = ref.dense_forward(x, w, b, act)
    want_z = x @ w.T + b
    shape = want_z.shape
    for z_out, out in ((np.empty(shape, order="F"), np.empty(shape)),
                       (np.empty(shape), np.empty(shape, order="F")),
                       (np.empty((shape[0], 2 * shape[1]))[:, ::2], np.empty(shape))):
        a = nk.dense_forward(x, w, b, act, z_out=z_out, out=out)
        assert a is out
        assert_close(z_out, want_z, n=7)
        assert_close(out, want_a, n=7)
    # without z_out the result is the same; z_out not needed for the forward
    assert_close(nk.dense_forward(x, w, b, act), want_a, n=7)


def test_z_out_is_validated_like_out():
    x, w, b, _ = layer(np.random.default_rng(4), np.float64)
    shape = (x.shape[0], w.shape[0])
    with pytest.raises(ValueError, match="z_out must have shape"):
        nk.dense_forward(x, w, b, "gelu", z_out=np.empty((shape[1], shape[0])))
    with pytest.raises(TypeError, match="z_out must have dtype"):
        nk.dense_forward(x, w, b, "gelu", z_out=np.empty(shape, np.float32))
    with pytest.raises(ValueError, match="z_out is read-only"):
        nk.dense_forward(x, w, b, "gelu", z_out=readonly(np.empty(shape)))
    with pytest.raises(ValueError, match="z_out has elements that share memory"):
        nk.dense_forward(x, w, b, "gelu", z_out=np.lib.stride_tricks.as_strided(
            np.empty(shape[1]), shape, (0, 8)))
    with pytest.raises(TypeError, match="z_out must be a numpy.ndarray"):
        nk.dense_forward(x, w, b, "gelu", z_out=[[0.0] * shape[1]] * shape[0])


@pytest.mark.parametrize("module", [nk, ref], ids=["nnkernels", "reference"])
@pytest.mark.parametrize("act", Z_ACTS)
def test_missing_z_names_z(module, act):
    x, w, b, grad_a = layer(np.random.default_rng(5), np.float64)
    a = module.dense_forward(x, w, b, act)
    with pytest.raises(ValueError, match=r"\bz\b"):
        module.dense_backward(grad_a, x, w, a, act)
    with pytest.raises(ValueError, match="grad_a and z must have the same shape"):
        module.dense_backward(grad_a, x, w, a, act, z=np.ones((2, 2)))


def test_a_activations_still_need_a_and_ignore_z():
    x, w, b, grad_a = layer(np.random.default_rng(6), np.float64)
    z = np.empty((x.shape[0], w.shape[0]))
    a = nk.dense_forward(x, w, b, "sigmoid", z_out=z)
    with pytest.raises(ValueError, match="needs the layer output a"):
        nk.dense_backward(grad_a, x, w, None, "sigmoid", z=z)
    got = nk.dense_backward(grad_a, x, w, a, "sigmoid", z=z)
    for g, r in zip(got, ref.dense_backward(grad_a, x, w, a, "sigmoid")):
        assert_close(g, r, n=x.size)


def test_unknown_activation_and_keyword_only_out():
    x, w, b, _ = layer(np.random.default_rng(7), np.float64)
    with pytest.raises(ValueError, match="activation must be one of"):
        nk.dense_forward(x, w, b, "GELU")
    with pytest.raises(TypeError):
        nk.dense_forward(x, w, b, None, np.empty((x.shape[0], w.shape[0])))
