# cython: language_level=3
"""Element-wise losses over inputs of any shape: sigmoid + binary
cross-entropy on logits, binary cross-entropy on probabilities, and MSE.

Design
------
Each loss is a pair of pure functions of one element, its loss and its
gradient; the loop over a row inlines both, so the compiler computes their
shared terms once and vectorises the row.  The Python layer hands over
C-contiguous (rows, cols) views: a 1-D input is one row, and a weight with
one value per column is read with row stride 0 instead of being broadcast
into a full array.  Rows are cut into chunks of LOSS_CHUNK values, the unit
of work of the threads; each chunk's loss sum goes to a buffer and the sums
are added in double after the parallel loop, so the loss does not depend on
the thread count and its error does not grow with the input's length.

binary_cross_entropy requires probabilities in [0, 1]; the range is checked
by one compiled scan (first_outside_unit_interval) before the kernel runs.
"""

cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange, parallel, threadid
from libc.math cimport NAN
from libc.stdlib cimport malloc, free

from nnkernels._math cimport exp_nonpos, log_clamped, row_sum, sigmoid_pair

cnp.import_array()

from nnkernels._math cimport NNK_ISA, NNK_CFLAGS
from nnkernels._entry cimport require_aligned
from nnkernels._codes cimport NONE, MEAN, ROW_PARALLEL_MIN as PARALLEL_MIN
from nnkernels._rows cimport thread_scratch

ISA = NNK_ISA.decode()
COMPILE_ARGS = NNK_CFLAGS.decode()

cpdef enum Op:          # operation codes, visible to the Python layer
    BCE_WITH_LOGITS
    BCE
    MSE


# log1p(x) for 0 <= x <= 1, vectorisable: log1p(x) = 2 atanh(t), t = x / (2 + x)
# in [0, 1/3], by its series 2 t (1 + t²/3 + t⁴/5 + ...), cut where the next
# term is below half an ulp (7 terms float32, 16 float64).
cdef inline floating log1p_unit(floating x) noexcept nogil:
    cdef floating one = 1, two = 2, t = x / (two + x), u = t * t, p = 0
    cdef int k, terms = 7 if floating is float else 16
    for k in range(terms - 1, -1, -1):
        p = p * u + one / (2 * k + 1)
    return two * t * p


# sigmoid + BCE, PyTorch's binary_cross_entropy_with_logits with pos_weight pw:
#   loss = (1 - y) z + (1 + (pw - 1) y) softplus(-z),
#          softplus(-z) = log1p(e**-|z|) + max(-z, 0)       (never overflows)
#   dloss/dz = (1 - y) σ(z) - pw y σ(-z)                     (pw = 1: σ(z) - y)
# (the gradient as a difference of the two tails, each exact: no 1 - σ
# cancellation for z << 0, and 0 * inf only where PyTorch has it too)
cdef inline floating bce_logits_loss(floating z, floating y, floating pw) noexcept nogil:
    cdef floating zero = 0, one = 1
    cdef floating softplus_neg = (log1p_unit(exp_nonpos(z if z < zero else -z))
                                  + (-z if z < zero else zero))
    return (one - y) * z + (one + (pw - one) * y) * softplus_neg

cdef inline floating bce_logits_grad(floating z, floating y, floating pw) noexcept nogil:
    cdef floating one = 1, s, s_neg
    sigmoid_pair(z, &s, &s_neg)
    return (one - y) * s - pw * y * s_neg


# BCE on probabilities, PyTorch's binary_cross_entropy (logs clamped at -100):
#   loss = -(y log p + (1 - y) log(1 - p)),  dloss/dp = (p - y) / max(p (1 - p), 1e-12)
cdef inline floating bce_loss(floating p, floating y) noexcept nogil:
    cdef floating one = 1
    return -(y * log_clamped(p) + (one - y) * log_clamped(one - p))

cdef inline floating bce_grad(floating p, floating y) noexcept nogil:
    cdef floating one = 1, tiny = 1e-12, d = p * (one - p)
    return (p - y) / (d if d > tiny else tiny)


# MSE:  loss = (x - y)²,  dloss/dx = 2 (x - y)
cdef inline floating squared_error_loss(floating x, floating y) noexcept nogil:
    return (x - y) * (x - y)

cdef inline floating squared_error_grad(floating x, floating y) noexcept nogil:
    return 2 * (x - y)


cdef void loss_row(
    int op,
    const floating* x,        # IN  (n,) predictions / logits / probabilities
    const floating* y,        # IN  (n,) targets
    const floating* w,        # IN  (n,) weights
    const floating* pw,       # IN  (n,) pos_weight (BCE_WITH_LOGITS)
    floating scale,           # IN  gradient factor (1/count for "mean"), applied
                              #     last: scale * w underflows for a subnormal w
    floating* grad,           # OUT (n,)
    floating* loss,           # OUT (n,) weighted per-element loss
    Py_ssize_t n,
) noexcept nogil:
    cdef Py_ssize_t j
    if op == BCE_WITH_LOGITS:
        for j in range(n):
            grad[j] = scale * (w[j] * bce_logits_grad(x[j], y[j], pw[j]))
            loss[j] = w[j] * bce_logits_loss(x[j], y[j], pw[j])
    elif op == BCE:
        for j in range(n):
            grad[j] = scale * (w[j] * bce_grad(x[j], y[j]))
            loss[j] = w[j] * bce_loss(x[j], y[j])
    else:
        for j in range(n):
            grad[j] = scale * (w[j] * squared_error_grad(x[j], y[j]))
            loss[j] = w[j] * squared_error_loss(x[j], y[j])


cdef enum:
    # values of a row per work item: a long row (a 1-D input is one row) is
    # split so that it runs on every thread and its scratch stays in L1
    LOSS_CHUNK = 4096


cdef inline Py_ssize_t chunks_per_row(Py_ssize_t cols) noexcept nogil:
    return (cols + LOSS_CHUNK - 1) // LOSS_CHUNK


cdef int elementwise_rows(
    int op,
    const floating* x,        # IN  (rows, cols) C-contiguous
    const floating* y,        # IN  (rows, cols)
    const floating* w,        # IN  weights, rows w_row_stride apart (0: one per column)
    Py_ssize_t w_row_stride,
    const floating* pw,       # IN  (cols,) pos_weight
    floating scale,
    floating* grad,           # OUT (rows, cols)
    floating* elem_loss,      # OUT (rows, cols) per-element loss, or NULL
    double* chunk_loss,       # OUT (rows * chunks_per_row(cols),) loss sums of the
                              #     chunks, row by row (when elem_loss is NULL)
    Py_ssize_t rows, Py_ssize_t cols,
    int n_threads,
) noexcept nogil:
    """Returns 0, or -1 when the scratch could not be allocated."""
    cdef Py_ssize_t chunks = chunks_per_row(cols), item, i, start, length
    cdef floating* scratch = NULL
    cdef floating* mine
    cdef floating* loss
    cdef int team = n_threads if n_threads < rows * chunks else <int>max(rows * chunks, 1)
    cdef int failed = 0
    # one chunk of per-element losses per thread, before the team starts
    scratch = <floating*>thread_scratch(team, elem_loss == NULL, LOSS_CHUNK,
                                        sizeof(floating), &failed)
    if failed:
        return -1
    with parallel(num_threads=team, use_threads_if=team > 1 and rows * cols >= PARALLEL_MIN):
        mine = scratch + threadid() * LOSS_CHUNK if scratch != NULL else NULL
        for item in prange(rows * chunks, schedule="static"):
            i = item // chunks
            start = (item - i * chunks) * LOSS_CHUNK
            length = min(<Py_ssize_t>LOSS_CHUNK, cols - start)
            loss = elem_loss + i * cols + start if elem_loss != NULL else mine
            loss_row(op, x + i * cols + start, y + i * cols + start,
                     w + i * w_row_stride + start, pw + start, scale,
                     grad + i * cols + start, loss, length)
            if elem_loss == NULL:
                chunk_loss[item] = row_sum(loss, length)
    free(scratch)
    return 0


def elementwise_loss(int op, cnp.ndarray x, cnp.ndarray y, cnp.ndarray weight,
                     Py_ssize_t weight_row_stride, cnp.ndarray pos_weight, int reduction,
                     cnp.ndarray grad, object loss_out, int n_threads):
    """Element-wise loss over C-contiguous 2-D (rows, cols) arrays of one dtype.

    `weight` holds rows weight_row_stride elements apart (0: one per column)
    and `pos_weight` one value per column; the caller passes ones where the
    user gave none.  Fills `grad`; returns the reduced loss (MEAN or SUM) or
    fills `loss_out` (NONE) and returns None.
    """
    cdef Py_ssize_t rows = cnp.PyArray_DIM(x, 0), cols = cnp.PyArray_DIM(x, 1)
    cdef Py_ssize_t count = rows * cols, i, n_items = rows * chunks_per_row(cols)
    cdef void* elem = NULL
    cdef double* chunk_loss = NULL
    cdef double total = 0, scale = 1.0 / count if reduction == MEAN and count else 1.0
    cdef int status
    require_aligned((x, y, weight, pos_weight, grad, loss_out))
    if reduction == NONE:
        elem = cnp.PyArray_DATA(<cnp.ndarray>loss_out)
    else:
        chunk_loss = <double*>malloc(max(n_items, 1) * sizeof(double))
        if chunk_loss == NULL:
            raise MemoryError("nnkernels: could not allocate the row losses")
    try:
        with nogil:
            if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
                status = elementwise_rows[float](
                    op, <const float*>cnp.PyArray_DATA(x), <const float*>cnp.PyArray_DATA(y),
                    <const float*>cnp.PyArray_DATA(weight), weight_row_stride,
                    <const float*>cnp.PyArray_DATA(pos_weight), scale,
                    <float*>cnp.PyArray_DATA(grad), <float*>elem, chunk_loss, rows, cols,
                    n_threads)
            else:
                status = elementwise_rows[double](
                    op, <const double*>cnp.PyArray_DATA(x), <const double*>cnp.PyArray_DATA(y),
                    <const double*>cnp.PyArray_DATA(weight), weight_row_stride,
                    <const double*>cnp.PyArray_DATA(pos_weight), scale,
                    <double*>cnp.PyArray_DATA(grad), <double*>elem, chunk_loss, rows, cols,
                    n_threads)
        if status != 0:
            raise MemoryError("nnkernels: could not allocate scratch rows")
        if reduction == NONE:
            return None
        for i in range(n_items):
            total += chunk_loss[i]
        if reduction == MEAN:
            return total / count if count else NAN
        return total
    finally:
        free(chunk_loss)


# Range check of binary_cross_entropy's probabilities -----------------------------
cdef enum:
    SCAN_BLOCK = 4096


cdef Py_ssize_t first_outside(const floating* x, Py_ssize_t n) noexcept nogil:
    """Index of the first x outside [0, 1] (NaN is not outside), or -1.

    Each block counts its offenders (an integer sum, which vectorises); only a
    block that has one is searched element by element."""
    cdef Py_ssize_t b, j, start, stop, bad
    cdef floating zero = 0, one = 1
    for b in range((n + SCAN_BLOCK - 1) // SCAN_BLOCK):
        start = b * SCAN_BLOCK
        stop = min(start + <Py_ssize_t>SCAN_BLOCK, n)
        bad = 0
        for j in range(start, stop):
            bad += (x[j] < zero) | (x[j] > one)
        if bad:
            for j in range(start, stop):
                if x[j] < zero or x[j] > one:
                    return j
    return -1


def first_outside_unit_interval(cnp.ndarray x):
    """Flat index of the first element of a C-contiguous float32/float64 array
    outside [0, 1] (NaN passes), or -1.  One read of the array, no temporaries."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x), pos
    if not cnp.PyArray_IS_C_CONTIGUOUS(x) or not cnp.PyArray_ISALIGNED(x):
        raise ValueError("internal: first_outside_unit_interval needs a C-contiguous, "
                         "aligned array")
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        with nogil:
            pos = first_outside[float](<const float*>cnp.PyArray_DATA(x), n)
    elif cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT64:
        with nogil:
            pos = first_outside[double](<const double*>cnp.PyArray_DATA(x), n)
    else:
        raise TypeError(f"internal: unsupported dtype {x.dtype}")
    return pos
