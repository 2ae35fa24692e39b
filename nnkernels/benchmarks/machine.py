"""Probes of the machine: memory bandwidth, BLAS rate, thread pinning, CPU model.

``measure_bandwidth`` and ``measure_blas`` give the rates the bench's floors
are computed with (bytes over GB/s, matrix-product FLOPs over GFLOP/s);
``pinned_threads`` runs PyTorch and NumPy's BLAS on nnkernels' thread count
for a block; ``machine_info`` describes the machine and the software.
"""

import contextlib
import os
import platform
import statistics
import sys

import numpy as np

from .timing import sample, settle

__all__ = ["GB", "measure_bandwidth", "measure_blas", "pinned_threads", "machine_info"]

GB = 1e9  # GB/s in the tables are 10**9 bytes per second


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
    if nk is not None:
        threads = nk.get_num_threads()
        probes["nnkernels_relu_backward"] = (
            lambda: nk.relu_backward(a, b, out=c), 3, threads,
            "nnkernels.relu_backward(g, a, out=o)")
    result = {}
    for name, (fn, narrays, threads, what) in probes.items():
        fn()
        # the median, as for the kernels' rows: a best-of on a shared machine
        # catches bursts the kernels are never measured against
        best = statistics.median(sample(fn, 1) for _ in range(repeat))
        moved = narrays * a.nbytes
        result[name] = {"gbps": moved / best / GB, "bytes": moved, "best_s": best,
                        "threads": threads, "what": what}
    floor = max(result, key=lambda k: result[k]["gbps"])
    return {"probes": result, "floor": floor, "floor_gbps": result[floor]["gbps"]}


def measure_blas(nk, providers, dtypes=("float32",), *, n=2048, repeat=5):
    """Measure the matrix-product rate of each BLAS provider, per dtype.

    ``nk.dense_forward(a, b, out=c)`` of two ``n`` x ``n`` matrices (one
    gemm, 2·n³ FLOPs; nothing else is done with no bias and no activation),
    median of ``repeat`` calls after one warm-up call, on the provider's
    current threads. From n = 512 on the rate of a 2-core machine is on its
    plateau (within a few %); 2048 leaves room for more cores. The floor of
    the dense rows is the best provider's rate.

    Returns dict(what, n, repeat, providers={name: {dtype: dict(gflops,
    flops, median_s)}}, rates={dtype: the best provider's entry plus its
    name under "provider"}).
    """
    rng = np.random.default_rng(2)
    before = nk.get_blas()
    per_provider = {}
    try:
        for dtype in dict.fromkeys(np.dtype(d).name for d in dtypes):
            dt = np.dtype(dtype)
            a, b = rng.standard_normal((n, n), dtype=dt), rng.standard_normal((n, n), dtype=dt)
            c = np.empty_like(a)
            fn = lambda: nk.dense_forward(a, b, out=c)  # noqa: E731
            for name in providers:
                nk.set_blas(name)
                settle()
                fn()
                median = statistics.median(sample(fn, 1) for _ in range(repeat))
                flops = 2 * n ** 3
                per_provider.setdefault(name, {})[dtype] = {
                    "gflops": flops / median / GB, "flops": flops, "median_s": median}
    finally:
        nk.set_blas(before)
    rates = {}
    for name, by_dtype in per_provider.items():
        for dtype, r in by_dtype.items():
            if dtype not in rates or r["gflops"] > rates[dtype]["gflops"]:
                rates[dtype] = dict(r, provider=name)
    return {"what": "dense_forward(a, b, out=c), one gemm", "n": n, "repeat": repeat,
            "providers": per_provider, "rates": rates}


@contextlib.contextmanager
def pinned_threads(threads, torch):
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


def _cpu_model():
    from nnkernels._blas_providers import cpuinfo_field
    return cpuinfo_field("model name") or platform.processor() or platform.machine()


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

