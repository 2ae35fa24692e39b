# cython: language_level=3
"""Checks at the compiled entry points, before any nogil work.

The Python layer (nnkernels._validation) hands the kernels aligned arrays
only: it copies a misaligned input and computes into a temporary for a
misaligned `out`.  These checks read one flag per array; a failure is a bug
in that layer, reported instead of a C read or write of misaligned numbers,
which is undefined behaviour (and a fault with aligned vector loads).
"""

cimport numpy as cnp


cdef inline int require_aligned(tuple arrays) except -1:
    """ValueError unless every array in `arrays` (None skipped) is aligned."""
    cdef object arr
    for arr in arrays:
        if arr is not None and not cnp.PyArray_ISALIGNED(<cnp.ndarray>arr):
            raise ValueError("nnkernels: internal error, a misaligned array "
                             "reached a compiled kernel")
    return 0


# The common call's checks, in C: a public function first offers its
# arguments to a kernel's fast entry, which runs the call when these hold and
# otherwise returns None untouched, so that the Python layer validates (with
# its messages) and copies.  Contiguous arrays only: their memory is one
# byte range, so overlap is a comparison of two ranges.

cdef inline bint plain_array(object x, int typenum, int ndim):
    """x is an ndarray (no subclass) of dtype `typenum` in native byte order,
    aligned, C- or F-contiguous, with `ndim` dimensions."""
    cdef cnp.ndarray a
    if type(x) is not cnp.ndarray:
        return False
    a = <cnp.ndarray>x
    return (cnp.PyArray_TYPE(a) == typenum and cnp.PyArray_NDIM(a) == ndim
            and cnp.PyArray_ISNOTSWAPPED(a) and cnp.PyArray_ISALIGNED(a)
            and (cnp.PyArray_IS_C_CONTIGUOUS(a) or cnp.PyArray_IS_F_CONTIGUOUS(a)))


cdef inline bint same_dims(cnp.ndarray a, cnp.ndarray b):
    cdef int d
    if cnp.PyArray_NDIM(a) != cnp.PyArray_NDIM(b):
        return False
    for d in range(cnp.PyArray_NDIM(a)):
        if cnp.PyArray_DIM(a, d) != cnp.PyArray_DIM(b, d):
            return False
    return True


cdef inline bint same_order(cnp.ndarray a, cnp.ndarray b):
    """Element i at the same offset in both (contiguous arrays of one shape)."""
    return ((cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_IS_C_CONTIGUOUS(b))
            or (cnp.PyArray_IS_F_CONTIGUOUS(a) and cnp.PyArray_IS_F_CONTIGUOUS(b)))


cdef inline bint apart(cnp.ndarray a, cnp.ndarray b):
    """Contiguous a and b share no byte."""
    cdef char* p = <char*>cnp.PyArray_DATA(a)
    cdef char* q = <char*>cnp.PyArray_DATA(b)
    return p + cnp.PyArray_NBYTES(a) <= q or q + cnp.PyArray_NBYTES(b) <= p


cdef inline bint writable_result(object out, cnp.ndarray like):
    """out is a plain writable array of like's dtype, shape and order, apart from like."""
    cdef cnp.ndarray o
    if not plain_array(out, cnp.PyArray_TYPE(like), cnp.PyArray_NDIM(like)):
        return False
    o = <cnp.ndarray>out
    return (cnp.PyArray_ISWRITEABLE(o) and same_dims(o, like) and same_order(o, like)
            and apart(o, like))
