"""Input builders of the benchmark registry (``cases.KERNELS``).

Each ``_in_<kind>(shape, dtype, rng)`` returns the positional arguments of a
call, in order, by name; ``_out_<kind>(inputs)`` builds an ``out=`` buffer;
``setup`` functions bind calls that are more than ``module.<name>(*inputs)``.
"""

import numpy as np

from nnkernels import reference
from nnkernels.mlp import MLP



def _normal(rng, shape, dtype, scale=1.0):
    x = rng.standard_normal(shape, dtype=dtype)
    if scale != 1.0:
        x *= dtype.type(scale)
    return x


def _uniform(rng, shape, dtype, low, high):
    x = rng.random(shape, dtype=dtype)
    x *= dtype.type(high - low)
    x += dtype.type(low)
    return x


def _in_z(shape, dtype, rng):
    return {"z": _normal(rng, shape, dtype, 2.0)}


def _in_sigmoid_backward(shape, dtype, rng):
    return {"grad": _normal(rng, shape, dtype), "a": _uniform(rng, shape, dtype, 0.0, 1.0)}


def _in_tanh_backward(shape, dtype, rng):
    return {"grad": _normal(rng, shape, dtype), "a": _uniform(rng, shape, dtype, -1.0, 1.0)}


def _in_relu_backward(shape, dtype, rng):
    a = _normal(rng, shape, dtype)
    np.maximum(a, 0, out=a)
    return {"grad": _normal(rng, shape, dtype), "a": a}


def _in_grad_z(shape, dtype, rng):
    """grad and the layer input z of an activation whose derivative takes z."""
    return {"grad": _normal(rng, shape, dtype), "z": _normal(rng, shape, dtype, 2.0)}


def _gelu_tanh(module, inputs, out=None):
    """gelu(z, approximate="tanh"), into ``out`` when given."""
    z = inputs["z"]
    return lambda: module.gelu(z, approximate="tanh", out=out)


def _gelu_tanh_backward(module, inputs, out=None):
    grad, z = inputs["grad"], inputs["z"]
    return lambda: module.gelu_backward(grad, z, approximate="tanh", out=out)


def _in_softmax_backward(shape, dtype, rng):
    p = _uniform(rng, shape, dtype, 0.0, 1.0)
    p /= p.sum(axis=-1, keepdims=True)
    return {"grad": _normal(rng, shape, dtype), "p": p}


def _in_cross_entropy(shape, dtype, rng):
    n, c = shape
    return {"logits": _normal(rng, shape, dtype, 2.0),
            "target": rng.integers(0, c, size=n, dtype=np.int64)}


def _in_sigmoid_bce(shape, dtype, rng):
    return {"logits": _normal(rng, shape, dtype, 2.0),
            "target": _uniform(rng, shape, dtype, 0.0, 1.0)}


def _in_bce(shape, dtype, rng):
    return {"probs": _uniform(rng, shape, dtype, 0.01, 0.99),
            "target": (rng.random(shape) < 0.5).astype(dtype)}


def _in_mse(shape, dtype, rng):
    return {"pred": _normal(rng, shape, dtype), "target": _normal(rng, shape, dtype)}


# the dense rows are one hidden layer of a sigmoid network; the training step
# is the MLP 784-512-256-10 (MNIST-sized) with that activation, SGD at this rate
_DENSE_ACTIVATION = "sigmoid"
_MLP_SIZES = (784, 512, 256, 10)
_MLP_LR = 0.01


def _dense_operands(shape, dtype, rng):
    """x (N, in) and w (out, in) of a dense shape (N, in, out); z = x wᵀ is N(0, 1)."""
    n, n_in, n_out = shape
    return _normal(rng, (n, n_in), dtype), _normal(rng, (n_out, n_in), dtype, n_in ** -0.5)


def _in_dense_forward(shape, dtype, rng):
    x, w = _dense_operands(shape, dtype, rng)
    return {"x": x, "w": w, "b": _normal(rng, (w.shape[0],), dtype),
            "activation": _DENSE_ACTIVATION}


def _in_dense_backward(shape, dtype, rng):
    """The layer's output ``a`` is g(x wᵀ) (no bias): the torch column checks
    itself against autograd of that layer."""
    x, w = _dense_operands(shape, dtype, rng)
    return {"grad_a": _normal(rng, (x.shape[0], w.shape[0]), dtype), "x": x, "w": w,
            "a": reference.dense_forward(x, w, None, _DENSE_ACTIVATION),
            "activation": _DENSE_ACTIVATION}


def _out_dense_forward(inputs):
    x, w = inputs["x"], inputs["w"]
    return np.empty((x.shape[0], w.shape[0]), dtype=x.dtype)


def _out_dense_backward(inputs):
    """(grad_w, grad_b, grad_x) buffers."""
    w = inputs["w"]
    return np.empty_like(w), np.empty(w.shape[0], dtype=w.dtype), np.empty_like(inputs["x"])


def _in_mlp_step(shape, dtype, rng):
    """A batch of random x and labels for the MLP of shape (batch, *layer sizes)."""
    n, *sizes = shape
    return {"x": _normal(rng, (n, sizes[0]), dtype),
            "labels": rng.integers(0, sizes[-1], size=n, dtype=np.int64),
            "sizes": tuple(sizes), "activation": _DENSE_ACTIVATION, "lr": _MLP_LR}


def _mlp_step(module, inputs, out=None):
    """One ``MLP.step`` (forward, loss, backward, SGD update) on ``module``."""
    x, labels, sizes, activation, lr = inputs.values()
    net = MLP(sizes, activation, dtype=x.dtype, backend=module, seed=0)
    return lambda: net.step(x, labels, lr)


def _in_thinc_mlp_step(shape, dtype, rng):
    """A batch of random x and one-hot labels for Thinc's MLP of shape (batch, *sizes)."""
    n, *sizes = shape
    labels = rng.integers(0, sizes[-1], size=n)
    return {"x": _normal(rng, (n, sizes[0]), dtype),
            "y": np.eye(sizes[-1], dtype=dtype)[labels], "sizes": tuple(sizes)}


def _thinc_mlp_step(module, inputs, out=None):
    """One step of Thinc's Relu >> Relu >> Softmax with Adam: on NNKernelsOps
    for nnkernels, on Thinc's own NumpyOps for the reference column."""
    from thinc.api import Adam, Relu, Softmax, chain, fix_random_seed, use_ops

    x, y, sizes = inputs.values()
    fix_random_seed(0)
    with use_ops("nnkernels" if module.__name__ == "nnkernels" else "numpy"):
        model = chain(*(Relu(nO=width) for width in sizes[1:-1]), Softmax(nO=sizes[-1]))
        model.initialize(X=x[:5], Y=y[:5])
    optimizer = Adam(_ADAM_LR)

    def step():
        guesses, backprop = model.begin_update(x)
        backprop(guesses - y)           # softmax cross-entropy's gradient, as Thinc's examples
        model.finish_update(optimizer)
    return step


# the optimizer rows: one in-place step on a parameter and its state, the
# options set by a setup function (the registry passes positional arrays)
_ADAM_LR, _ADAM_STEP = 1e-3, 10
_SGD_LR, _SGD_MOMENTUM = 0.01, 0.9


def _in_adam(shape, dtype, rng, amsgrad=False):
    """A parameter, its gradient and Adam's moments as after a few steps."""
    grad = _normal(rng, shape, dtype)
    inputs = {"param": _normal(rng, shape, dtype), "grad": grad,
              "exp_avg": _normal(rng, shape, dtype, 0.1),
              "exp_avg_sq": _uniform(rng, shape, dtype, 0.01, 1.0)}
    if amsgrad:
        inputs["max_exp_avg_sq"] = _uniform(rng, shape, dtype, 0.5, 1.0)
    return inputs


def _in_adam_amsgrad(shape, dtype, rng):
    return _in_adam(shape, dtype, rng, amsgrad=True)


def _in_sgd_momentum(shape, dtype, rng):
    return {"param": _normal(rng, shape, dtype), "grad": _normal(rng, shape, dtype),
            "momentum_buffer": _normal(rng, shape, dtype, 0.1)}


def _adam_step(module, inputs, out=None):
    """``module.adam_update`` in place; returns the three arrays it writes
    (so that the bytes counted are 4 arrays read, 3 written)."""
    p, g, m, v = (inputs[k] for k in ("param", "grad", "exp_avg", "exp_avg_sq"))
    update = module.adam_update
    return lambda: (update(p, g, m, v, step=_ADAM_STEP, lr=_ADAM_LR), m, v)


def _adam_amsgrad_step(module, inputs, out=None):
    """``module.adam_update(amsgrad=True)``: 5 arrays read, 4 written."""
    p, g, m, v, vmax = inputs.values()
    update = module.adam_update
    return lambda: (update(p, g, m, v, step=_ADAM_STEP, lr=_ADAM_LR, amsgrad=True,
                           max_exp_avg_sq=vmax), m, v, vmax)


def _sgd_momentum_step(module, inputs, out=None):
    """``module.sgd_update`` with momentum 0.9: 3 arrays read, 2 written."""
    p, g, buf = inputs.values()
    update = module.sgd_update
    return lambda: (update(p, g, lr=_SGD_LR, momentum=_SGD_MOMENTUM, momentum_buffer=buf,
                           step=2), buf)
