# cython: language_level=3
"""Element-wise activations and their Hadamard backward.

Design
------
Forward a = g(z) and backward dZ = dA ⊙ g'(a) are maps over memory: the
speed limit is the bytes moved, so each kernel is one pass that reads its
inputs once and writes its output once, with no temporary.  The Python layer
hands over flat, contiguous, validated arrays of one dtype (strided inputs
are made contiguous there); these loops only apply the formulas of
``_math.pxd``.  The flat range is cut into CHUNK-sized pieces that OpenMP
threads take in order, once the array is large enough to pay for waking
them.  ``out`` may be the very array ``grad`` (in place): each element is
read before it is written.
"""

cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange

from nnkernels._math cimport (sigmoid_of, relu_of, sigmoid_grad, tanh_grad,
                              relu_grad)

cnp.import_array()

cdef extern from *:
    const char* NNK_ISA
    const char* NNK_CFLAGS

ISA = NNK_ISA.decode()
COMPILE_ARGS = NNK_CFLAGS.decode()

cdef enum:
    CHUNK = 16384          # elements per work item (64 KiB of float32)
    PARALLEL_MIN = 65536   # below this, waking threads costs more than it saves

cpdef enum Op:      # operation codes, visible to the Python layer
    SIGMOID
    RELU
    SIGMOID_BACKWARD
    TANH_BACKWARD
    RELU_BACKWARD


cdef void map_chunk(
    int op,
    const floating* x,   # IN  z (forward) or grad (backward)
    const floating* a,   # IN  layer output a (backward only)
    floating* out,       # OUT
    Py_ssize_t n,
) noexcept nogil:
    cdef Py_ssize_t i
    if op == SIGMOID:
        for i in range(n):
            out[i] = sigmoid_of(x[i])
    elif op == RELU:
        for i in range(n):
            out[i] = relu_of(x[i])
    elif op == SIGMOID_BACKWARD:
        for i in range(n):
            out[i] = sigmoid_grad(x[i], a[i])
    elif op == TANH_BACKWARD:
        for i in range(n):
            out[i] = tanh_grad(x[i], a[i])
    elif op == RELU_BACKWARD:
        for i in range(n):
            out[i] = relu_grad(x[i], a[i])


cdef void map_all(
    int op,
    const floating* x,   # IN
    const floating* a,   # IN  (may be NULL for a forward op)
    floating* out,       # OUT
    Py_ssize_t n,
    int n_threads,
) noexcept nogil:
    cdef Py_ssize_t c, start, n_chunks = (n + CHUNK - 1) // CHUNK
    for c in prange(n_chunks, num_threads=n_threads, schedule="static",
                    use_threads_if=n_threads > 1 and n >= PARALLEL_MIN):
        start = c * CHUNK
        map_chunk(op, x + start, (a + start) if a != NULL else NULL, out + start,
                  min(<Py_ssize_t>CHUNK, n - start))


def apply(int op, cnp.ndarray x, object a, cnp.ndarray out, int n_threads):
    """out = op(x[, a]) over flat contiguous arrays of one float dtype.

    The caller (nnkernels._api) has validated shapes, dtypes and contiguity;
    the dtype test below is only the switch between the two builds.
    """
    cdef Py_ssize_t n = cnp.PyArray_SIZE(out)
    cdef int typenum = cnp.PyArray_TYPE(out)
    cdef void* a_data = NULL
    if a is not None:
        a_data = cnp.PyArray_DATA(<cnp.ndarray>a)
    if typenum == cnp.NPY_FLOAT32:
        with nogil:
            map_all[float](op, <const float*>cnp.PyArray_DATA(x), <const float*>a_data,
                           <float*>cnp.PyArray_DATA(out), n, n_threads)
    elif typenum == cnp.NPY_FLOAT64:
        with nogil:
            map_all[double](op, <const double*>cnp.PyArray_DATA(x), <const double*>a_data,
                            <double*>cnp.PyArray_DATA(out), n, n_threads)
    else:
        raise TypeError(f"internal: unsupported dtype number {typenum}")
    return out
