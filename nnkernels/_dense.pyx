# cython: language_level=3
"""Dense layer over a mini-batch: the products on BLAS, the rest fused around them.

Design
------
Forward z = x wᵀ + b, a = g(z); backward grad_z = grad_a ⊙ g'(a),
grad_b = Σ_rows grad_z, grad_w = grad_zᵀ x, grad_x = grad_z w.

The matrix products are gemm calls through the provider table of _blas.pxd
(SciPy's BLAS, MKL or scipy-openblas32), never a loop of ours.  BLAS is column-major,
and a row-major (C-ordered) matrix is the column-major storage of its
transpose, so every operand -- C- or F-ordered, or a transposed view of
either -- reaches gemm as a pointer, a leading dimension and a transpose
flag, with no copy; a row-major product C = A B is the column-major
Cᵀ = Bᵀ Aᵀ.  ``accumulate`` is gemm's beta = 1 and ``scale`` its alpha, so
out=(w, b, ...) with accumulate and scale = -lr is an SGD step done by the
products themselves: w += -lr grad_zᵀ x, after grad_x = grad_z w has read w.

Around the products there is one element-wise pass each way.  Forward: the
bias add and g, in place over the product's output.  Backward: grad_z and the
bias sums in one pass over grad_a; grad_z goes into scratch memory the
caller owns and reuses (with no activation grad_a itself is grad_z and the
pass only sums).  A pass walks contiguous lines -- rows of a C-ordered
array, columns of an F-ordered one.

Threads: the products run on the BLAS's threads and the passes on the
calling thread, not on OpenMP.  Both thread pools spin for a while after
their work (libgomp's workers for milliseconds, OpenBLAS's for about 0.1 s),
and on a machine with as many cores as threads the two pools, alternating
within every call, took each other's cores: an MLP step at batch 128 took
16 ms with OpenMP passes and 2.1 ms without, dense_backward (1024, 1024,
1024) 31 ms against 23 ms.  The passes cost a few percent of the products'
time, so the threads they could save are not worth that.

This module holds the entry points; the operands and the one gemm call
path are in _dense_matrix.pxd, the passes in _dense_passes.pxd.

The Python layer (nnkernels._api_dense) has checked everything: one float dtype,
shapes that agree, every matrix in a layout ``blas_layout`` accepts, sizes
within BLAS's 32-bit integers, outputs apart from the inputs, scratch large
enough (``scratch_bytes``).
"""

cimport numpy as cnp
from libc.limits cimport INT_MAX

from nnkernels._math_act cimport (grad_takes_z, IDENTITY, SIGMOID, TANH, RELU, GELU,
                                  GELU_TANH, SILU, LEAKY_RELU, ELU, SOFTPLUS)
from nnkernels._dense_matrix cimport Matrix, line_length
from nnkernels._dense_passes cimport forward_kernel, backward_kernel

cnp.import_array()

from nnkernels._math cimport NNK_ISA, NNK_CFLAGS
from nnkernels._entry cimport require_aligned, plain_array, apart

ISA = NNK_ISA.decode()
COMPILE_ARGS = NNK_CFLAGS.decode()

cpdef enum Layout:         # how a 2-D array lies in memory, for BLAS
    ROWS                   # rows contiguous (C order, possibly with a row stride)
    COLUMNS                # columns contiguous (F order, possibly with a column stride)
    OTHER                  # neither: the caller copies it

ACTIVATIONS = {None: IDENTITY, "sigmoid": SIGMOID, "tanh": TANH, "relu": RELU,
               "gelu": GELU, "gelu_tanh": GELU_TANH, "silu": SILU,
               "leaky_relu": LEAKY_RELU, "elu": ELU, "softplus": SOFTPLUS}
# the activations whose derivative is computed from z (backward takes z, not a)
GRAD_TAKES_Z = frozenset(name for name, g in ACTIVATIONS.items() if grad_takes_z(g))


cdef bint lines_fit(Py_ssize_t n_lines, Py_ssize_t length, Py_ssize_t line_stride,
                    Py_ssize_t step, Py_ssize_t itemsize):
    """n_lines lines of `length` contiguous items, line_stride bytes apart
    without overlapping, a stride BLAS can take as its leading dimension;
    lines with gaps between them also span at most INT_MAX items."""
    cdef Py_ssize_t ld
    if length > 1 and step != itemsize:
        return False
    if n_lines <= 1:
        return True
    if line_stride <= 0 or line_stride % itemsize:
        return False
    ld = line_stride // itemsize
    # gaps between the lines: the span ld (n_lines - 1) + length must fit the
    # BLAS's int too (OpenBLAS's small-matrix kernels compute it in 32 bits)
    return length <= ld <= INT_MAX and (ld == length or (n_lines - 1) * ld + length <= INT_MAX)


cpdef Layout blas_layout(cnp.ndarray arr):
    """ROWS or COLUMNS if gemm can take the 2-D array as it is, else OTHER
    (misaligned memory included: reading it as floats is undefined)."""
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(arr)
    cdef Py_ssize_t r = cnp.PyArray_DIM(arr, 0), c = cnp.PyArray_DIM(arr, 1)
    cdef Py_ssize_t s0 = cnp.PyArray_STRIDE(arr, 0), s1 = cnp.PyArray_STRIDE(arr, 1)
    if not cnp.PyArray_ISALIGNED(arr):
        return OTHER
    if lines_fit(r, c, s0, s1, item):
        return ROWS
    if lines_fit(c, r, s1, s0, item):
        return COLUMNS
    return OTHER


cdef Matrix matrix_of(cnp.ndarray arr):
    cdef Matrix m
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(arr)
    m.data = <char*>cnp.PyArray_DATA(arr)
    m.rows = <int>cnp.PyArray_DIM(arr, 0)
    m.cols = <int>cnp.PyArray_DIM(arr, 1)
    m.col_major = blas_layout(arr) == COLUMNS
    # BLAS wants ld >= max(1, line length) even where the stride is moot
    if m.col_major:
        m.ld = <int>(cnp.PyArray_STRIDE(arr, 1) // item) if m.cols > 1 else max(m.rows, 1)
    else:
        m.ld = <int>(cnp.PyArray_STRIDE(arr, 0) // item) if m.rows > 1 else max(m.cols, 1)
    return m


# Entry points -------------------------------------------------------------------------
cdef Py_ssize_t sums_bytes(Matrix grad_a) noexcept nogil:
    """The bias sums' scratch, rounded up so that grad_z after it stays aligned."""
    return 0 if grad_a.col_major else (grad_a.cols * sizeof(double) + 63) // 64 * 64


cpdef Py_ssize_t scratch_bytes(int g, cnp.ndarray grad_a):
    """Bytes of scratch memory `backward` needs for this call."""
    cdef Matrix ga = matrix_of(grad_a)
    cdef Py_ssize_t grad_z_bytes = 0
    if g != IDENTITY:
        grad_z_bytes = <Py_ssize_t>ga.rows * ga.cols * cnp.PyArray_ITEMSIZE(grad_a)
    return sums_bytes(ga) + grad_z_bytes


cpdef forward(int g, cnp.ndarray x, cnp.ndarray w, object b, cnp.ndarray out,
            object z_out=None):
    """out = g(x wᵀ + b); b is None or a contiguous (out,) array.  With z_out,
    z = x wᵀ + b goes there too (z_out in out's memory order)."""
    cdef Matrix mx = matrix_of(x), mw = matrix_of(w), mz = matrix_of(out), ma
    cdef Matrix* a_ptr = NULL
    cdef void* bias = NULL if b is None else cnp.PyArray_DATA(<cnp.ndarray>b)
    require_aligned((x, w, b, out, z_out))
    if z_out is not None:
        ma = mz
        mz = matrix_of(<cnp.ndarray>z_out)
        if ma.col_major != mz.col_major:
            raise ValueError("nnkernels: internal error, z_out and out in different orders")
        a_ptr = &ma
    if cnp.PyArray_TYPE(out) == cnp.NPY_FLOAT32:
        with nogil:
            forward_kernel[float](g, mx, mw, <const float*>bias, mz, a_ptr)
    else:
        with nogil:
            forward_kernel[double](g, mx, mw, <const double*>bias, mz, a_ptr)


cpdef backward(int g, cnp.ndarray grad_a, cnp.ndarray x, cnp.ndarray w, object a,
             cnp.ndarray grad_w, cnp.ndarray grad_b, object grad_x,
             cnp.ndarray scratch, bint accumulate, double scale=1.0):
    """(grad_w, grad_b[, grad_x]) of the layer into the given arrays.

    a is the layer output, or its input z for the activations of
    GRAD_TAKES_Z, None for the identity; grad_b contiguous; grad_x None when the
    input gradient is not wanted; scratch a 64-byte aligned byte array of at
    least scratch_bytes(g, grad_a): the bias sums, then grad_z.
    """
    cdef Matrix ga = matrix_of(grad_a), mx = matrix_of(x), mw = matrix_of(w)
    cdef Matrix ma = ga if a is None else matrix_of(<cnp.ndarray>a)
    cdef Matrix gw = matrix_of(grad_w), gx, gz
    cdef Matrix* gx_ptr = NULL
    cdef char* base = <char*>cnp.PyArray_DATA(scratch)
    require_aligned((grad_a, x, w, a, grad_w, grad_b, grad_x))
    if cnp.PyArray_NBYTES(scratch) < scratch_bytes(g, grad_a) or <size_t>base % 64:
        raise ValueError("nnkernels: internal error, dense scratch too small or unaligned")
    if grad_x is not None:
        gx = matrix_of(<cnp.ndarray>grad_x)
        gx_ptr = &gx
    gz = ga
    if g != IDENTITY:                 # grad_z in the scratch, laid out as grad_a but dense
        gz.data = base + sums_bytes(ga)
        gz.ld = max(line_length(ga), 1)
    if cnp.PyArray_TYPE(grad_w) == cnp.NPY_FLOAT32:
        with nogil:
            backward_kernel[float](g, ga, mx, mw, ma, gz, <double*>base, gw,
                                   <float*>cnp.PyArray_DATA(grad_b), gx_ptr, <float>scale,
                                   accumulate)
    else:
        with nogil:
            backward_kernel[double](g, ga, mx, mw, ma, gz, <double*>base, gw,
                                    <double*>cnp.PyArray_DATA(grad_b), gx_ptr, scale,
                                    accumulate)


cdef inline bint c_matrix(object m, int typenum, Py_ssize_t rows, Py_ssize_t cols):
    """m is a plain C-contiguous (rows, cols) array of dtype `typenum`, its
    sizes within BLAS's 32-bit integers."""
    cdef cnp.ndarray a
    if not plain_array(m, typenum, 2):
        return False
    a = <cnp.ndarray>m
    return (cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_DIM(a, 0) == rows
            and cnp.PyArray_DIM(a, 1) == cols and rows <= INT_MAX and cols <= INT_MAX)


cdef inline bint c_result(object m, int typenum, Py_ssize_t rows, Py_ssize_t cols):
    return c_matrix(m, typenum, rows, cols) and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>m)


cdef inline bint apart_or_none(object buf, object other):
    return other is None or apart(<cnp.ndarray>buf, <cnp.ndarray>other)


cdef inline bint apart_from_all(object buf, object o1, object o2, object o3,
                                object o4=None, object o5=None):
    """buf (contiguous, or None) shares no byte with any of the others that
    are not None."""
    return buf is None or (apart_or_none(buf, o1) and apart_or_none(buf, o2)
                           and apart_or_none(buf, o3) and apart_or_none(buf, o4)
                           and apart_or_none(buf, o5))


def backward_fast(int g, object grad_a, object x, object w, object a, object z,
                  bint need_input_grad, bint accumulate, double scale, tuple out,
                  object scratch_memory):
    """The common call, checked in C: C-contiguous 2-D arrays of one float
    dtype, the one activation input the activation needs, out a triple of
    C-contiguous writable buffers apart from the inputs and each other (w
    itself may be the grad_w buffer: the fused SGD step).  Returns the
    triple, or None (nothing done) for nnkernels._api_dense to validate with
    its messages.  scratch_memory(nbytes) gives the scratch bytes."""
    cdef int typenum
    cdef Py_ssize_t n, n_in, n_out
    cdef object act_input, ow, ob, ox
    cdef cnp.ndarray arr
    if type(x) is not cnp.ndarray or len(out) != 3 or scale - scale != 0:
        return None
    arr = <cnp.ndarray>x
    typenum = cnp.PyArray_TYPE(arr)
    if (typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64) or cnp.PyArray_NDIM(arr) != 2:
        return None
    n, n_in = cnp.PyArray_DIM(arr, 0), cnp.PyArray_DIM(arr, 1)
    if not c_matrix(x, typenum, n, n_in) or type(w) is not cnp.ndarray \
            or cnp.PyArray_NDIM(<cnp.ndarray>w) != 2:
        return None
    n_out = cnp.PyArray_DIM(<cnp.ndarray>w, 0)
    if not c_matrix(w, typenum, n_out, n_in) or not c_matrix(grad_a, typenum, n, n_out):
        return None
    act_input = None
    if g == IDENTITY:
        if a is not None or z is not None:
            return None
    elif grad_takes_z(g):
        if a is not None or not c_matrix(z, typenum, n, n_out):
            return None
        act_input = z
    else:
        if z is not None or not c_matrix(a, typenum, n, n_out):
            return None
        act_input = a
    ow, ob, ox = out
    if not need_input_grad:
        ox = None
    elif not c_result(ox, typenum, n, n_in):
        return None
    if not (c_result(ow, typenum, n_out, n_in) and plain_array(ob, typenum, 1)
            and cnp.PyArray_DIM(<cnp.ndarray>ob, 0) == n_out
            and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>ob)):
        return None
    # every buffer apart from every input and from the other buffers, but w
    # (the argument) as its own gradient's buffer
    if not (apart_from_all(ow, grad_a, x, act_input, ob, ox)
            and (ow is w or apart(<cnp.ndarray>ow, <cnp.ndarray>w))
            and apart_from_all(ob, grad_a, x, w, act_input, ox)
            and apart_from_all(ox, grad_a, x, w, act_input)):
        return None
    backward(g, <cnp.ndarray>grad_a, arr, <cnp.ndarray>w, act_input, <cnp.ndarray>ow,
             <cnp.ndarray>ob, ox, scratch_memory(scratch_bytes(g, <cnp.ndarray>grad_a)),
             accumulate, scale)
    return ow, ob, ox


def forward_fast(int g, object x, object w, object b, object out, object z_out):
    """The common call, checked in C: C-contiguous x and w of one float dtype,
    b None or a contiguous vector, out (and z_out, if given) C-contiguous
    writable buffers apart from the inputs and each other.  Returns out, or
    None (nothing done) for nnkernels._api_dense to validate."""
    cdef int typenum
    cdef Py_ssize_t n, n_in, n_out
    if type(x) is not cnp.ndarray or type(w) is not cnp.ndarray:
        return None
    typenum = cnp.PyArray_TYPE(<cnp.ndarray>x)
    if ((typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64)
            or cnp.PyArray_NDIM(<cnp.ndarray>x) != 2 or cnp.PyArray_NDIM(<cnp.ndarray>w) != 2):
        return None
    n, n_in = cnp.PyArray_DIM(<cnp.ndarray>x, 0), cnp.PyArray_DIM(<cnp.ndarray>x, 1)
    n_out = cnp.PyArray_DIM(<cnp.ndarray>w, 0)
    if not (c_matrix(x, typenum, n, n_in) and c_matrix(w, typenum, n_out, n_in)
            and c_result(out, typenum, n, n_out)):
        return None
    if b is not None and not (plain_array(b, typenum, 1)
                              and cnp.PyArray_DIM(<cnp.ndarray>b, 0) == n_out):
        return None
    if z_out is not None and not (c_result(z_out, typenum, n, n_out)
                                  and apart_from_all(z_out, x, w, b, out)):
        return None
    if not apart_from_all(out, x, w, b):
        return None
    forward(g, <cnp.ndarray>x, <cnp.ndarray>w, b, <cnp.ndarray>out, z_out)
    return out
