"""Pick the kernel build for this CPU, and hold the thread count.

Every kernel source is compiled once per instruction-set level (see
setup.py).  At import the widest level that is both compiled and supported
by the CPU is loaded; ``NNKERNELS_ISA=baseline|avx2|avx512`` forces one
(an error if the CPU or the build lacks it), which the tests use to check
every build against the reference.
"""

import importlib
import importlib.util
import os

from . import _runtime

ISA_LEVELS = _runtime.ISA_LEVELS
KERNEL_MODULES = ("_activations", "_softmax_losses")


def _is_compiled(isa):
    """Whether the build exists, found WITHOUT importing it: a module compiled
    for a wider ISA runs wide instructions in its own init code, so importing
    it on a CPU that lacks them kills the process (SIGILL)."""
    return all(importlib.util.find_spec(f"nnkernels.{name}_{isa}") is not None
               for name in KERNEL_MODULES)


def _load(isa):
    return [importlib.import_module(f"nnkernels.{name}_{isa}") for name in KERNEL_MODULES]


def _select():
    supported = _runtime.cpu_isa_levels()
    requested = os.environ.get("NNKERNELS_ISA", "").strip()
    if requested:
        if requested not in ISA_LEVELS:
            raise ValueError(f"NNKERNELS_ISA must be one of {ISA_LEVELS}, got {requested!r}")
        if requested not in supported:
            raise RuntimeError(f"NNKERNELS_ISA={requested}: this CPU supports only {supported}")
        if not _is_compiled(requested):
            raise ImportError(f"NNKERNELS_ISA={requested}: nnkernels was built without it")
        return requested, _load(requested)
    for isa in reversed(supported):
        if _is_compiled(isa):
            return isa, _load(isa)
    raise ImportError("nnkernels: no compiled kernel build found")


ISA, (activations, softmax_losses) = _select()
ISAS_COMPILED = tuple(isa for isa in ISA_LEVELS if _is_compiled(isa))

_num_threads = max(1, _runtime.omp_max_threads())


def set_num_threads(n):
    """Set the number of OpenMP threads the kernels use (n >= 1)."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int):
        try:
            n = n.__index__()
        except AttributeError:
            raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}") from None
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    _num_threads = int(n)


def get_num_threads():
    """The number of OpenMP threads the kernels use.

    Defaults to omp_get_max_threads(), which honours OMP_NUM_THREADS; always 1
    in a build without OpenMP.
    """
    return _num_threads if _runtime.openmp_enabled() else 1


def build_info():
    """Version, build and runtime facts (what ``python -m nnkernels info`` prints)."""
    from . import __version__
    return {
        "version": __version__,
        "isa": ISA,
        "isas_compiled": list(ISAS_COMPILED),
        "isas_cpu": list(_runtime.cpu_isa_levels()),
        "openmp": _runtime.openmp_enabled(),
        "openmp_version": _runtime.openmp_version(),
        "omp_max_threads": _runtime.omp_max_threads(),
        "num_threads": get_num_threads(),
        "compile_args": activations.COMPILE_ARGS,
    }
