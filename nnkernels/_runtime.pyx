# cython: language_level=3
"""Facts about the machine and the build that the dispatcher needs, and the
codes the compiled kernels share with the Python layer.

Compiled once, for the baseline target: it must import on every CPU, since it
is what decides which of the wider kernel builds the CPU can run.
"""

cdef extern from *:
    """
    #if defined(_OPENMP)
    #include <omp.h>
    static int nnk_openmp_enabled(void) { return 1; }
    static int nnk_openmp_version(void) { return _OPENMP; }
    static int nnk_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int nnk_openmp_enabled(void) { return 0; }
    static int nnk_openmp_version(void) { return 0; }
    static int nnk_omp_max_threads(void) { return 1; }
    #endif

    /* 2 = AVX-512 (x86-64-v4), 1 = AVX2 + FMA (x86-64-v3), 0 = baseline.
       __builtin_cpu_supports also checks that the OS saves the wide
       registers (XCR0), so a "yes" here means the code can run. */
    static int nnk_cpu_isa_level(void) {
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
        __builtin_cpu_init();
        int v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
                 && __builtin_cpu_supports("bmi2");
        int v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")
                 && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
        return v4 ? 2 : (v3 ? 1 : 0);
    #else
        return 0;
    #endif
    }
    """
    int nnk_openmp_enabled() nogil
    int nnk_openmp_version() nogil
    int nnk_omp_max_threads() nogil
    int nnk_cpu_isa_level() nogil
    const char* NNK_CFLAGS


ISA_LEVELS = ("baseline", "avx2", "avx512")


def cpu_isa_levels():
    """The kernel builds this CPU can run, narrowest first."""
    return ISA_LEVELS[:nnk_cpu_isa_level() + 1]


def openmp_enabled():
    return bool(nnk_openmp_enabled())


def openmp_version():
    """The _OPENMP date macro (e.g. 201511), 0 without OpenMP."""
    return nnk_openmp_version()


def omp_max_threads():
    """omp_get_max_threads(): honours OMP_NUM_THREADS; 1 without OpenMP."""
    return nnk_omp_max_threads()


def compile_flags():
    return NNK_CFLAGS.decode()


from nnkernels._codes cimport NONE, MEAN, SUM, ROW_PARALLEL_MIN, ELEMENTWISE_PARALLEL_MIN

# reduction name -> the code every loss kernel takes
REDUCTION_CODES = {"none": NONE, "mean": MEAN, "sum": SUM}
# elements from which the kernels split their work over threads
THREAD_THRESHOLDS = {"elementwise": ELEMENTWISE_PARALLEL_MIN, "rows": ROW_PARALLEL_MIN}
