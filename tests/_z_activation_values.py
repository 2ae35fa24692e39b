"""Valid inputs, torch counterparts and finite-difference losses of the
activations whose backward takes the layer input z (gelu, silu, leaky_relu,
elu, softplus) and of tanh, for kernel_table.py (not a test module).

The conventions are _kernel_values.py's: ``make(rng, shape, dtype, opts)``,
``torch(values, opts) -> [float64 results]``, ``fd(rng, opts) -> [(label, f,
x0)]``.  Options are keywords of the functions, so ``make`` returns them.
"""

from __future__ import annotations

import numpy as np

import nnkernels as nk
from _kernel_values import _n, _t, _torch

# name -> {keyword: values, the default first}
Z_ACTIVATIONS = {
    "gelu": {"approximate": ["none", "tanh"]},
    "silu": {},
    "leaky_relu": {"negative_slope": [0.01, 0.2, -0.5]},
    "elu": {"alpha": [1.0, 0.5, 2.0]},
    "softplus": {"beta": [1.0, 2.0, 0.5], "threshold": [20.0, 1.0]},
}


def _inputs(rng, shape, dtype):
    """Values over the interesting range: the tails (|z| up to ~15), the
    region near 0, and the softplus threshold of the options below."""
    return (rng.standard_normal(shape) * 5).astype(dtype)


def make_z_forward(name):
    def make(rng, shape, dtype, opts):
        return {"z": _inputs(rng, shape, dtype), **opts}
    return make


def make_z_backward(name):
    def make(rng, shape, dtype, opts):
        return {"grad": rng.standard_normal(shape).astype(dtype),
                "z": _inputs(rng, shape, dtype), **opts}
    return make


def _torch_forward(torch, name, z, opts):
    F = torch.nn.functional
    if name == "tanh":
        return torch.tanh(z)
    return getattr(F, name)(z, **opts)


def torch_z_activation(name):
    """torch.nn.functional's forward; the backward by autograd at z."""
    act = name[: -len("_backward")] if name.endswith("_backward") else name

    def run(v, opts):
        torch = _torch()
        kw = {k: v[k] for k in Z_ACTIVATIONS.get(act, {})}
        if act == name:
            return [_n(_torch_forward(torch, act, _t(v["z"]), kw))]
        z = _t(v["z"], requires_grad=True)
        _torch_forward(torch, act, z, kw).backward(_t(v["grad"]))
        return [_n(z.grad)]
    return run


def fd_z_activation(name):
    """d/dz sum(w * g(z)) through the backward kernel, z away from the kinks
    (0 for leaky_relu and elu, βz = threshold for softplus)."""
    act = name[: -len("_backward")] if name.endswith("_backward") else name

    def cases(rng, opts):
        kw = {k: opts[k] for k in Z_ACTIVATIONS.get(act, {}) if k in opts}
        w = rng.standard_normal((6, 7))
        z0 = rng.standard_normal((6, 7)) * 2
        z0 = np.where(np.abs(z0) < 0.05, 0.5, z0)
        if act == "softplus":
            edge = kw.get("threshold", 20.0) / kw.get("beta", 1.0)
            z0 = np.where(np.abs(z0 - edge) < 0.05, edge + 0.5, z0)
        forward = getattr(nk, act)
        backward = nk.tanh_backward if act == "tanh" else getattr(nk, f"{act}_backward")

        def f(z):
            a = forward(z, **kw)
            return float(np.sum(w * a)), (backward(w, a) if act == "tanh"
                                          else backward(w, z, **kw))
        return [(act, f, z0)]
    return cases


def bad_z_options(name):
    """Option values that must raise, with the argument they name."""
    act = name[: -len("_backward")] if name.endswith("_backward") else name
    if act == "gelu":
        return tuple(({"approximate": a}, ValueError, "approximate")
                     for a in ("None", "Tanh", "erf", "", "tanh ")) + \
            (({"approximate": None}, (ValueError, TypeError), "approximate"),)
    bad = []
    for key in Z_ACTIVATIONS[act]:
        bad += [({key: "1"}, TypeError, key), ({key: True}, TypeError, key),
                ({key: np.nan}, ValueError, key), ({key: np.inf}, ValueError, key)]
    return tuple(bad)
