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

import importlib.util
import math
from dataclasses import dataclass

import numpy as np

from . import torch_twins as tt
from .inputs import (_in_z, _in_sigmoid_backward, _in_tanh_backward, _in_relu_backward,
                     _in_grad_z, _in_softmax_backward, _in_cross_entropy, _in_sigmoid_bce,
                     _in_bce, _in_mse, _in_dense_forward, _in_dense_backward,
                     _out_dense_forward, _out_dense_backward, _in_mlp_step, _mlp_step,
                     _in_thinc_mlp_step, _thinc_mlp_step,
                     _gelu_tanh, _gelu_tanh_backward, _MLP_SIZES, _in_adam,
                     _in_adam_amsgrad, _in_sgd_momentum, _adam_step, _adam_amsgrad_step,
                     _sgd_momentum_step)

__all__ = ["Kernel", "KERNELS", "get_kernel", "bench_cases", "bytes_moved", "mlp_step_flops",
           "thinc_mlp_step_flops", "missing_requirements"]


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
    reference_label : str
        What the reference column runs, where it is not ``nnkernels.reference``.
    requires : tuple of (str, str)
        ``(module, install hint)`` pairs: the entry is skipped, with a note,
        where one of these modules cannot be imported.
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
    reference_label: str = ""
    requires: tuple = ()

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


# ---- FLOPs of the matrix products ----------------------------------------

def _gemm_flops(products):
    """FLOPs of ``products`` (N, in) x (in, out) products for a shape (N, in, out)."""
    return lambda shape: 2 * products * math.prod(shape)


def thinc_mlp_step_flops(shape):
    """As ``mlp_step_flops``, with the first layer's grad_x: Thinc's layers
    always return their input's gradient."""
    n, *sizes = shape
    return 3 * sum(2 * n * fan_in * fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:]))


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
# --quick leaves out the large size of the activations whose NumPy reference
# takes seconds a call there (erf, exp, log1p over 32 Mi elements)
_ACT_QUICK = ("small", "medium")
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
    Kernel("tanh", "activations", _in_z, _ACT_SIZES, _ACT_QUICK,
           tt.tanh, "torch.tanh(z, out=)"),
    Kernel("gelu", "activations", _in_z, _ACT_SIZES, _ACT_QUICK,
           tt.gelu, "aten.gelu.out(approximate='none')"),
    Kernel("gelu_backward", "activations", _in_grad_z, _ACT_SIZES, _ACT_QUICK,
           tt.gelu_backward, "aten.gelu_backward.grad_input(approximate='none')"),
    Kernel("gelu_tanh", "activations", _in_z, _ACT_SIZES, _ACT_QUICK,
           tt.gelu_tanh, "aten.gelu.out(approximate='tanh')", setup=_gelu_tanh),
    Kernel("gelu_tanh_backward", "activations", _in_grad_z, _ACT_SIZES, _ACT_QUICK,
           tt.gelu_tanh_backward, "aten.gelu_backward.grad_input(approximate='tanh')",
           setup=_gelu_tanh_backward),
    Kernel("silu", "activations", _in_z, _ACT_SIZES, _ACT_QUICK,
           tt.silu, "aten.silu.out"),
    Kernel("silu_backward", "activations", _in_grad_z, _ACT_SIZES, _ACT_QUICK,
           tt.silu_backward, "aten.silu_backward.grad_input"),
    Kernel("leaky_relu", "activations", _in_z, _ACT_SIZES, _ACT_QUICK,
           tt.leaky_relu, "aten.leaky_relu.out(0.01)"),
    Kernel("leaky_relu_backward", "activations", _in_grad_z, _ACT_SIZES, _ACT_QUICK,
           tt.leaky_relu_backward, "aten.leaky_relu_backward.grad_input(0.01)"),
    Kernel("elu", "activations", _in_z, _ACT_SIZES, _ACT_QUICK,
           tt.elu, "aten.elu.out(1, 1, 1)"),
    Kernel("elu_backward", "activations", _in_grad_z, _ACT_SIZES, _ACT_QUICK,
           tt.elu_backward, "aten.elu_backward.grad_input(1, 1, 1, is_result=False)"),
    Kernel("softplus", "activations", _in_z, _ACT_SIZES, _ACT_QUICK,
           tt.softplus, "aten.softplus.out(1, 20)"),
    Kernel("softplus_backward", "activations", _in_grad_z, _ACT_SIZES, _ACT_QUICK,
           tt.softplus_backward, "aten.softplus_backward.grad_input(1, 20)"),
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
    Kernel("thinc_mlp_step", "training", _in_thinc_mlp_step, _STEP_SIZES, ("small",),
           flops=thinc_mlp_step_flops,
           flops_label="shape (batch, layer sizes): 2·N·in·out for every layer's forward "
                       "product, grad_w and grad_x",
           setup=_thinc_mlp_step,
           reference_label="the same Thinc model on Thinc's NumpyOps "
                           "(the nnkernels column: on NNKernelsOps)",
           requires=(("thinc", "pip install 'nnkernels[thinc]'"),)),
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


def missing_requirements(kernel):
    """The (module, install hint) pairs of ``kernel.requires`` that do not import."""
    return [(name, hint) for name, hint in kernel.requires
            if importlib.util.find_spec(name) is None]


def bench_cases(group=None, quick=False):
    """(kernel, size label, shape) for every registry entry of ``group`` (None: all)
    whose required modules are installed."""
    return [(k, lab, shape) for k in KERNELS
            if (group is None or k.group == group) and not missing_requirements(k)
            for lab, shape in k.shapes(quick)]

