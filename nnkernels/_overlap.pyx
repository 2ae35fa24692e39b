# cython: language_level=3
"""Whether an output buffer can share memory with an input.

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
