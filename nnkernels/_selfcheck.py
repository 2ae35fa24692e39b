"""The gradient self-check of ``nnkernels check``: one small problem per case.

``gradient_checks(nk)`` lists (label, f, x) for every kernel with a backward
(the activations, the softmax family, softmax cross-entropy with each of its
options, the element-wise losses, the dense layer): ``f(x)`` returns a
scalar loss and its gradient by the kernel, which ``nnkernels.gradcheck``
compares with central finite differences in float64.
"""

import numpy as np

__all__ = ["gradient_checks"]


def _scalar(loss):
    """A loss as one float: the sum for reduction="none"."""
    return float(np.sum(loss))


def _loss_fn(fn, *args, **kwargs):
    """f(x) = (summed loss, grad) of a fused loss ``fn(x, *args, **kwargs)``."""
    def f(x):
        loss, grad = fn(x, *args, **kwargs)
        return _scalar(loss), grad
    return f


def _probabilities(rng, shape, axis=-1):
    p = rng.uniform(0.05, 1.0, size=shape)
    return p / p.sum(axis=axis, keepdims=True)


def _away_from_zero(rng, shape, gap=0.1):
    """Random values with |x| >= gap (finite differences stay off relu's kink)."""
    x = rng.standard_normal(shape)
    return np.where(x < 0, x - gap, x + gap)


def gradient_checks(nk, seed=0):
    """(label, f, x) for every gradient self-check of ``nk``: f(x) = (loss, dloss/dx)."""
    rng = np.random.default_rng(seed)
    checks = []

    def add(label, f, x):
        checks.append((label, f, x))

    n, c = 6, 5
    z = rng.standard_normal((n, c)) * 2.0
    r = rng.standard_normal((n, c))

    # ---- activations: L = sum(r * f(z)), dL/dz = backward(r, f(z))
    add("sigmoid_backward (L = sum(r * sigmoid(z)))",
        lambda x: (float(np.sum(r * nk.sigmoid(x))),
                   nk.sigmoid_backward(r, nk.sigmoid(x))), z)
    add("tanh_backward (L = sum(r * tanh(z)))",
        lambda x: (float(np.sum(r * np.tanh(x))),
                   nk.tanh_backward(r, np.tanh(x))), z)
    add("relu_backward (L = sum(r * relu(z)))",
        lambda x: (float(np.sum(r * nk.relu(x))),
                   nk.relu_backward(r, nk.relu(x))), _away_from_zero(rng, (n, c)))

    # the activations whose backward takes z: L = sum(r * f(z)), dL/dz = backward(r, z)
    z_activations = [
        ("gelu", {}), ("gelu", {"approximate": "tanh"}), ("silu", {}),
        ("leaky_relu", {"negative_slope": 0.1}), ("elu", {"alpha": 1.5}),
        ("softplus", {}), ("softplus", {"beta": 2.0, "threshold": 3.0}),
    ]
    kinked = _away_from_zero(rng, (n, c))      # leaky relu and elu: off the kink at 0
    for name, kw in z_activations:
        fwd, bwd = getattr(nk, name), getattr(nk, name + "_backward")
        opts = ", ".join(f"{k}={v!r}" for k, v in kw.items())
        add(f"{name}_backward{' (' + opts + ')' if opts else ''} (L = sum(r * {name}(z)))",
            lambda x, fwd=fwd, bwd=bwd, kw=kw: (float(np.sum(r * fwd(x, **kw))),
                                                bwd(r, x, **kw)),
            kinked if name in ("leaky_relu", "elu") else z)

    # ---- softmax family
    for axis in (-1, 0):
        add(f"softmax_backward axis={axis} (L = sum(r * softmax(z)))",
            lambda x, axis=axis: (float(np.sum(r * nk.softmax(x, axis=axis))),
                                  nk.softmax_backward(r, nk.softmax(x, axis=axis),
                                                      axis=axis)), z)
    # analytic: d/dz sum(r * log_softmax(z)) = r - softmax(z) * sum(r)
    for axis in (-1, 0):
        add(f"log_softmax axis={axis} (L = sum(r * log_softmax(z)), analytic grad)",
            lambda x, axis=axis: (
                float(np.sum(r * nk.log_softmax(x, axis=axis))),
                r - nk.softmax(x, axis=axis) * r.sum(axis=axis, keepdims=True)), z)

    # ---- softmax cross-entropy with its options
    labels = rng.integers(0, c, size=n)
    ignored = labels.copy()
    ignored[[1, 4]] = -100
    weight = rng.uniform(0.5, 2.0, size=c)
    soft = _probabilities(rng, (n, c))
    variants = [
        ("class indices", labels, {}),
        ("weight", labels, {"weight": weight}),
        ("ignore_index=-100 (2 rows)", ignored, {}),
        ("label_smoothing=0.1", labels, {"label_smoothing": 0.1}),
        ("weight, ignore_index, label_smoothing=0.2", ignored,
         {"weight": weight, "label_smoothing": 0.2}),
        ("soft targets", soft, {}),
        ("soft targets, weight, label_smoothing=0.1", soft,
         {"weight": weight, "label_smoothing": 0.1}),
    ]
    for reduction in ("mean", "sum", "none"):
        for desc, target, kw in variants:
            add(f"softmax_cross_entropy {desc}, reduction={reduction}",
                _loss_fn(nk.softmax_cross_entropy, target, reduction=reduction, **kw), z)
    add("softmax_cross_entropy ignore_index=2",
        _loss_fn(nk.softmax_cross_entropy, labels, ignore_index=2), z)
    add("softmax_cross_entropy axis=0 (column layout), weight",
        _loss_fn(nk.softmax_cross_entropy, labels, axis=0, weight=weight),
        np.ascontiguousarray(z.T))
    add("softmax_cross_entropy axis=0 (column layout), soft targets",
        _loss_fn(nk.softmax_cross_entropy, np.ascontiguousarray(soft.T), axis=0),
        np.ascontiguousarray(z.T))
    for desc, target, kw in (variants[0], variants[4], variants[6]):
        add(f"softmax_cross_entropy_backward {desc}",
            lambda x, target=target, kw=kw: (
                _scalar(nk.softmax_cross_entropy(x, target, **kw)[0]),
                nk.softmax_cross_entropy_backward(x, target, **kw)), z)

    # ---- element-wise losses, 2-D and 1-D
    m = 7
    shapes = ((n, c), (m,))
    for shape in shapes:
        x = rng.standard_normal(shape) * 2.0
        y = rng.uniform(0.0, 1.0, size=shape)
        cols = shape[-1]
        variants = [
            ("", {}),
            ("weight (full shape)", {"weight": rng.uniform(0.5, 2.0, size=shape)}),
            ("weight (per column)", {"weight": rng.uniform(0.5, 2.0, size=cols)}),
            ("pos_weight", {"pos_weight": rng.uniform(0.5, 3.0, size=cols)}),
            ("weight, pos_weight", {"weight": rng.uniform(0.5, 2.0, size=shape),
                                    "pos_weight": rng.uniform(0.5, 3.0, size=cols)}),
        ]
        for reduction in ("mean", "sum", "none"):
            for desc, kw in variants:
                add(f"sigmoid_binary_cross_entropy {shape} {desc}, reduction={reduction}"
                    .replace(" ,", ","),
                    _loss_fn(nk.sigmoid_binary_cross_entropy, y, reduction=reduction, **kw),
                    x)
    for shape in shapes:
        p = rng.uniform(0.05, 0.95, size=shape)
        y = (rng.uniform(size=shape) < 0.5).astype(np.float64)
        for reduction in ("mean", "sum", "none"):
            add(f"binary_cross_entropy {shape}, reduction={reduction}",
                _loss_fn(nk.binary_cross_entropy, y, reduction=reduction), p)
            add(f"binary_cross_entropy {shape} weight, reduction={reduction}",
                _loss_fn(nk.binary_cross_entropy, y, reduction=reduction,
                         weight=rng.uniform(0.5, 2.0, size=shape)), p)
    for shape in shapes:
        x = rng.standard_normal(shape)
        y = rng.standard_normal(shape)
        for reduction in ("mean", "sum", "none"):
            add(f"mse {shape}, reduction={reduction}",
                _loss_fn(nk.mse, y, reduction=reduction), x)

    # ---- dense layer
    nb, n_in, n_out = 4, 3, 5
    x0 = rng.standard_normal((nb, n_in))
    w0 = rng.standard_normal((n_out, n_in))
    b0 = rng.standard_normal(n_out)
    ra = rng.standard_normal((nb, n_out))
    for act in (None, "sigmoid", "tanh", "relu"):
        def layer(x, w, b, act=act):
            a = nk.dense_forward(x, w, b, activation=act)
            grads = nk.dense_backward(ra, x, w, a, activation=act)
            return float(np.sum(ra * a)), grads
        add(f"dense_backward activation={act}: grad_x",
            lambda x, layer=layer: (lambda L, g: (L, g[2]))(*layer(x, w0, b0)), x0)
        add(f"dense_backward activation={act}: grad_w",
            lambda w, layer=layer: (lambda L, g: (L, g[0]))(*layer(x0, w, b0)), w0)
        add(f"dense_backward activation={act}: grad_b",
            lambda b, layer=layer: (lambda L, g: (L, g[1]))(*layer(x0, w0, b)), b0)
    return checks
