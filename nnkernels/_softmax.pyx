# cython: language_level=3
"""Softmax family: softmax, log_softmax, softmax_backward.

Design
------
These kernels work one row at a time, a row being one sample's C class
values whatever the memory layout.  Per row they make a few short passes
over C values that stay in L1 (max, exp and sum, scale), so the matrix
itself is read once and written once.  A row whose class axis is not
contiguous (the notes' (C, N) layout with axis=0, or any strided view) is
gathered into a per-thread scratch row and its result scattered back: the
same row code serves every layout and no whole-array copy is made.
"""

cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange, parallel, threadid
from libc.math cimport log
from libc.stdlib cimport free

from nnkernels._math cimport row_max, row_dot

cnp.import_array()

from nnkernels._math cimport NNK_ISA, NNK_CFLAGS
from nnkernels._entry cimport require_aligned, plain_array, same_dims, apart, writable_result
from nnkernels._codes cimport ROW_PARALLEL_MIN as PARALLEL_MIN
from nnkernels._rows cimport Rows, as_rows, read_row, write_row, flush_row, thread_scratch
from nnkernels._softmax_rows cimport exp_shifted, scale_sub, slot, take_slot

ISA = NNK_ISA.decode()
COMPILE_ARGS = NNK_CFLAGS.decode()

cpdef enum Op:          # operation codes, visible to the Python layer
    SOFTMAX
    LOG_SOFTMAX
    SOFTMAX_BACKWARD


# Row kernels ---------------------------------------------------------------------
# p = softmax(z)
cdef inline void softmax_row(const floating* z, floating* p, Py_ssize_t n) noexcept nogil:
    cdef floating s = exp_shifted(z, row_max(z, n), p, n)
    scale_sub(p, <floating>1 / s, 0, <const floating*>NULL, n)


# out = (z - m) - log s   (shift first: m + log s would round away log s
# when |m| is large)
cdef inline void log_softmax_row(const floating* z, floating* out, Py_ssize_t n) noexcept nogil:
    cdef floating m = row_max(z, n)
    cdef floating log_s = <floating>log(exp_shifted(z, m, out, n))
    cdef Py_ssize_t j
    for j in range(n):
        out[j] = (z[j] - m) - log_s


# out = p ⊙ (g - sum_j g_j p_j)
cdef inline void softmax_backward_row(const floating* g, const floating* p, floating* out,
                                      Py_ssize_t n) noexcept nogil:
    cdef floating dot = row_dot(g, p, n)
    cdef Py_ssize_t j
    for j in range(n):
        out[j] = p[j] * (g[j] - dot)


# Driver --------------------------------------------------------------------------
cdef int softmax_rows(
    int op,
    Rows a,                   # IN  z (SOFTMAX, LOG_SOFTMAX) or grad (SOFTMAX_BACKWARD)
    Rows b,                   # IN  p (SOFTMAX_BACKWARD only)
    Rows out,                 # OUT
    Py_ssize_t n_rows, Py_ssize_t n,
    int n_threads,
    floating* kind,
) noexcept nogil:
    """Returns 0, or -1 when the scratch rows could not be allocated."""
    cdef Py_ssize_t i
    cdef int failed = 0, n_slots = 0
    cdef int slot_a = take_slot(a.class_stride != 1, &n_slots)
    cdef int slot_b = take_slot(op == SOFTMAX_BACKWARD and b.class_stride != 1, &n_slots)
    cdef int slot_out = take_slot(out.class_stride != 1, &n_slots)
    cdef int team = n_threads if n_threads < n_rows else <int>max(n_rows, 1)
    cdef floating* scratch = <floating*>thread_scratch(team, n_slots, n,
                                                       sizeof(floating), &failed)
    cdef floating* mine
    cdef const floating* x
    cdef const floating* y
    cdef floating* o
    if failed:
        return -1
    with parallel(num_threads=team, use_threads_if=team > 1 and n_rows * n >= PARALLEL_MIN):
        mine = scratch + threadid() * n_slots * n if scratch != NULL else NULL
        for i in prange(n_rows, schedule="static"):
            x = read_row(a, i, n, slot(mine, slot_a, n))
            o = write_row(out, i, slot(mine, slot_out, n))
            if op == SOFTMAX:
                softmax_row(x, o, n)
            elif op == LOG_SOFTMAX:
                log_softmax_row(x, o, n)
            else:
                y = read_row(b, i, n, slot(mine, slot_b, n))
                softmax_backward_row(x, y, o, n)
            flush_row(out, i, n, o)
    free(scratch)
    return 0


def softmax_family(int op, cnp.ndarray a, object b, cnp.ndarray out, int class_axis,
                   int n_threads):
    """out = op(a[, b]) row by row along `class_axis` of 2-D arrays.

    The caller (nnkernels._api) has validated shapes, dtypes and that `out`
    does not overlap the inputs.
    """
    return run_softmax_family(op, a, b, out, class_axis, n_threads)


cdef object run_softmax_family(int op, cnp.ndarray a, object b, cnp.ndarray out,
                               int class_axis, int n_threads):
    cdef Rows ra = as_rows(a, class_axis)
    cdef Rows rb = ra
    cdef Rows ro = as_rows(out, class_axis)
    cdef Py_ssize_t n = cnp.PyArray_DIM(a, class_axis)
    cdef Py_ssize_t n_rows = cnp.PyArray_DIM(a, 1 - class_axis)
    cdef int status
    require_aligned((a, b, out))
    if b is not None:
        rb = as_rows(<cnp.ndarray>b, class_axis)
    if n == 0 or n_rows == 0:
        return out
    if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32:
        with nogil:
            status = softmax_rows[float](op, ra, rb, ro, n_rows, n, n_threads, NULL)
    else:
        with nogil:
            status = softmax_rows[double](op, ra, rb, ro, n_rows, n, n_threads, NULL)
    if status != 0:
        raise MemoryError("nnkernels: could not allocate scratch rows")
    return out


def softmax_fast(int op, object a, object b, object out, object axis, int n_threads):
    """The common call, checked in C: 2-D contiguous arrays of one float dtype,
    an int axis, `out` None or a plain writable array apart from the inputs.
    Returns the result, or None (nothing done) for nnkernels._api_softmax to
    validate with its messages."""
    cdef int typenum, class_axis
    cdef cnp.ndarray arr
    if type(a) is not cnp.ndarray or type(axis) is not int:
        return None
    arr = <cnp.ndarray>a
    typenum = cnp.PyArray_TYPE(arr)
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        return None
    if not plain_array(arr, typenum, 2) or not -2 <= axis <= 1:
        return None
    class_axis = <int>axis
    if class_axis < 0:
        class_axis += 2
    if op == SOFTMAX_BACKWARD:
        if not plain_array(b, typenum, 2) or not same_dims(<cnp.ndarray>b, arr):
            return None
    elif b is not None:
        return None
    if out is None:
        out = cnp.PyArray_EMPTY(2, cnp.PyArray_DIMS(arr), typenum,
                                not cnp.PyArray_IS_C_CONTIGUOUS(arr))
    elif not writable_result(out, arr) or (b is not None and not apart(<cnp.ndarray>out, <cnp.ndarray>b)):
        return None
    return run_softmax_family(op, arr, b, <cnp.ndarray>out, class_axis, n_threads)
