# cython: language_level=3
"""Scalar formulas and row reductions shared by every kernel.

Each formula is written once, as an inline function next to its equation;
the kernels' loops only apply them.  Everything here is branch-free (the
conditionals are selects), so a loop that calls these functions is
vectorised by the C compiler at whatever width the module is built for.

Reductions (max, sum, dot) keep LANES independent partial results: the
compiler vectorises them without being allowed to reassociate floating-point
additions (no -ffast-math), and the result does not depend on the ISA.
"""

from libc.math cimport INFINITY
from libc.stdint cimport int32_t, int64_t
from cython cimport floating

cdef extern from *:
    """
    #include <string.h>
    #include <stdint.h>
    /* 2**n for an integer n in the normal range, from the exponent bits.
       memcpy is C's bit cast; the compiler turns it into a register move. */
    static inline float nnk_pow2_f(int32_t n) {
        int32_t bits = (n + 127) << 23; float f; memcpy(&f, &bits, sizeof f); return f;
    }
    static inline double nnk_pow2_d(int32_t n) {
        int64_t bits = ((int64_t)(n + 1023)) << 52; double d; memcpy(&d, &bits, sizeof d); return d;
    }
    /* k = y + shifter with shifter = 1.5 * 2**(mantissa bits) holds round(y)
       in its low mantissa bits: the difference of the two bit patterns is
       that integer.  Unsigned arithmetic: garbage in (NaN) is garbage out,
       never undefined behaviour. */
    static inline int32_t nnk_shifted_int_f(float k, float shifter) {
        uint32_t a, b; memcpy(&a, &k, sizeof a); memcpy(&b, &shifter, sizeof b);
        return (int32_t)(a - b);
    }
    /* Order-preserving integer keys of floats: non-negative floats keep their
       bits, negative ones get their magnitude bits flipped, so that integer
       order is float order (-0 < +0; a NaN with the sign clear sorts above
       +inf).  The map is its own inverse.  Integer max vectorises as a plain
       reduction, float max does not without -ffinite-math-only. */
    static inline int32_t nnk_key_f(float x) {
        int32_t i; memcpy(&i, &x, sizeof i); return i ^ ((i >> 31) & 0x7fffffff);
    }
    static inline float nnk_unkey_f(int32_t i) {
        int32_t b = i ^ ((i >> 31) & 0x7fffffff); float x; memcpy(&x, &b, sizeof x); return x;
    }
    static inline int32_t nnk_bits_f(float x) { int32_t i; memcpy(&i, &x, sizeof i); return i; }
    static inline float nnk_from_bits_f(int32_t i) { float x; memcpy(&x, &i, sizeof x); return x; }
    static inline int64_t nnk_bits_d(double x) { int64_t i; memcpy(&i, &x, sizeof i); return i; }
    static inline double nnk_from_bits_d(int64_t i) { double x; memcpy(&x, &i, sizeof x); return x; }
    static inline int64_t nnk_key_d(double x) {
        int64_t i; memcpy(&i, &x, sizeof i); return i ^ ((i >> 63) & 0x7fffffffffffffffLL);
    }
    static inline double nnk_unkey_d(int64_t i) {
        int64_t b = i ^ ((i >> 63) & 0x7fffffffffffffffLL); double x; memcpy(&x, &b, sizeof x); return x;
    }
    static inline int32_t nnk_shifted_int_d(double k, double shifter) {
        uint64_t a, b; memcpy(&a, &k, sizeof a); memcpy(&b, &shifter, sizeof b);
        return (int32_t)(uint32_t)(a - b);
    }
    /* ln 2 split into a part exact in few bits and a correction (Cody and
       Waite), so that x - n ln2 loses nothing for the n that occur here. */
    static const double NNK_LN2_HI = 0.693145751953125;
    static const double NNK_LN2_LO = 1.42860682030941723212e-6;
    static const double NNK_LOG2E = 1.4426950408889634;
    /* ln of the smallest normal number: below it e**x - 1 is returned as -1. */
    static const float NNK_EXP_MIN_ARG_F = -87.33654f;
    static const double NNK_EXP_MIN_ARG_D = -708.3964185322641;
    /* ln of half the smallest subnormal number: below it e**x rounds to 0. */
    static const float NNK_EXP_ZERO_ARG_F = -103.97208f;
    static const double NNK_EXP_ZERO_ARG_D = -745.1332191019412;
    """
    float nnk_pow2_f(int32_t n) noexcept nogil
    double nnk_pow2_d(int32_t n) noexcept nogil
    int32_t nnk_shifted_int_f(float k, float shifter) noexcept nogil
    int32_t nnk_shifted_int_d(double k, double shifter) noexcept nogil
    int32_t nnk_key_f(float x) noexcept nogil
    float nnk_unkey_f(int32_t i) noexcept nogil
    int64_t nnk_key_d(double x) noexcept nogil
    int32_t nnk_bits_f(float x) noexcept nogil
    float nnk_from_bits_f(int32_t i) noexcept nogil
    int64_t nnk_bits_d(double x) noexcept nogil
    double nnk_from_bits_d(int64_t i) noexcept nogil
    double nnk_unkey_d(int64_t i) noexcept nogil
    const double NNK_LN2_HI, NNK_LN2_LO, NNK_LOG2E, NNK_EXP_MIN_ARG_D, NNK_EXP_ZERO_ARG_D
    const float NNK_EXP_MIN_ARG_F, NNK_EXP_ZERO_ARG_F
    # the build's ISA level and compile flags, defined by setup.py (each
    # kernel module exports them as ISA and COMPILE_ARGS)
    const char* NNK_ISA
    const char* NNK_CFLAGS

cdef enum:
    LANES = 16   # independent partial results in a reduction (one AVX-512 float vector)
    SUM_BLOCK = 1024   # values per block of a blocked sum (a multiple of LANES)

# e**x for x <= 0 ------------------------------------------------------------
#   x = n ln2 + r, n = round(x / ln2), |r| <= ln2 / 2   =>   e**x = 2**n * e**r
#   e**r by its Taylor polynomial, degree 7 (float32) or 12 (float64): the
#   first omitted term is below half an ulp on |r| <= ln2/2.
# x < ln(smallest normal) gives 0, x = -inf gives 0, NaN gives NaN.  Only
# x <= 0 occurs in the callers (z - max z, -|z|); larger x is not supported.
# Written without branches (the clamp of n is integer min/max, the last line
# a select) so that a loop calling it vectorises.
cdef inline floating reduce_ln2(floating x, int32_t* n_out) noexcept nogil:
    """r with x = n ln2 + r, |r| <= ln2/2; n (clamped below) goes to n_out."""
    cdef floating shifter, k, nf
    cdef int32_t n, n_min
    if floating is float:
        shifter = 12582912.0            # 1.5 * 2**23
        n_min = -151                    # the smallest subnormal's exponent - 1
    else:
        shifter = 6755399441055744.0    # 1.5 * 2**52
        n_min = -1076
    k = x * <floating>NNK_LOG2E + shifter
    nf = k - shifter                    # round(x / ln2) as a float
    if floating is float:
        n = nnk_shifted_int_f(k, shifter)
    else:
        n = nnk_shifted_int_d(k, shifter)
    n = n if n > n_min else n_min       # only matters where the result is 0 anyway
    n = n if n < 0 else 0
    n_out[0] = n
    return x - nf * <floating>NNK_LN2_HI - nf * <floating>NNK_LN2_LO


cdef inline floating expm1_taylor(floating r) noexcept nogil:
    """e**r - 1 on |r| <= ln2/2 (Taylor)."""
    # Literals are typed: an untyped 1 or 0.5 would be a C double and drag
    # float32 work into float64.
    cdef floating one = 1
    if floating is float:
        return r * (one + r * (<float>(1/2.) + r * (<float>(1/6.) + r * (<float>(1/24.)
            + r * (<float>(1/120.) + r * (<float>(1/720.) + r * <float>(1/5040.)))))))
    else:
        return r * (one + r * (1/2. + r * (1/6. + r * (1/24. + r * (1/120. + r * (1/720.
            + r * (1/5040. + r * (1/40320. + r * (1/362880. + r * (1/3628800.
            + r * (1/39916800. + r * (1/479001600.))))))))))))


cdef inline floating pow2_like(floating x, int32_t n) noexcept nogil:
    """2**n in the type of x (x itself is not used), n in the normal range."""
    if floating is float:
        return nnk_pow2_f(n)
    else:
        return nnk_pow2_d(n)


cdef inline bint below_exp_range(floating x) noexcept nogil:
    """Whether e**x is below the smallest normal number (x < its log)."""
    if floating is float:
        return x < NNK_EXP_MIN_ARG_F
    else:
        return x < NNK_EXP_MIN_ARG_D


# e**x = (1 + expm1(r)) 2**n, with 2**n applied in two steps: 2**(n + 64),
# a normal number for every n >= n_min, then the constant 2**-64, exact for
# normal results and one rounding into the subnormals.  So e**-720 is 1e-313
# as in NumPy, not 0 (an infinite weight times it is inf, not inf * 0 = NaN),
# for one multiplication more than a flush to zero.
cdef inline floating exp_nonpos(floating x) noexcept nogil:
    cdef floating zero = 0, one = 1
    cdef int32_t n
    cdef floating r = reduce_ln2(x, &n)
    cdef floating p = ((one + expm1_taylor(r)) * pow2_like(x, n + 64)
                       * <floating>5.421010862427522e-20)      # 2**-64
    if floating is float:
        return zero if x < NNK_EXP_ZERO_ARG_F else p
    else:
        return zero if x < NNK_EXP_ZERO_ARG_D else p


# e**x - 1 for x <= 0, without the cancellation of e**x - 1 near 0 --------------
#   e**x - 1 = 2**n (e**r - 1) + (2**n - 1): both terms exact or nearly so, and
#   for n = 0 (|x| <= ln2/2) the result is the Taylor sum itself.
cdef inline floating expm1_nonpos(floating x) noexcept nogil:
    cdef floating one = 1
    cdef int32_t n, n_min = -126 if floating is float else -1022
    cdef floating r = reduce_ln2(x, &n)
    cdef floating scale = pow2_like(x, n if n > n_min else n_min)   # -1 below anyway
    cdef floating q = expm1_taylor(r) * scale + (scale - one)
    return -one if below_exp_range(x) else q


# max(log x, -100) for 0 <= x <= 1 (PyTorch's clamp in binary cross-entropy) --
#   x = 2**e m, m in [sqrt(1/2), sqrt(2))  =>  log x = e ln2 + log m,
#   log m = 2 atanh(t) = 2 t (1 + t²/3 + t⁴/5 + ...), t = (m - 1)/(m + 1), |t| < 0.172,
#   5 terms (float32) or 11 (float64) reach half an ulp.
# float32 subnormals (logs down to -103.3) are scaled by 2**24 first; float64
# subnormals and 0 fall below the clamp.  NaN gives NaN.  Branch-free.
cdef inline floating log_clamped(floating x) noexcept nogil:
    cdef floating zero = 0, one = 1, two = 2, half = 0.5, floor = -100, sqrt2 = 1.4142135623730951
    cdef floating xs, m, t, u, p = 0, e, lg
    cdef int32_t bits_f
    cdef int64_t bits_d
    cdef int k, terms = 5 if floating is float else 11
    if floating is float:
        xs = x * <float>16777216.0 if x < <float>1.1754943508222875e-38 else x
        e = <float>(-24) if x < <float>1.1754943508222875e-38 else zero
        bits_f = nnk_bits_f(xs)
        e = e + <float>(((bits_f >> 23) & 0xff) - 127)
        m = nnk_from_bits_f((bits_f & 0x007fffff) | 0x3f800000)
    else:
        bits_d = nnk_bits_d(x)
        e = <double>(((bits_d >> 52) & 0x7ff) - 1023)
        m = nnk_from_bits_d((bits_d & 0x000fffffffffffffLL) | 0x3ff0000000000000LL)
    e = e + one if m > sqrt2 else e
    m = m * half if m > sqrt2 else m
    t = (m - one) / (m + one)
    u = t * t
    for k in range(terms - 1, -1, -1):
        p = p * u + one / (2 * k + 1)
    lg = e * <floating>NNK_LN2_HI + (e * <floating>NNK_LN2_LO + two * t * p)
    lg = lg if lg > floor else floor
    return lg if x == x else x


# Activations -------------------------------------------------------------------
# sigmoid σ(z) = 1 / (1 + e**-z); only e**-|z| <= 1 is formed, so no z overflows:
#   z >= 0: 1 / (1 + e**-z)        z < 0: e**z / (1 + e**z)
# and σ(-z) = 1 - σ(z) from the same two values, with no cancellation in
# either tail (1 - σ(z) would round to 0 where σ(-z) is merely tiny).
cdef inline void sigmoid_pair(floating z, floating* s, floating* s_neg) noexcept nogil:
    cdef floating zero = 0, one = 1
    cdef floating e = exp_nonpos(z if z < zero else -z)   # e**-|z|
    cdef floating r = one / (one + e)
    cdef floating er = e * r           # both sides computed: a select, not a branch
    s[0] = r if z >= zero else er
    s_neg[0] = er if z >= zero else r

cdef inline floating sigmoid_of(floating z) noexcept nogil:
    cdef floating s, s_neg
    sigmoid_pair(z, &s, &s_neg)
    return s

# relu(z) = max(0, z); NaN stays NaN (as torch.relu)
cdef inline floating relu_of(floating z) noexcept nogil:
    cdef floating zero = 0
    return zero if z <= zero else z


# tanh(z) = sign(z) (1 - e**-2|z|) / (1 + e**-2|z|) = -sign(z) m / (2 + m),
#   m = e**(-2|z|) - 1 from expm1_nonpos: no cancellation at small |z|, no
#   overflow at large |z| (m -> -1, tanh -> ±1); ±0 and NaN are returned as they are.
cdef inline floating tanh_of(floating z) noexcept nogil:
    cdef floating zero = 0, two = 2
    cdef floating m = expm1_nonpos(-two * (z if z >= zero else -z))
    cdef floating t = -m / (two + m)
    return t if z > zero else (-t if z < zero else z)    # tanh(±0) = ±0, NaN stays


# Hadamard backward, from the layer output a:  dZ = dA ⊙ g'(a) --------------------
# sigmoid: g' = a (1 - a), multiplied as (grad a)(1 - a), the reference's order:
# for an a outside [0, 1] that the caller passed, a (1 - a) alone can overflow
# (float32, a = 1e20) where the product with a small grad does not
cdef inline floating sigmoid_grad(floating grad, floating a) noexcept nogil:
    cdef floating one = 1
    return (grad * a) * (one - a)

# tanh: g' = 1 - a²
cdef inline floating tanh_grad(floating grad, floating a) noexcept nogil:
    cdef floating one = 1
    return grad * (one - a * a)

# relu: g' = [a > 0], as torch's threshold_backward: 0 where a <= 0, else grad
# (so 0 at a == 0, and a NaN a lets grad through)
cdef inline floating relu_grad(floating grad, floating a) noexcept nogil:
    cdef floating zero = 0
    return zero if a <= zero else grad


# The dense layer's activation g, activate and activation_grad: in _math_act.pxd.


# Row reductions over n contiguous values ---------------------------------------
cdef inline floating lanes_sum(floating* acc) noexcept nogil:
    """Pairwise sum of the LANES (16) partial results; constant bounds, so the
    compiler unrolls and vectorises it."""
    cdef int k
    for k in range(8):
        acc[k] = acc[k] + acc[k + 8]
    for k in range(4):
        acc[k] = acc[k] + acc[k + 4]
    for k in range(2):
        acc[k] = acc[k] + acc[k + 2]
    return acc[0] + acc[1]


# sum_j (w_j or 1) ((x_j - shift) - offset), w NULL meaning all ones: the one
# lane reduction behind row_sum, row_dot and cross-entropy's sum_j q_j log p_j
# (log p_j = (z_j - max) - log s, in log_softmax's order).  Inlined with a
# literal NULL or zero shifts, those terms fold away (x - 0 is exact).
#
# Blocked summation: each block of SUM_BLOCK values is summed in LANES
# partial results of the row's type (the vectorised loop), and the block sums
# are added in double.  A float32 lane so adds at most SUM_BLOCK / LANES
# values, so the error is at most about (SUM_BLOCK / LANES + 5) u sum_j |term_j|
# (u the unit roundoff: 2**-24 for float32) for a row of any length, where one
# running float32 sum would lose every addend once it passes 2**24 of them.
# Short rows are summed directly in double.
cdef inline double lanes_dot(const floating* w, const floating* x, floating shift,
                             floating offset, Py_ssize_t n) noexcept nogil:
    cdef floating acc[LANES]
    cdef double total = 0
    cdef Py_ssize_t blk, start, b, j, k, body = n - n % LANES
    for blk in range((body + SUM_BLOCK - 1) // SUM_BLOCK):
        start = blk * SUM_BLOCK
        for k in range(LANES):
            acc[k] = <floating>0
        for b in range(min(<Py_ssize_t>SUM_BLOCK, body - start) // LANES):
            j = start + b * LANES
            for k in range(LANES):
                acc[k] = acc[k] + (w[j + k] if w != NULL else 1) * ((x[j + k] - shift) - offset)
        total += lanes_sum(acc)
    for j in range(body, n):
        total += (w[j] if w != NULL else 1) * ((x[j] - shift) - offset)
    return total


cdef inline double row_sum(const floating* x, Py_ssize_t n) noexcept nogil:
    return lanes_dot(<const floating*>NULL, x, 0, 0, n)


cdef inline double row_dot(const floating* x, const floating* y, Py_ssize_t n) noexcept nogil:
    return lanes_dot(x, y, 0, 0, n)


# max over the row, through order-preserving integer keys (exact).  A NaN may
# or may not win here; either way the softmax of that row is NaN, because
# e**(NaN - max) is NaN and enters the row's sum.
cdef inline floating row_max(const floating* x, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    cdef int32_t key_f, max_f
    cdef int64_t key_d, max_d
    if floating is float:
        max_f = nnk_key_f(-INFINITY)
        for j in range(n):
            key_f = nnk_key_f(x[j])
            max_f = key_f if key_f > max_f else max_f
        return nnk_unkey_f(max_f)
    else:
        max_d = nnk_key_d(-INFINITY)
        for j in range(n):
            key_d = nnk_key_d(x[j])
            max_d = key_d if key_d > max_d else max_d
        return nnk_unkey_d(max_d)

