# cython: language_level=3
"""Fused optimizer updates: SGD (momentum, Nesterov) and Adam (AdamW, AMSGrad).

Design
------
An update is a map over memory: element i of the parameter θ and of its
state (momentum buffer, or Adam's moments m, v and AMSGrad's v̂) depends on
element i of the gradient and on a few scalars, nothing else.  So each
kernel is one pass that reads θ, g and the state once and writes θ and the
state once, in place, with no temporary: the speed limit is the bytes moved.

The arithmetic is PyTorch's single-tensor step (torch.optim.SGD and Adam
with foreach=False on the CPU), operation for operation, with its roundings:
the scalars are Python floats (double) cast to the tensor's dtype where
PyTorch casts them, and a*b + c is rounded once (FMA) where PyTorch's
vectorised CPU kernels round once (add with alpha, lerp, addcmul).  A build
for a target without FMA rounds those twice (a software fma would cost more
than the memory traffic); the results then differ from PyTorch's by an ulp
in places.  PyTorch's sqrt is MKL's (within an ulp), this one is correctly
rounded.  Each formula is written once below, next to its equation; the
loops only apply them.  The per-call options that do not change what is
read or written (maximize, weight decay, the lerp form, Nesterov) are
selects on loop-invariant flags, which the compiler hoists or blends; the
ones that do (a momentum buffer, AMSGrad's v̂) pick a loop.

The Python layer (nnkernels._api_optim) hands over validated, aligned arrays
of one dtype and shape, all C- or all F-contiguous and apart in memory; the
entries here check exactly that in C for the common call and return False
otherwise.  From PARALLEL_MIN elements on, the flat range is cut into
CHUNK-sized pieces that OpenMP threads take in order; below it (or on one
thread) one loop runs in the calling thread, without entering a parallel
region.  An element's result does not depend on the piece it is in, so any
thread count gives the same bits.
"""

cimport numpy as cnp
from nnkernels._entry cimport plain_array, same_dims, same_order, apart
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt, sqrtf, pow
from libc.stdint cimport int64_t

cnp.import_array()

from nnkernels._math cimport NNK_ISA, NNK_CFLAGS
from nnkernels._codes cimport OPTIM_PARALLEL_MIN

ISA = NNK_ISA.decode()
COMPILE_ARGS = NNK_CFLAGS.decode()
PARALLEL_MIN = OPTIM_PARALLEL_MIN       # elements from which threads share a call

from nnkernels._optim_select cimport (nnk_madd_f, nnk_madd_d, nnk_mask, nnk_pick_f, nnk_pick_d,
                                      NNK_FUSED_MADD)

FUSED_MADD = bool(NNK_FUSED_MADD)      # whether a*b + c is rounded once here

cdef enum:
    CHUNK = 16384          # elements per work item (64 KiB of float32)


# The scalars of one call, as PyTorch computes them: in double, from the
# Python floats; the loops cast each to the dtype once (as PyTorch casts a
# Scalar), then work in the dtype.
cdef struct SgdScalars:
    double weight_decay    # λ                   (grad.add(param, alpha=λ))
    double momentum        # μ                   (buf.mul_(μ), grad.add(buf, alpha=μ))
    double damp            # 1 − dampening       (buf.add_(grad, alpha=1 − dampening))
    double neg_lr          # −lr                 (param.add_(grad, alpha=−lr))
    bint maximize, decay, first, nesterov

cdef struct AdamScalars:
    double shrink          # 1 − lr λ (AdamW), else 1   (param.mul_(1 − lr λ))
    double weight_decay    # λ, coupled (Adam)          (grad.add(param, alpha=λ))
    double w               # 1 − β₁                     (exp_avg.lerp_(grad, 1 − β₁))
    double beta2           # β₂                         (exp_avg_sq.mul_(β₂))
    double q               # 1 − β₂                     (.addcmul_(grad, grad, value=1 − β₂))
    double c2_sqrt         # √(1 − β₂ᵗ)                 (exp_avg_sq.sqrt() / c2_sqrt)
    double eps             # ε                          (.add_(ε))
    double neg_step        # −lr / (1 − β₁ᵗ)            (param.addcdiv_(m, denom, value=...))
    bint maximize, decay


# ---- the formulas -----------------------------------------------------------

cdef inline floating madd(floating a, floating b, floating c) noexcept nogil:
    """a b + c, rounded once where the target has FMA."""
    if floating is float:
        return nnk_madd_f(a, b, c)
    else:
        return nnk_madd_d(a, b, c)


ctypedef int64_t mask_t     # a flag as a bit mask, nnk_mask(flag): all ones or zero

cdef inline floating pick(mask_t flag, floating a, floating b) noexcept nogil:
    """a if flag else b, bit for bit (a vectorisable select on an invariant flag)."""
    if floating is float:
        return nnk_pick_f(flag, a, b)
    else:
        return nnk_pick_d(flag, a, b)


# g ← −g if maximize;   g ← g + λ θ   (coupled weight decay, when λ ≠ 0)
cdef inline floating effective_grad(floating g, floating theta, mask_t maximize, mask_t decay,
                                    floating wd) noexcept nogil:
    g = pick(maximize, -g, g)
    return pick(decay, madd(theta, wd, g), g)


# b ← g at the first step, else μ b + (1 − dampening) g
cdef inline floating momentum_buffer(floating b, floating g, floating mu, floating damp,
                                     mask_t first) noexcept nogil:
    return pick(first, g, madd(g, damp, b * mu))


# d ← g + μ b (Nesterov), else b
cdef inline floating sgd_direction(floating g, floating b, floating mu,
                                   mask_t nesterov) noexcept nogil:
    return pick(nesterov, madd(b, mu, g), b)


# θ ← θ − lr d
cdef inline floating descend(floating theta, floating d, floating neg_lr) noexcept nogil:
    return madd(d, neg_lr, theta)


# m ← m + w (g − m), w = 1 − β₁: PyTorch's lerp, m + w (g − m) for w < 0.5 and
# g − (1 − w)(g − m) for w ≥ 0.5; coeff is w or w − 1 and the base m or g
cdef inline floating first_moment(floating m, floating g, floating coeff,
                                  mask_t big_weight) noexcept nogil:
    return madd(coeff, g - m, pick(big_weight, g, m))


# v ← β₂ v + (1 − β₂) g²   (mul_, then addcmul_: ((1 − β₂) g) g + β₂ v, one rounding)
cdef inline floating second_moment(floating v, floating g, floating beta2,
                                   floating q) noexcept nogil:
    return madd(q * g, g, v * beta2)


# v̂ ← max(v̂, v), NaN if either is NaN (torch.maximum)
cdef inline floating nan_max(floating a, floating b) noexcept nogil:
    cdef floating larger = a if a > b else b      # b when b is NaN
    return larger if a == a else a


cdef inline floating root(floating x) noexcept nogil:
    """√x, correctly rounded, in the dtype."""
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


# θ ← θ + (−lr / c₁) m / (√v / √c₂ + ε)
cdef inline floating adam_step(floating theta, floating m, floating v, floating c2_sqrt,
                               floating eps, floating neg_step) noexcept nogil:
    return theta + (neg_step * m) / (root(v) / c2_sqrt + eps)


# ---- the loops ----------------------------------------------------------------

cdef void sgd_chunk(
    floating* theta,        # IN/OUT  θ
    const floating* grad,   # IN      g
    floating* buf,          # IN/OUT  momentum buffer b (NULL: no momentum)
    Py_ssize_t n,
    SgdScalars h,
) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating g, b
    cdef floating wd = <floating>h.weight_decay, mu = <floating>h.momentum
    cdef floating damp = <floating>h.damp, neg_lr = <floating>h.neg_lr
    cdef mask_t maximize = nnk_mask(h.maximize), decay = nnk_mask(h.decay)
    cdef mask_t first = nnk_mask(h.first), nesterov = nnk_mask(h.nesterov)
    if buf == NULL:
        for i in range(n):
            g = effective_grad(grad[i], theta[i], maximize, decay, wd)
            theta[i] = descend(theta[i], g, neg_lr)
    else:
        for i in range(n):
            g = effective_grad(grad[i], theta[i], maximize, decay, wd)
            b = momentum_buffer(buf[i], g, mu, damp, first)
            buf[i] = b
            theta[i] = descend(theta[i], sgd_direction(g, b, mu, nesterov), neg_lr)


cdef void adam_chunk(
    floating* theta,        # IN/OUT  θ
    const floating* grad,   # IN      g
    floating* m,            # IN/OUT  first moment (exp_avg)
    floating* v,            # IN/OUT  second moment (exp_avg_sq)
    floating* vmax,         # IN/OUT  AMSGrad's v̂ (max_exp_avg_sq); NULL: no AMSGrad
    Py_ssize_t n,
    AdamScalars h,
) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating t, g, mi, vi, one = 1
    cdef floating shrink = <floating>h.shrink, wd = <floating>h.weight_decay
    cdef floating w = <floating>h.w, beta2 = <floating>h.beta2, q = <floating>h.q
    cdef floating c2_sqrt = <floating>h.c2_sqrt, eps = <floating>h.eps
    cdef floating neg_step = <floating>h.neg_step
    cdef bint big_weight = not (-0.5 < w < 0.5)
    cdef floating coeff = w - one if big_weight else w
    cdef mask_t maximize = nnk_mask(h.maximize), decay = nnk_mask(h.decay)
    cdef mask_t big = nnk_mask(big_weight)
    if vmax == NULL:
        for i in range(n):
            t = theta[i] * shrink
            g = effective_grad(grad[i], t, maximize, decay, wd)
            mi = first_moment(m[i], g, coeff, big)
            vi = second_moment(v[i], g, beta2, q)
            m[i] = mi
            v[i] = vi
            theta[i] = adam_step(t, mi, vi, c2_sqrt, eps, neg_step)
    else:
        for i in range(n):
            t = theta[i] * shrink
            g = effective_grad(grad[i], t, maximize, decay, wd)
            mi = first_moment(m[i], g, coeff, big)
            vi = second_moment(v[i], g, beta2, q)
            m[i] = mi
            v[i] = vi
            vi = nan_max(vmax[i], vi)
            vmax[i] = vi
            theta[i] = adam_step(t, mi, vi, c2_sqrt, eps, neg_step)


cdef void sgd_all(floating* theta, const floating* grad, floating* buf, Py_ssize_t n,
                  SgdScalars h, int n_threads) noexcept nogil:
    cdef Py_ssize_t c, start, n_chunks = (n + CHUNK - 1) // CHUNK
    if n_threads <= 1 or n < OPTIM_PARALLEL_MIN:     # no parallel region to enter
        sgd_chunk(theta, grad, buf, n, h)
        return
    for c in prange(n_chunks, num_threads=n_threads, schedule="static"):
        start = c * CHUNK
        sgd_chunk(theta + start, grad + start, (buf + start) if buf != NULL else NULL,
                  min(<Py_ssize_t>CHUNK, n - start), h)


cdef void adam_all(floating* theta, const floating* grad, floating* m, floating* v,
                   floating* vmax, Py_ssize_t n, AdamScalars h, int n_threads) noexcept nogil:
    cdef Py_ssize_t c, start, n_chunks = (n + CHUNK - 1) // CHUNK
    if n_threads <= 1 or n < OPTIM_PARALLEL_MIN:
        adam_chunk(theta, grad, m, v, vmax, n, h)
        return
    for c in prange(n_chunks, num_threads=n_threads, schedule="static"):
        start = c * CHUNK
        adam_chunk(theta + start, grad + start, m + start, v + start,
                   (vmax + start) if vmax != NULL else NULL,
                   min(<Py_ssize_t>CHUNK, n - start), h)


# ---- the entries ----------------------------------------------------------------

from cpython.float cimport PyFloat_CheckExact
from cpython.long cimport PyLong_CheckExact
from cpython.tuple cimport PyTuple_CheckExact

cdef extern from "Python.h":
    long long PyLong_AsLongLongAndOverflow(object obj, int* overflow) except? -1

cdef bint simple(tuple arrays, Py_ssize_t n_written):
    """Every array a plain ndarray of float32/float64, machine order, aligned,
    of one dtype and shape, all C- or all F-contiguous, apart from each other
    in memory; the first n_written writable.  (Contiguous arrays cannot
    overlap themselves.)"""
    cdef cnp.ndarray first
    cdef int typenum, nd
    cdef Py_ssize_t k, j
    if type(arrays[0]) is not cnp.ndarray:
        return False
    first = arrays[0]
    typenum, nd = cnp.PyArray_TYPE(first), cnp.PyArray_NDIM(first)
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        return False
    for k in range(len(arrays)):
        if not plain_array(arrays[k], typenum, nd):
            return False
        if (not same_dims(<cnp.ndarray>arrays[k], first)
                or not same_order(<cnp.ndarray>arrays[k], first)
                or (k < n_written and not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>arrays[k]))):
            return False
        for j in range(k):
            if not apart(<cnp.ndarray>arrays[k], <cnp.ndarray>arrays[j]):
                return False
    return True


cdef inline bint is_bool(object x):
    return x is True or x is False


cdef long long positive_step(object step):
    """step as a C integer, or 0 unless it is a Python int >= 1."""
    cdef int overflow = 0
    cdef long long s
    if not PyLong_CheckExact(step):
        return 0
    s = PyLong_AsLongLongAndOverflow(step, &overflow)
    return s if overflow == 0 and s >= 1 else 0


def sgd(param, grad, buf, object step, object lr, object momentum, object dampening,
        object nesterov, object weight_decay, object maximize, int n_threads):
    """One SGD step in place when the call is simple; returns whether it ran.

    Simple: `simple` arrays (param, buf written; buf None without momentum),
    Python floats, bools and an int step that PyTorch would accept.  Anything
    else returns False untouched, and nnkernels._api_optim validates (with
    its messages) and copies.
    """
    cdef SgdScalars h
    cdef long long s = positive_step(step)
    if (not PyFloat_CheckExact(lr) or not PyFloat_CheckExact(momentum)
            or not PyFloat_CheckExact(dampening) or not PyFloat_CheckExact(weight_decay)
            or not is_bool(nesterov) or not is_bool(maximize) or s == 0):
        return False
    h.weight_decay = weight_decay
    h.momentum = momentum
    h.neg_lr = -<double>lr
    h.damp = 1.0 - <double>dampening
    h.maximize = maximize is True
    h.nesterov = nesterov is True
    h.first = s == 1
    h.decay = h.weight_decay != 0.0
    if not (-h.neg_lr >= 0.0 and h.momentum >= 0.0 and h.weight_decay >= 0.0):
        return False
    if h.nesterov and not (h.momentum > 0.0 and h.damp == 1.0):
        return False
    if h.momentum != 0.0:
        if buf is None or not simple((param, buf, grad), 2):
            return False
    else:
        buf = None
        if not simple((param, grad), 1):
            return False
    cdef cnp.ndarray p = param
    cdef Py_ssize_t n = cnp.PyArray_SIZE(p)
    cdef void* b = NULL if buf is None else cnp.PyArray_DATA(<cnp.ndarray>buf)
    if cnp.PyArray_TYPE(p) == cnp.NPY_FLOAT32:
        with nogil:
            sgd_all[float](<float*>cnp.PyArray_DATA(p),
                           <const float*>cnp.PyArray_DATA(<cnp.ndarray>grad),
                           <float*>b, n, h, n_threads)
    else:
        with nogil:
            sgd_all[double](<double*>cnp.PyArray_DATA(p),
                            <const double*>cnp.PyArray_DATA(<cnp.ndarray>grad),
                            <double*>b, n, h, n_threads)
    return True


def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, object step, object lr,
         object betas, object eps, object weight_decay, object decoupled, object amsgrad,
         object maximize, int n_threads):
    """One Adam/AdamW step in place when the call is simple (as for `sgd`);
    returns whether it ran."""
    cdef AdamScalars h
    cdef long long s = positive_step(step)
    cdef double beta1, beta2, lr_, wd
    if (not PyFloat_CheckExact(lr) or not PyFloat_CheckExact(eps)
            or not PyFloat_CheckExact(weight_decay) or not PyTuple_CheckExact(betas)
            or len(<tuple>betas) != 2 or not PyFloat_CheckExact((<tuple>betas)[0])
            or not PyFloat_CheckExact((<tuple>betas)[1]) or not is_bool(decoupled)
            or not is_bool(amsgrad) or not is_bool(maximize) or s == 0):
        return False
    lr_, wd, beta1, beta2 = lr, weight_decay, (<tuple>betas)[0], (<tuple>betas)[1]
    if not (lr_ >= 0.0 and <double>eps >= 0.0 and wd >= 0.0
            and 0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
        return False
    if amsgrad is True:
        if max_exp_avg_sq is None or not simple(
                (param, exp_avg, exp_avg_sq, max_exp_avg_sq, grad), 4):
            return False
    else:
        max_exp_avg_sq = None
        if not simple((param, exp_avg, exp_avg_sq, grad), 3):
            return False
    # as torch.optim.Adam: Python floats, β^t by pow (float ** int does the same)
    h.maximize = maximize is True
    h.decay = wd != 0.0 and decoupled is False
    h.shrink = 1.0 - lr_ * wd if decoupled is True and wd != 0.0 else 1.0
    h.weight_decay = wd
    h.w, h.beta2, h.q = 1.0 - beta1, beta2, 1.0 - beta2
    h.c2_sqrt = pow(1.0 - pow(beta2, <double>s), 0.5)     # Python's c ** 0.5
    h.eps = eps
    h.neg_step = -(lr_ / (1.0 - pow(beta1, <double>s)))
    cdef cnp.ndarray p = param
    cdef Py_ssize_t n = cnp.PyArray_SIZE(p)
    cdef void* vm = NULL if max_exp_avg_sq is None else cnp.PyArray_DATA(
        <cnp.ndarray>max_exp_avg_sq)
    cdef void* g = cnp.PyArray_DATA(<cnp.ndarray>grad)
    cdef void* m = cnp.PyArray_DATA(<cnp.ndarray>exp_avg)
    cdef void* v = cnp.PyArray_DATA(<cnp.ndarray>exp_avg_sq)
    if cnp.PyArray_TYPE(p) == cnp.NPY_FLOAT32:
        with nogil:
            adam_all[float](<float*>cnp.PyArray_DATA(p), <const float*>g, <float*>m,
                            <float*>v, <float*>vm, n, h, n_threads)
    else:
        with nogil:
            adam_all[double](<double*>cnp.PyArray_DATA(p), <const double*>g, <double*>m,
                             <double*>v, <double*>vm, n, h, n_threads)
    return True
