"""Where each kernel reads and writes: the one place that decides layouts,
copies and temporaries.

Nothing here validates (nnkernels._validation has done that) or loops over
data.  The rules:

* element-wise kernels run on the arrays' memory as it is when every operand
  is C-contiguous, or every one F-contiguous; other layouts (strided views,
  mixed orders) are copied to C order first, and the result copied into
  ``out``;
* softmax-family kernels take any 2-D strides along either axis without a
  copy (a non-contiguous class axis is gathered row by row);
* dense kernels hand gemm any C- or F-ordered matrix, or a transposed view
  of either, as it is; other strides, and strided matrices whose span
  passes the BLAS's 32-bit integers, are copied;
* an ``out`` that overlaps an input (other than exactly, in place, for the
  element-wise kernels) is computed into a temporary first and copied in;
  one whose own elements overlap was refused by the validation.
"""

import threading

import numpy as np

from . import _dispatch, _overlap

BLAS_INT_MAX = 2**31 - 1                    # BLAS sizes are C ints


def overlaps(out, *inputs):
    """True when `out` may share memory with one of the inputs (None skipped).

    Element-wise kernels may write in place over an input with the same
    layout; any other overlap is computed into a temporary first.
    """
    return _overlap.overlaps(out, *inputs)


def kernel_layout_ok(*arrays):
    """The kernels read machine numbers at element strides: every array
    aligned for its dtype (NumPy's flag covers the data pointer and every
    stride that is used) and every stride a multiple of the itemsize."""
    for a in arrays:
        if not a.flags.aligned:
            return False
        if a.flags.forc:            # contiguous: nothing more to look at
            continue
        size = a.itemsize
        for s in a.strides:
            if s % size:
                return False
    return True


def c_contiguous(x):
    """x itself when C-contiguous and aligned, else a C-ordered copy.

    Not np.ascontiguousarray: that returns a misaligned C-contiguous array as
    it is (a C read of it is undefined behaviour), and turns 0-d into 1-d.
    """
    if x.flags.c_contiguous and x.flags.aligned:
        return x
    return np.array(x, order="C")


def blas_matrix(arr, name):
    """A 2-D array gemm takes as it is (C or F order, or a transposed view of
    either); any other strides are copied to C order."""
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got shape {arr.shape}")
    if max(arr.shape) > BLAS_INT_MAX:
        raise ValueError(f"{name} of shape {arr.shape} exceeds the BLAS's 32-bit sizes")
    if _dispatch.dense().blas_layout(arr) == _dispatch.dense().Layout.OTHER:
        arr = c_contiguous(arr)
    return arr


def work_array(buffer, inputs, accumulate):
    """Where the kernel writes a result: `buffer` itself, or a C-ordered
    temporary when `buffer` overlaps an input or another result, or has
    strides gemm cannot take (copied back by the caller)."""
    dense = _dispatch.dense()
    if not overlaps(buffer, *inputs) and (
            buffer.ndim == 1 and buffer.flags.c_contiguous and buffer.flags.aligned
            or buffer.ndim == 2 and dense.blas_layout(buffer) != dense.Layout.OTHER):
        return buffer
    return np.array(buffer, order="C") if accumulate else np.empty(buffer.shape, buffer.dtype)


_scratch = threading.local()


def scratch_memory(nbytes):
    """Scratch bytes for grad_z and the bias sums, 64-byte aligned: one buffer
    per Python thread (concurrent calls never share it), grown when a call
    needs more and then reused, so a training step allocates nothing."""
    aligned = getattr(_scratch, "aligned", None)
    if aligned is None or aligned.nbytes < nbytes:
        # never empty: NumPy gives an empty slice the base's (unaligned) address
        size = max(nbytes, 64)
        raw = np.empty(size + 64, np.uint8)
        start = -raw.ctypes.data % 64
        aligned = _scratch.aligned = raw[start:start + size]
    return aligned
