# cython: language_level=3
"""Bit-exact selects and the multiply-add of the optimizer updates (_optim.pyx).

A select on a loop-invariant flag written as bit operations, which GCC
vectorises where it does not vectorise ``flag ? a : b``; and a*b + c
rounded once where the target has FMA, as PyTorch's vectorised CPU kernels
compute it.
"""

from libc.stdint cimport int64_t

cdef extern from *:
    """
    #include <math.h>
    #include <stdint.h>
    #include <string.h>
    /* a where the mask is all ones, b where it is zero, bit for bit: a select
       on a loop-invariant flag that the compiler vectorises (GCC does not
       vectorise `flag ? a : b` with a scalar flag unless it unswitches the
       loop, which it does for a few flags only).  nnk_mask hides that the
       mask is 0 or -1 (an empty asm), or GCC turns the bit operations back
       into that select. */
    static inline int64_t nnk_mask(int flag) {
        int64_t m = -(int64_t)(flag != 0);
    #if defined(__GNUC__) || defined(__clang__)
        __asm__("" : "+r"(m));
    #endif
        return m;
    }
    static inline float nnk_pick_f(int64_t mask, float a, float b) {
        uint32_t ia, ib, m = (uint32_t)mask, r; float f;
        memcpy(&ia, &a, sizeof ia); memcpy(&ib, &b, sizeof ib);
        r = (ia & m) | (ib & ~m); memcpy(&f, &r, sizeof f); return f;
    }
    static inline double nnk_pick_d(int64_t mask, double a, double b) {
        uint64_t ia, ib, m = (uint64_t)mask, r; double f;
        memcpy(&ia, &a, sizeof ia); memcpy(&ib, &b, sizeof ib);
        r = (ia & m) | (ib & ~m); memcpy(&f, &r, sizeof f); return f;
    }
    /* a*b + c rounded once where the target has an FMA instruction (as
       PyTorch's vectorised kernels compute it), else rounded twice. */
    #if defined(__FMA__) || defined(__AVX512F__) || defined(__ARM_FEATURE_FMA)
    #define NNK_FUSED_MADD 1
    static inline float nnk_madd_f(float a, float b, float c) { return fmaf(a, b, c); }
    static inline double nnk_madd_d(double a, double b, double c) { return fma(a, b, c); }
    #else
    #define NNK_FUSED_MADD 0
    static inline float nnk_madd_f(float a, float b, float c) { return a * b + c; }
    static inline double nnk_madd_d(double a, double b, double c) { return a * b + c; }
    #endif
    """
    float nnk_madd_f(float a, float b, float c) noexcept nogil
    int64_t nnk_mask(int flag) noexcept nogil
    float nnk_pick_f(int64_t mask, float a, float b) noexcept nogil
    double nnk_pick_d(int64_t mask, double a, double b) noexcept nogil
    double nnk_madd_d(double a, double b, double c) noexcept nogil
    const int NNK_FUSED_MADD
