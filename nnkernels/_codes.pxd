# cython: language_level=3
"""Codes shared by the compiled kernels and the Python layer, defined once.

The Python side reads them from nnkernels._runtime.REDUCTION_CODES.
"""

cdef enum Reduction:
    NONE = 0
    MEAN = 1
    SUM = 2


cdef enum:
    # Elements below which a kernel wakes no threads: the smallest sizes at
    # which two threads beat one by 1.3x or more on a 2-vCPU machine (see
    # docs/benchmark.md, "Threads"); below them a second thread saves a few
    # microseconds and risks milliseconds waiting for a descheduled worker.
    ROW_PARALLEL_MIN = 131072          # softmax family, cross-entropy, element-wise losses
    ELEMENTWISE_PARALLEL_MIN = 262144  # activations and their backward passes
    OPTIM_PARALLEL_MIN = 262144        # optimizer updates (nnkernels._optim)
