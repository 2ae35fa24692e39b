"""tanh, gelu and silu, and the backward passes of gelu and silu, whose
derivative is a function of the layer input z (not of the output a).

The calls go through the one map of ``_api_activations`` (validation, layout
copies, threads); only the operation and its options are chosen here.
"""

from __future__ import annotations   # signatures show the aliases' names

from ._api_activations import _act, _map
from ._typing import FloatArray, FloatArrayLike, Literal, Optional

GeluApproximation = Literal["none", "tanh"]


def _gelu_op(approximate, forward):
    """The kernel op of gelu (forward or backward) for `approximate` (case-sensitive)."""
    if approximate == "none" and isinstance(approximate, str):
        return _act.Op.GELU if forward else _act.Op.GELU_BACKWARD
    if approximate == "tanh" and isinstance(approximate, str):
        return _act.Op.GELU_TANH if forward else _act.Op.GELU_TANH_BACKWARD
    raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")


def tanh(z: FloatArrayLike, out: Optional[FloatArray] = None) -> FloatArray:
    """Hyperbolic tangent, element by element, without overflow for any z.

    ::

        a = tanh(z) = (e^z − e^(−z)) / (e^z + e^(−z))
          = −sign(z) m / (2 + m),  m = e^(−2|z|) − 1   (as computed: no cancellation)

    Parameters
    ----------
    z : array_like of float32 or float64, any shape
        The pre-activations.
    out : ndarray, optional
        Where to write the result: z's shape and dtype, writable; it may be
        `z` itself (in place). By default a new array.

    Returns
    -------
    a : ndarray
        tanh(z), of z's shape and dtype (`out` when given); ±0 and NaN stay.

    Raises
    ------
    TypeError
        If `z` is not a float32 or float64 array (integer and bool arrays and
        byte-swapped floats are refused; a list of numbers is computed in
        float64), or `out` is not an ndarray of its dtype.
    ValueError
        If `out` does not have z's shape, or is read-only.

    See Also
    --------
    tanh_backward : The gradient, from the output a.
    nnkernels.reference.tanh : The same in plain NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> import nnkernels as nk
    >>> nk.tanh(np.array([-1000.0, 0.0, 0.5])).round(4)
    array([-1.    ,  0.    ,  0.4621])
    """
    return _map(_act.Op.TANH, z, "z", None, None, out)


def gelu(z: FloatArrayLike, *, approximate: GeluApproximation = "none",
         out: Optional[FloatArray] = None) -> FloatArray:
    """Gaussian error linear unit, element by element (torch.nn.functional.gelu).

    ::

        "none":  a = z Φ(z),  Φ(z) = ½ (1 + erf(z/√2))   (the normal CDF)
        "tanh":  a = ½ z (1 + tanh u),  u = √(2/π) (z + 0.044715 z³)

    Φ is computed as ½ erfc(−z/√2) from its own approximation (about 2 ulp
    relative, docs/guarantees.md), so a keeps its relative accuracy for
    z << 0, where z · ½(1 + erf) cancels; likewise 1 + tanh u as 2σ(2u).

    Parameters
    ----------
    z : array_like of float32 or float64, any shape
        The pre-activations.
    approximate : {"none", "tanh"}, default "none"
        The exact form (erf) or the tanh approximation; case-sensitive.
    out : ndarray, optional
        Where to write the result: z's shape and dtype, writable; it may be
        `z` itself (in place). By default a new array.

    Returns
    -------
    a : ndarray
        gelu(z), of z's shape and dtype (`out` when given). gelu(−∞) is NaN
        (−∞ · 0), as in PyTorch.

    Raises
    ------
    TypeError
        If `z` is not a float32 or float64 array (a list of numbers is
        computed in float64), or `out` is not an ndarray of its dtype.
    ValueError
        If `approximate` is not "none" or "tanh", or `out` does not have z's
        shape, or is read-only.

    See Also
    --------
    gelu_backward : The gradient, from the input z.
    nnkernels.reference.gelu : The same in plain NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> import nnkernels as nk
    >>> nk.gelu(np.array([-1.0, 0.0, 2.0])).round(4)
    array([-0.1587,  0.    ,  1.9545])
    >>> nk.gelu(np.array([-1.0, 0.0, 2.0]), approximate="tanh").round(4)
    array([-0.1588,  0.    ,  1.9546])
    >>> print(f"{nk.gelu(np.array([-10.0]))[0]:.10e}")   # z Φ(z), not rounded to 0
    -7.6198530242e-23
    """
    return _map(_gelu_op(approximate, True), z, "z", None, None, out)


def gelu_backward(grad: FloatArrayLike, z: FloatArrayLike, *,
                  approximate: GeluApproximation = "none",
                  out: Optional[FloatArray] = None) -> FloatArray:
    """Gradient through a gelu, from its input z.

    ::

        "none":  grad_z = grad ⊙ (Φ(z) + z φ(z)),  φ(z) = e^(−z²/2) / √(2π)
        "tanh":  grad_z = grad ⊙ (½ (1 + tanh u)
                                  + ½ z (1 − tanh² u) √(2/π) (1 + 3·0.044715 z²))

    Parameters
    ----------
    grad : array_like of float32 or float64, any shape
        The upstream gradient ∂J/∂a.
    z : array_like, grad's shape and dtype
        The gelu's input (the pre-activation).
    approximate : {"none", "tanh"}, default "none"
        The form used in the forward pass; case-sensitive.
    out : ndarray, optional
        Where to write ∂J/∂z: grad's shape and dtype, writable; it may be
        `grad` (or `z`) itself, in place. By default a new array.

    Returns
    -------
    grad_z : ndarray
        ∂J/∂z, of grad's shape and dtype (`out` when given). At z = ±∞ it is
        NaN (∞ · 0), as PyTorch's autograd gives.

    Raises
    ------
    TypeError
        If `grad` or `z` is not a float32 or float64 array, they do not share
        one dtype, or `out` is not an ndarray of it.
    ValueError
        If `approximate` is not "none" or "tanh", `grad` and `z` differ in
        shape, or `out` does not have their shape or is read-only.

    See Also
    --------
    nnkernels.reference.gelu_backward : The same in plain NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> import nnkernels as nk
    >>> nk.gelu_backward(np.ones(3), np.array([-1.0, 0.0, 2.0])).round(4)
    array([-0.0833,  0.5   ,  1.0852])
    """
    return _map(_gelu_op(approximate, False), grad, "grad", z, "z", out)


def silu(z: FloatArrayLike, out: Optional[FloatArray] = None) -> FloatArray:
    """Sigmoid linear unit (swish), element by element.

    ::

        a = z σ(z),  σ(z) = 1 / (1 + e^(−z))

    Parameters
    ----------
    z : array_like of float32 or float64, any shape
        The pre-activations.
    out : ndarray, optional
        Where to write the result: z's shape and dtype, writable; it may be
        `z` itself (in place). By default a new array.

    Returns
    -------
    a : ndarray
        silu(z), of z's shape and dtype (`out` when given). silu(−∞) is NaN
        (−∞ · 0), as in PyTorch.

    Raises
    ------
    TypeError
        If `z` is not a float32 or float64 array (a list of numbers is
        computed in float64), or `out` is not an ndarray of its dtype.
    ValueError
        If `out` does not have z's shape, or is read-only.

    See Also
    --------
    silu_backward : The gradient, from the input z.
    nnkernels.reference.silu : The same in plain NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> import nnkernels as nk
    >>> nk.silu(np.array([-1.0, 0.0, 2.0])).round(4)
    array([-0.2689,  0.    ,  1.7616])
    """
    return _map(_act.Op.SILU, z, "z", None, None, out)


def silu_backward(grad: FloatArrayLike, z: FloatArrayLike,
                  out: Optional[FloatArray] = None) -> FloatArray:
    """Gradient through a silu, from its input z.

    ::

        grad_z = grad ⊙ σ(z) (1 + z (1 − σ(z)))

    Parameters
    ----------
    grad : array_like of float32 or float64, any shape
        The upstream gradient ∂J/∂a.
    z : array_like, grad's shape and dtype
        The silu's input (the pre-activation).
    out : ndarray, optional
        Where to write ∂J/∂z: grad's shape and dtype, writable; it may be
        `grad` (or `z`) itself, in place. By default a new array.

    Returns
    -------
    grad_z : ndarray
        ∂J/∂z, of grad's shape and dtype (`out` when given). At z = ±∞ it is
        NaN (∞ · 0), as PyTorch's autograd gives.

    Raises
    ------
    TypeError
        If `grad` or `z` is not a float32 or float64 array, they do not share
        one dtype, or `out` is not an ndarray of it.
    ValueError
        If `grad` and `z` differ in shape, or `out` does not have their shape
        or is read-only.

    See Also
    --------
    nnkernels.reference.silu_backward : The same in plain NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> import nnkernels as nk
    >>> nk.silu_backward(np.ones(3), np.array([-1.0, 0.0, 2.0])).round(4)
    array([0.0723, 0.5   , 1.0908])
    """
    return _map(_act.Op.SILU_BACKWARD, grad, "grad", z, "z", out)
