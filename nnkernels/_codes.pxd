# cython: language_level=3
"""Codes shared by the compiled kernels and the Python layer, defined once.

The Python side reads them from nnkernels._runtime.REDUCTION_CODES.
"""

cdef enum Reduction:
    NONE = 0
    MEAN = 1
    SUM = 2


cdef enum:
    # elements below which the row-wise loss and softmax kernels wake no threads
    ROW_PARALLEL_MIN = 32768
