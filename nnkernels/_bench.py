"""Benchmarks of the nnkernels kernels against ``nnkernels.reference`` and PyTorch.

Everything here is driven by one registry, ``KERNELS``: each entry names a
kernel, says how to build its inputs for a shape and dtype, which sizes to
measure and what PyTorch runs for it. The nnkernels function and the
reference function are called the same way (the contract gives them the same
signature), so an entry does not spell out the calls; the bytes a call moves
are counted from its arrays (inputs read once, outputs written once).

``python -m nnkernels bench`` (see ``nnkernels._cli``) and the pytest-benchmark
suites under ``bench/`` both use this module.

Timing (``time_functions``): every backend is warmed up and calibrated to a
number of calls per sample lasting at least ``min_sample`` seconds; the
samples of the backends of one row are taken in alternating blocks on the
same input arrays, and the median per-call time is reported.
nnkernels is called with a preallocated ``out=`` buffer, as a training loop
would; the reference is called as written (it allocates its results).
"""

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
    "prime_allocator",
    "time_functions",
    "run_bench",
    "format_report",
    "plot_report",
    "bytes_moved",
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
        Name of the function in ``nnkernels`` and ``nnkernels.reference``.
    group : str
        "activations", "softmax" or "losses" (the ``bench/`` suites select by it).
    make_inputs : callable
        ``make_inputs(shape, dtype, rng) -> dict``: the positional arguments of
        the call, in order, by name.
    sizes : tuple of (label, shape)
        The small, medium and large shapes.
    quick : tuple of str
        The size labels measured with ``--quick``.
    torch_setup : callable or None
        ``torch_setup(torch, *tensors) -> fn``: ``fn()`` runs the PyTorch
        equivalent once on the given tensors (built from the same arrays).
    torch_label : str
        What the PyTorch column runs, for the notes and the JSON file.
    """

    name: str
    group: str
    make_inputs: object
    sizes: tuple
    quick: tuple
    torch_setup: object = None
    torch_label: str = ""

    def shapes(self, quick=False):
        """The (label, shape) pairs to measure."""
        return tuple((lab, s) for lab, s in self.sizes if not quick or lab in self.quick)

    def bind(self, module, inputs, out=None):
        """A zero-argument function calling ``module.<name>`` on ``inputs``."""
        fn = getattr(module, self.name)
        args = tuple(inputs.values())
        if out is None:
            return lambda: fn(*args)
        return lambda: fn(*args, out=out)

    def make_out(self, inputs):
        """The ``out=`` buffer: like the first input (the activation or logits)."""
        return np.empty_like(next(iter(inputs.values())))

    def bind_torch(self, torch, inputs):
        """A zero-argument function running the PyTorch equivalent, or None."""
        if self.torch_setup is None:
            return None
        tensors = [torch.from_numpy(v) for v in inputs.values()]
        return self.torch_setup(torch, *tensors)


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
_T_SIGMOID_BW = _torch_out(
    lambda torch, g, a, o: torch.ops.aten.sigmoid_backward.grad_input(g, a, grad_input=o))
_T_TANH_BW = _torch_out(
    lambda torch, g, a, o: torch.ops.aten.tanh_backward.grad_input(g, a, grad_input=o))
_T_RELU_BW = _torch_out(
    lambda torch, g, a, o: torch.ops.aten.threshold_backward.grad_input(g, a, 0, grad_input=o))
_T_SOFTMAX = _torch_out(lambda torch, z, o: torch.softmax(z, -1, out=o))
_T_LOG_SOFTMAX = _torch_out(lambda torch, z, o: torch.log_softmax(z, -1, out=o))
_T_SOFTMAX_BW = _torch_out(
    lambda torch, g, p, o: torch.ops.aten._softmax_backward_data.out(
        g, p, -1, p.dtype, grad_input=o))
_T_CE = _torch_autograd(lambda F, x, t: F.cross_entropy(x, t))
_T_SIGMOID_BCE = _torch_autograd(lambda F, x, t: F.binary_cross_entropy_with_logits(x, t))
_T_BCE = _torch_autograd(lambda F, x, t: F.binary_cross_entropy(x, t))
_T_MSE = _torch_autograd(lambda F, x, t: F.mse_loss(x, t))


# ---- the registry --------------------------------------------------------

_ACT_SIZES = (("small", (128, 512)), ("medium", (1024, 1024)), ("large", (8192, 4096)))
_CLASS_SIZES = (("small", (128, 10)), ("medium", (4096, 1000)), ("large", (512, 32000)))
# the element-wise losses' large size is smaller than the activations': the
# reference sigmoid_binary_cross_entropy takes seconds at (8192, 4096)
_LOSS_SIZES = (("small", (128, 512)), ("medium", (1024, 1024)), ("large", (2048, 2048)))
_ALL = ("small", "medium", "large")

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
    (another library's idle OpenMP threads still spinning, cold caches).

    Returns a dict name -> dict(median, min, max, number, repeat, samples),
    times in seconds per call.
    """
    fns = {k: f for k, f in fns.items() if f is not None}
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        cal = {k: _calibrate(f, min_sample) for k, f in fns.items()}
        round_s = sum(n * t for n, t in cal.values())
        repeat = int(budget / max(round_s, 1e-9))
        repeat = max(min_repeat, min(max_repeat, repeat))
        passes = 2 if repeat >= 10 else 1
        samples = {k: [] for k in fns}
        for p in range(passes):
            for k, f in fns.items():
                number = cal[k][0]
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
    missing = [k.name for k in entries if not hasattr(nk, k.name)]
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
        elif threads is not None:
            torch.set_num_threads(threads)

    if quick:
        timing = dict(min_sample=1e-3, budget=0.2, min_repeat=3, max_repeat=50)
        bw_repeat = 3
    else:
        timing = dict(min_sample=2e-3, budget=1.0, min_repeat=5, max_repeat=200)
        bw_repeat = 7

    machine = machine_info()  # before the run: its load average is the others'
    if machine.get("loadavg_1min", 0.0) >= 0.5 * (machine["logical_cpus"] or 1):
        notes.append(f"the 1-minute load average was {machine['loadavg_1min']:.2f} at the "
                     "start: other processes compete for the CPUs, timings are noisy")
    prime_allocator()
    log("measuring memory bandwidth ...")
    bandwidth = measure_bandwidth(nk, repeat=bw_repeat)
    floor_bw = bandwidth["floor_gbps"] * GB

    rows = []
    rng = np.random.default_rng(seed)
    for dtype in dtypes:
        dt = np.dtype(dtype)
        for kernel in entries:
            for label, shape in kernel.shapes(quick):
                log(f"{kernel.name} {shape} {dt.name} ...")
                inputs = kernel.make_inputs(shape, dt, rng)
                out = kernel.make_out(inputs)
                errors = {}
                fns = {
                    "nnkernels": _try_bind(lambda: kernel.bind(nk, inputs, out),
                                           errors, "nnkernels"),
                    "reference": _try_bind(lambda: kernel.bind(reference, inputs),
                                           errors, "reference"),
                }
                if torch is not None and kernel.torch_setup is not None:
                    fns["torch"] = _try_bind(lambda: kernel.bind_torch(torch, inputs),
                                             errors, "torch")
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
                nbytes = bytes_moved(inputs, result)
                times = time_functions(fns, **timing)
                row = _make_row(kernel, label, shape, dt, nbytes, times, floor_bw, errors)
                rows.append(row)
                del inputs, out, fns, result
    return {
        "machine": machine,
        "nnkernels": _build_info(nk),
        "torch": None if torch is None else torch.__version__,
        "settings": {"quick": quick, "dtypes": list(dtypes), "threads": threads,
                     "torch_threads": None if torch is None else torch.get_num_threads(),
                     "compare_torch": compare_torch, "seed": seed, **timing},
        "bandwidth": bandwidth,
        "torch_ops": {k.name: k.torch_label for k in entries if k.torch_setup is not None},
        "notes": notes,
        "rows": rows,
    }


def _build_info(nk):
    if hasattr(nk, "build_info"):
        try:
            return {k: v for k, v in nk.build_info().items()}
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
    return {"version": getattr(nk, "__version__", None)}


def _make_row(kernel, label, shape, dt, nbytes, times, floor_bw, errors):
    t = {k: v["median"] for k, v in times.items()}
    nk_t = t.get("nnkernels")
    floor_s = nbytes / floor_bw
    row = {
        "kernel": kernel.name,
        "size": label,
        "shape": list(shape),
        "dtype": dt.name,
        "bytes": nbytes,
        "time_s": nk_t,
        "gbps": None if nk_t is None else nbytes / nk_t / GB,
        "floor_s": floor_s,
        "pct_floor": None if nk_t is None else 100.0 * floor_s / nk_t,
        "reference_s": t.get("reference"),
        "torch_s": t.get("torch"),
        "speedup_reference": None,
        "speedup_torch": None,
        "timings": times,
        "errors": errors,
    }
    if nk_t is not None:
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
    lines.append(thr + "; NumPy (reference) runs element-wise work on 1 thread")
    lines.append("memory bandwidth (64 MiB float32 arrays, median of several runs):")
    for name, p in bw["probes"].items():
        title = _PROBE_TITLES.get(name, name)
        nthr = "?" if p["threads"] is None else p["threads"]
        mark = "  <- floor" if name == bw["floor"] else ""
        lines.append(f"  {title:<36} {nthr} thread(s) {p['gbps']:7.1f} GB/s{mark}")
    lines.append(f"floor = bytes moved (inputs read once + outputs written once) / "
                 f"{bw['floor_gbps']:.1f} GB/s ({_PROBE_TITLES.get(bw['floor'], bw['floor'])})")
    lines.append("time = median per call; nnkernels writes into a preallocated out= "
                 "buffer, the reference allocates; GB = 1e9 bytes")
    lines.append("")

    with_torch = s["compare_torch"] and res["torch"] is not None
    head = ["kernel", "shape", "dtype", "time", "GB/s", "floor", "%floor", "vs ref"]
    if with_torch:
        head += ["torch", "vs torch"]
    table = []
    for r in res["rows"]:
        cells = [r["kernel"], _shape_str(r["shape"]), r["dtype"], _fmt_time(r["time_s"]),
                 _fmt(r["gbps"], ".1f"), _fmt_time(r["floor_s"]),
                 _fmt(r["pct_floor"], ".0f", "%"), _fmt(r["speedup_reference"], ".1f", "x")]
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
                 + "; %floor above 100% means the data stayed in cache")
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
