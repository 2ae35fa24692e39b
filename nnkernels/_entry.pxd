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
