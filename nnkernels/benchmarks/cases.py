"""The registry of benchmark cases: every kernel, its inputs and its sizes.

Each ``Kernel`` entry of ``KERNELS`` names a kernel, says how to build its
inputs for a shape and dtype, which sizes to measure and which PyTorch twin
(``torch_twins``) runs for it. The nnkernels function and the reference
function are called the same way (the contract gives them the same
signature), so an entry does not spell out the calls; the bytes a call moves
are counted from its arrays (inputs read once, outputs written once).
Entries built on matrix products (the dense layer, a training step) count
FLOPs instead, and their floor is the GEMM floor: those FLOPs over the
measured BLAS rate (``machine.measure_blas``).

``python -m nnkernels bench`` (``run.run_bench``) and the pytest-benchmark
suites under ``bench/`` (``bench_cases``) both draw their cases from here.
"""

import math
from dataclasses import dataclass

import numpy as np

from nnkernels import reference
from nnkernels.mlp import MLP

from . import torch_twins as tt

__all__ = ["Kernel", "KERNELS", "get_kernel", "bench_cases", "bytes_moved", "mlp_step_flops"]


# ---- the entry -----------------------------------------------------------

@dataclass(frozen=True)
class Kernel:
    """One benchmarked kernel.

    Parameters
    ----------
    name : str
        Name of the function in ``nnkernels`` and ``nnkernels.reference``
        (or of the benchmark, for an entry with its own ``setup``).
    group : str
        "activations", "softmax", "losses", "dense", "training" or "optim"
        (the ``bench/`` suites select by it).
    make_inputs : callable
        ``make_inputs(shape, dtype, rng) -> dict``: the positional arguments of
        the call, in order, by name. Values that are not arrays (an activation
        name, layer sizes) are passed on as they are.
    sizes : tuple of (label, shape)
        The small, medium and large shapes.
    quick : tuple of str
        The size labels measured with ``--quick``.
    torch_setup : callable or None
        ``torch_setup(torch, *args) -> fn``: ``fn()`` runs the PyTorch
        equivalent once on the given arguments (tensors built from the same
        arrays, the other inputs as they are).
    torch_label : str
        What the PyTorch column runs, for the notes and the JSON file.
    flops : callable or None
        ``flops(shape) -> int``: the matrix-product FLOPs of one call. Given,
        the row reports GFLOP/s and its floor is the GEMM floor (FLOPs over
        the measured BLAS rate); else GB/s and the memory-bandwidth floor.
    flops_label : str
        What ``flops`` counts, for the notes and the JSON file.
    outputs : callable or None
        ``outputs(inputs) -> out``: the ``out=`` argument of nnkernels'
        call; None: an array like the first input.
    setup : callable or None
        ``setup(module, inputs, out) -> fn`` for an entry that is more than
        one call of ``module.<name>`` (``out`` is None for the reference).
    """

    name: str
    group: str
    make_inputs: object
    sizes: tuple
    quick: tuple
    torch_setup: object = None
    torch_label: str = ""
    flops: object = None
    flops_label: str = ""
    outputs: object = None
    setup: object = None

    def shapes(self, quick=False):
        """The (label, shape) pairs to measure."""
        return tuple((lab, s) for lab, s in self.sizes if not quick or lab in self.quick)

    def bind(self, module, inputs, out=None):
        """A zero-argument function calling ``module.<name>`` on ``inputs``."""
        if self.setup is not None:
            return self.setup(module, inputs, out)
        fn = getattr(module, self.name)
        args = tuple(inputs.values())
        if out is None:
            return lambda: fn(*args)
        return lambda: fn(*args, out=out)

    def make_out(self, inputs):
        """The ``out=`` buffer: ``outputs(inputs)``, or like the first input."""
        if self.outputs is not None:
            return self.outputs(inputs)
        return np.empty_like(next(iter(inputs.values())))

    def bind_torch(self, torch, inputs):
        """A zero-argument function running the PyTorch equivalent, or None."""
        if self.torch_setup is None:
            return None
        args = [torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                for v in inputs.values()]
        return self.torch_setup(torch, *args)

    @property
    def floor_kind(self):
        """"gemm" (FLOPs over the BLAS rate) or "bandwidth" (bytes over GB/s)."""
        return "bandwidth" if self.flops is None else "gemm"

    def work(self, shape, inputs, result):
        """(quantity, amount, rate unit) of one call: FLOPs or bytes moved."""
        if self.flops is not None:
            return "flops", int(self.flops(shape)), "GFLOP/s"
        return "bytes", bytes_moved(inputs, result), "GB/s"


def _nbytes(obj):
    """Bytes of the arrays in ``obj`` (an array, a scalar, or a tuple/dict of them)."""
    if isinstance(obj, (np.ndarray, np.generic)):
        return int(obj.nbytes)
    if isinstance(obj, dict):
        obj = obj.values()
    if isinstance(obj, (tuple, list, type({}.values()))):
        return sum(_nbytes(o) for o in obj)
    return 0


def bytes_moved(inputs, result):
    """Bytes a call must move: every input read once, every output written once."""
    return _nbytes(inputs) + _nbytes(result)


# ---- input builders ------------------------------------------------------

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


# ---- FLOPs of the matrix products ----------------------------------------

def _gemm_flops(products):
    """FLOPs of ``products`` (N, in) x (in, out) products for a shape (N, in, out)."""
    return lambda shape: 2 * products * math.prod(shape)


def mlp_step_flops(shape):
    """Matrix-product FLOPs of one training step of an MLP of shape (batch, *sizes).

    Every layer's forward product and grad_w, and grad_x of every layer but
    the first (its input is the data: need_input_grad=False); 2·N·in·out each.
    """
    n, *sizes = shape
    per_layer = [2 * n * fan_in * fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:])]
    return 3 * sum(per_layer) - per_layer[0]


# ---- the registry --------------------------------------------------------

_ACT_SIZES = (("small", (128, 512)), ("medium", (1024, 1024)), ("large", (8192, 4096)))
_CLASS_SIZES = (("small", (128, 10)), ("medium", (4096, 1000)), ("large", (512, 32000)))
# the element-wise losses' large size is smaller than the activations': the
# reference sigmoid_binary_cross_entropy takes seconds at (8192, 4096)
_LOSS_SIZES = (("small", (128, 512)), ("medium", (1024, 1024)), ("large", (2048, 2048)))
_ALL = ("small", "medium", "large")
_DENSE_SIZES = (("small", (128, 784, 256)), ("medium", (1024, 1024, 1024)),
                ("large", (4096, 4096, 1024)))
# (batch, *layer sizes)
_STEP_SIZES = (("small", (128,) + _MLP_SIZES), ("medium", (1024,) + _MLP_SIZES))
# parameters of 64 Ki, 1 Mi and 4 Mi elements
_OPTIM_SIZES = (("small", (128, 512)), ("medium", (1024, 1024)), ("large", (2048, 2048)))

KERNELS = (
    Kernel("sigmoid", "activations", _in_z, _ACT_SIZES, ("small", "medium"),
           tt.sigmoid, "torch.sigmoid(z, out=)"),
    Kernel("relu", "activations", _in_z, _ACT_SIZES, ("small", "medium"),
           tt.relu, "torch.clamp_min(z, 0, out=)"),
    Kernel("sigmoid_backward", "activations", _in_sigmoid_backward, _ACT_SIZES,
           ("small", "large"), tt.sigmoid_backward, "aten.sigmoid_backward.grad_input"),
    Kernel("tanh_backward", "activations", _in_tanh_backward, _ACT_SIZES,
           ("small", "large"), tt.tanh_backward, "aten.tanh_backward.grad_input"),
    Kernel("relu_backward", "activations", _in_relu_backward, _ACT_SIZES,
           ("small", "large"), tt.relu_backward, "aten.threshold_backward.grad_input"),
    Kernel("softmax", "softmax", _in_z, _CLASS_SIZES, _ALL,
           tt.softmax, "torch.softmax(z, -1, out=)"),
    Kernel("log_softmax", "softmax", _in_z, _CLASS_SIZES, _ALL,
           tt.log_softmax, "torch.log_softmax(z, -1, out=)"),
    Kernel("softmax_backward", "softmax", _in_softmax_backward, _CLASS_SIZES, _ALL,
           tt.softmax_backward, "aten._softmax_backward_data.out"),
    Kernel("softmax_cross_entropy", "losses", _in_cross_entropy, _CLASS_SIZES, _ALL,
           tt.softmax_cross_entropy, "F.cross_entropy forward + autograd backward"),
    Kernel("softmax_cross_entropy_backward", "losses", _in_cross_entropy, _CLASS_SIZES,
           ("small", "medium")),
    Kernel("sigmoid_binary_cross_entropy", "losses", _in_sigmoid_bce, _LOSS_SIZES,
           ("small", "medium"), tt.sigmoid_binary_cross_entropy,
           "F.binary_cross_entropy_with_logits forward + autograd backward"),
    Kernel("binary_cross_entropy", "losses", _in_bce, _LOSS_SIZES, ("small", "medium"),
           tt.binary_cross_entropy, "F.binary_cross_entropy forward + autograd backward"),
    Kernel("mse", "losses", _in_mse, _LOSS_SIZES, ("small", "medium"),
           tt.mse, "F.mse_loss forward + autograd backward"),
    Kernel("dense_forward", "dense", _in_dense_forward, _DENSE_SIZES, ("small",),
           tt.dense_forward, "torch.sigmoid(F.linear(x, w, b), out=o)",
           flops=_gemm_flops(1), flops_label="2·N·in·out for shape (N, in, out)",
           outputs=_out_dense_forward),
    Kernel("dense_backward", "dense", _in_dense_backward, _DENSE_SIZES, ("small",),
           tt.dense_backward,
           "aten.sigmoid_backward.grad_input, mm(grad_z.T, x, out=), sum(grad_z, 0, out=), "
           "mm(grad_z, w, out=) (checked against autograd of linear + sigmoid)",
           flops=_gemm_flops(2), flops_label="4·N·in·out (grad_w and grad_x)",
           outputs=_out_dense_backward),
    Kernel("mlp_step", "training", _in_mlp_step, _STEP_SIZES, ("small",),
           tt.mlp_step, "nn.Sequential(Linear, Sigmoid, Linear, Sigmoid, Linear), "
           "F.cross_entropy, zero_grad(set_to_none=True), backward, optim.SGD step",
           flops=mlp_step_flops,
           flops_label="shape (batch, layer sizes), sigmoid, SGD lr 0.01: 2·N·in·out for "
                       "every layer's forward product and grad_w, and grad_x of all layers "
                       "but the first",
           setup=_mlp_step),
    Kernel("adam_update", "optim", _in_adam, _OPTIM_SIZES, ("small", "large"),
           tt.adam_update, "torch.optim.Adam(fused=True).step()", setup=_adam_step),
    Kernel("adam_update_foreach", "optim", _in_adam, _OPTIM_SIZES, ("small", "large"),
           tt.adam_update_foreach, "torch.optim.Adam(foreach=True).step()",
           setup=_adam_step),
    Kernel("adam_update_amsgrad", "optim", _in_adam_amsgrad, _OPTIM_SIZES, ("small", "large"),
           tt.adam_update_amsgrad, "torch.optim.Adam(amsgrad=True, fused=True).step()",
           setup=_adam_amsgrad_step),
    Kernel("sgd_update", "optim", _in_sgd_momentum, _OPTIM_SIZES, ("small", "large"),
           tt.sgd_update, "torch.optim.SGD(momentum=0.9, fused=True).step()",
           setup=_sgd_momentum_step),
)

_BY_NAME = {k.name: k for k in KERNELS}


def get_kernel(name):
    """The registry entry called ``name`` (KeyError with the known names otherwise)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown kernel {name!r}; known: {', '.join(_BY_NAME)}") from None


def bench_cases(group=None, quick=False):
    """(kernel, size label, shape) for every registry entry of ``group`` (None: all)."""
    return [(k, lab, shape) for k in KERNELS if group is None or k.group == group
            for lab, shape in k.shapes(quick)]

