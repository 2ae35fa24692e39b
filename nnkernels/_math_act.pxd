# cython: language_level=3
"""Scalar formulas of the activations whose derivative takes the input z.

gelu (erf and tanh forms), silu, leaky relu, elu and softplus, forward and
derivative, and the special functions under them: e**(-y²/2) without the
rounding of y², the normal tail Φ(-y), log(1 + y).  Built on the primitives
of ``_math.pxd`` and to its rules: branch-free (conditionals are selects), so
a loop that calls them vectorises; no overflow for any input; no
cancellation where the result is small.  Kept apart from ``_math.pxd`` to
keep each file readable.

Special values follow PyTorch (torch.nn.functional and autograd): ∞ · 0
gives NaN where PyTorch's formula meets it (gelu(-∞), silu(-∞), the gelu
and silu derivatives at ±∞), the derivative of leaky relu and elu at z = 0
is the z <= 0 one (s, α), and softplus is linear where βz > threshold.
"""

from libc.stdint cimport int32_t, int64_t
from cython cimport floating

from nnkernels._math cimport (expm1_taylor, pow2_like, exp_nonpos, expm1_nonpos,
                              sigmoid_pair, sigmoid_of, relu_of, tanh_of, sigmoid_grad,
                              tanh_grad, relu_grad, nnk_bits_f, nnk_from_bits_f,
                              nnk_bits_d, nnk_from_bits_d, nnk_shifted_int_f,
                              nnk_shifted_int_d, NNK_LN2_HI, NNK_LN2_LO, NNK_LOG2E,
                              NNK_EXP_ZERO_ARG_F, NNK_EXP_ZERO_ARG_D)

cdef extern from *:
    """
    /* P(t) of the normal tail below (phi_tail_ratio): coefficients of t**0,
       t**1, ... from docs/derivations/derive_phi_tail.py (a Chebyshev interpolant, at
       40 digits, of H(t) = (y + 3) e**(y²/2) Φ(-y), t = (y - 3)/(y + 3)),
       degree 10 for float32 and 26 for float64. */
    /* The float32 tanh-gelu's scale, 2**100 and 2**-100, and -200 ln2, below
       which its scaled exp gives 0 (see exp_nonpos_f_scaled). */
    static const float NNK_GELU_TANH_SCALE = 1.2676506002282294e30f;
    static const float NNK_GELU_TANH_UNSCALE = 7.888609052210118e-31f;
    static const double NNK_GELU_TANH_ZERO_ARG = -138.62943611198907;
    static inline float nnk_phi_tail_poly_f(float t) {
        return 0.729083690133373f + t * (-0.5093321493606526f + t *
            (0.23001759296691598f + t * (-0.04725967335772377f + t *
            (-0.010460295880520913f + t * (0.006953819271572838f + t *
            (0.0010127435694324708f + t * (-0.0010028423501513264f + t *
            (-0.00022051045904088046f + t * (0.00011200035386524132f + t *
            (3.792899655966673e-05f))))))))));
    }
    static inline double nnk_phi_tail_poly_d(double t) {
        return 0.729083690133373 + t * (-0.5093319819174895 + t * (0.230017719974601 + t
            * (-0.04726302514296877 + t * (-0.010462867023132427 + t *
            (0.006972621240406638 + t * (0.0010275922545900519 + t *
            (-0.001045828622426493 + t * (-0.00025657528840648006 + t *
            (0.0001543944672428814 + t * (7.881224287538235e-05 + t *
            (-1.3246076983944281e-05 + t * (-2.0687172874280074e-05 + t *
            (-3.517403436069328e-06 + t * (3.634292115528243e-06 + t *
            (2.2550187647889107e-06 + t * (1.8824533821859308e-08 + t *
            (-5.88500810499163e-07 + t * (-2.861881782860744e-07 + t *
            (3.3980041893903436e-08 + t * (1.0441906960450375e-07 + t *
            (3.45287317104392e-08 + t * (-1.6430013800856373e-08 + t *
            (-1.3075564556483194e-08 + t * (-1.696815480259999e-10 + t *
            (1.7052082679758013e-09 + t *
            (3.318447859021768e-10))))))))))))))))))))))))));
    }
    """
    float nnk_phi_tail_poly_f(float t) noexcept nogil
    double nnk_phi_tail_poly_d(double t) noexcept nogil
    const float NNK_GELU_TANH_SCALE, NNK_GELU_TANH_UNSCALE
    const double NNK_GELU_TANH_ZERO_ARG



# e**(-y²/2) for 0 <= y <= Y_MAX, as accurate as exp_nonpos --------------------
#   y² is not a float: rounded, its error times y² (up to 745) would cost
#   hundreds of ulp.  So y = yh + yl, yh being y with its low bits cleared (12
#   significant bits of float32, 26 of float64), so yh²/2 is exact, and
#       y²/2 = yh²/2 + yl (y + yh)/2 = a + b,   b < 2**-10 a, its rounding negligible;
#   then n = round(-(a + b)/ln2) and r = ((-a - n ln2_hi) - n ln2_lo) - b, where
#   -a - n ln2_hi is exact (Sterbenz), and e**(-y²/2) = 2**n e**r as in exp_nonpos.
# Past Y_MAX (15, 39) e**(-y²/2) is below half the smallest subnormal: callers
# clamp y there (the clamp keeps NaN).  NaN gives NaN.
cdef inline floating phi_y_max(floating y) noexcept nogil:
    """y clamped to Y_MAX, NaN kept."""
    cdef floating y_max = 15 if floating is float else 39
    return y_max if y > y_max else y


cdef inline floating exp_neg_half_sq(floating y) noexcept nogil:
    cdef floating zero = 0, one = 1, half = 0.5, yh, a, b, k, nf, r, p, shifter
    cdef int32_t n, n_min
    if floating is float:
        yh = nnk_from_bits_f(nnk_bits_f(y) & <int32_t>-4096)              # low 12 bits cleared
        shifter = 12582912.0            # 1.5 * 2**23
        n_min = -151
    else:
        yh = nnk_from_bits_d(nnk_bits_d(y) & <int64_t>-134217728)         # low 27 bits cleared
        shifter = 6755399441055744.0    # 1.5 * 2**52
        n_min = -1076
    a = (half * yh) * yh
    b = (half * (y - yh)) * (y + yh)
    k = -(a + b) * <floating>NNK_LOG2E + shifter
    nf = k - shifter
    if floating is float:
        n = nnk_shifted_int_f(k, shifter)
    else:
        n = nnk_shifted_int_d(k, shifter)
    n = n if n > n_min else n_min
    n = n if n < 0 else 0
    r = ((-a - nf * <floating>NNK_LN2_HI) - nf * <floating>NNK_LN2_LO) - b
    p = ((one + expm1_taylor(r)) * pow2_like(y, n + 64)
         * <floating>5.421010862427522e-20)      # 2**-64, as in exp_nonpos
    if floating is float:
        return zero if a + b > -NNK_EXP_ZERO_ARG_F else p
    else:
        return zero if a + b > -NNK_EXP_ZERO_ARG_D else p


# The normal tail, as a ratio: Φ(-y) = e**(-y²/2) S(y), y >= 0 -------------------
#   S(y) = ½ erfcx(y/√2) = P(t)/(y + 3),  t = (y - 3)/(y + 3) in [-1, 1)
# (P: nnk_phi_tail_poly_*, relative error about 2 ulp for every y >= 0), so
# Φ(-y) keeps its relative accuracy down to the underflow, where ½ erfc or
# 1 - Φ(y) would cancel.
cdef inline floating phi_tail_ratio(floating y) noexcept nogil:
    cdef floating one = 1, three = 3
    cdef floating inv = one / (y + three)
    cdef floating t = (y - three) * inv
    if floating is float:
        return nnk_phi_tail_poly_f(t) * inv
    else:
        return nnk_phi_tail_poly_d(t) * inv


# log(1 + y) for 0 <= y <= 1 (NaN gives NaN) ------------------------------------
#   log(1 + y) = 2 atanh(t) = 2 t (1 + t²/3 + t⁴/5 + ...),  t = y / (2 + y) in [0, 1/3]:
#   no cancellation (t is formed from y itself), one division, and 7 terms
#   (float32) or 16 (float64) reach half an ulp, as t² <= 1/9.
cdef inline floating log1p_unit(floating y) noexcept nogil:
    cdef floating one = 1, two = 2
    cdef floating t = y / (two + y)
    cdef floating u = t * t, p = 0
    cdef int k, terms = 7 if floating is float else 16
    for k in range(terms - 1, -1, -1):
        p = p * u + one / (2 * k + 1)
    return two * t * p


# gelu, erf form ------------------------------------------------------------------
#   g(z) = z Φ(z),  Φ(z) = ½ (1 + erf(z/√2)) = ½ erfc(-z/√2)
#   g'(z) = Φ(z) + z φ(z),  φ(z) = e**(-z²/2)/√(2π)
# With y = |z| and E = e**(-y²/2):  Φ(z) = E S(y) for z < 0, 1 - E S(y) for z >= 0;
# and g'(z) = D for z < 0, 1 - D for z >= 0, where D = E (S(y) - y/√(2π)): one
# exp for both terms, and no cancellation in the tail (S(y) << y there).  The
# only inexact spot is the zero of g' (z ≈ -0.752), where the two terms cancel
# as they do in any formula.  g(-∞) and g'(±∞) are NaN (∞ · 0), as in PyTorch.
cdef inline floating gelu_of(floating z) noexcept nogil:
    cdef floating zero = 0, one = 1
    cdef floating y = phi_y_max(-z if z < zero else z)
    cdef floating e = exp_neg_half_sq(y), r = phi_tail_ratio(y)
    # z < 0: (z S) E, so that a subnormal E S is never formed on the way to a normal result
    return (z * r) * e if z < zero else z * (one - e * r)

cdef inline floating gelu_grad(floating grad, floating z) noexcept nogil:
    cdef floating zero = 0, one = 1
    cdef floating y = -z if z < zero else z
    cdef floating yc = phi_y_max(y)
    # y unclamped in y/√(2π): at ±∞, 0 * ∞ = NaN, as PyTorch's z φ(z)
    cdef floating d = exp_neg_half_sq(yc) * (phi_tail_ratio(yc)
                                             - y * <floating>0.3989422804014327)
    return grad * (d if z < zero else one - d)


# gelu, tanh form ---------------------------------------------------------------
#   g(z) = ½ z (1 + tanh u),  u = √(2/π) (z + 0.044715 z³)
#   g'(z) = ½ (1 + tanh u) + ½ z (1 - tanh² u) √(2/π) (1 + 3·0.044715 z²)
# ½ (1 + tanh u) = σ(2u) and 1 - tanh² u = 4 σ(2u) σ(-2u), from sigmoid_pair, so
#   g = z s,  g' = s + (s s⁻) z 2√(2/π) (1 + 3·0.044715 z²),  s = σ(2u), s⁻ = σ(-2u):
# no cancellation of 1 + tanh u for z << 0 (PyTorch's value rounds to 0 there).
# Where s s⁻ is 0 the second term is 0 (z² may overflow); z - z adds NaN at
# ±∞ as PyTorch's ∞ · 0 does.
#
# float32: u and the exp's reduction are formed in float64 (exp_nonpos_f_scaled),
# the rest in float32: u's rounding error, times |2u| (up to ~140) in σ(2u)'s
# relative error, would cost up to ~240 ulp of the tail in float32 alone.
# float64 keeps that error (docs/guarantees.md).
# For z << 0, s is a float32 subnormal below 2u ≈ -87 and 0 below 2u ≈ -104,
# while g' ≈ s·z·2√(2/π)(1 + 3·0.044715 z²) is some 250 times larger: g'
# would inherit s's absolute rounding. So where 2u < 0 float32 carries s,
# s s⁻ and their sum scaled by 2**100 (exact: a power of two) and scales back
# once, where the one rounding to a subnormal happens.
cdef inline float exp_nonpos_f_scaled(double x) noexcept nogil:
    """e**x · 2**100 for x <= 0 given in float64, to float32: the reduction
    x = n ln2 + r in float64, then r and n (a small integer, exact) rounded to
    float32; 0 where e**x < 2**-200, far below any float32 result it feeds."""
    cdef float zero = 0, one = 1, shifter_f = 12582912.0      # 1.5 * 2**23
    cdef double shifter = 6755399441055744.0                  # 1.5 * 2**52
    cdef double nf = (x * NNK_LOG2E + shifter) - shifter      # round(x / ln2)
    cdef float r = <float>((x - nf * NNK_LN2_HI) - nf * NNK_LN2_LO)
    nf = nf if nf > -200 else -200          # only matters where the result is 0 anyway
    cdef int32_t n = nnk_shifted_int_f(<float>nf + shifter_f, shifter_f)
    n = n if n < 0 else 0
    cdef float p = (one + expm1_taylor(r)) * pow2_like(r, n + 100)
    return zero if x < NNK_GELU_TANH_ZERO_ARG else p

cdef inline floating gelu_tanh_pair(floating z, floating* s, floating* s_neg) noexcept nogil:
    """s = σ(2u) and s⁻ = σ(-2u); returns the factor that unscales s: where
    2u < 0, float32's s comes scaled by 2**100 and the factor is 2**-100."""
    cdef floating one = 1, e_scaled, e, r
    cdef double zd = z, v = 1.5957691216057308 * zd * (1 + 0.044715 * zd * zd)    # 2u
    if floating is float:
        e_scaled = exp_nonpos_f_scaled(v if v < 0 else -v)  # e**-|2u|, as sigmoid_pair
        e = e_scaled * NNK_GELU_TANH_UNSCALE
        r = one / (one + e)
        s[0] = r if v >= 0 else e_scaled * r
        s_neg[0] = e * r if v >= 0 else r
        return one if v >= 0 else NNK_GELU_TANH_UNSCALE
    else:
        sigmoid_pair(v, s, s_neg)
        return one

cdef inline floating gelu_tanh_of(floating z) noexcept nogil:
    cdef floating s, s_neg, unscale
    unscale = gelu_tanh_pair(z, &s, &s_neg)
    return (z * s) * unscale

cdef inline floating gelu_tanh_grad(floating grad, floating z) noexcept nogil:
    cdef floating zero = 0, one = 1, s, s_neg, unscale, slope, h
    unscale = gelu_tanh_pair(z, &s, &s_neg)
    slope = (z * <floating>1.5957691216057308) * (one + <floating>0.134145 * z * z)
    h = one + (zero if s_neg == zero else s_neg * slope)
    return grad * ((zero if s == zero else s * h) * unscale + (z - z))


# silu ---------------------------------------------------------------------------
#   g(z) = z σ(z),  g'(z) = σ(z) (1 + z (1 - σ(z))),  1 - σ(z) = σ(-z) from sigmoid_pair
cdef inline floating silu_of(floating z) noexcept nogil:
    return z * sigmoid_of(z)

cdef inline floating silu_grad(floating grad, floating z) noexcept nogil:
    cdef floating one = 1, s, s_neg
    sigmoid_pair(z, &s, &s_neg)
    return grad * (s * (one + z * s_neg))


# leaky relu, slope s ----------------------------------------------------------------
#   g(z) = z if z > 0 else s z,  g'(z) = 1 if z > 0 else s   (s at z = 0 and NaN, as PyTorch)
cdef inline floating leaky_relu_of(floating z, floating slope) noexcept nogil:
    cdef floating zero = 0
    return z if z > zero else z * slope

cdef inline floating leaky_relu_grad(floating grad, floating z, floating slope) noexcept nogil:
    cdef floating zero = 0
    return grad if z > zero else grad * slope


# elu, scale α -------------------------------------------------------------------------
#   g(z) = z if z > 0 else α (e**z - 1)     (expm1_nonpos: no cancellation near 0)
#   g'(z) = 1 if z > 0 else α e**z           (α at z = 0; NaN gives NaN)
# z >= 0 selects z itself so that g(-0) = -0; the exp sees min(z, 0) with NaN kept.
cdef inline floating elu_of(floating z, floating alpha) noexcept nogil:
    cdef floating zero = 0
    return z if z >= zero else alpha * expm1_nonpos(zero if z > zero else z)

cdef inline floating elu_grad(floating grad, floating z, floating alpha) noexcept nogil:
    cdef floating zero = 0
    return grad if z > zero else grad * (alpha * exp_nonpos(zero if z > zero else z))


# softplus, β and threshold ------------------------------------------------------------
#   g(z) = (1/β) log(1 + e**(βz)) = (max(βz, 0) + log(1 + e**(-|βz|))) / β,  g'(z) = σ(βz)
#   both linear (g = z, g' = 1) where βz > threshold; βz is rounded to the
#   dtype, and compared with the threshold in it, as in PyTorch.
cdef inline floating softplus_of(floating z, floating beta, floating threshold) noexcept nogil:
    cdef floating zero = 0
    cdef floating t = z * beta
    cdef floating sp = ((t if t > zero else zero)
                        + log1p_unit(exp_nonpos(-t if t > zero else t))) / beta
    return z if t > threshold else sp

cdef inline floating softplus_grad(floating grad, floating z, floating beta,
                                   floating threshold) noexcept nogil:
    cdef floating t = z * beta
    return grad if t > threshold else grad * sigmoid_of(t)


# The dense layer's activation g, chosen at run time -----------------------------------
# The switch is loop invariant, so the compiler unswitches it out of a loop
# that calls these.  The options are PyTorch's defaults (negative slope 0.01,
# α = 1, β = 1, threshold 20).
cdef enum Activation:
    IDENTITY
    SIGMOID
    TANH
    RELU
    GELU
    GELU_TANH
    SILU
    LEAKY_RELU
    ELU
    SOFTPLUS

cdef inline bint grad_takes_z(int g) noexcept nogil:
    """Whether g' is computed from the layer input z (else from the output a)."""
    return g >= GELU

cdef inline floating activate(floating z, int g) noexcept nogil:
    if g == SIGMOID:
        return sigmoid_of(z)
    elif g == TANH:
        return tanh_of(z)
    elif g == RELU:
        return relu_of(z)
    elif g == GELU:
        return gelu_of(z)
    elif g == GELU_TANH:
        return gelu_tanh_of(z)
    elif g == SILU:
        return silu_of(z)
    elif g == LEAKY_RELU:
        return leaky_relu_of(z, <floating>0.01)
    elif g == ELU:
        return elu_of(z, <floating>1)
    elif g == SOFTPLUS:
        return softplus_of(z, <floating>1, <floating>20)
    return z


# grad_z = grad_a ⊙ g'(v) for the dense layer's activation g, where v is the
# layer output a for sigmoid, tanh and relu and the input z for the others
# (grad_takes_z); the identity gives grad_a
cdef inline floating activation_grad(floating grad, floating v, int g) noexcept nogil:
    if g == SIGMOID:
        return sigmoid_grad(grad, v)
    elif g == TANH:
        return tanh_grad(grad, v)
    elif g == RELU:
        return relu_grad(grad, v)
    elif g == GELU:
        return gelu_grad(grad, v)
    elif g == GELU_TANH:
        return gelu_tanh_grad(grad, v)
    elif g == SILU:
        return silu_grad(grad, v)
    elif g == LEAKY_RELU:
        return leaky_relu_grad(grad, v, <floating>0.01)
    elif g == ELU:
        return elu_grad(grad, v, <floating>1)
    elif g == SOFTPLUS:
        return softplus_grad(grad, v, <floating>1, <floating>20)
    return grad
