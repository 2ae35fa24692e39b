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

from nnkernels._math cimport NNK_ISA, NNK_CFLAGS
from nnkernels._codes cimport ELEMENTWISE_PARALLEL_MIN as PARALLEL_MIN

ISA = NNK_ISA.decode()
COMPILE_ARGS = NNK_CFLAGS.decode()

cdef enum:
    CHUNK = 16384          # elements per work item (64 KiB of float32)

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


cdef bint same_layout(cnp.ndarray x, cnp.ndarray y):
    """Same dtype (machine byte order, aligned) and shape, and element i at
    the same place in both."""
    cdef int d
    if cnp.PyArray_TYPE(x) != cnp.PyArray_TYPE(y) or cnp.PyArray_NDIM(x) != cnp.PyArray_NDIM(y):
        return False
    if not cnp.PyArray_ISNOTSWAPPED(x) or not cnp.PyArray_ISNOTSWAPPED(y):
        return False
    if not cnp.PyArray_ISALIGNED(x) or not cnp.PyArray_ISALIGNED(y):
        return False
    for d in range(cnp.PyArray_NDIM(x)):
        if cnp.PyArray_DIM(x, d) != cnp.PyArray_DIM(y, d):
            return False
    return ((cnp.PyArray_IS_C_CONTIGUOUS(x) and cnp.PyArray_IS_C_CONTIGUOUS(y))
            or (cnp.PyArray_IS_F_CONTIGUOUS(x) and cnp.PyArray_IS_F_CONTIGUOUS(y)))


cdef bint writes_safely(cnp.ndarray out, cnp.ndarray x):
    """out is x's very memory (in place, element by element) or apart from it."""
    cdef char* o = <char*>cnp.PyArray_DATA(out)
    cdef char* p = <char*>cnp.PyArray_DATA(x)
    return o == p or o + cnp.PyArray_NBYTES(out) <= p or p + cnp.PyArray_NBYTES(x) <= o


def apply(int op, cnp.ndarray x, object a, cnp.ndarray out, int n_threads):
    """out = op(x[, a]) when the operands are simple; returns whether it ran.

    Simple: one float dtype, one shape, all C- or all F-contiguous, `out`
    writable and either an input's very memory or apart from every input.
    These few C-level tests are the whole check of the common call; anything
    else returns False untouched, and nnkernels._api validates (with its
    messages) and copies.
    """
    cdef int typenum = cnp.PyArray_TYPE(out)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(out)
    cdef cnp.ndarray arr_a
    cdef void* a_data = NULL
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        return False
    if not same_layout(x, out) or not cnp.PyArray_ISWRITEABLE(out) or not writes_safely(out, x):
        return False
    if op >= SIGMOID_BACKWARD:
        if not isinstance(a, cnp.ndarray):
            return False
        arr_a = <cnp.ndarray>a
        if not same_layout(arr_a, out) or not writes_safely(out, arr_a):
            return False
        a_data = cnp.PyArray_DATA(arr_a)
    if typenum == cnp.NPY_FLOAT32:
        with nogil:
            map_all[float](op, <const float*>cnp.PyArray_DATA(x), <const float*>a_data,
                           <float*>cnp.PyArray_DATA(out), n, n_threads)
    else:
        with nogil:
            map_all[double](op, <const double*>cnp.PyArray_DATA(x), <const double*>a_data,
                            <double*>cnp.PyArray_DATA(out), n, n_threads)
    return True
