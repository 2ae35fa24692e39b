"""Finite-difference check of the gradient a loss function returns."""

from __future__ import annotations   # signatures show the aliases' names

from dataclasses import dataclass, field

import numpy as np

from ._typing import ArrayLike, Callable, FloatArrayT, SupportsFloat

__all__ = ["GradcheckResult", "gradcheck"]


@dataclass(frozen=True, eq=False, repr=False)
class GradcheckResult:
    """Outcome of :func:`gradcheck`; truthy iff the gradient is right.

    A frozen dataclass; ``bool(result)`` is ``result.ok``, and its repr
    shows the two gradients at the worst element.

    Attributes
    ----------
    ok : bool
        Whether every element is within ``atol + rtol * |numeric|``.
    max_abs_error : float
        The largest ``|analytic - numeric|``.
    max_rel_error : float
        The largest ``|analytic - numeric| / max(|analytic|, |numeric|)``,
        in [0, 2].
    worst_index : tuple of int or None
        The index of the element furthest from its tolerance (None for an
        empty ``x``).
    analytic : ndarray
        The gradient f returned, in float64, of x's shape.
    numeric : ndarray
        The central finite differences, in float64, of x's shape.
    """

    ok: bool
    max_abs_error: float
    max_rel_error: float
    worst_index: tuple | None
    analytic: np.ndarray = field(default=None)
    numeric: np.ndarray = field(default=None)

    def __bool__(self):
        return bool(self.ok)

    def __repr__(self):
        text = (f"GradcheckResult(ok={self.ok}, "
                f"max_abs_error={self.max_abs_error:.3g}, "
                f"max_rel_error={self.max_rel_error:.3g}, "
                f"worst_index={self.worst_index}")
        if self.worst_index is not None and self.analytic is not None:
            text += (f", analytic={self.analytic[self.worst_index]:.6g}, "
                     f"numeric={self.numeric[self.worst_index]:.6g}")
        return text + ")"


def _call(f, x):
    """Call f(x) and return (loss as a float, gradient as an array)."""
    result = f(x)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise TypeError("f must return a pair (loss, gradient), got "
                        f"{type(result).__name__}")
    loss, grad = result
    if np.ndim(loss) != 0:
        raise ValueError("f must return a scalar loss, got one of shape "
                         f"{np.shape(loss)} (reduce it, e.g. loss.sum(), for "
                         "reduction='none')")
    grad = np.asarray(grad)
    if grad.shape != x.shape:
        raise ValueError(f"f returned a gradient of shape {grad.shape} for x "
                         f"of shape {x.shape}")
    if grad.dtype.kind not in "fiu":
        raise TypeError(f"f returned a gradient of dtype {grad.dtype}")
    return float(loss), grad


def gradcheck(f: Callable[[FloatArrayT], tuple[SupportsFloat, ArrayLike]], x: FloatArrayT, *,
              eps: float = 1e-6, rtol: float = 1e-4, atol: float = 1e-6) -> GradcheckResult:
    """Compare the gradient f returns with central finite differences.

    ``f(x)`` returns ``(loss, dloss/dx)`` with a scalar loss. The analytic
    gradient is f's at ``x`` itself, in x's dtype. The numeric one is, for
    every element i (e_i its unit vector, h = `eps`)::

        numeric_i = (f(x + h e_i) − f(x − h e_i)) / 2h

    always evaluated on float64 copies of ``x``: differences of a float32
    function are mostly rounding noise at any useful step, so for float32
    ``x`` ``f`` must also accept float64 input (build the other arrays it
    uses in ``x.dtype``). The check passes when every element satisfies::

        |analytic − numeric| <= atol + rtol |numeric|

    Costs 2 * x.size + 1 calls of ``f``.

    Parameters
    ----------
    f : callable
        ``f(x) -> (loss, grad)``: a scalar loss (a 0-d value; reduce
        ``reduction="none"`` losses first) and the gradient, of x's shape.
    x : ndarray of float32 or float64
        The point to check at; it is not modified.
    eps : float, default 1e-6
        The finite-difference step h, > 0.
    rtol : float, default 1e-4
        The relative tolerance, >= 0.
    atol : float, default 1e-6
        The absolute tolerance, >= 0.

    Returns
    -------
    result : GradcheckResult
        Truthy when the gradient passes; it holds the errors, the worst
        element and both gradients.

    Raises
    ------
    TypeError
        If `f` is not callable, `x` is not a float ndarray, `f` does not
        return a pair, returns a non-numeric gradient, or fails on the
        float64 copies of a float32 `x`.
    ValueError
        If `eps`, `rtol` or `atol` is not finite or out of range, `f`
        returns a loss that is not a scalar, or a gradient of another shape.

    Examples
    --------
    >>> import numpy as np
    >>> import nnkernels as nk
    >>> target = np.array([1.0, 0.0, 0.5])
    >>> result = nk.gradcheck(lambda x: nk.mse(x, target), np.array([0.3, -1.0, 2.0]))
    >>> bool(result), result.worst_index is not None
    (True, True)
    >>> bad = nk.gradcheck(lambda x: (np.sum(x ** 2), x), np.ones(3))   # grad is 2x
    >>> bool(bad)
    False
    """
    if not callable(f):
        raise TypeError(f"f must be callable, got {type(f).__name__}")
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        kind = (f"array of dtype {x.dtype}" if isinstance(x, np.ndarray)
                else type(x).__name__)
        raise TypeError(f"x must be a float ndarray, got {kind}")
    for name, value in (("eps", eps), ("rtol", rtol), ("atol", atol)):
        if not np.isfinite(value) or value < 0 or (name == "eps" and value == 0):
            raise ValueError(f"{name} must be a finite number "
                             f"{'> 0' if name == 'eps' else '>= 0'}, "
                             f"got {value!r}")

    # Copy f's gradient at once: f may return a buffer it reuses (out=).
    _, analytic = _call(f, x.copy())
    analytic = analytic.astype(np.float64)

    x64 = x.astype(np.float64)
    numeric = np.empty_like(x64)
    for i, index in enumerate(np.ndindex(x.shape)):
        original = x64[index]
        x64[index] = original + eps
        x_plus = x64[index]
        try:
            loss_plus, _ = _call(f, x64.copy())
        except TypeError as exc:
            if i == 0 and x.dtype != np.float64:
                raise TypeError(
                    "gradcheck evaluates f on float64 copies of x for the "
                    f"finite differences, and f failed for float64 input "
                    f"(x is {x.dtype}): make f accept float64, e.g. by "
                    "casting the other arrays it uses to x.dtype") from exc
            raise
        x64[index] = original - eps
        x_minus = x64[index]
        loss_minus, _ = _call(f, x64.copy())
        x64[index] = original
        # Divide by the step actually taken, which rounding makes differ
        # slightly from 2 * eps.
        numeric[index] = (loss_plus - loss_minus) / (x_plus - x_minus)

    return _compare(analytic, numeric, rtol, atol)


def _compare(analytic, numeric, rtol, atol):
    if analytic.size == 0:
        return GradcheckResult(True, 0.0, 0.0, None, analytic, numeric)
    with np.errstate(invalid="ignore", divide="ignore"):
        abs_error = np.abs(analytic - numeric)
        tolerance = atol + rtol * np.abs(numeric)
        passed = abs_error <= tolerance  # False wherever a NaN is involved
        # Relative to the larger of the two, so that it lies in [0, 2].
        scale = np.maximum(np.abs(analytic), np.abs(numeric))
        rel_error = np.where(abs_error == 0, 0.0, abs_error / scale)
        excess = np.where(abs_error == 0, 0.0, abs_error / tolerance)
    excess[np.isnan(excess)] = np.inf
    worst = np.unravel_index(np.argmax(excess), analytic.shape)
    return GradcheckResult(
        ok=bool(passed.all()),
        max_abs_error=float(np.max(abs_error)),
        max_rel_error=float(np.max(rel_error)),
        worst_index=tuple(int(i) for i in worst),
        analytic=analytic,
        numeric=numeric,
    )
