"""Valid inputs and torch counterparts of the optimizer updates, for
kernel_table.py (not a test module).

An update changes its parameter and state in place and returns the
parameter; the table lists those arrays as ``in_place_state``, and a torch
counterpart returns them in the same order: one ``torch.optim`` step
(``foreach=False``) from the same parameter and state.
"""

from __future__ import annotations


from _kernel_values import _n, _t, _torch

SGD_STATE = ("param", "momentum_buffer")
ADAM_STATE = ("param", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")

SGD_OPTIONS = {"momentum": [0.0, 0.9], "dampening": [0.0, 0.3], "nesterov": [False, True],
               "weight_decay": [0.0, 0.05], "maximize": [False, True], "step": [1, 4]}
ADAM_OPTIONS = {"step": [1, 7], "betas": [(0.9, 0.999), (0.5, 0.9)], "eps": [1e-8, 1e-3],
                "weight_decay": [0.0, 0.05], "decoupled_weight_decay": [False, True],
                "amsgrad": [False, True], "maximize": [False, True]}


def sgd_valid(o):
    return not o["nesterov"] or (o["momentum"] > 0 and o["dampening"] == 0)


def make_sgd(rng, shape, dtype, opts):
    v = {"param": rng.standard_normal(shape).astype(dtype),
         "grad": rng.standard_normal(shape).astype(dtype), "lr": 0.1, **opts}
    v["momentum_buffer"] = (rng.standard_normal(shape).astype(dtype)
                            if opts.get("momentum", 0.0) else None)
    return v


def make_adam(rng, shape, dtype, opts):
    v = {"param": rng.standard_normal(shape).astype(dtype),
         "grad": rng.standard_normal(shape).astype(dtype),
         "exp_avg": (0.1 * rng.standard_normal(shape)).astype(dtype),
         "exp_avg_sq": rng.uniform(0.0, 0.5, shape).astype(dtype), "lr": 0.01,
         "step": 1, **opts}
    v["max_exp_avg_sq"] = (rng.uniform(0.0, 0.6, shape).astype(dtype)
                           if opts.get("amsgrad") else None)
    return v


def _torch_step(opt_class, v, state, kwargs):
    """One step of ``opt_class`` on a float64 copy of param, from the given
    state; returns the parameter and the state arrays named in ``state``."""
    torch = _torch()
    p = torch.nn.Parameter(_t(v["param"]))
    p.grad = _t(v["grad"])
    opt = opt_class([p], foreach=False, **kwargs)
    return opt, p, torch


def torch_sgd(v, opts):
    torch = _torch()
    kw = {k: v[k] for k in ("lr", "momentum", "dampening", "nesterov", "weight_decay",
                            "maximize") if k in v}
    opt, p, _ = _torch_step(torch.optim.SGD, v, SGD_STATE, kw)
    buf = v.get("momentum_buffer")
    if buf is not None and v.get("step", 1) > 1:
        # torch sets the buffer to the gradient at its first step; a later
        # step continues from the buffer it has
        opt.state[p]["momentum_buffer"] = _t(buf)
    opt.step()
    if buf is None:
        return [_n(p), _n(p), None]
    new_buf = opt.state[p]["momentum_buffer"]
    return [_n(p), _n(p), _n(new_buf)]


def torch_adam(v, opts):
    torch = _torch()
    decoupled = v.get("decoupled_weight_decay", False)
    kind = torch.optim.AdamW if decoupled else torch.optim.Adam
    kw = {k: v[k] for k in ("lr", "betas", "eps", "amsgrad", "maximize") if k in v}
    kw["weight_decay"] = v.get("weight_decay", 0.0)
    opt, p, torch = _torch_step(kind, v, ADAM_STATE, kw)
    state = opt.state[p]
    state["step"] = torch.tensor(float(v["step"] - 1), dtype=torch.float64)
    state["exp_avg"] = _t(v["exp_avg"])
    state["exp_avg_sq"] = _t(v["exp_avg_sq"])
    if v.get("amsgrad"):
        state["max_exp_avg_sq"] = _t(v["max_exp_avg_sq"])
    opt.step()
    ams = _n(state["max_exp_avg_sq"]) if v.get("amsgrad") else None
    return [_n(p), _n(p), _n(state["exp_avg"]), _n(state["exp_avg_sq"]), ams]


BAD_SGD_OPTIONS = (({"lr": -0.1}, ValueError, "lr"), ({"lr": "0.1"}, TypeError, "lr"),
                   ({"momentum": -0.5}, ValueError, "momentum"),
                   ({"weight_decay": -1.0}, ValueError, "weight_decay"),
                   ({"nesterov": True}, ValueError, "nesterov"),
                   ({"step": 0}, ValueError, "step"), ({"step": 1.5}, TypeError, "step"))
BAD_ADAM_OPTIONS = (({"lr": -0.1}, ValueError, "lr"), ({"eps": -1e-8}, ValueError, "eps"),
                    ({"betas": (1.0, 0.999)}, ValueError, "betas"),
                    ({"betas": (0.9, -0.1)}, ValueError, "betas"),
                    ({"weight_decay": -1.0}, ValueError, "weight_decay"),
                    ({"amsgrad": True}, ValueError, "max_exp_avg_sq"),
                    ({"step": 0}, ValueError, "step"), ({"step": "1"}, TypeError, "step"))
