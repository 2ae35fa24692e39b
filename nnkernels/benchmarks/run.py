"""The bench run: every registry case timed against the reference (and torch).

``run_bench`` measures the machine's floors first (memory bandwidth, and the
BLAS rate when a row counts FLOPs), then, per dtype and registry entry, builds
each size's inputs, calls every backend once (a failure becomes an error note
of the row, not a crash) and times them side by side with
``timing.time_functions``. nnkernels is called with a preallocated ``out=``
buffer, as a training loop would; the reference is called as written (it
allocates its results). PyTorch, and NumPy's BLAS where threadpoolctl can
set it, run on the thread count of nnkernels for the length of the run.
The result is a JSON-ready dict that ``report.format_report`` prints.
"""

import time

import numpy as np

from nnkernels import _blas_providers as blas_providers, reference

from . import torch_twins
from .cases import KERNELS, get_kernel, missing_requirements
from .machine import GB, machine_info, measure_bandwidth, measure_blas, pinned_threads
from .timing import prime_allocator, stalled, time_functions

__all__ = ["run_bench"]


def _try_bind(make, errors, key):
    try:
        return make()
    except Exception as exc:
        errors[key] = f"{type(exc).__name__}: {exc}"
        return None


def _available(entries):
    """(the entries whose required modules import, a note per skipped one)."""
    kept, notes = [], []
    for kernel in entries:
        missing = missing_requirements(kernel)
        if missing:
            notes += [f"{kernel.name}: skipped, {name} is not installed ({hint})"
                      for name, hint in missing]
        else:
            kept.append(kernel)
    return tuple(kept), notes


def run_bench(nk, *, quick=False, dtypes=("float32",), compare_torch=False,
              kernels=None, seed=0, log=None, blas=None):
    """Run the benchmark; return a JSON-ready dict (see ``format_report``).

    ``nk`` is the ``nnkernels`` module. ``kernels`` restricts the run to these
    registry names. ``blas`` lists the BLAS providers the dense and training
    rows run under, one row each (default: every installed one); the other
    rows run once. ``log`` (a callable taking a str) reports progress.
    """
    start = time.perf_counter()
    log = log or (lambda msg: None)
    entries = KERNELS if kernels is None else tuple(get_kernel(k) for k in kernels)
    notes = []
    entries, skipped = _available(entries)
    notes += skipped
    notes += [f"{k.name}: the reference column runs {k.reference_label}"
              for k in entries if k.reference_label]
    threads = nk.get_num_threads()
    torch = None
    if compare_torch:
        torch, note = torch_twins.import_torch()
        if note:
            notes.append(note)
            log(note)

    if quick:
        timing = dict(min_sample=1e-3, budget=0.2, min_repeat=3, max_repeat=50)
        probe_repeat = 3
    else:
        timing = dict(min_sample=2e-3, budget=0.6, min_repeat=5, max_repeat=200)
        probe_repeat = 7

    machine = machine_info()  # before the run: its load average is the others'
    if machine.get("loadavg_1min", 0.0) >= 0.5 * (machine["logical_cpus"] or 1):
        notes.append(f"the 1-minute load average was {machine['loadavg_1min']:.2f} at the "
                     "start: other processes compete for the CPUs, timings are noisy")
    rows = []
    blas, gemm_rates = None, {}
    providers = list(blas_providers.installed()) if blas is None else list(blas)
    provider_before = nk.get_blas()
    with pinned_threads(threads, torch) as pinned:
        prime_allocator()
        log("measuring memory bandwidth ...")
        bandwidth = measure_bandwidth(nk, repeat=probe_repeat)
        floor_bw = bandwidth["floor_gbps"] * GB
        if any(k.flops is not None for k in entries):
            log("measuring the BLAS rate ...")
            blas = measure_blas(nk, providers, dtypes, repeat=probe_repeat)
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
                    for provider in (providers if kernel.flops is not None else [None]):
                        if provider is not None:
                            nk.set_blas(provider)
                        log(f"{kernel.name} {shape} {dt.name}"
                            + ("" if provider is None else f" on {provider}") + " ...")
                        row = _bench_row(nk, reference, torch, kernel, label, shape, dt,
                                         rng, timing, floor_rate)
                        row["blas"] = provider
                        rows.append(row)
    nk.set_blas(provider_before)
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
        "elapsed_s": time.perf_counter() - start,
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
    return dict(nk.build_info())


_RATE_KEYS = {"bytes": "gbps", "flops": "gflops"}


def _make_row(kernel, label, shape, dt, work, times, floor_rate, errors):
    """One row: ``work`` is ``kernel.work(...)``, ``floor_rate`` the bytes or
    FLOPs per second the floor assumes.

    ``stalled_backends`` lists the backends whose samples spread more than
    STALL_RATIO (max/median: a call stalled), ``stalled`` says whether there
    is any; the row's ratios involving them are unreliable.
    """
    quantity, amount, _ = work
    t = {k: v["median"] for k, v in times.items()}
    nk_t = t.get("nnkernels")
    floor_s = amount / floor_rate
    stalled_backends = [k for k, v in times.items() if stalled(v)]
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
        "stalled": bool(stalled_backends),
        "stalled_backends": stalled_backends,
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

