"""Benchmarks of the nnkernels kernels against ``nnkernels.reference`` and PyTorch.

Everything here is driven by one registry, ``KERNELS``: each entry names a
kernel, says how to build its inputs for a shape and dtype, which sizes to
measure and what PyTorch runs for it. The nnkernels function and the
reference function are called the same way (the contract gives them the same
signature), so an entry does not spell out the calls; the bytes a call moves
are counted from its arrays (inputs read once, outputs written once).
Entries built on matrix products (the dense layer, a training step) count
FLOPs instead, and their floor is the GEMM floor: those FLOPs over the BLAS
rate the same run measured (``measure_blas``).

``python -m nnkernels bench`` (see ``nnkernels._cli``) and the pytest-benchmark
suites under ``bench/`` both use this module.

Timing (``time_functions``): every backend is warmed up and calibrated to a
number of calls per sample lasting at least ``min_sample`` seconds; the
samples of the backends of one row are taken in alternating blocks on the
same input arrays, and the median per-call time is reported.
nnkernels is called with a preallocated ``out=`` buffer, as a training loop
would; the reference is called as written (it allocates its results).
PyTorch, and NumPy's BLAS where threadpoolctl can set it, run on the thread
count of nnkernels for the length of the run.
"""

import contextlib
import gc
import itertools
import math
import os
import platform
import statistics
import sys
import textwrap
import time
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Kernel",
    "KERNELS",
    "get_kernel",
    "bench_cases",
    "measure_bandwidth",
    "measure_blas",
    "prime_allocator",
    "time_functions",
    "run_bench",
    "format_report",
    "plot_report",
    "bytes_moved",
    "mlp_step_flops",
    "machine_info",
]

GB = 1e9  # GB/s in the tables are 10**9 bytes per second


# --------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Kernel:
    """One benchmarked kernel.

    Parameters
    ----------
    name : str
        Name of the function in ``nnkernels`` and ``nnkernels.reference``
        (or of the benchmark, for an entry with its own ``setup``).
    group : str
        "activations", "softmax", "losses", "dense" or "training" (the
        ``bench/`` suites select by it).
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
    requires : tuple of str
        The ``nnkernels`` functions the entry needs; empty: ``(name,)``.
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
    requires: tuple = ()

    def shapes(self, quick=False):
        """The (label, shape) pairs to measure."""
        return tuple((lab, s) for lab, s in self.sizes if not quick or lab in self.quick)

    def available(self, module):
        """Whether ``module`` has every function this entry calls."""
        return all(hasattr(module, f) for f in self.requires or (self.name,))

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
    from nnkernels import reference

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
    from nnkernels.mlp import MLP

    x, labels, sizes, activation, lr = inputs.values()
    net = MLP(sizes, activation, dtype=x.dtype, backend=module, seed=0)
    return lambda: net.step(x, labels, lr)


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


# ---- PyTorch equivalents -------------------------------------------------

def _torch_out(op):
    """PyTorch op writing into a preallocated output like the first tensor."""
    def setup(torch, first, *rest):
        out = torch.empty_like(first)
        return lambda: op(torch, first, *rest, out)
    return setup


def _torch_autograd(loss):
    """PyTorch loss forward + backward (autograd), returning (loss, grad)."""
    def setup(torch, x, *rest):
        x = x.detach().requires_grad_(True)
        F = torch.nn.functional
        grad = torch.autograd.grad

        def run():
            value = loss(F, x, *rest)
            return value, grad(value, x)[0]
        return run
    return setup


_T_SIGMOID = _torch_out(lambda torch, z, o: torch.sigmoid(z, out=o))
# torch.relu has no out=; clamp_min is the same function (NaN included) and is
# PyTorch's fastest way to write relu into an existing tensor
_T_RELU = _torch_out(lambda torch, z, o: torch.clamp_min(z, 0, out=o))
# grad ⊙ g'(a) into o, as autograd computes it, by activation
_TORCH_ACT_BW = {
    "sigmoid": lambda torch, g, a, o: torch.ops.aten.sigmoid_backward.grad_input(
        g, a, grad_input=o),
    "tanh": lambda torch, g, a, o: torch.ops.aten.tanh_backward.grad_input(g, a, grad_input=o),
    "relu": lambda torch, g, a, o: torch.ops.aten.threshold_backward.grad_input(
        g, a, 0, grad_input=o),
}
_T_SIGMOID_BW = _torch_out(_TORCH_ACT_BW["sigmoid"])
_T_TANH_BW = _torch_out(_TORCH_ACT_BW["tanh"])
_T_RELU_BW = _torch_out(_TORCH_ACT_BW["relu"])
_T_SOFTMAX = _torch_out(lambda torch, z, o: torch.softmax(z, -1, out=o))
_T_LOG_SOFTMAX = _torch_out(lambda torch, z, o: torch.log_softmax(z, -1, out=o))
_T_SOFTMAX_BW = _torch_out(
    lambda torch, g, p, o: torch.ops.aten._softmax_backward_data.out(
        g, p, -1, p.dtype, grad_input=o))
_T_CE = _torch_autograd(lambda F, x, t: F.cross_entropy(x, t))
_T_SIGMOID_BCE = _torch_autograd(lambda F, x, t: F.binary_cross_entropy_with_logits(x, t))
_T_BCE = _torch_autograd(lambda F, x, t: F.binary_cross_entropy(x, t))
_T_MSE = _torch_autograd(lambda F, x, t: F.mse_loss(x, t))


def _torch_dense_forward(torch, x, w, b, activation):
    """F.linear, then the activation into a preallocated output (F.linear has
    no out=; addmm(b, x, w.T, out=) then an in-place activation is no faster)."""
    linear = torch.nn.functional.linear
    if activation is None:
        return lambda: linear(x, w, b)
    act = getattr(torch, activation)
    out = torch.empty((x.shape[0], w.shape[0]), dtype=x.dtype)
    return lambda: act(linear(x, w, b), out=out)


def _torch_dense_backward(torch, grad_a, x, w, a, activation):
    """What autograd runs for linear + activation, as explicit ops into
    preallocated outputs; checked once against autograd itself."""
    grad_z = grad_a if activation is None else torch.empty_like(grad_a)
    grad_zt = grad_z.T
    gw, gb, gx = torch.empty_like(w), torch.empty(w.shape[0], dtype=w.dtype), torch.empty_like(x)

    def run():
        if activation is not None:
            _TORCH_ACT_BW[activation](torch, grad_a, a, grad_z)
        torch.mm(grad_zt, x, out=gw)
        torch.sum(grad_z, 0, out=gb)
        torch.mm(grad_z, w, out=gx)
        return gw, gb, gx

    _check_against_autograd(torch, run(), grad_a, x, w, activation)
    return run


def _check_against_autograd(torch, grads, grad_a, x, w, activation):
    """Raise unless (grad_w, grad_b, grad_x) equal autograd's for a = g(x wᵀ)."""
    x = x.detach().clone().requires_grad_(True)
    w = w.detach().clone().requires_grad_(True)
    b = torch.zeros(w.shape[0], dtype=w.dtype, requires_grad=True)
    z = torch.nn.functional.linear(x, w, b)
    (z if activation is None else getattr(torch, activation)(z)).backward(grad_a)
    rtol = 1e-3 if x.dtype == torch.float32 else 1e-9
    for name, got, want in zip(("grad_w", "grad_b", "grad_x"), grads, (w.grad, b.grad, x.grad)):
        err = float((got - want).abs().max())
        if not err <= rtol * float(want.abs().max()):
            raise AssertionError(f"the explicit torch ops' {name} differs from autograd's "
                                 f"by {err:.3g}")


_TORCH_ACTIVATION_MODULE = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "ReLU"}


def _torch_mlp_step(torch, x, labels, sizes, activation, lr):
    """The same MLP as nn.Sequential, trained by autograd and optim.SGD."""
    nn = torch.nn
    layers = []
    with torch.random.fork_rng():  # the init leaves torch's global RNG alone
        torch.manual_seed(0)
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            if layers:
                layers.append(getattr(nn, _TORCH_ACTIVATION_MODULE[activation])())
            layers.append(nn.Linear(fan_in, fan_out, dtype=x.dtype))
    model = nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    cross_entropy = nn.functional.cross_entropy

    def run():
        opt.zero_grad(set_to_none=True)
        loss = cross_entropy(model(x), labels)
        loss.backward()
        opt.step()
        return loss.item()
    return run


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

KERNELS = (
    Kernel("sigmoid", "activations", _in_z, _ACT_SIZES, ("small", "medium"),
           _T_SIGMOID, "torch.sigmoid(z, out=)"),
    Kernel("relu", "activations", _in_z, _ACT_SIZES, ("small", "medium"),
           _T_RELU, "torch.clamp_min(z, 0, out=)"),
    Kernel("sigmoid_backward", "activations", _in_sigmoid_backward, _ACT_SIZES,
           ("small", "large"), _T_SIGMOID_BW, "aten.sigmoid_backward.grad_input"),
    Kernel("tanh_backward", "activations", _in_tanh_backward, _ACT_SIZES,
           ("small", "large"), _T_TANH_BW, "aten.tanh_backward.grad_input"),
    Kernel("relu_backward", "activations", _in_relu_backward, _ACT_SIZES,
           ("small", "large"), _T_RELU_BW, "aten.threshold_backward.grad_input"),
    Kernel("softmax", "softmax", _in_z, _CLASS_SIZES, _ALL,
           _T_SOFTMAX, "torch.softmax(z, -1, out=)"),
    Kernel("log_softmax", "softmax", _in_z, _CLASS_SIZES, _ALL,
           _T_LOG_SOFTMAX, "torch.log_softmax(z, -1, out=)"),
    Kernel("softmax_backward", "softmax", _in_softmax_backward, _CLASS_SIZES, _ALL,
           _T_SOFTMAX_BW, "aten._softmax_backward_data.out"),
    Kernel("softmax_cross_entropy", "losses", _in_cross_entropy, _CLASS_SIZES, _ALL,
           _T_CE, "F.cross_entropy forward + autograd backward"),
    Kernel("softmax_cross_entropy_backward", "losses", _in_cross_entropy, _CLASS_SIZES,
           ("small", "medium")),
    Kernel("sigmoid_binary_cross_entropy", "losses", _in_sigmoid_bce, _LOSS_SIZES,
           ("small", "medium"), _T_SIGMOID_BCE,
           "F.binary_cross_entropy_with_logits forward + autograd backward"),
    Kernel("binary_cross_entropy", "losses", _in_bce, _LOSS_SIZES, ("small", "medium"),
           _T_BCE, "F.binary_cross_entropy forward + autograd backward"),
    Kernel("mse", "losses", _in_mse, _LOSS_SIZES, ("small", "medium"),
           _T_MSE, "F.mse_loss forward + autograd backward"),
    Kernel("dense_forward", "dense", _in_dense_forward, _DENSE_SIZES, ("small",),
           _torch_dense_forward, "torch.sigmoid(F.linear(x, w, b), out=o)",
           flops=_gemm_flops(1), flops_label="2·N·in·out for shape (N, in, out)",
           outputs=_out_dense_forward),
    Kernel("dense_backward", "dense", _in_dense_backward, _DENSE_SIZES, ("small",),
           _torch_dense_backward,
           "aten.sigmoid_backward.grad_input, mm(grad_z.T, x, out=), sum(grad_z, 0, out=), "
           "mm(grad_z, w, out=) (checked against autograd of linear + sigmoid)",
           flops=_gemm_flops(2), flops_label="4·N·in·out (grad_w and grad_x)",
           outputs=_out_dense_backward),
    Kernel("mlp_step", "training", _in_mlp_step, _STEP_SIZES, ("small",),
           _torch_mlp_step, "nn.Sequential(Linear, Sigmoid, Linear, Sigmoid, Linear), "
           "F.cross_entropy, zero_grad(set_to_none=True), backward, optim.SGD step",
           flops=mlp_step_flops,
           flops_label="shape (batch, layer sizes), sigmoid, SGD lr 0.01: 2·N·in·out for "
                       "every layer's forward product and grad_w, and grad_x of all layers "
                       "but the first",
           setup=_mlp_step,
           requires=("dense_forward", "dense_backward", "softmax_cross_entropy")),
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


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------

def _sample(fn, number, _timer=time.perf_counter):
    """Seconds per call of ``number`` back-to-back calls of ``fn``."""
    it = itertools.repeat(None, number)
    t0 = _timer()
    for _ in it:
        fn()
    return (_timer() - t0) / number


def _calibrate(fn, min_sample):
    """Warm ``fn`` up; return (calls per sample lasting >= min_sample, seconds per call)."""
    fn()
    number = 1
    while True:
        t = _sample(fn, number)
        if t * number >= min_sample or number >= 1 << 24:
            return number, t
        # aim a little above the target; grow at least 2x, at most 100x per step
        want = math.ceil(1.2 * min_sample / max(t, 1e-9))
        number = min(max(2 * number, want), 100 * number)


def _settle(step=0.01, max_wait=0.5):
    """Sleep until the process's other threads are idle (at most ``max_wait`` s).

    Idle worker threads of a thread pool spin before they sleep: libgomp's
    for a few ms, OpenBLAS's for about 2**28 cycles (~0.1 s, a whole core).
    While the main thread sleeps ``step`` seconds, the process's CPU time
    shows whether any still spin.
    """
    deadline = time.perf_counter() + max_wait
    while time.perf_counter() < deadline:
        cpu = time.process_time()
        time.sleep(step)
        if time.process_time() - cpu < 0.1 * step:
            return


def time_functions(fns, *, min_sample=2e-3, budget=1.0, min_repeat=5, max_repeat=200):
    """Time several zero-argument functions side by side.

    Each function is warmed up and calibrated to ``number`` calls per sample
    (a sample lasts at least ``min_sample`` seconds), then ``repeat`` samples
    are taken of each, ``repeat`` chosen so that all samples of all functions
    take about ``budget`` seconds (within [min_repeat, max_repeat]).

    The samples of one function run back to back in blocks, and the blocks
    of the functions alternate (twice when there are enough samples): the
    median is then robust both to slow drifts of the machine, which hit every
    function alike, and to what a switch costs the first sample of a block
    (cold caches). Every block (and calibration) starts once the previous
    function's thread pools have gone to sleep (``_settle``): an OpenBLAS
    worker spins on a core for about 0.1 s after each call, which would
    otherwise slow the next function's whole block.

    Returns a dict name -> dict(median, min, max, number, repeat, samples),
    times in seconds per call.
    """
    fns = {k: f for k, f in fns.items() if f is not None}
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        cal = {}
        for k, f in fns.items():
            _settle()
            cal[k] = _calibrate(f, min_sample)
        round_s = sum(n * t for n, t in cal.values())
        repeat = int(budget / max(round_s, 1e-9))
        repeat = max(min_repeat, min(max_repeat, repeat))
        passes = 2 if repeat >= 10 else 1
        samples = {k: [] for k in fns}
        for p in range(passes):
            for k, f in fns.items():
                number = cal[k][0]
                _settle()
                for _ in range(repeat // passes + (p < repeat % passes)):
                    samples[k].append(_sample(f, number))
    finally:
        if gc_was_enabled:
            gc.enable()
    return {k: {"median": statistics.median(s), "min": min(s), "max": max(s),
                "number": cal[k][0], "repeat": repeat, "samples": s}
            for k, s in samples.items()}


def prime_allocator():
    """Put the C allocator in the state of a long-running process.

    glibc's malloc serves blocks above its mmap threshold (128 KiB at start)
    with fresh mmaps, page-faulting on first touch; freeing such a block
    raises the threshold (up to 32 MiB), after which those sizes come from
    the heap. The reference allocates temporaries on every call, so without
    this its time for a (128, 512) input differs ~10x depending on what ran
    before in the process. Freeing one 30 MiB block settles it up front.
    """
    block = np.empty(30 << 20, dtype=np.uint8)
    del block


# --------------------------------------------------------------------------
# Memory bandwidth probe
# --------------------------------------------------------------------------

def measure_bandwidth(nk=None, *, nbytes=64 << 20, repeat=5):
    """Measure the machine's memory bandwidth on arrays larger than the caches.

    Probes (median of ``repeat`` runs each, after one warm-up run):

    - ``numpy_add``: ``np.add(a, b, out=c)`` on float32 arrays of ``nbytes``
      each, counting 3 arrays (2 read, 1 written); NumPy runs it on 1 thread.
    - ``numpy_copy``: ``np.copyto(c, a)``, counting 2 arrays; 1 thread.
    - ``nnkernels_relu_backward``: ``nk.relu_backward(g, a, out=o)``, counting
      3 arrays; nnkernels' own threads (only when ``nk`` is given).

    Returns dict(probes={probe: dict(gbps, bytes, best_s, threads, what)},
    floor=<name of the fastest probe>, floor_gbps=<its GB/s>): the fastest
    probe is the bandwidth the floor times are computed with.
    """
    n = nbytes // 4
    rng = np.random.default_rng(1)
    a = rng.standard_normal(n, dtype=np.float32)
    b = rng.standard_normal(n, dtype=np.float32)
    c = np.empty_like(a)
    probes = {
        "numpy_add": (lambda: np.add(a, b, out=c), 3, 1, "np.add(a, b, out=c)"),
        "numpy_copy": (lambda: np.copyto(c, a), 2, 1, "np.copyto(c, a)"),
    }
    if nk is not None and hasattr(nk, "relu_backward"):
        threads = nk.get_num_threads() if hasattr(nk, "get_num_threads") else None
        probes["nnkernels_relu_backward"] = (
            lambda: nk.relu_backward(a, b, out=c), 3, threads,
            "nnkernels.relu_backward(g, a, out=o)")
    result = {}
    for name, (fn, narrays, threads, what) in probes.items():
        fn()
        # the median, as for the kernels' rows: a best-of on a shared machine
        # catches bursts the kernels are never measured against
        best = statistics.median(_sample(fn, 1) for _ in range(repeat))
        moved = narrays * a.nbytes
        result[name] = {"gbps": moved / best / GB, "bytes": moved, "best_s": best,
                        "threads": threads, "what": what}
    floor = max(result, key=lambda k: result[k]["gbps"])
    return {"probes": result, "floor": floor, "floor_gbps": result[floor]["gbps"]}


# --------------------------------------------------------------------------
# BLAS rate probe
# --------------------------------------------------------------------------

def measure_blas(dtypes=("float32",), *, n=2048, repeat=5):
    """Measure the matrix-product rate of NumPy's BLAS, per dtype.

    ``np.matmul(a, b, out=c)`` of two ``n`` x ``n`` matrices (2·n³ FLOPs),
    median of ``repeat`` calls after one warm-up call, on the BLAS's current
    threads. From n = 512 on the rate of a 2-core machine is on its plateau
    (within a few %); 2048 leaves room for more cores.

    Returns dict(what, n, repeat, rates={dtype: dict(gflops, flops, median_s)}).
    """
    rng = np.random.default_rng(2)
    rates = {}
    for dtype in dict.fromkeys(np.dtype(d).name for d in dtypes):
        dt = np.dtype(dtype)
        a, b = _normal(rng, (n, n), dt), _normal(rng, (n, n), dt)
        c = np.empty_like(a)
        fn = lambda: np.matmul(a, b, out=c)  # noqa: E731
        _settle()
        fn()
        median = statistics.median(_sample(fn, 1) for _ in range(repeat))
        flops = 2 * n ** 3
        rates[dtype] = {"gflops": flops / median / GB, "flops": flops, "median_s": median}
        del a, b, c
    return {"what": "np.matmul(a, b, out=c)", "n": n, "repeat": repeat, "rates": rates}


@contextlib.contextmanager
def _pinned_threads(threads, torch):
    """Run torch, and NumPy's BLAS where threadpoolctl can set it, on
    ``threads`` threads for the block; restore their counts after.

    Yields dict(torch=<torch's count>, blas=<the BLAS count or None when
    unknown>, note=<why the BLAS is not pinned, or "">).
    """
    state = {"torch": None, "blas": None, "note": ""}
    with contextlib.ExitStack() as stack:
        if torch is not None:
            if threads is not None:
                previous = torch.get_num_threads()
                torch.set_num_threads(threads)
                stack.callback(torch.set_num_threads, previous)
            state["torch"] = torch.get_num_threads()
        try:
            import threadpoolctl
        except ImportError:
            state["note"] = ("threadpoolctl is not installed: NumPy's BLAS (the reference's "
                             "products, the BLAS rate probe) runs on its default threads")
        else:
            if threads is not None:
                stack.enter_context(threadpoolctl.threadpool_limits(threads, user_api="blas"))
            counts = {lib["num_threads"] for lib in threadpoolctl.threadpool_info()
                      if lib["user_api"] == "blas"}
            state["blas"] = counts.pop() if len(counts) == 1 else None
        yield state


# --------------------------------------------------------------------------
# The bench run
# --------------------------------------------------------------------------

def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info():
    """A dict describing the machine and the software versions."""
    info = {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
    }
    if hasattr(os, "sched_getaffinity"):
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    if hasattr(os, "getloadavg"):
        info["loadavg_1min"] = os.getloadavg()[0]
    return info


def _import_torch():
    """(torch module or None, note)."""
    try:
        import torch
    except Exception as exc:  # ImportError, or a broken install
        return None, f"torch is not importable ({type(exc).__name__}: {exc}); no torch columns"
    return torch, ""


def _try_bind(make, errors, key):
    try:
        return make()
    except Exception as exc:
        errors[key] = f"{type(exc).__name__}: {exc}"
        return None


def run_bench(nk, *, quick=False, dtypes=("float32",), compare_torch=False,
              kernels=None, seed=0, log=None):
    """Run the benchmark; return a JSON-ready dict (see ``format_report``).

    ``nk`` is the ``nnkernels`` module. ``kernels`` restricts the run to these
    registry names. ``log`` (a callable taking a str) reports progress.
    """
    from nnkernels import reference

    log = log or (lambda msg: None)
    entries = KERNELS if kernels is None else tuple(get_kernel(k) for k in kernels)
    missing = [k.name for k in entries if not k.available(nk)]
    if missing:
        raise RuntimeError("nnkernels lacks " + ", ".join(missing)
                           + " (is the compiled extension built?)")

    threads = nk.get_num_threads() if hasattr(nk, "get_num_threads") else None
    notes = []
    torch = None
    if compare_torch:
        torch, note = _import_torch()
        if note:
            notes.append(note)
            log(note)

    if quick:
        timing = dict(min_sample=1e-3, budget=0.2, min_repeat=3, max_repeat=50)
        probe_repeat = 3
    else:
        timing = dict(min_sample=2e-3, budget=1.0, min_repeat=5, max_repeat=200)
        probe_repeat = 7

    machine = machine_info()  # before the run: its load average is the others'
    if machine.get("loadavg_1min", 0.0) >= 0.5 * (machine["logical_cpus"] or 1):
        notes.append(f"the 1-minute load average was {machine['loadavg_1min']:.2f} at the "
                     "start: other processes compete for the CPUs, timings are noisy")
    rows = []
    blas, gemm_rates = None, {}
    with _pinned_threads(threads, torch) as pinned:
        prime_allocator()
        log("measuring memory bandwidth ...")
        bandwidth = measure_bandwidth(nk, repeat=probe_repeat)
        floor_bw = bandwidth["floor_gbps"] * GB
        if any(k.flops is not None for k in entries):
            log("measuring the BLAS rate ...")
            blas = measure_blas(dtypes, repeat=probe_repeat)
            blas["threads"] = pinned["blas"]
            if pinned["note"]:
                notes.append(pinned["note"])
            gemm_rates = {d: r["gflops"] * GB for d, r in blas["rates"].items()}

        rng = np.random.default_rng(seed)
        for dtype in dtypes:
            dt = np.dtype(dtype)
            for kernel in entries:
                floor_rate = floor_bw if kernel.flops is None else gemm_rates[dt.name]
                for label, shape in kernel.shapes(quick):
                    log(f"{kernel.name} {shape} {dt.name} ...")
                    rows.append(_bench_row(nk, reference, torch, kernel, label, shape, dt,
                                           rng, timing, floor_rate))
    return {
        "machine": machine,
        "nnkernels": _build_info(nk),
        "torch": None if torch is None else torch.__version__,
        "settings": {"quick": quick, "dtypes": list(dtypes), "threads": threads,
                     "torch_threads": pinned["torch"], "blas_threads": pinned["blas"],
                     "compare_torch": compare_torch, "seed": seed, **timing},
        "bandwidth": bandwidth,
        "blas": blas,
        "torch_ops": {k.name: k.torch_label for k in entries if k.torch_setup is not None},
        "flops_counted": {k.name: k.flops_label for k in entries if k.flops is not None},
        "notes": notes,
        "rows": rows,
    }


def _bench_row(nk, reference, torch, kernel, label, shape, dt, rng, timing, floor_rate):
    """Build the inputs of one row, time its backends side by side, return the row."""
    inputs = kernel.make_inputs(shape, dt, rng)
    out = kernel.make_out(inputs)
    errors = {}
    fns = {
        "nnkernels": _try_bind(lambda: kernel.bind(nk, inputs, out), errors, "nnkernels"),
        "reference": _try_bind(lambda: kernel.bind(reference, inputs), errors, "reference"),
    }
    if torch is not None and kernel.torch_setup is not None:
        fns["torch"] = _try_bind(lambda: kernel.bind_torch(torch, inputs), errors, "torch")
    # one checked call each: failures become notes, not crashes
    result = None
    for key, fn in list(fns.items()):
        if fn is None:
            continue
        try:
            r = fn()
        except Exception as exc:
            errors[key] = f"{type(exc).__name__}: {exc}"
            fns[key] = None
            continue
        if key == "nnkernels":
            result = r
    if result is None:  # count the output like the first input
        result = out
    work = kernel.work(shape, inputs, result)
    times = time_functions(fns, **timing)
    return _make_row(kernel, label, shape, dt, work, times, floor_rate, errors)


def _build_info(nk):
    if hasattr(nk, "build_info"):
        try:
            return {k: v for k, v in nk.build_info().items()}
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
    return {"version": getattr(nk, "__version__", None)}


_RATE_KEYS = {"bytes": "gbps", "flops": "gflops"}


def _make_row(kernel, label, shape, dt, work, times, floor_rate, errors):
    """One row: ``work`` is ``kernel.work(...)``, ``floor_rate`` the bytes or
    FLOPs per second the floor assumes."""
    quantity, amount, _ = work
    t = {k: v["median"] for k, v in times.items()}
    nk_t = t.get("nnkernels")
    floor_s = amount / floor_rate
    row = {
        "kernel": kernel.name,
        "size": label,
        "shape": list(shape),
        "dtype": dt.name,
        "floor_kind": kernel.floor_kind,
        "bytes": None,
        "flops": None,
        "time_s": nk_t,
        "gbps": None,
        "gflops": None,
        "floor_s": floor_s,
        "pct_floor": None if nk_t is None else 100.0 * floor_s / nk_t,
        "reference_s": t.get("reference"),
        "torch_s": t.get("torch"),
        "speedup_reference": None,
        "speedup_torch": None,
        "timings": times,
        "errors": errors,
    }
    row[quantity] = amount
    if nk_t is not None:
        row[_RATE_KEYS[quantity]] = amount / nk_t / GB
        if row["reference_s"] is not None:
            row["speedup_reference"] = row["reference_s"] / nk_t
        if row["torch_s"] is not None:
            row["speedup_torch"] = row["torch_s"] / nk_t
    return row


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def _fmt_time(s):
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1.0:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def _fmt(v, spec, suffix=""):
    return "-" if v is None else format(v, spec) + suffix


def _shape_str(shape):
    return "(" + ", ".join(str(s) for s in shape) + ")"


_PROBE_TITLES = {
    "numpy_add": "NumPy add a+b->c, 3 arrays",
    "numpy_copy": "NumPy copyto, 2 arrays",
    "nnkernels_relu_backward": "nnkernels relu_backward, 3 arrays",
}


def format_report(res):
    """The bench table (a str) for a ``run_bench`` result."""
    lines = []
    m, s, bw = res["machine"], res["settings"], res["bandwidth"]
    version = res["nnkernels"].get("version", "?")
    lines.append(f"nnkernels {version} bench{' (--quick)' if s['quick'] else ''}")
    lines.append(f"machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, {m['platform']}")
    soft = f"Python {m['python']}, NumPy {m['numpy']}"
    if res["torch"]:
        soft += f", torch {res['torch']}"
    lines.append(f"software: {soft}")
    thr = f"threads: nnkernels {s['threads']}"
    if s["torch_threads"] is not None:
        thr += f", torch {s['torch_threads']}"
    thr += "; NumPy (reference) runs element-wise work on 1 thread"
    blas = res.get("blas")
    blas_threads = "?" if s.get("blas_threads") is None else s["blas_threads"]
    if blas is not None:
        thr += f", its BLAS on {blas_threads} thread(s)"
    lines.append(thr)
    lines.append("memory bandwidth (64 MiB float32 arrays, median of several runs):")
    for name, p in bw["probes"].items():
        title = _PROBE_TITLES.get(name, name)
        nthr = "?" if p["threads"] is None else p["threads"]
        mark = "  <- floor" if name == bw["floor"] else ""
        lines.append(f"  {title:<36} {nthr} thread(s) {p['gbps']:7.1f} GB/s{mark}")
    lines.append(f"floor = bytes moved (inputs read once + outputs written once) / "
                 f"{bw['floor_gbps']:.1f} GB/s ({_PROBE_TITLES.get(bw['floor'], bw['floor'])})")
    if blas is not None:
        rates = ", ".join(f"{d} {r['gflops']:.1f} GFLOP/s" for d, r in blas["rates"].items())
        lines.append(f"BLAS rate ({blas['what']}, {blas['n']}x{blas['n']} matrices, median of "
                     f"{blas['repeat']} runs, {blas_threads} thread(s)): "
                     f"{rates}")
        lines.append("GEMM floor (the rows with GFLOP/s) = matrix-product FLOPs / that "
                     "rate for the row's dtype")
    lines.append("time = median per call; nnkernels writes into a preallocated out= "
                 "buffer, the reference allocates; GB = 1e9 bytes")
    lines.append("")

    with_torch = s["compare_torch"] and res["torch"] is not None
    with_flops = any(r.get("flops") is not None for r in res["rows"])
    head = ["kernel", "shape", "dtype", "time", "GB/s"] + ["GFLOP/s"] * with_flops
    head += ["floor", "%floor", "vs ref"]
    if with_torch:
        head += ["torch", "vs torch"]
    table = []
    for r in res["rows"]:
        cells = [r["kernel"], _shape_str(r["shape"]), r["dtype"], _fmt_time(r["time_s"]),
                 _fmt(r["gbps"], ".1f")]
        if with_flops:
            cells.append(_fmt(r["gflops"], ".1f"))
        cells += [_fmt_time(r["floor_s"]), _fmt(r["pct_floor"], ".0f", "%"),
                  _fmt(r["speedup_reference"], ".1f", "x")]
        if with_torch:
            cells += [_fmt_time(r["torch_s"]), _fmt(r["speedup_torch"], ".2f", "x")]
        table.append(cells)
    widths = [max(len(c[i]) for c in [head] + table) for i in range(len(head))]
    left = {0, 1, 2}

    def fmt_line(cells):
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines.append(fmt_line(head))
    lines.append(fmt_line(["-" * w for w in widths]))
    prev_dtype = None
    for r, cells in zip(res["rows"], table):
        if prev_dtype is not None and r["dtype"] != prev_dtype:
            lines.append("")
        lines.append(fmt_line(cells))
        prev_dtype = r["dtype"]
    lines.append("")
    lines.append("vs ref = reference time / nnkernels time"
                 + ("; vs torch = torch time / nnkernels time" if with_torch else "")
                 + "; %floor above 100% means the data stayed in cache"
                 + (" (GFLOP/s rows: the products ran faster than the probe)"
                    if with_flops else ""))
    if with_flops:
        counted = res.get("flops_counted", {})
        lines.extend(textwrap.wrap("FLOPs counted: " + "; ".join(
            f"{k}: {v}" for k, v in counted.items()), width=100, subsequent_indent="  "))
    if with_torch:
        ops = res["torch_ops"]
        lines.extend(textwrap.wrap("torch runs: " + "; ".join(f"{k}: {v}" for k, v in ops.items()),
                                   width=100, subsequent_indent="  "))
    for note in res["notes"]:
        lines.append("note: " + note)
    for r in res["rows"]:
        for backend, err in r["errors"].items():
            lines.append(f"error: {r['kernel']} {_shape_str(r['shape'])} {r['dtype']} "
                         f"[{backend}]: {err}")
    return "\n".join(lines)


def plot_report(res, path):
    """Draw the speed-ups of a ``run_bench`` result into ``path`` (needs matplotlib).

    One panel per dtype; per row, a bar for the speed-up over the reference
    and one over torch (when measured), on a log scale.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    rows = [r for r in res["rows"] if r["time_s"] is not None]
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    labels = list(dict.fromkeys(f"{r['kernel']} {_shape_str(r['shape'])}" for r in rows))
    series = [("speedup_reference", "vs reference (NumPy)")]
    if any(r["speedup_torch"] is not None for r in rows):
        series.append(("speedup_torch", "vs torch"))
    ypos = np.arange(len(labels))
    height = 0.8 / len(series)
    fig, axes = plt.subplots(
        1, len(dtypes), sharex=True, sharey=True, squeeze=False,
        figsize=(5.0 * len(dtypes) + 2.5, 1.5 + 0.17 * len(labels) * len(series)))
    for ax, dtype in zip(axes[0], dtypes):
        by_label = {f"{r['kernel']} {_shape_str(r['shape'])}": r
                    for r in rows if r["dtype"] == dtype}
        for i, (key, name) in enumerate(series):
            vals = [(by_label.get(lab) or {}).get(key) or 0.0 for lab in labels]
            bars = ax.barh(ypos + i * height, vals, height=height, label=name)
            ax.bar_label(bars, labels=[f"{v:.2g}x" if v else "" for v in vals],
                         fontsize=6, padding=2)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.grid(axis="x", which="major", alpha=0.3)
        ax.set_title(dtype, fontsize=9)
        ax.set_xlabel("speed-up of nnkernels (log scale)", fontsize=8)
    ax0 = axes[0][0]
    ax0.set_yticks(ypos + height * (len(series) - 1) / 2)
    ax0.set_yticklabels(labels, fontsize=7)
    ax0.invert_yaxis()
    axes[0][-1].legend(loc="lower right", fontsize=7)
    thr = res["settings"]["threads"]
    fig.suptitle(f"nnkernels {res['nnkernels'].get('version', '')}: speed-up over the "
                 f"reference and torch, {thr} thread(s), {res['machine']['cpu']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
