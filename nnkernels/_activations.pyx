# cython: language_level=3
"""Element-wise activations and their Hadamard backward.

Design
------
Forward a = g(z) and backward dZ = dA ⊙ g'(a) (or dA ⊙ g'(z) for the
activations whose derivative is not a function of a) are maps over memory: the
speed limit is the bytes moved, so each kernel is one pass that reads its
inputs once and writes its output once, with no temporary.  The Python layer
hands over flat, contiguous, validated arrays of one dtype (strided inputs
are made contiguous there); these loops only apply the formulas of
``_math.pxd`` and ``_math_act.pxd``, with the activation's options
(negative slope, α, β and threshold) as two numbers p0, p1 in the
arrays' dtype.  The flat range is cut into CHUNK-sized pieces that OpenMP
threads take in order, once the array is large enough to pay for waking
them.  ``out`` may be the very array ``z`` or ``grad`` (in place): each
element is read before it is written.
"""

cimport numpy as cnp
from nnkernels._entry cimport plain_array, same_dims, same_order, apart
from cython cimport floating
from cython.parallel cimport prange

from nnkernels._math cimport (sigmoid_of, relu_of, tanh_of, sigmoid_grad, tanh_grad,
                              relu_grad)
from nnkernels._math_act cimport (gelu_of, gelu_grad, gelu_tanh_of, gelu_tanh_grad,
                                  silu_of, silu_grad, leaky_relu_of, leaky_relu_grad,
                                  elu_of, elu_grad, softplus_of, softplus_grad)

cnp.import_array()

from nnkernels._math cimport NNK_ISA, NNK_CFLAGS
from nnkernels._codes cimport ELEMENTWISE_PARALLEL_MIN as PARALLEL_MIN

ISA = NNK_ISA.decode()
COMPILE_ARGS = NNK_CFLAGS.decode()

cdef enum:
    CHUNK = 16384          # elements per work item (64 KiB of float32)

cpdef enum Op:      # operation codes, visible to the Python layer
    SIGMOID         # forward ops: out = g(x[, p0, p1])
    RELU
    TANH
    GELU
    GELU_TANH
    SILU
    LEAKY_RELU      # p0: negative slope
    ELU             # p0: α
    SOFTPLUS        # p0: β, p1: threshold
    SIGMOID_BACKWARD    # backward ops (from here on): out = grad ⊙ g'(a or z)
    TANH_BACKWARD
    RELU_BACKWARD
    GELU_BACKWARD       # these take z
    GELU_TANH_BACKWARD
    SILU_BACKWARD
    LEAKY_RELU_BACKWARD
    ELU_BACKWARD
    SOFTPLUS_BACKWARD


cdef void map_chunk(
    int op,
    const floating* x,   # IN  z (forward) or grad (backward)
    const floating* a,   # IN  layer output a or input z (backward only)
    floating* out,       # OUT
    Py_ssize_t n,
    floating p0,         # the options, or unused
    floating p1,
) noexcept nogil:
    cdef Py_ssize_t i
    if op == SIGMOID:
        for i in range(n):
            out[i] = sigmoid_of(x[i])
    elif op == RELU:
        for i in range(n):
            out[i] = relu_of(x[i])
    elif op == TANH:
        for i in range(n):
            out[i] = tanh_of(x[i])
    elif op == GELU:
        for i in range(n):
            out[i] = gelu_of(x[i])
    elif op == GELU_TANH:
        for i in range(n):
            out[i] = gelu_tanh_of(x[i])
    elif op == SILU:
        for i in range(n):
            out[i] = silu_of(x[i])
    elif op == LEAKY_RELU:
        for i in range(n):
            out[i] = leaky_relu_of(x[i], p0)
    elif op == ELU:
        for i in range(n):
            out[i] = elu_of(x[i], p0)
    elif op == SOFTPLUS:
        for i in range(n):
            out[i] = softplus_of(x[i], p0, p1)
    elif op == SIGMOID_BACKWARD:
        for i in range(n):
            out[i] = sigmoid_grad(x[i], a[i])
    elif op == TANH_BACKWARD:
        for i in range(n):
            out[i] = tanh_grad(x[i], a[i])
    elif op == RELU_BACKWARD:
        for i in range(n):
            out[i] = relu_grad(x[i], a[i])
    elif op == GELU_BACKWARD:
        for i in range(n):
            out[i] = gelu_grad(x[i], a[i])
    elif op == GELU_TANH_BACKWARD:
        for i in range(n):
            out[i] = gelu_tanh_grad(x[i], a[i])
    elif op == SILU_BACKWARD:
        for i in range(n):
            out[i] = silu_grad(x[i], a[i])
    elif op == LEAKY_RELU_BACKWARD:
        for i in range(n):
            out[i] = leaky_relu_grad(x[i], a[i], p0)
    elif op == ELU_BACKWARD:
        for i in range(n):
            out[i] = elu_grad(x[i], a[i], p0)
    elif op == SOFTPLUS_BACKWARD:
        for i in range(n):
            out[i] = softplus_grad(x[i], a[i], p0, p1)


cdef void map_all(
    int op,
    const floating* x,   # IN
    const floating* a,   # IN  (may be NULL for a forward op)
    floating* out,       # OUT
    Py_ssize_t n,
    floating p0,
    floating p1,
    int n_threads,
) noexcept nogil:
    cdef Py_ssize_t c, start, n_chunks = (n + CHUNK - 1) // CHUNK
    for c in prange(n_chunks, num_threads=n_threads, schedule="static",
                    use_threads_if=n_threads > 1 and n >= PARALLEL_MIN):
        start = c * CHUNK
        map_chunk(op, x + start, (a + start) if a != NULL else NULL, out + start,
                  min(<Py_ssize_t>CHUNK, n - start), p0, p1)


cdef bint same_layout(cnp.ndarray x, cnp.ndarray y):
    """Both plain contiguous arrays of one dtype and shape, element i at the
    same place in both."""
    cdef int typenum = cnp.PyArray_TYPE(x), nd = cnp.PyArray_NDIM(x)
    return (plain_array(x, typenum, nd) and plain_array(y, typenum, nd)
            and same_dims(x, y) and same_order(x, y))


cdef bint writes_safely(cnp.ndarray out, cnp.ndarray x):
    """out is x's very memory (in place, element by element) or apart from it."""
    return cnp.PyArray_DATA(out) == cnp.PyArray_DATA(x) or apart(out, x)


def apply(int op, cnp.ndarray x, object a, cnp.ndarray out, double p0, double p1,
          int n_threads):
    """out = op(x[, a]; p0, p1) when the operands are simple; returns whether it ran.

    p0 and p1 are the op's options (see Op), rounded to the arrays' dtype.

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
        if type(a) is not cnp.ndarray:     # no subclass (a masked array is refused later)
            return False
        arr_a = <cnp.ndarray>a
        if not same_layout(arr_a, out) or not writes_safely(out, arr_a):
            return False
        a_data = cnp.PyArray_DATA(arr_a)
    if typenum == cnp.NPY_FLOAT32:
        with nogil:
            map_all[float](op, <const float*>cnp.PyArray_DATA(x), <const float*>a_data,
                           <float*>cnp.PyArray_DATA(out), n, <float>p0, <float>p1, n_threads)
    else:
        with nogil:
            map_all[double](op, <const double*>cnp.PyArray_DATA(x), <const double*>a_data,
                            <double*>cnp.PyArray_DATA(out), n, p0, p1, n_threads)
    return True
