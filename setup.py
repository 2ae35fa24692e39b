"""Build the nnkernels extensions.

Each kernel source (one ``.pyx`` per concern) is compiled once per
instruction-set level into its own module, ``<name>_<isa>``:

* ``baseline``: the compiler's default target (x86-64 SSE2 on x86, any
  other architecture as it comes), always built;
* ``avx2``:     ``-march=x86-64-v3`` (AVX2 + FMA), x86-64 with GCC or Clang;
* ``avx512``:   ``-march=x86-64-v4`` with 512-bit vectors preferred.

At import, ``nnkernels._dispatch`` asks the CPU which levels it supports and
loads the widest one, so a single wheel runs on any x86-64 CPU and still uses
the wide vector units where they exist.  No ``-ffast-math``: NaN and inf keep
their IEEE behaviour; the kernels' reductions are written with independent
lanes so the compiler can vectorise them without reassociating.

OpenMP is used when the compiler accepts ``-fopenmp`` (or ``/openmp``);
``NNKERNELS_DISABLE_OPENMP=1`` builds without it (kernels then run serially
and ``python -m nnkernels info`` says so).

``NNKERNELS_SANITIZE=address,undefined`` (GCC/Clang) builds every module with
those sanitizers, unrecoverable, with frame pointers and debug lines, for the
CI step that runs the tests under them; the runtime has to be preloaded into
Python (see .ci/run).  ``info`` shows the flags, so a run can prove it used
such a build.

The Cython translation and the C compilation run on every core
(``NNKERNELS_BUILD_JOBS=N`` sets the number; ``build_ext -j N`` too).
"""

import os
import platform
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNEL_SOURCES = ["_activations", "_softmax", "_cross_entropy", "_elementwise_losses", "_dense",
                  "_optim"]
# extra GCC/Clang flags of one kernel source: the optimizer updates take square
# roots in their loop, which the compiler vectorises only when sqrt need not
# set errno (nothing reads it; a negative argument gives NaN either way)
SOURCE_FLAGS = {"_optim": ["-fno-math-errno"]}
# compiled once, for the baseline target: they run before any dispatch
PORTABLE_SOURCES = ["_runtime", "_overlap", "_blas"]
IS_X86_64 = platform.machine().lower() in ("x86_64", "amd64")

# level name -> extra flags for GCC/Clang
ISA_FLAGS = {
    "baseline": [],
    "avx2": ["-march=x86-64-v3", "-mtune=generic"],
    "avx512": ["-march=x86-64-v4", "-mtune=generic", "-mprefer-vector-width=512"],
}
CYTHON_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "embedsignature": True,
}


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _compiler_accepts(compiler, flags, source="int main(void) { return 0; }\n"):
    """True when `compiler` compiles and links a tiny C program with `flags`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.c")
        with open(path, "w") as f:
            f.write(source)
        try:
            objects = compiler.compile([path], output_dir=tmp, extra_postargs=flags)
            compiler.link_executable(objects, os.path.join(tmp, "probe"),
                                     extra_postargs=flags)
        except Exception:
            return False
    return True


OPENMP_PROBE = "#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n"


def _jobs():
    """Parallel jobs of the build: NNKERNELS_BUILD_JOBS, or every core."""
    value = os.environ.get("NNKERNELS_BUILD_JOBS", "").strip()
    return max(1, int(value)) if value else (os.cpu_count() or 1)


class BuildExt(build_ext):
    """Probe the compiler once, then set per-extension flags."""

    def finalize_options(self):
        # pip and `python -m build` pass no -j: compile the extensions
        # side by side unless the caller chose a number.
        super().finalize_options()
        if not self.parallel:
            self.parallel = _jobs()

    def build_extensions(self):
        cc = self.compiler
        msvc = cc.compiler_type == "msvc"
        # -fno-trapping-math: nothing reads the FP exception flags, and it lets
        # the compiler turn selects into vector blends (results are unchanged).
        base = ["/O2"] if msvc else ["-O3", "-fno-trapping-math"]

        openmp_flags = []
        if not _env_flag("NNKERNELS_DISABLE_OPENMP"):
            candidate = ["/openmp"] if msvc else ["-fopenmp"]
            if _compiler_accepts(cc, candidate, OPENMP_PROBE):
                openmp_flags = candidate
            else:
                print("nnkernels: the compiler does not accept OpenMP; building serial kernels")

        sanitize = os.environ.get("NNKERNELS_SANITIZE", "").strip()
        sanitizer_flags = []
        if sanitize:
            if msvc:
                raise SystemExit("NNKERNELS_SANITIZE needs GCC or Clang")
            # Probed last, after OpenMP, so a probe never links against an
            # unpreloaded sanitizer runtime.  The optimisation level stays
            # -O3, so the vectorised loops checked are the ones that ship.
            sanitizer_flags = [f"-fsanitize={sanitize}", "-fno-sanitize-recover=all",
                               "-fno-omit-frame-pointer", "-g"]

        kept = []
        for ext in self.extensions:
            isa = getattr(ext, "nnk_isa", "baseline")
            isa_flags = ISA_FLAGS[isa]
            if isa != "baseline" and (msvc or not _compiler_accepts(cc, isa_flags)):
                print(f"nnkernels: skipping {ext.name} (compiler lacks {' '.join(isa_flags)})")
                continue
            flags = base + isa_flags + openmp_flags + sanitizer_flags
            if not msvc:
                flags = flags + SOURCE_FLAGS.get(getattr(ext, "nnk_source", ""), [])
            ext.extra_compile_args = flags
            ext.extra_link_args = openmp_flags + sanitizer_flags
            ext.define_macros = list(ext.define_macros) + [
                ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
                ("NNK_ISA", f'"{isa}"'),
                ("NNK_CFLAGS", '"' + " ".join(flags) + '"'),
            ]
            kept.append(ext)
        self.extensions = kept
        super().build_extensions()


def _isa_levels():
    if _env_flag("NNKERNELS_BASELINE_ONLY") or not IS_X86_64:
        return ["baseline"]
    return list(ISA_FLAGS)


def _extensions():
    """Every kernel source once per ISA level, plus the portable modules once."""
    include = [np.get_include()]
    exts = cythonize(
        [Extension(f"nnkernels.{src}", [f"nnkernels/{src}.pyx"], include_dirs=include)
         for src in PORTABLE_SOURCES],
        build_dir="build/cython/runtime", compiler_directives=CYTHON_DIRECTIVES, quiet=True,
        nthreads=_jobs())
    for isa in _isa_levels():
        # A separate build_dir per level keeps the generated C of one module
        # from overwriting another's (same .pyx, different module name).
        level_exts = cythonize(
            [Extension(f"nnkernels.{src}_{isa}", [f"nnkernels/{src}.pyx"],
                       include_dirs=include) for src in KERNEL_SOURCES],
            build_dir=f"build/cython/{isa}", compiler_directives=CYTHON_DIRECTIVES,
            quiet=True, nthreads=_jobs())
        for ext in level_exts:
            ext.nnk_isa = isa
            ext.nnk_source = ext.name.split(".")[-1][:-len(isa) - 1]   # nnkernels.<src>_<isa>
        exts += level_exts
    return exts


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
