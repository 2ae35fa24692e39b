"""Benchmarks of the nnkernels kernels against ``nnkernels.reference`` and PyTorch.

One registry of cases drives both ``python -m nnkernels bench`` and the
pytest-benchmark suites under ``bench/``:

- ``cases``: the registry (``KERNELS``, ``get_kernel``, ``bench_cases``): each
  kernel's inputs, sizes and the work one call does (bytes or FLOPs);
- ``timing``: the timing harness (``time_functions``, ``prime_allocator``);
- ``machine``: the memory-bandwidth and BLAS-rate probes that set the
  floors, thread pinning and ``machine_info``;
- ``torch_twins``: the PyTorch counterpart of every kernel;
- ``run``: ``run_bench``, the bench run, one row per kernel, shape and dtype;
- ``report``: ``format_report`` (the table) and ``plot_report`` (the speed-ups).
"""

from .cases import KERNELS, Kernel, bench_cases, bytes_moved, get_kernel, mlp_step_flops
from .machine import GB, machine_info, measure_bandwidth, measure_blas
from .report import format_report, plot_report
from .run import run_bench
from .timing import STALL_RATIO, prime_allocator, stalled, time_functions

__all__ = [
    "Kernel",
    "KERNELS",
    "get_kernel",
    "bench_cases",
    "bytes_moved",
    "mlp_step_flops",
    "GB",
    "measure_bandwidth",
    "measure_blas",
    "machine_info",
    "prime_allocator",
    "time_functions",
    "stalled",
    "STALL_RATIO",
    "run_bench",
    "format_report",
    "plot_report",
]
