# cython: language_level=3
"""Fused softmax + cross-entropy: the loss and its gradient in one pass per row.

Design
------
Rows are read as in the softmax family (nnkernels/_softmax.pyx): one
sample's C logits per row, gathered into scratch when the class axis is
not contiguous.  Cross-entropy with every option is one formula.  The
target enters through a per-class vector q (never materialised for class
indices):

    probabilities y:  q_j = w_j ((1 - eps) y_j + eps / C)
    class index t:    q_j = (1 - eps) w_t [j == t] + (eps / C) w_j

    loss_i = -sum_j q_j log p_ij,  log p_ij = (z_ij - m) - log s,
           = S log s - sum_j q_j (z_ij - m),  S = sum_j q_j,  m = max_j z_ij,
                                              s = sum_j e**(z_ij - m)
    dloss_i/dz_ij = S p_ij - q_j

The second form (two non-negative terms, no cancellation) is computed: its
dot runs before the exponentials, off the path of log s.  Where S is not
finite (an infinite weight), q_j (z_ij - m) can be inf * 0 at the max class,
so such rows take the first form, term by term as PyTorch (inf, not NaN).

which is PyTorch's cross_entropy for weight, label_smoothing (eps/C) and
soft targets; with none of them q is one-hot, S = 1 and dZ = (P - Y)/N.
"mean" multiplies every row's gradient by 1/denominator, so the pre-pass over
the labels (which also validates them) sums the row weights first.

Per-row losses go to a buffer and are summed after the parallel loop, so the
loss does not depend on the thread count.
"""

cimport numpy as cnp
from numpy cimport npy_intp
from cython cimport floating
from cython.parallel cimport prange, parallel, threadid
from libc.math cimport fabs, log, INFINITY, NAN
from libc.stdlib cimport malloc, free

from nnkernels._math cimport lanes_dot, row_max, row_sum

cnp.import_array()

import numpy as np

from nnkernels._math cimport NNK_ISA, NNK_CFLAGS
from nnkernels._entry cimport require_aligned, plain_array, apart, writable_result
from nnkernels._codes cimport NONE, MEAN, ROW_PARALLEL_MIN as PARALLEL_MIN
from nnkernels._rows cimport Rows, as_rows, read_row, write_row, flush_row, thread_scratch
from nnkernels._softmax_rows cimport exp_shifted, scale_sub, slot, take_slot

ISA = NNK_ISA.decode()
COMPILE_ARGS = NNK_CFLAGS.decode()


# Row kernels ---------------------------------------------------------------------
# Cross-entropy of one row with class index t (see the design note):
# returns loss_i, writes scale * dloss_i/dz into grad.  w: class weights or NULL.
cdef inline double ce_index_row(
    const floating* z,        # IN  (n,) logits
    Py_ssize_t t,             # IN  class index, 0 <= t < n
    const floating* w,        # IN  (n,) class weights, or NULL
    floating w_sum,           # IN  sum_j w_j (n when w is NULL)
    floating keep,            # IN  1 - eps
    floating eps_c,           # IN  eps / C
    floating scale,           # IN  gradient factor (1/denominator for "mean")
    floating* grad,           # OUT (n,)
    Py_ssize_t n,
) noexcept nogil:
    cdef floating m = row_max(z, n)
    cdef floating w_t = w[t] if w != NULL else 1
    # the smoothing term only when it is on: 0 * (an infinite weight sum) is NaN
    cdef floating S = keep * w_t + (eps_c * w_sum if eps_c != 0 else 0)
    # loss = S log s - sum_j q_j (z_j - m): the dot before the exponentials,
    # off the path of log s (term by term after it costs 18% with smoothing)
    cdef double qz = keep * w_t * (z[t] - m), loss, log_s
    cdef floating s
    if eps_c != 0:
        qz += eps_c * lanes_dot(w, z, m, 0, n)
    s = exp_shifted(z, m, grad, n)
    log_s = log(s)
    loss = S * log_s - qz
    if not fabs(S) < INFINITY:
        # an infinite weight at the max class makes q_j (z_j - m) inf * 0:
        # sum -q_j log p_j term by term instead, as PyTorch does (inf there)
        loss = -keep * w_t * ((z[t] - m) - log_s)
        if eps_c != 0:
            loss -= eps_c * <double>lanes_dot(w, z, m, <floating>log_s, n)
    # q_j = (eps/C) w_j off the target; w only read when smoothing is on (and
    # no inf * 0 from an overflowed 1/denominator when it is off)
    scale_sub(grad, scale * S / s, scale * eps_c if eps_c != 0 else 0,
              w if eps_c != 0 else NULL, n)
    grad[t] -= scale * keep * w_t
    return loss


# Cross-entropy of one row with probability targets y; q is scratch (n,).
cdef inline double ce_prob_row(
    const floating* z,        # IN  (n,) logits
    const floating* y,        # IN  (n,) target probabilities
    const floating* w,        # IN  (n,) class weights, or NULL
    floating keep,            # IN  1 - eps
    floating eps_c,           # IN  eps / C
    floating scale,           # IN  gradient factor
    floating* q,              # SCRATCH (n,)
    floating* grad,           # OUT (n,)
    Py_ssize_t n,
) noexcept nogil:
    cdef floating m = row_max(z, n)
    cdef floating S, s
    cdef double qz
    cdef Py_ssize_t j
    if n == 0:      # no classes: an empty sum (not S log s = 0 * log 0)
        return 0
    if w == NULL:
        for j in range(n):
            q[j] = keep * y[j] + eps_c
    else:
        for j in range(n):
            q[j] = w[j] * (keep * y[j] + eps_c)
    S = row_sum(q, n)
    qz = lanes_dot(q, z, m, 0, n)       # before the exponentials, as in ce_index_row
    s = exp_shifted(z, m, grad, n)
    scale_sub(grad, scale * S / s, scale, q, n)
    if not fabs(S) < INFINITY:          # an infinite q_j: term by term (see ce_index_row)
        return -lanes_dot(q, z, m, <floating>log(s), n)
    return S * <double>log(s) - qz


# Drivers -------------------------------------------------------------------------
cdef int cross_entropy_rows(
    Rows z,                   # IN  logits
    const Py_ssize_t* labels, # IN  (n_rows,) class indices, or NULL
    Rows y,                   # IN  probability targets (when labels is NULL)
    const floating* w,        # IN  (n,) class weights, or NULL
    Py_ssize_t ignore_index,
    floating eps, floating scale,
    Rows grad,                # OUT
    double* row_loss,         # OUT (n_rows,)
    Py_ssize_t n_rows, Py_ssize_t n,
    int n_threads,
) noexcept nogil:
    """Returns 0, or -1 when the scratch rows could not be allocated."""
    cdef Py_ssize_t i, j, t
    cdef floating keep = 1 - eps, eps_c = eps / n, w_sum = n
    cdef int failed = 0, n_slots = 0
    cdef bint probs = labels == NULL
    cdef int slot_z = take_slot(z.class_stride != 1, &n_slots)
    cdef int slot_y = take_slot(probs and y.class_stride != 1, &n_slots)
    cdef int slot_grad = take_slot(grad.class_stride != 1, &n_slots)
    cdef int slot_q = take_slot(probs, &n_slots)      # ce_prob_row's q
    cdef int team = n_threads if n_threads < n_rows else <int>max(n_rows, 1)
    cdef floating* scratch = <floating*>thread_scratch(team, n_slots, n,
                                                       sizeof(floating), &failed)
    cdef floating* mine
    cdef const floating* zr
    cdef floating* g
    if failed:
        return -1
    if w != NULL:
        w_sum = row_sum(w, n)
    with parallel(num_threads=team, use_threads_if=team > 1 and n_rows * n >= PARALLEL_MIN):
        mine = scratch + threadid() * n_slots * n if scratch != NULL else NULL
        for i in prange(n_rows, schedule="static"):
            zr = read_row(z, i, n, slot(mine, slot_z, n))
            g = write_row(grad, i, slot(mine, slot_grad, n))
            if probs:
                row_loss[i] = ce_prob_row(zr, read_row(y, i, n, slot(mine, slot_y, n)), w,
                                          keep, eps_c, scale, slot(mine, slot_q, n), g, n)
            else:
                t = labels[i]
                if t == ignore_index:
                    for j in range(n):
                        g[j] = 0
                    row_loss[i] = 0
                else:
                    row_loss[i] = ce_index_row(zr, t, w, w_sum, keep, eps_c, scale, g, n)
            flush_row(grad, i, n, g)
    free(scratch)
    return 0


cdef Py_ssize_t scan_labels(
    const Py_ssize_t* labels, Py_ssize_t n_rows, Py_ssize_t n_classes,
    Py_ssize_t ignore_index, const floating* w,
    double* weight_total,     # OUT sum of w[t] (1 if w is NULL) over rows not ignored
) noexcept nogil:
    """Validate the labels; returns the first bad position, or -1."""
    cdef Py_ssize_t i, t
    cdef double total = 0
    for i in range(n_rows):
        t = labels[i]
        if t == ignore_index:
            continue
        if t < 0 or t >= n_classes:
            return i
        total += w[t] if w != NULL else 1
    weight_total[0] = total
    return -1


def cross_entropy(cnp.ndarray z, cnp.ndarray target, object weight, Py_ssize_t ignore_index,
                  double label_smoothing, int reduction, cnp.ndarray grad,
                  object loss_rows, int class_axis, int n_threads):
    """Fused softmax cross-entropy: fills `grad`, returns the reduced loss (a float),
    or fills `loss_rows` (reduction NONE) and returns None.

    `target` is an intp array of class indices (n_rows,) or a float array of
    z's shape.  Labels are validated here, before any work: a bad one raises
    ValueError naming its position and value.
    """
    return run_cross_entropy(z, target, weight, ignore_index, label_smoothing, reduction,
                             grad, loss_rows, class_axis, n_threads)


cdef object run_cross_entropy(cnp.ndarray z, cnp.ndarray target, object weight,
                              Py_ssize_t ignore_index, double label_smoothing, int reduction,
                              cnp.ndarray grad, object loss_rows, int class_axis,
                              int n_threads):
    cdef Py_ssize_t n = cnp.PyArray_DIM(z, class_axis)
    cdef Py_ssize_t n_rows = cnp.PyArray_DIM(z, 1 - class_axis)
    cdef Rows rz = as_rows(z, class_axis)
    cdef Rows rg = as_rows(grad, class_axis)
    cdef Rows ry = rz
    cdef const Py_ssize_t* labels = NULL
    cdef void* w = NULL
    cdef double denominator, scale, total = 0, weight_total = 0
    cdef Py_ssize_t bad = -1, i
    cdef int status
    cdef bint single = cnp.PyArray_TYPE(z) == cnp.NPY_FLOAT32
    cdef double* row_loss
    require_aligned((z, target, weight, grad, loss_rows))
    if weight is not None:
        w = cnp.PyArray_DATA(<cnp.ndarray>weight)
    if cnp.PyArray_TYPE(target) == cnp.NPY_INTP and cnp.PyArray_NDIM(target) == 1:
        labels = <const Py_ssize_t*>cnp.PyArray_DATA(target)
        with nogil:
            if single:
                bad = scan_labels[float](labels, n_rows, n, ignore_index, <const float*>w, &weight_total)
            else:
                bad = scan_labels[double](labels, n_rows, n, ignore_index, <const double*>w, &weight_total)
        if bad >= 0:
            raise ValueError(
                f"target[{bad}] = {labels[bad]} is not a class index in [0, {n}) "
                f"and not ignore_index ({ignore_index})")
        denominator = weight_total
    else:
        ry = as_rows(target, class_axis)
        denominator = n_rows

    row_loss = <double*>malloc(max(n_rows, 1) * sizeof(double))
    if row_loss == NULL:
        raise MemoryError("nnkernels: could not allocate the row losses")
    try:
        scale = 1.0
        if reduction == MEAN:
            # denominator 0: NaN loss; rows not ignored get NaN gradients and
            # ignored rows zeros, so all rows ignored -> zero gradient (as torch)
            scale = 1.0 / denominator if denominator != 0 else NAN
        with nogil:
            if single:
                status = cross_entropy_rows[float](rz, labels, ry, <const float*>w, ignore_index,
                                                   label_smoothing, scale, rg, row_loss,
                                                   n_rows, n, n_threads)
            else:
                status = cross_entropy_rows[double](rz, labels, ry, <const double*>w, ignore_index,
                                                    label_smoothing, scale, rg, row_loss,
                                                    n_rows, n, n_threads)
        if status != 0:
            raise MemoryError("nnkernels: could not allocate scratch rows")
        if reduction == NONE:
            fill_from_doubles(<cnp.ndarray>loss_rows, row_loss, n_rows)
            return None
        for i in range(n_rows):
            total += row_loss[i]
        if reduction == MEAN:
            return total / denominator if denominator != 0 else NAN
        return total
    finally:
        free(row_loss)


def cross_entropy_fast(object z, object target, int reduction, object ignore_index,
                       object label_smoothing, object out, int n_threads):
    """The common call, checked in C: 2-D contiguous float logits, intp class
    indices, no weight, an int ignore_index, a float label_smoothing in
    [0, 1], `out` None or a plain writable array apart from the inputs.
    Returns (loss, grad), or None (nothing done) for
    nnkernels._api_cross_entropy to validate with its messages."""
    cdef cnp.ndarray logits, loss_rows = None
    cdef int typenum
    cdef double eps
    cdef npy_intp n_rows
    if type(z) is not cnp.ndarray or type(ignore_index) is not int:
        return None
    if type(label_smoothing) is float:
        eps = label_smoothing
    elif type(label_smoothing) is int:
        eps = <double>(<long>label_smoothing) if -2 < label_smoothing < 2 else -1
    else:
        return None
    if not 0 <= eps <= 1 or not -2**62 <= ignore_index <= 2**62:
        return None
    logits = <cnp.ndarray>z
    typenum = cnp.PyArray_TYPE(logits)
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        return None
    if not plain_array(logits, typenum, 2) or not cnp.PyArray_IS_C_CONTIGUOUS(logits):
        return None
    n_rows = cnp.PyArray_DIM(logits, 0)
    if not plain_array(target, cnp.NPY_INTP, 1) or cnp.PyArray_DIM(<cnp.ndarray>target, 0) != n_rows:
        return None
    if out is None:
        out = cnp.PyArray_EMPTY(2, cnp.PyArray_DIMS(logits), typenum, 0)
    elif not writable_result(out, logits) or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>out):
        return None
    if reduction == NONE:
        loss_rows = cnp.PyArray_EMPTY(1, &n_rows, typenum, 0)
    if not apart(<cnp.ndarray>out, <cnp.ndarray>target):
        return None
    total = run_cross_entropy(logits, <cnp.ndarray>target, None, ignore_index, eps, reduction,
                          <cnp.ndarray>out, loss_rows, 1, n_threads)
    if reduction == NONE:
        return loss_rows, out
    return (np.float32(total) if typenum == cnp.NPY_FLOAT32 else np.float64(total)), out


cdef void fill_from_doubles(cnp.ndarray dst, const double* src, Py_ssize_t n):
    cdef Py_ssize_t i
    cdef float* f
    cdef double* d
    if cnp.PyArray_TYPE(dst) == cnp.NPY_FLOAT32:
        f = <float*>cnp.PyArray_DATA(dst)
        for i in range(n):
            f[i] = <float>src[i]
    else:
        d = <double*>cnp.PyArray_DATA(dst)
        for i in range(n):
            d[i] = src[i]
