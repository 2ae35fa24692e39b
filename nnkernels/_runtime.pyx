# cython: language_level=3
"""Facts about the machine and the build that the dispatcher needs.

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


cimport numpy as cnp
cnp.import_array()


cdef void byte_extent(cnp.ndarray a, char** lo, char** hi) noexcept:
    """[lo, hi): the bytes an array can touch (NumPy's may_share_memory bounds)."""
    cdef char* start = <char*>cnp.PyArray_DATA(a)
    cdef char* end = start
    cdef Py_ssize_t span
    cdef int d
    if cnp.PyArray_SIZE(a) == 0:
        lo[0] = hi[0] = start
        return
    for d in range(cnp.PyArray_NDIM(a)):
        span = (cnp.PyArray_DIM(a, d) - 1) * cnp.PyArray_STRIDE(a, d)
        if span < 0:
            start += span
        else:
            end += span
    lo[0] = start
    hi[0] = end + cnp.PyArray_ITEMSIZE(a)


def overlaps(cnp.ndarray out, *inputs):
    """True when `out` may share memory with one of the (ndarray or None) inputs.

    The same bounds test as numpy.may_share_memory, without its call overhead
    (it runs on every call of the public functions that take `out=`).
    """
    cdef char* out_lo
    cdef char* out_hi
    cdef char* lo
    cdef char* hi
    byte_extent(out, &out_lo, &out_hi)
    for x in inputs:
        if x is None:
            continue
        byte_extent(<cnp.ndarray>x, &lo, &hi)
        if lo < out_hi and out_lo < hi:
            return True
    return False


from cython cimport floating

cdef enum:
    SCAN_BLOCK = 4096


cdef Py_ssize_t first_outside(const floating* x, Py_ssize_t n) noexcept nogil:
    """Index of the first x outside [0, 1] (NaN is not outside), or -1.

    Each block counts its offenders (an integer sum, which vectorises); only a
    block that has one is searched element by element."""
    cdef Py_ssize_t b, j, start, stop, bad
    cdef floating zero = 0, one = 1
    for b in range((n + SCAN_BLOCK - 1) // SCAN_BLOCK):
        start = b * SCAN_BLOCK
        stop = min(start + <Py_ssize_t>SCAN_BLOCK, n)
        bad = 0
        for j in range(start, stop):
            bad += (x[j] < zero) | (x[j] > one)
        if bad:
            for j in range(start, stop):
                if x[j] < zero or x[j] > one:
                    return j
    return -1


def first_outside_unit_interval(cnp.ndarray x):
    """Flat index of the first element of a C-contiguous float32/float64 array
    outside [0, 1] (NaN passes), or -1.  One read of the array, no temporaries."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x), pos
    if not cnp.PyArray_IS_C_CONTIGUOUS(x) or not cnp.PyArray_ISALIGNED(x):
        raise ValueError("internal: first_outside_unit_interval needs a C-contiguous, "
                         "aligned array")
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        with nogil:
            pos = first_outside[float](<const float*>cnp.PyArray_DATA(x), n)
    elif cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT64:
        with nogil:
            pos = first_outside[double](<const double*>cnp.PyArray_DATA(x), n)
    else:
        raise TypeError(f"internal: unsupported dtype {x.dtype}")
    return pos
