"""Valid inputs, torch counterparts and finite-difference losses of the kernels
in kernel_table.py (not a test module).

Each ``make_*`` returns ``make(rng, shape, dtype, opts) -> {argument: value}``;
each ``torch_*`` ``(values, opts) -> [float64 results]`` computed with torch
in float64; each ``fd_*`` ``(rng, opts) -> [(label, f, x0)]`` for
nnkernels.gradcheck.
"""

from __future__ import annotations

import numpy as np

import nnkernels as nk
from _nkutil import f64, rand_logits, rand_probs

LOSS_INPUT = {"sigmoid_binary_cross_entropy": "logits", "binary_cross_entropy": "probs",
              "mse": "pred"}


def _torch():
    import pytest
    return pytest.importorskip("torch")


def _t(a, requires_grad=False):
    torch = _torch()
    t = torch.from_numpy(np.array(a, dtype=np.float64, copy=True, order="C"))
    return t.requires_grad_(True) if requires_grad else t


def _n(t):
    return t.detach().cpu().numpy().astype(np.float64)


# ------------------------------------------------------------- activations
def exact_activation(name, z):
    """Closed form in float64 (overflow-free sigmoid)."""
    z = f64(z)
    with np.errstate(over="ignore", invalid="ignore"):
        if name == "sigmoid":
            e = np.exp(-np.abs(z))
            return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        if name == "tanh":
            return np.tanh(z)
        if name == "relu":
            return np.where(np.isnan(z), z, np.maximum(z, 0.0))
    raise AssertionError(name)


def layer_output(name, rng, shape, dtype):
    """A plausible output a of the activation ``name`` (relu: with exact zeros,
    where the gradient must be 0)."""
    z = rng.standard_normal(shape) * 3
    a = exact_activation(name, z)
    if name == "relu":
        a.flat[::7] = 0.0
    return a.astype(dtype)


def make_forward(name):
    def make(rng, shape, dtype, opts):
        return {"z": (rng.standard_normal(shape) * 5).astype(dtype)}
    return make


def make_backward(name):
    act = name[: -len("_backward")]

    def make(rng, shape, dtype, opts):
        return {"grad": rng.standard_normal(shape).astype(dtype),
                "a": layer_output(act, rng, shape, dtype)}
    return make


def torch_activation(name):
    def run(v, opts):
        torch = _torch()
        aten = torch.ops.aten
        if name in ("sigmoid", "relu"):
            return [_n(getattr(torch, name)(_t(v["z"])))]
        g, a = _t(v["grad"]), _t(v["a"])
        if name == "sigmoid_backward":
            return [_n(aten.sigmoid_backward(g, a))]
        if name == "tanh_backward":
            return [_n(aten.tanh_backward(g, a))]
        return [_n(aten.threshold_backward(g, a, 0.0))]
    return run


def fd_activation(name):
    """d/dz sum(w * g(z)) through the backward kernel (tanh: np.tanh forward)."""
    act = name.replace("_backward", "")

    def cases(rng, opts):
        w = rng.standard_normal((6, 7))
        z0 = rng.standard_normal((6, 7)) * 2
        if act == "relu":          # keep away from the kink
            z0 = np.where(np.abs(z0) < 0.05, 0.5, z0)
        forward = np.tanh if act == "tanh" else getattr(nk, act)
        backward = getattr(nk, f"{act}_backward")

        def f(z):
            a = forward(z)
            return float(np.sum(w * a)), backward(w, a)
        return [(act, f, z0)]
    return cases


# ------------------------------------------------------------------ softmax
def make_softmax(name):
    def make(rng, shape, dtype, opts):
        axis = opts.get("axis", -1)
        if name == "softmax_backward":
            return {"grad": rng.standard_normal(shape).astype(dtype),
                    "p": rand_probs(rng, shape, dtype, axis=axis), "axis": axis}
        return {"z": rand_logits(rng, shape, dtype, scale=4.0), "axis": axis}
    return make


def torch_softmax(name):
    def run(v, opts):
        torch = _torch()
        axis = v["axis"]
        if name == "softmax":
            return [_n(torch.softmax(_t(v["z"]), dim=axis))]
        if name == "log_softmax":
            return [_n(torch.log_softmax(_t(v["z"]), dim=axis))]
        # the vector-Jacobian product of softmax at the z whose softmax is p
        z = _t(np.log(f64(v["p"])), requires_grad=True)
        p = torch.softmax(z, dim=axis)
        p.backward(_t(v["grad"]))
        return [_n(z.grad)]
    return run


def fd_softmax(name):
    def cases(rng, opts):
        axis = opts.get("axis", -1)
        w = rng.standard_normal((5, 8))
        z0 = rng.standard_normal((5, 8)) * 2

        def f_softmax(z):
            p = nk.softmax(z, axis=axis)
            return float(np.sum(w * p)), nk.softmax_backward(w, p, axis=axis)

        def f_log_softmax(z):
            lp = nk.log_softmax(z, axis=axis)
            p = nk.softmax(z, axis=axis)
            return float(np.sum(w * lp)), w - p * np.sum(w, axis=axis, keepdims=True)

        return [("log_softmax", f_log_softmax, z0)] if name == "log_softmax" else \
            [("softmax", f_softmax, z0)]
    return cases


# ------------------------------------------------------------ cross-entropy
def make_target(rng, kind, n, c, dtype, axis, ignore_index=None, ignore_frac=0.0):
    """Class indices of integer dtype ``kind`` or probabilities ("probs") of
    the logits' layout; ``ignore_frac`` of the rows (the first always, the
    last never) labelled ``ignore_index``."""
    if kind == "probs":
        p = rand_probs(rng, (n, c), np.float64)
        return (p if axis in (-1, 1) else p.T).astype(dtype)
    t = rng.integers(0, c, size=n)
    if ignore_index is not None and ignore_frac > 0:
        ign = rng.random(n) < ignore_frac
        ign[0] = True
        if n > 1:
            ign[-1] = False
        t = np.where(ign, ignore_index, t)
    return t.astype(kind)


def make_cross_entropy(name):
    def make(rng, shape, dtype, opts):
        n, c = shape
        axis = opts.get("axis", -1)
        logits = rand_logits(rng, (n, c) if axis in (-1, 1) else (c, n), dtype, scale=4.0)
        kind = opts.get("target", "int64")
        ignore = opts.get("ignore", False)
        v = {"logits": logits,
             "target": make_target(rng, kind, n, c, dtype, axis, -100, 0.3 if ignore else 0.0),
             "axis": axis, "reduction": opts.get("reduction", "mean"),
             "label_smoothing": opts.get("label_smoothing", 0.0)}
        if opts.get("weight"):
            v["weight"] = (rng.random(c) * 2 + 0.1).astype(dtype)
        return v
    return make


def torch_cross_entropy(name):
    def run(v, opts):
        torch = _torch()
        axis = v["axis"]
        nc = (lambda a: a) if axis in (-1, 1) else (lambda a: a.T)
        x = _t(nc(v["logits"]), requires_grad=True)
        t = v["target"]
        kw = dict(reduction=v["reduction"], label_smoothing=v["label_smoothing"])
        if v.get("weight") is not None:
            kw["weight"] = _t(v["weight"])
        if t.dtype.kind == "f":
            target = _t(nc(t))
        else:
            target = torch.from_numpy(t.astype(np.int64))
            kw["ignore_index"] = -100
        loss = torch.nn.functional.cross_entropy(x, target, **kw)
        (loss.sum() if v["reduction"] == "none" else loss).backward()
        grad = nc(_n(x.grad))
        return [_n(loss), grad] if name == "softmax_cross_entropy" else [grad]
    return run


def fd_cross_entropy(name):
    def cases(rng, opts):
        axis = opts.get("axis", -1)
        n, c = 6, 5
        z0 = rand_logits(rng, (n, c) if axis == -1 else (c, n), np.float64, scale=2)
        kw = dict(axis=axis, reduction=opts.get("reduction", "mean"),
                  label_smoothing=opts.get("label_smoothing", 0.0))
        if kw["reduction"] == "none" or kw["label_smoothing"] == 1.0:
            kw["reduction"] = "sum"
            kw["label_smoothing"] = min(kw["label_smoothing"], 0.15)
        target = make_target(rng, opts.get("target", "int64"), n, c, np.float64, axis, -100,
                             0.3 if opts.get("ignore") else 0.0)
        if opts.get("weight"):
            kw["weight"] = rng.random(c) + 0.5
        if name == "softmax_cross_entropy":
            return [("fused", lambda z: nk.softmax_cross_entropy(z, target, **kw), z0)]
        # the gradient-only kernel, the loss from the fused one
        return [("backward", lambda z: (nk.softmax_cross_entropy(z, target, **kw)[0],
                                        nk.softmax_cross_entropy_backward(z, target, **kw)),
                 z0)]
    return cases


# ------------------------------------------------------ element-wise losses
def loss_inputs(name, rng, shape, dtype):
    if name == "sigmoid_binary_cross_entropy":
        x = rng.standard_normal(shape) * 4
        y = rng.random(shape)
        y[rng.random(shape) < 0.5] = 1.0          # hard and soft labels mixed
    elif name == "binary_cross_entropy":
        x = rng.random(shape) * 0.98 + 0.01
        y = (rng.random(shape) < 0.5).astype(np.float64)
        y.flat[::3] = rng.random(y.flat[::3].shape)
    else:
        x = rng.standard_normal(shape) * 3
        y = rng.standard_normal(shape) * 3
    return x.astype(dtype), y.astype(dtype)


def loss_weights(weight, pos_weight, rng, shape, dtype):
    kw = {}
    if weight == "full":
        kw["weight"] = (rng.random(shape) * 2 + 0.1).astype(dtype)
    if weight == "column":
        kw["weight"] = (rng.random(shape[-1]) * 2 + 0.1).astype(dtype)
    if pos_weight:
        kw["pos_weight"] = (rng.random(shape[-1]) * 3 + 0.2).astype(dtype)
    return kw


def make_loss(name):
    def make(rng, shape, dtype, opts):
        x, y = loss_inputs(name, rng, shape, dtype)
        v = {LOSS_INPUT[name]: x, "target": y, "reduction": opts.get("reduction", "mean")}
        v.update(loss_weights(opts.get("weight", "none"), opts.get("pos_weight", False),
                              rng, shape, dtype))
        return v
    return make


def grad_scale(name, x, y, kw):
    """Magnitude of the largest gradient term (for the absolute tolerance)."""
    s = 1.0
    if name == "binary_cross_entropy":
        p = f64(x)
        s = float(np.max(np.abs(p - y) / np.maximum(p * (1 - p), 1e-12), initial=1))
    elif name == "mse":
        s = float(np.max(np.abs(2 * (f64(x) - y)), initial=1))
    for v in kw.values():
        s *= float(np.max(v, initial=1))
    return max(s, 1.0)


def loss_scale(name, x, y, kw, reduction):
    """Scale of the rounding error of the loss: the magnitude of the operands
    (for sigmoid-BCE, |z| cancels in max(z, 0) - z y + log1p(e^-|z|); for
    BCE on probabilities, 1 - p rounds with an absolute error of one ulp of 1,
    so log(1 - p) errs by about eps per element however small the loss)."""
    if name == "sigmoid_binary_cross_entropy":
        m = np.maximum(1.0, np.abs(f64(x)))
    elif name == "binary_cross_entropy":
        m = np.ones(np.shape(x))
    else:
        return None
    for v in kw.values():
        m = m * np.abs(f64(v))
    if m.size == 0:
        return 1.0
    return float({"none": np.max, "sum": np.sum, "mean": np.mean}[reduction](m))


def torch_loss(name):
    def run(v, opts):
        torch = _torch()
        F = torch.nn.functional
        x = _t(v[LOSS_INPUT[name]], requires_grad=True)
        kw = dict(reduction=v["reduction"])
        for k in ("weight", "pos_weight"):
            if v.get(k) is not None:
                kw[k] = _t(v[k])
        fn = {"sigmoid_binary_cross_entropy": F.binary_cross_entropy_with_logits,
              "binary_cross_entropy": F.binary_cross_entropy, "mse": F.mse_loss}[name]
        loss = fn(x, _t(v["target"]), **kw)
        (loss.sum() if v["reduction"] == "none" else loss).backward()
        return [_n(loss), _n(x.grad)]
    return run


def fd_loss(name):
    def cases(rng, opts):
        shape = (4, 5)
        x0, y = loss_inputs(name, rng, shape, np.float64)
        if name == "binary_cross_entropy":
            x0 = rng.random(shape) * 0.8 + 0.1
        reduction = opts.get("reduction", "mean")
        kw = loss_weights(opts.get("weight", "none"), opts.get("pos_weight", False), rng,
                          shape, np.float64)

        def f(x):
            loss, grad = getattr(nk, name)(x, y, reduction=reduction, **kw)
            return np.sum(loss), grad          # "none": the gradient of the sum
        return [(reduction, f, x0)]
    return cases


# ---------------------------------------------------------------- dense layer
def dense_problem(rng, shape, dtype, scale=1.0):
    n, n_in, n_out = shape
    x = (rng.standard_normal((n, n_in)) * scale).astype(dtype)
    w = (rng.standard_normal((n_out, n_in)) * scale).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    ga = rng.standard_normal((n, n_out)).astype(dtype)
    return x, w, b, ga


def dense_layer_output(rng, act, shape, dtype):
    """A plausible layer output for ``act`` (relu: with exact zeros)."""
    a = exact_activation(act, rng.standard_normal(shape) * 2) if act else \
        rng.standard_normal(shape) * 2
    if act == "relu" and a.size:
        a.flat[::5] = 0.0
    return a.astype(dtype)


def make_dense_forward(rng, shape, dtype, opts):
    x, w, b, _ = dense_problem(rng, shape, dtype)
    return {"x": x, "w": w, "b": b if opts.get("bias", True) else None,
            "activation": opts.get("activation")}


# the dense activations whose derivative takes z (dense_backward's z=)
DENSE_FROM_Z = ("gelu", "gelu_tanh", "silu", "leaky_relu", "elu", "softplus")


def make_dense_backward(rng, shape, dtype, opts):
    x, w, _, ga = dense_problem(rng, shape, dtype)
    act = opts.get("activation")
    if act in DENSE_FROM_Z:
        v = {"grad_a": ga, "x": x, "w": w, "a": None, "activation": act,
             "z": (rng.standard_normal(ga.shape) * 2).astype(dtype)}
    else:
        v = {"grad_a": ga, "x": x, "w": w, "a": dense_layer_output(rng, act, ga.shape, dtype),
             "activation": act}
    if not opts.get("need_input_grad", True):
        v["need_input_grad"] = False
    return v


def _torch_dense(v, grad_a=None):
    torch = _torch()
    x, w = _t(v["x"], requires_grad=True), _t(v["w"], requires_grad=True)
    b = None if v.get("b") is None else _t(v["b"])
    z = torch.nn.functional.linear(x, w, b)
    z.retain_grad()
    a = dense_activation(torch, v.get("activation"))(z)
    return torch, x, w, z, a


def dense_activation(torch, act):
    """The dense layer's activation by name, as torch computes it."""
    F = torch.nn.functional
    if act is None:
        return lambda z: z
    if act == "gelu_tanh":
        return lambda z: F.gelu(z, approximate="tanh")
    return getattr(torch, act) if act in ("sigmoid", "tanh", "relu") else getattr(F, act)


def torch_dense_forward(v, opts):
    return [_n(_torch_dense(v)[4])]


def torch_dense_backward(v, opts):
    """torch autograd at the z whose activation is a (a from the table's
    make is a layer output); the bias gradient is the batch sum of grad_z."""
    torch = _torch()
    act = v.get("activation")
    if act in DENSE_FROM_Z:          # autograd of g at z
        z = _t(v["z"], requires_grad=True)
        dense_activation(torch, act)(z).backward(_t(v["grad_a"]))
        gz = z.grad
    else:
        ga, a = _t(v["grad_a"]), _t(v["a"])
        gz = ga * {None: lambda: torch.ones_like(a), "sigmoid": lambda: a * (1 - a),
                   "tanh": lambda: 1 - a * a, "relu": lambda: (a > 0).to(a.dtype)}[act]()
    x, w = _t(v["x"]), _t(v["w"])
    need = v.get("need_input_grad", True)
    return [_n(gz.T @ x), _n(gz.sum(0)), _n(gz @ w) if need else None]


def _away_from_kink(x, w, b):
    """Shift b so that no |z| is below 0.05 (relu's kink)."""
    z = x @ w.T + b
    small = np.abs(z) < 0.05
    while small.any():
        b = b + 0.1 * small.any(axis=0)
        z = x @ w.T + b
        small = np.abs(z) < 0.05
    return b


def fd_dense(rng, opts):
    """d/dθ sum(r ⊙ dense_forward(x, w, b)) for θ = x, w, b (float64)."""
    act = opts.get("activation")
    n, n_in, n_out = 5, 4, 3
    x = rng.standard_normal((n, n_in))
    w = rng.standard_normal((n_out, n_in))
    b = rng.standard_normal(n_out)
    if act in ("relu", "leaky_relu", "elu"):
        b = _away_from_kink(x, w, b)
    r = rng.standard_normal((n, n_out))

    def grads(xv, wv, bv):
        z = np.empty((n, n_out))
        a = nk.dense_forward(xv, wv, bv, act, z_out=z)
        return float(np.sum(r * a)), nk.dense_backward(r, xv, wv, a, act, z=z)

    def f_x(v):
        loss, g = grads(v, w, b)
        return loss, g[2]

    def f_w(v):
        loss, g = grads(x, v, b)
        return loss, g[0]

    def f_b(v):
        loss, g = grads(x, w, v)
        return loss, g[1]

    return [("x", f_x, x), ("w", f_w, w), ("b", f_b, b)]
