# cython: language_level=3
"""Whether an output buffer can share memory with an input, or with itself.

Compiled once, for the baseline target: it runs on every call of the
public functions that take `out=`, before any kernel, and needs no wide
instructions.
"""

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


def overlaps_itself(cnp.ndarray a):
    """False when every element of `a` has its own bytes; True when two may share.

    Sufficient, the test NumPy applies first: with the axes sorted by
    |stride|, each stride must step past everything the smaller ones reach.
    Layouts that interleave their axes without touching fail it too and are
    reported; no array NumPy itself creates does.
    """
    cdef int nd = cnp.PyArray_NDIM(a), d, j, k, best
    cdef Py_ssize_t reach = cnp.PyArray_ITEMSIZE(a), s
    cdef Py_ssize_t strides[64]     # NumPy's most dimensions
    cdef Py_ssize_t dims[64]     # NumPy's most dimensions
    cdef bint used[64]     # NumPy's most dimensions
    if cnp.PyArray_SIZE(a) <= 1 or cnp.PyArray_ISCONTIGUOUS(a) or cnp.PyArray_ISFORTRAN(a):
        return False
    k = 0
    for d in range(nd):
        if cnp.PyArray_DIM(a, d) > 1:
            s = cnp.PyArray_STRIDE(a, d)
            strides[k] = s if s >= 0 else -s
            dims[k] = cnp.PyArray_DIM(a, d)
            used[k] = False
            k += 1
    for d in range(k):              # selection order, smallest |stride| first
        best = -1
        for j in range(k):
            if not used[j] and (best < 0 or strides[j] < strides[best]):
                best = j
        used[best] = True
        if strides[best] < reach:
            return True
        reach += strides[best] * (dims[best] - 1)
    return False
