"""Pick the kernel build for this CPU, and hold the thread count.

Every kernel source is compiled once per instruction-set level (see
setup.py).  At import the widest level that is both compiled and supported
by the CPU is loaded; ``NNKERNELS_ISA=baseline|avx2|avx512`` forces one
(an error if the CPU or the build lacks it), which the tests use to check
every build against the reference.

The dense module is loaded on first use: it links to SciPy's BLAS, and
importing scipy.linalg costs a fifth of a second that users of the other
kernels need not pay.  The thread count set here governs both the OpenMP
passes of every kernel and the threads of that BLAS (see set_num_threads).

A process forked from this one runs the OpenMP passes on one thread: the
OpenMP runtime's worker threads do not survive fork, and the child's first
parallel region would wait for them forever.  BLAS threads are unaffected
(OpenBLAS and MKL restart theirs in the child).
"""

from __future__ import annotations   # signatures show the aliases' names

import importlib
import importlib.util
import operator
import os
import warnings

import numpy as np

from . import _runtime
from ._typing import Any, SupportsIndex

ISA_LEVELS = _runtime.ISA_LEVELS
MAX_THREADS = 1024      # set_num_threads' upper bound
KERNEL_MODULES = ("_activations", "_softmax", "_cross_entropy", "_elementwise_losses",
                  "_optim")                             # loaded at import
LAZY_MODULES = ("_dense",)                              # loaded on first use


def _is_compiled(isa):
    """Whether the build exists, found WITHOUT importing it: a module compiled
    for a wider ISA runs wide instructions in its own init code, so importing
    it on a CPU that lacks them kills the process (SIGILL)."""
    return all(importlib.util.find_spec(f"nnkernels.{name}_{isa}") is not None
               for name in KERNEL_MODULES + LAZY_MODULES)


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


ISA, (activations, softmax, cross_entropy, elementwise_losses, optim) = _select()
ISAS_COMPILED = tuple(isa for isa in ISA_LEVELS if _is_compiled(isa))

_num_threads = max(1, _runtime.omp_max_threads())
_threads_set = False        # whether set_num_threads was called (then the BLAS follows it)
_dense = None


def dense():
    """The dense-layer module of the selected build, imported on first use
    (with the BLAS provider NNKERNELS_BLAS names, default "auto")."""
    global _dense
    if _dense is None:
        from . import _blas_providers
        module = importlib.import_module(f"nnkernels._dense_{ISA}")
        _blas_providers.active()
        _blas_threads()
        _dense = module
    return _dense


class _BlasThreads:
    """The thread pools of the BLAS libraries loaded in this process.

    threadpoolctl finds the provider's library (SciPy's OpenBLAS, MKL,
    scipy-openblas32) and any other BLAS loaded beside it, such as NumPy's;
    all of them follow set_num_threads, so no second pool competes for the
    cores.
    """

    def __init__(self):
        from scipy.linalg import cython_blas  # noqa: F401  (loads SciPy's BLAS)
        from threadpoolctl import ThreadpoolController
        from . import _blas_providers
        self._pools = ThreadpoolController().select(user_api="blas").lib_controllers
        self.library = _blas_providers.active().describe()

    @property
    def controlled(self):
        return bool(self._pools)

    def set(self, n):
        for pool in self._pools:
            pool.set_num_threads(n)

    def get(self):
        """The provider's thread count (None if threadpoolctl cannot see it)."""
        from . import _blas_providers
        path = os.path.realpath(_blas_providers.active().path)
        mine = [p for p in self._pools if os.path.realpath(p.filepath) == path]
        return mine[0].get_num_threads() if mine else None


_blas_threads_instance = None


def _blas_threads():
    global _blas_threads_instance
    if _blas_threads_instance is None:
        _blas_threads_instance = _BlasThreads()
        if _threads_set:
            _blas_threads_instance.set(_num_threads)
    return _blas_threads_instance


def blas_pools_changed():
    """A provider was loaded or chosen: find the pools again, and give every
    one the thread count."""
    global _blas_threads_instance
    _blas_threads_instance = None
    if _dense is not None:
        _blas_threads()


def set_num_threads(n: SupportsIndex) -> None:
    """Set the number of threads the kernels use.

    It sets the OpenMP threads of every element-wise, softmax and loss pass,
    and the threads of the BLAS the dense layer calls (SciPy's OpenBLAS; a
    process-wide setting of that library, as threadpoolctl would make).
    Without a call both follow ``OMP_NUM_THREADS``. Results do not depend on
    the thread count: losses are summed after the parallel loop, and
    element-wise results are bit-identical for any count. A BLAS may cap
    its own count (SciPy's OpenBLAS is built for at most 64 threads):
    ``build_info()["blas_threads"]`` reports what it uses. In a process
    forked from one that had loaded nnkernels the OpenMP kernels stay on one
    thread (OpenMP's threads do not survive fork), and asking for more warns.

    Parameters
    ----------
    n : int
        The thread count, 1 <= n <= 1024 (any integer type; not a bool).

    Raises
    ------
    TypeError
        If `n` is not an integer, or is a bool.
    ValueError
        If `n` is outside [1, 1024].
    MemoryError
        If `n` thread stacks cannot fit under the process's address-space
        limit (``ulimit -v``).

    See Also
    --------
    get_num_threads : The count in use.

    Examples
    --------
    >>> import nnkernels as nk
    >>> before = nk.get_num_threads()
    >>> nk.set_num_threads(1)
    >>> nk.get_num_threads()
    1
    >>> nk.set_num_threads(before)
    """
    global _num_threads, _threads_set
    if isinstance(n, (bool, np.bool_)):
        raise TypeError("set_num_threads: n must be an int, got bool")
    if not isinstance(n, int):
        try:
            n = operator.index(n)
        except TypeError:
            raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}") from None
    if not 1 <= n <= MAX_THREADS:
        # the upper bound keeps libgomp from failing to create its threads
        # (which aborts the process) and the count within a C int
        raise ValueError(f"set_num_threads: n must be between 1 and {MAX_THREADS}, got {n}")
    n = int(n)
    _check_thread_stacks(n)
    _threads_set = True
    if _blas_threads_instance is not None:
        _blas_threads_instance.set(n)
    if _forked and n > 1:
        warnings.warn("nnkernels: this process was forked from one that had loaded "
                      "nnkernels, and OpenMP's threads do not survive fork; the "
                      f"element-wise, softmax and loss kernels stay on one thread (BLAS "
                      f"uses {n}). Start workers with the 'spawn' or 'forkserver' method "
                      "to use threads in them.", RuntimeWarning, stacklevel=2)
        return
    if n != _num_threads:
        from . import _team     # (it imports this module)
        _team.forget_timings()
    _num_threads = n


def _stack_bytes():
    """The stack each OpenMP thread gets: OMP_STACKSIZE, else the process's
    stack limit, which is what glibc gives a new thread."""
    import resource
    size = os.environ.get("OMP_STACKSIZE", os.environ.get("GOMP_STACKSIZE", "")).strip()
    if size:
        units = {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        unit = units.get(size[-1].upper())
        try:
            return int(size[:-1] if unit else size) * (unit or 1 << 10)
        except ValueError:
            pass
    soft, _ = resource.getrlimit(resource.RLIMIT_STACK)
    return soft if soft != resource.RLIM_INFINITY and soft > 0 else 8 << 20


def _check_thread_stacks(n):
    """MemoryError when n threads' stacks cannot fit under the address-space
    limit (ulimit -v): libgomp, failing to create a thread, exits the process."""
    try:
        import resource
        limit, _ = resource.getrlimit(resource.RLIMIT_AS)
        if n == 1 or limit == resource.RLIM_INFINITY:
            return
        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (ImportError, OSError, ValueError):
        return      # no such limit, or no way to read it here
    # a margin for the runtime's own per-thread memory
    need = (n - 1) * (_stack_bytes() + (256 << 10)) + (64 << 20)
    if used + need > limit:
        raise MemoryError(
            f"set_num_threads({n}): {n} threads need about {need / 2**30:.1f} GiB of "
            f"address space for their stacks, and the process limit (ulimit -v) "
            f"leaves {max(limit - used, 0) / 2**30:.1f} GiB; ask for fewer threads")


_forked = False


def _one_thread_after_fork():
    global _num_threads, _forked
    _forked = True
    _num_threads = 1


os.register_at_fork(after_in_child=_one_thread_after_fork)


def get_num_threads() -> int:
    """The number of OpenMP threads the kernels use.

    Defaults to ``omp_get_max_threads()``, which honours ``OMP_NUM_THREADS``;
    always 1 in a build without OpenMP.

    Returns
    -------
    n : int
        The thread count, at least 1.

    See Also
    --------
    set_num_threads : Change it.

    Examples
    --------
    >>> import nnkernels as nk
    >>> nk.get_num_threads() >= 1
    True
    """
    return _num_threads if _runtime.openmp_enabled() else 1


def _blas_provider_name():
    dense()
    from . import _blas_providers
    return _blas_providers.active().name


def build_info() -> dict[str, Any]:
    """Version, build and runtime facts (what ``python -m nnkernels info`` prints).

    The first call loads the dense module's BLAS provider to report it.

    Returns
    -------
    info : dict
        ``version`` (str); ``isa``, the instruction-set build in use
        ("baseline", "avx2" or "avx512"); ``isas_compiled`` and ``isas_cpu``
        (lists of str), the builds in the package and the levels this CPU
        supports; ``openmp`` (bool), ``openmp_version`` and
        ``omp_max_threads``; ``num_threads`` (int), as
        :func:`get_num_threads`; ``compile_args``, the compiler flags of the
        build; ``blas_provider`` (str), as :func:`get_blas`; ``blas`` (str),
        its version, threading layer and library file, and ``blas_threads``
        (int or None), its thread count.

    See Also
    --------
    get_num_threads : The thread count alone.

    Examples
    --------
    >>> import nnkernels as nk
    >>> info = nk.build_info()
    >>> info["version"] == nk.__version__
    True
    >>> info["isa"] in info["isas_compiled"]
    True
    """
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
        "thread_thresholds": dict(_runtime.THREAD_THRESHOLDS),
        "compile_args": activations.COMPILE_ARGS,
        "blas_provider": _blas_provider_name(),
        "blas": _blas_threads().library,
        "blas_threads": _blas_threads().get(),
    }
