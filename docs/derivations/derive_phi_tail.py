"""Derive the coefficients of the normal tail used by gelu (nnkernels/_math_act.pxd).

    Φ(−y) = e^(−y²/2) S(y),   S(y) = ½ erfcx(y/√2),   y >= 0

S is smooth and decays like 1/(y√(2π)).  With t = (y − K)/(y + K), which maps
[0, ∞) onto [−1, 1), H(t) = (y + K) S(y) is smooth on all of [−1, 1] (it tends
to 1/√(2π) at t = 1), so one polynomial in t covers every y:

    S(y) = P(t) / (y + K),   P ≈ H.

P is the Chebyshev interpolant of H (mpmath.chebyfit, at 40 digits), given in
monomial form (its coefficients are all below 1 in magnitude, so Horner's
rule loses nothing); degree 10 for float32 and 26 for float64, K = 3.  The
script prints the interpolation error, the measured relative error of
P(t)/(y+K) evaluated in each dtype, and the coefficients as C literals.

Needs mpmath (a one-off: ``pip install mpmath``); nothing at run time does.
"""

import mpmath as mp
import numpy as np

mp.mp.dps = 40
K = 3


def h_of_t(t):
    if t >= 1:
        return 1 / mp.sqrt(2 * mp.pi)
    y = K * (1 + t) / (1 - t)
    return mp.erfc(y / mp.sqrt(2)) / 2 * mp.exp(y * y / 2) * (y + K)


def s_exact(y):
    y = mp.mpf(y)
    return mp.erfc(y / mp.sqrt(2)) / 2 * mp.exp(y * y / 2)


def main():
    ys = np.concatenate([np.linspace(0, 39, 2000), np.geomspace(1e-8, 39, 500)])
    for dtype, degree in ((np.float32, 10), (np.float64, 26)):
        poly, err = mp.chebyfit(h_of_t, [-1, 1], degree + 1, error=True)
        coef = [float(c) for c in poly[::-1]]          # ascending powers of t
        p = np.array(coef, dtype)
        y = ys.astype(dtype)
        inv = dtype(1) / (y + dtype(K))
        t = (y - dtype(K)) * inv
        acc = np.full_like(t, p[-1])
        for c in p[-2::-1]:
            acc = acc * t + c
        ref = np.array([float(s_exact(float(v))) for v in y])
        rel = np.abs(acc * inv / ref - 1).max() / np.finfo(dtype).eps
        print(f"{dtype.__name__}: degree {degree}, interpolation error {float(err):.2e}, "
              f"max relative error in {dtype.__name__} {rel:.2f} eps")
        print(",\n".join(f"    {c!r}" for c in coef))


if __name__ == "__main__":
    main()
