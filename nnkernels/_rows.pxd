# cython: language_level=3
"""A 2-D array seen as rows of class values, and the per-thread scratch that
a row kernel needs where a row is not contiguous.

A row is used in place when its values are contiguous; otherwise it is
gathered into a scratch row (read_row) or computed in one and scattered back
(write_row, flush_row).  Scratch is allocated before a parallel region
starts, one slice per thread: a thread that failed to allocate inside the
region could not leave the worksharing loop without leaving the others
waiting at its barrier.
"""

cimport numpy as cnp
from cython cimport floating
from libc.stdint cimport SIZE_MAX
from libc.stdlib cimport malloc


cdef struct Rows:
    char* data
    Py_ssize_t row_stride       # in elements
    Py_ssize_t class_stride     # in elements; 1: a row is contiguous and used in place


cdef inline Rows as_rows(cnp.ndarray a, int class_axis):
    cdef Rows r
    cdef Py_ssize_t size = cnp.PyArray_ITEMSIZE(a)
    r.data = <char*>cnp.PyArray_DATA(a)
    r.row_stride = cnp.PyArray_STRIDE(a, 1 - class_axis) // size
    r.class_stride = cnp.PyArray_STRIDE(a, class_axis) // size
    return r


cdef inline floating* row_ptr(Rows a, Py_ssize_t i, floating* kind) noexcept nogil:
    return (<floating*>a.data) + i * a.row_stride


# A row to read: in place when contiguous, else gathered into `scratch`.
cdef inline const floating* read_row(Rows a, Py_ssize_t i, Py_ssize_t n,
                                     floating* scratch) noexcept nogil:
    cdef floating* p = row_ptr(a, i, scratch)
    cdef Py_ssize_t j
    if a.class_stride == 1:
        return p
    for j in range(n):
        scratch[j] = p[j * a.class_stride]
    return scratch


# Where to write a row: in place when contiguous, else `scratch` (see flush_row).
cdef inline floating* write_row(Rows a, Py_ssize_t i, floating* scratch) noexcept nogil:
    return row_ptr(a, i, scratch) if a.class_stride == 1 else scratch


cdef inline void flush_row(Rows a, Py_ssize_t i, Py_ssize_t n,
                           const floating* row) noexcept nogil:
    cdef floating* p
    cdef Py_ssize_t j
    if a.class_stride != 1:
        p = row_ptr(a, i, <floating*>row)
        for j in range(n):
            p[j * a.class_stride] = row[j]


# Scratch for `slots` rows of n values for each of n_threads threads, or NULL
# when slots is 0.  Sets failed[0] = 1 (and returns NULL) when the size
# overflows or malloc fails; the caller frees the result.
cdef inline void* thread_scratch(int n_threads, int slots, Py_ssize_t n, size_t itemsize,
                                 int* failed) noexcept nogil:
    cdef size_t per_thread
    cdef void* p
    if slots == 0 or n == 0 or n_threads <= 0:
        return NULL
    per_thread = <size_t>slots * itemsize
    if <size_t>n > SIZE_MAX // per_thread // <size_t>n_threads:
        failed[0] = 1
        return NULL
    p = malloc(<size_t>n * per_thread * <size_t>n_threads)
    if p == NULL:
        failed[0] = 1
    return p
