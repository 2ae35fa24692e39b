"""leaky relu, elu and softplus and their backward passes: the activations
with numeric options, whose derivative is a function of the layer input z.

Each option is checked here (a finite real number; a bool or a string is a
TypeError) and reaches the kernel as a float, rounded there to the arrays'
dtype as PyTorch rounds it.
"""

from __future__ import annotations   # signatures show the aliases' names

from . import _validation as v
from ._api_activations import _act, _map
from ._typing import FloatArray, FloatArrayLike, Optional, SupportsFloat


def leaky_relu(z: FloatArrayLike, *, negative_slope: SupportsFloat = 0.01,
               out: Optional[FloatArray] = None) -> FloatArray:
    """Leaky rectified linear unit, element by element.

    ::

        a = z where z > 0, else s z      (s = negative_slope; NaN stays NaN)

    Parameters
    ----------
    z : array_like of float32 or float64, any shape
        The pre-activations.
    negative_slope : float, default 0.01
        s, a finite number (rounded to z's dtype).
    out : ndarray, optional
        Where to write the result: z's shape and dtype, writable; it may be
        `z` itself (in place). By default a new array.

    Returns
    -------
    a : ndarray
        leaky_relu(z), of z's shape and dtype (`out` when given).

    Raises
    ------
    TypeError
        If `z` is not a float32 or float64 array (a list of numbers is
        computed in float64), `out` is not an ndarray of its dtype, or
        `negative_slope` is not a real number (a bool or a string).
    ValueError
        If `negative_slope` is not finite, or `out` does not have z's shape,
        or is read-only.

    See Also
    --------
    leaky_relu_backward : The gradient, from the input z.
    nnkernels.reference.leaky_relu : The same in plain NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> import nnkernels as nk
    >>> nk.leaky_relu(np.array([-2.0, 0.0, 3.0]))
    array([-0.02,  0.  ,  3.  ])
    >>> nk.leaky_relu(np.array([-2.0, 3.0]), negative_slope=0.5)
    array([-1.,  3.])
    """
    s = v.finite_float(negative_slope, "negative_slope")
    return _map(_act.Op.LEAKY_RELU, z, "z", None, None, out, s)


def leaky_relu_backward(grad: FloatArrayLike, z: FloatArrayLike, *,
                        negative_slope: SupportsFloat = 0.01,
                        out: Optional[FloatArray] = None) -> FloatArray:
    """Gradient through a leaky relu, from its input z (PyTorch's rule).

    ::

        grad_z = grad where z > 0, else s grad     (s at z = 0 and where z is NaN)

    Parameters
    ----------
    grad : array_like of float32 or float64, any shape
        The upstream gradient ∂J/∂a.
    z : array_like, grad's shape and dtype
        The leaky relu's input (the pre-activation).
    negative_slope : float, default 0.01
        s, as in the forward pass.
    out : ndarray, optional
        Where to write ∂J/∂z: grad's shape and dtype, writable; it may be
        `grad` (or `z`) itself, in place. By default a new array.

    Returns
    -------
    grad_z : ndarray
        ∂J/∂z, of grad's shape and dtype (`out` when given).

    Raises
    ------
    TypeError
        If `grad` or `z` is not a float32 or float64 array, they do not share
        one dtype, `out` is not an ndarray of it, or `negative_slope` is not a
        real number.
    ValueError
        If `negative_slope` is not finite, `grad` and `z` differ in shape, or
        `out` does not have their shape or is read-only.

    See Also
    --------
    nnkernels.reference.leaky_relu_backward : The same in plain NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> import nnkernels as nk
    >>> nk.leaky_relu_backward(np.full(3, 2.0), np.array([-1.0, 0.0, 1.0]))
    array([0.02, 0.02, 2.  ])
    """
    s = v.finite_float(negative_slope, "negative_slope")
    return _map(_act.Op.LEAKY_RELU_BACKWARD, grad, "grad", z, "z", out, s)


def elu(z: FloatArrayLike, *, alpha: SupportsFloat = 1.0,
        out: Optional[FloatArray] = None) -> FloatArray:
    """Exponential linear unit, element by element.

    ::

        a = z where z > 0, else α (e^z − 1)     (e^z − 1 without cancellation near 0)

    Parameters
    ----------
    z : array_like of float32 or float64, any shape
        The pre-activations.
    alpha : float, default 1.0
        α, a finite number (rounded to z's dtype).
    out : ndarray, optional
        Where to write the result: z's shape and dtype, writable; it may be
        `z` itself (in place). By default a new array.

    Returns
    -------
    a : ndarray
        elu(z), of z's shape and dtype (`out` when given).

    Raises
    ------
    TypeError
        If `z` is not a float32 or float64 array (a list of numbers is
        computed in float64), `out` is not an ndarray of its dtype, or
        `alpha` is not a real number (a bool or a string).
    ValueError
        If `alpha` is not finite, or `out` does not have z's shape, or is
        read-only.

    See Also
    --------
    elu_backward : The gradient, from the input z.
    nnkernels.reference.elu : The same in plain NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> import nnkernels as nk
    >>> nk.elu(np.array([-1000.0, -1.0, 0.0, 2.0])).round(4)
    array([-1.    , -0.6321,  0.    ,  2.    ])
    """
    alpha = v.finite_float(alpha, "alpha")
    return _map(_act.Op.ELU, z, "z", None, None, out, alpha)


def elu_backward(grad: FloatArrayLike, z: FloatArrayLike, *, alpha: SupportsFloat = 1.0,
                 out: Optional[FloatArray] = None) -> FloatArray:
    """Gradient through an elu, from its input z (PyTorch's rule).

    ::

        grad_z = grad where z > 0, else grad α e^z      (α at z = 0; NaN where z is NaN)

    Parameters
    ----------
    grad : array_like of float32 or float64, any shape
        The upstream gradient ∂J/∂a.
    z : array_like, grad's shape and dtype
        The elu's input (the pre-activation).
    alpha : float, default 1.0
        α, as in the forward pass.
    out : ndarray, optional
        Where to write ∂J/∂z: grad's shape and dtype, writable; it may be
        `grad` (or `z`) itself, in place. By default a new array.

    Returns
    -------
    grad_z : ndarray
        ∂J/∂z, of grad's shape and dtype (`out` when given).

    Raises
    ------
    TypeError
        If `grad` or `z` is not a float32 or float64 array, they do not share
        one dtype, `out` is not an ndarray of it, or `alpha` is not a real
        number.
    ValueError
        If `alpha` is not finite, `grad` and `z` differ in shape, or `out`
        does not have their shape or is read-only.

    See Also
    --------
    nnkernels.reference.elu_backward : The same in plain NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> import nnkernels as nk
    >>> nk.elu_backward(np.ones(3), np.array([-1.0, 0.0, 2.0]), alpha=2.0).round(4)
    array([0.7358, 2.    , 1.    ])
    """
    alpha = v.finite_float(alpha, "alpha")
    return _map(_act.Op.ELU_BACKWARD, grad, "grad", z, "z", out, alpha)


def softplus(z: FloatArrayLike, *, beta: SupportsFloat = 1.0,
             threshold: SupportsFloat = 20.0,
             out: Optional[FloatArray] = None) -> FloatArray:
    """Softplus, element by element, without overflow for any z.

    ::

        a = (1/β) log(1 + e^(βz))       where βz <= threshold
          = z                           where βz > threshold
        computed as (max(βz, 0) + log(1 + e^(−|βz|))) / β

    Parameters
    ----------
    z : array_like of float32 or float64, any shape
        The pre-activations.
    beta : float, default 1.0
        β, a finite number (rounded to z's dtype; βz is formed in it).
    threshold : float, default 20.0
        Above it (βz > threshold, strictly) the result is z itself.
    out : ndarray, optional
        Where to write the result: z's shape and dtype, writable; it may be
        `z` itself (in place). By default a new array.

    Returns
    -------
    a : ndarray
        softplus(z), of z's shape and dtype (`out` when given).

    Raises
    ------
    TypeError
        If `z` is not a float32 or float64 array (a list of numbers is
        computed in float64), `out` is not an ndarray of its dtype, or `beta`
        or `threshold` is not a real number (a bool or a string).
    ValueError
        If `beta` or `threshold` is not finite, or `out` does not have z's
        shape, or is read-only.

    See Also
    --------
    softplus_backward : The gradient, from the input z.
    nnkernels.reference.softplus : The same in plain NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> import nnkernels as nk
    >>> nk.softplus(np.array([-1000.0, 0.0, 1.0, 30.0])).round(4)
    array([ 0.    ,  0.6931,  1.3133, 30.    ])
    >>> nk.softplus(np.array([0.0, 30.0]), beta=2.0, threshold=50.0).round(4)
    array([ 0.3466, 30.    ])
    """
    beta = v.finite_float(beta, "beta")
    threshold = v.finite_float(threshold, "threshold")
    return _map(_act.Op.SOFTPLUS, z, "z", None, None, out, beta, threshold)


def softplus_backward(grad: FloatArrayLike, z: FloatArrayLike, *,
                      beta: SupportsFloat = 1.0, threshold: SupportsFloat = 20.0,
                      out: Optional[FloatArray] = None) -> FloatArray:
    """Gradient through a softplus, from its input z.

    ::

        grad_z = grad ⊙ σ(βz)     where βz <= threshold
               = grad             where βz > threshold

    Parameters
    ----------
    grad : array_like of float32 or float64, any shape
        The upstream gradient ∂J/∂a.
    z : array_like, grad's shape and dtype
        The softplus's input (the pre-activation).
    beta, threshold : float, default 1.0 and 20.0
        As in the forward pass.
    out : ndarray, optional
        Where to write ∂J/∂z: grad's shape and dtype, writable; it may be
        `grad` (or `z`) itself, in place. By default a new array.

    Returns
    -------
    grad_z : ndarray
        ∂J/∂z, of grad's shape and dtype (`out` when given).

    Raises
    ------
    TypeError
        If `grad` or `z` is not a float32 or float64 array, they do not share
        one dtype, `out` is not an ndarray of it, or `beta` or `threshold` is
        not a real number.
    ValueError
        If `beta` or `threshold` is not finite, `grad` and `z` differ in
        shape, or `out` does not have their shape or is read-only.

    See Also
    --------
    nnkernels.reference.softplus_backward : The same in plain NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> import nnkernels as nk
    >>> nk.softplus_backward(np.ones(3), np.array([-1.0, 0.0, 25.0])).round(4)
    array([0.2689, 0.5   , 1.    ])
    """
    beta = v.finite_float(beta, "beta")
    threshold = v.finite_float(threshold, "threshold")
    return _map(_act.Op.SOFTPLUS_BACKWARD, grad, "grad", z, "z", out, beta, threshold)
