"""The BLAS the dense layer's products run on: choose, load, report.

Three providers share the reference BLAS calling convention, so each is two
entry points (sgemm, dgemm) put into _blas's one table:

- "scipy": SciPy's BLAS through scipy.linalg.cython_blas; always there.
- "mkl": Intel MKL's single dynamic library (libmkl_rt) from the `mkl`
  package (``pip install nnkernels[mkl]``).
- "openblas": the OpenBLAS of the `scipy-openblas32` package
  (``pip install nnkernels[openblas]``), its symbols prefixed ``scipy_``.

"auto" (the default, or ``NNKERNELS_BLAS``) takes the first installed one of
AUTO_ORDER for this CPU's vendor (see docs/building.md for the measurements
behind the order).  Every loaded BLAS's thread pool follows
set_num_threads, so no second pool competes for the cores.
"""

from __future__ import annotations

import ctypes
import glob
import os
import threading

from . import _blas

PROVIDERS = ("scipy", "mkl", "openblas")
NAMES = PROVIDERS + ("auto",)
PACKAGES = {"mkl": ("mkl", "nnkernels[mkl]"),
            "openblas": ("scipy-openblas32", "nnkernels[openblas]")}
# The order "auto" tries, per CPU vendor.  MKL runs its fastest code paths
# only on Intel CPUs; elsewhere it is not preferred (docs/building.md).
AUTO_ORDER = {"GenuineIntel": ("mkl", "openblas", "scipy")}
AUTO_ORDER_OTHER = ("openblas", "scipy")
# MKL's threading layers (mkl_service.h): Intel OpenMP is the one the `mkl`
# package ships its runtime for (intel-openmp); MKL_THREADING_LAYER overrides.
MKL_THREADING_INTEL = 0
MKL_INTERFACE_LP64 = 0

_lock = threading.Lock()
_loaded: dict = {}          # name -> Provider
_active = None              # the Provider in the table


class Provider:
    """A loaded BLAS: its name, entry points, library file and version."""

    def __init__(self, name, sgemm, dgemm, path, version, threading_layer, handle=None):
        self.name, self.sgemm, self.dgemm = name, sgemm, dgemm
        self.path, self.version, self.threading_layer = path, version, threading_layer
        self.handle = handle        # keeps a ctypes-loaded library loaded

    def describe(self):
        return f"{self.name}: {self.version} ({self.threading_layer}), {self.path}"


def _not_installed(name, why):
    package, extra = PACKAGES[name]
    return ImportError(f"nnkernels: BLAS provider {name!r} needs the {package!r} package "
                       f"(pip install {extra!r}); {why}")


def _load_scipy():
    import scipy
    sgemm, dgemm = _blas.scipy_addresses()
    # a SciPy wheel's BLAS lies in scipy.libs/ beside the package (a SciPy
    # linked to a system BLAS is reported without its file)
    here = os.path.dirname(os.path.dirname(os.path.realpath(scipy.__file__)))
    pool = _pool_of(lambda p: os.path.dirname(os.path.realpath(p))
                    == os.path.join(here, "scipy.libs"))
    return Provider("scipy", sgemm, dgemm,
                    pool.filepath if pool else "scipy.linalg.cython_blas",
                    f"SciPy {scipy.__version__}"
                    + (f", {pool.internal_api} {pool.version}" if pool else ""),
                    pool.threading_layer if pool else "unknown")


def _load_openblas():
    try:
        import scipy_openblas32
    except ImportError as e:
        raise _not_installed("openblas", "it is not installed") from e
    lib_dir = scipy_openblas32.get_lib_dir()
    found = sorted(glob.glob(os.path.join(lib_dir, f"lib{scipy_openblas32.get_library()}.so*"))
                   + glob.glob(os.path.join(lib_dir, f"lib{scipy_openblas32.get_library()}"
                                                      "*.dylib")))
    if not found:
        raise _not_installed("openblas", f"no library file in {lib_dir}")
    try:
        lib = ctypes.CDLL(found[0])
    except OSError as e:
        raise _not_installed("openblas", f"loading {found[0]} failed: {e}") from e
    prefix = scipy_openblas32.get_symbol_prefix() if hasattr(
        scipy_openblas32, "get_symbol_prefix") else "scipy_"
    sgemm = ctypes.cast(getattr(lib, f"{prefix}sgemm_"), ctypes.c_void_p).value
    dgemm = ctypes.cast(getattr(lib, f"{prefix}dgemm_"), ctypes.c_void_p).value
    config = scipy_openblas32.get_openblas_config()
    return Provider("openblas", sgemm, dgemm, found[0], f"scipy-openblas32, {config}",
                    "pthreads", lib)


def _mkl_library():
    from importlib import metadata
    try:
        dist = metadata.distribution("mkl")
    except metadata.PackageNotFoundError as e:
        raise _not_installed("mkl", "it is not installed") from e
    for f in dist.files or ():
        base = os.path.basename(str(f))
        if base.startswith("libmkl_rt.so") or base in ("libmkl_rt.dylib", "mkl_rt.2.dll"):
            return str(dist.locate_file(f))
    raise _not_installed("mkl", "its libmkl_rt library was not found in the package")


def _load_mkl():
    path = _mkl_library()
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        raise _not_installed("mkl", f"loading {path} failed: {e}") from e
    # the layer must be chosen before MKL's first computation
    lib.MKL_Set_Interface_Layer(MKL_INTERFACE_LP64)
    if not os.environ.get("MKL_THREADING_LAYER"):
        lib.MKL_Set_Threading_Layer(MKL_THREADING_INTEL)
    buf = ctypes.create_string_buffer(256)
    lib.MKL_Get_Version_String(buf, len(buf))
    sgemm = ctypes.cast(lib.sgemm_, ctypes.c_void_p).value
    dgemm = ctypes.cast(lib.dgemm_, ctypes.c_void_p).value
    layer = os.environ.get("MKL_THREADING_LAYER") or "intel (Intel OpenMP)"
    return Provider("mkl", sgemm, dgemm, os.path.normpath(path), buf.value.decode(errors="replace").strip(),
                    layer.lower(), lib)


_LOADERS = {"scipy": _load_scipy, "mkl": _load_mkl, "openblas": _load_openblas}


def _pool_of(match):
    """threadpoolctl's controller of the loaded BLAS whose file path matches."""
    from threadpoolctl import ThreadpoolController
    for pool in ThreadpoolController().select(user_api="blas").lib_controllers:
        if match(pool.filepath):
            return pool
    return None


def load(name):
    """The Provider `name` ("scipy", "mkl", "openblas"), loaded once."""
    with _lock:
        if name not in _loaded:
            _loaded[name] = _LOADERS[name]()
        return _loaded[name]


def cpuinfo_field(key):
    """The first value of `key` in /proc/cpuinfo, or None (no such file or key)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_vendor():
    return cpuinfo_field("vendor_id") or "unknown"


def resolve(name):
    """The provider name `name` stands for ("auto": the first installed one
    of this CPU's order)."""
    if name != "auto":
        return name
    for candidate in AUTO_ORDER.get(cpu_vendor(), AUTO_ORDER_OTHER):
        try:
            load(candidate)
            return candidate
        except ImportError:
            continue
    return "scipy"


def check_name(name, what="set_blas"):
    if not isinstance(name, str):
        raise TypeError(f"{what}: name must be a str, got {type(name).__name__}")
    if name not in NAMES:
        raise ValueError(f"{what}: name must be one of {NAMES}, got {name!r}")
    return name


def use(name):
    """Put provider `name` (or "auto") into the table; returns its Provider."""
    global _active
    provider = load(resolve(check_name(name)))
    _blas.use(provider.sgemm, provider.dgemm)
    _active = provider
    return provider


def active():
    """The Provider in the table, choosing it from NNKERNELS_BLAS (default
    "auto") on first use."""
    if _active is None:
        requested = os.environ.get("NNKERNELS_BLAS", "").strip() or "auto"
        check_name(requested, "NNKERNELS_BLAS")
        use(requested)
    return _active


def installed():
    """The providers that load here, in PROVIDERS order."""
    names = []
    for name in PROVIDERS:
        try:
            load(name)
            names.append(name)
        except ImportError:
            pass
    return names
