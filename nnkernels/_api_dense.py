"""Dense layer forward and backward over a mini-batch: validate, prepare,
one kernel call (gemm and the fused passes around it)."""

from __future__ import annotations   # signatures show the aliases' names

import numpy as np

from . import _dispatch, _layout as layout
from . import _validation as v
from ._typing import (Activation, FloatArray, FloatArrayLike, Optional)


def _activation_code(activation):
    codes = _dispatch.dense().ACTIVATIONS
    if activation is not None and (type(activation) is not str or activation not in codes):
        raise ValueError(f"activation must be one of {tuple(codes)}, got {activation!r}")
    return codes[activation]


def _dense_shapes(x, w):
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"x (N, in) and w (out, in) disagree on in_features: "
                         f"x {x.shape}, w {w.shape}")


def dense_forward(x: FloatArrayLike, w: FloatArrayLike, b: Optional[FloatArrayLike] = None,
                  activation: Activation = None, *,
                  z_out: Optional[FloatArray] = None,
                  out: Optional[FloatArray] = None) -> FloatArray:
    """Forward pass of a dense layer: a = g(x wᵀ + b).

    The product is one BLAS gemm (SciPy's) into the output; the bias and the
    activation are added in one pass over it::

        z = x wᵀ + b          x (N, in), w (out, in), b (out,), z (N, out)
        a = g(z)              g: identity or any activation of nnkernels, with
                              its default options ("gelu_tanh": gelu's tanh form)

    C- and F-ordered arrays and transposed views go to BLAS without a copy;
    other strides are copied to C order first.

    Parameters
    ----------
    x : array_like of float32 or float64, shape (N, in)
        The batch, one sample per row.
    w : array_like, shape (out, in)
        The weights, as in ``torch.nn.Linear``; x's dtype.
    b : array_like, shape (out,), optional
        The bias; x's dtype. None for no bias.
    activation : {None, "sigmoid", "tanh", "relu", "gelu", "gelu_tanh", "silu", \
                  "leaky_relu", "elu", "softplus"}, default None
        g; None is the identity (a linear layer, e.g. the logits). The
        options are torch.nn.functional's defaults.
    z_out : ndarray, optional
        Where to write z = x wᵀ + b as well (shape (N, out), x's dtype,
        writable, apart from `out`): what the backward pass of gelu,
        gelu_tanh, silu, leaky_relu, elu and softplus needs, as their
        derivative is a function of z. Written in the same pass as a.
    out : ndarray, optional
        Where to write a: shape (N, out), x's dtype, writable; one that
        overlaps an input is computed into a temporary first. By default a
        new array.

    Returns
    -------
    a : ndarray, shape (N, out)
        The layer's output, in x's dtype (`out` when given).

    Raises
    ------
    TypeError
        If an input is not a float32 or float64 array (integer and bool
        arrays and byte-swapped floats are refused; a list of numbers is
        computed in float64), the float inputs do not share one dtype, or
        `out` is not an ndarray of their dtype.
    ValueError
        If `x` or `w` is not 2-D, they disagree on in_features, `b` is not
        of shape (out,), `activation` is not one of the names above, a
        dimension exceeds the BLAS's 32-bit sizes, or `out` or `z_out` has
        the wrong shape, is read-only or shares memory with itself.
    MemoryError
        If the result or a temporary cannot be allocated.

    See Also
    --------
    dense_backward : The gradients of the layer.
    nnkernels.reference.dense_forward : The same in plain NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> import nnkernels as nk
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((8, 4))
    >>> w = rng.standard_normal((3, 4))
    >>> b = np.zeros(3)
    >>> a = nk.dense_forward(x, w, b, "tanh")
    >>> a.shape
    (8, 3)
    >>> np.allclose(a, np.tanh(x @ w.T + b))
    True
    >>> z = np.empty((8, 3))
    >>> a = nk.dense_forward(x, w, b, "gelu", z_out=z)
    >>> np.allclose(z, x @ w.T + b), np.allclose(a, nk.gelu(z))
    (True, True)
    """
    dense = _dispatch.dense()
    # the common call (C-contiguous arrays, an out buffer given) is checked in C
    if out is not None and (activation is None or type(activation) is str):
        g = dense.ACTIVATIONS.get(activation)
        if g is not None and dense.forward_fast(g, x, w, b, out, z_out) is not None:
            return out
    x = v.float_array(x, "x")
    w = v.float_array(w, "w")
    named = [("x", x), ("w", w)]
    if b is not None:
        b = v.float_array(b, "b")
        named.append(("b", b))
    v.same_dtype(*named)
    g = _activation_code(activation)
    x = layout.blas_matrix(x, "x")
    w = layout.blas_matrix(w, "w")
    _dense_shapes(x, w)
    if b is not None:
        if b.shape != (w.shape[0],):
            raise ValueError(f"b must have shape ({w.shape[0]},) (out_features of "
                             f"w {w.shape}), got b {b.shape}")
        b = layout.c_contiguous(b)
    shape = (x.shape[0], w.shape[0])
    out = v.output(out, shape, x.dtype)
    if z_out is None:
        work = layout.work_array(out, (x, w, b), False)
        dense.forward(g, x, w, b, work)
        if work is not out:
            out[...] = work
        return out
    z_out = v.output(z_out, shape, x.dtype, "z_out")
    z_work = layout.work_array(z_out, (x, w, b, out), False)
    work = layout.work_array(out, (x, w, b, z_out), False)
    if dense.blas_layout(z_work) != dense.blas_layout(work):
        # the pass walks both in one memory order: the column-major one goes to C order
        if dense.blas_layout(work) == dense.Layout.COLUMNS:
            work = np.empty(shape, x.dtype)
        else:
            z_work = np.empty(shape, x.dtype)
    dense.forward(g, x, w, b, work, z_work)
    for result, where in ((out, work), (z_out, z_work)):
        if where is not result:
            result[...] = where
    return out


def dense_backward(grad_a: FloatArrayLike, x: FloatArrayLike, w: FloatArrayLike,
                   a: Optional[FloatArrayLike] = None, activation: Activation = None, *,
                   z: Optional[FloatArrayLike] = None,
                   need_input_grad: bool = True, accumulate: bool = False,
                   scale: float = 1.0,
                   out: Optional[tuple[Optional[FloatArray], Optional[FloatArray],
                                       Optional[FloatArray]]] = None,
                   ) -> tuple[FloatArray, FloatArray, Optional[FloatArray]]:
    """Backward pass of a dense layer: the gradients (grad_w, grad_b, grad_x).

    grad_z and grad_b come from one pass over grad_a, then grad_w and grad_x
    are BLAS products (`scale` is gemm's alpha for grad_w, `accumulate` its
    beta = 1)::

        grad_z = grad_a ⊙ g'(a)       (sigmoid, tanh, relu: from the output a)
        grad_z = grad_a ⊙ g'(z)       (the others: from z = x wᵀ + b; see z_out)
                                      (grad_a itself without an activation)
        grad_w = grad_zᵀ x            (out, in)
        grad_b = Σ_rows grad_z        (out,)
        grad_x = grad_z w             (N, in)

    The 1/N of a mean lives in the loss gradient. `scale` and `accumulate`
    apply to the parameter gradients grad_w and grad_b; grad_x is always the
    plain input gradient, written into its buffer. So
    ``out=(w, b, grad_x), accumulate=True, scale=-lr`` is an SGD step done
    inside the products: w += -lr grad_w and b += -lr grad_b, with grad_x
    computed from w before it changes, no weight-gradient buffer and no
    separate pass over w. grad_z is kept in a scratch buffer per Python
    thread, reused, so with `out` buffers a training step allocates nothing.

    Parameters
    ----------
    grad_a : array_like of float32 or float64, shape (N, out)
        ∂J/∂a, the upstream gradient of the layer's output.
    x : array_like, shape (N, in)
        The layer's input (the batch); grad_a's dtype.
    w : array_like, shape (out, in)
        The weights; grad_a's dtype.
    a : array_like, shape (N, out), optional
        The layer's output g(z); needed for "sigmoid", "tanh" and "relu".
    activation : str or None, default None
        The g of the forward pass, one of dense_forward's names.
    z : array_like, shape (N, out), optional
        The layer's pre-activation x wᵀ + b (dense_forward's `z_out`);
        needed for "gelu", "gelu_tanh", "silu", "leaky_relu", "elu" and
        "softplus", whose g' is computed from z.
    need_input_grad : bool, default True
        Whether to compute grad_x; False skips the second product and
        returns None for it (the first layer needs none).
    accumulate : bool, default False
        Add grad_w and grad_b into their `out` buffers instead of
        overwriting them (two calls give the sum of two gradients).
    scale : float, default 1.0
        The factor of grad_w and grad_b (finite): their buffers receive
        ``scale * grad``, or have it added with `accumulate`.
    out : tuple of three ndarray or None, optional
        Buffers ``(grad_w, grad_b, grad_x)``, any of them None (then a new
        array is made, zeroed with `accumulate`); each must have its
        result's shape and dtype and be writable. The grad_x buffer is left
        alone when `need_input_grad` is False. One that overlaps an input
        or another buffer is computed into a temporary first, except `w`
        itself as the grad_w buffer: it is updated in place, after grad_x
        has read it.

    Returns
    -------
    grad_w : ndarray, shape (out, in)
        ∂J/∂w.
    grad_b : ndarray, shape (out,)
        ∂J/∂b.
    grad_x : ndarray, shape (N, in), or None
        ∂J/∂x; None when `need_input_grad` is False.

    Raises
    ------
    TypeError
        If an input is not a float32 or float64 array (integer and bool
        arrays and byte-swapped floats are refused; a list of numbers is
        computed in float64), the float inputs do not share one dtype, `out`
        is not an ndarray of their dtype, or `scale` is not a real number.
    ValueError
        If `x` or `w` is not 2-D, they disagree on in_features, `grad_a` (or
        `a`, `z`) is not of shape (N, out), `activation` is unknown, `a` or
        `z` is missing where the activation needs it, `scale` is not finite, a
        dimension exceeds the BLAS's 32-bit sizes, `out` is
        not None nor a triple, or a buffer has the wrong shape or is read-
        only.
    MemoryError
        If a result, the scratch memory or a temporary cannot be allocated.

    See Also
    --------
    dense_forward : The forward pass.
    nnkernels.reference.dense_backward : The same in plain NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> import nnkernels as nk
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((8, 4))
    >>> w = rng.standard_normal((3, 4))
    >>> a = nk.dense_forward(x, w, None, "sigmoid")
    >>> grad_a = np.ones_like(a)
    >>> gw, gb, gx = nk.dense_backward(grad_a, x, w, a, "sigmoid")
    >>> gw.shape, gb.shape, gx.shape
    ((3, 4), (3,), (8, 4))
    >>> grad_z = grad_a * a * (1 - a)
    >>> np.allclose(gw, grad_z.T @ x), np.allclose(gx, grad_z @ w)
    (True, True)
    >>> nk.dense_backward(grad_a, x, w, a, "sigmoid", need_input_grad=False)[2] is None
    True

    An SGD step inside the products, the parameters updated in place:

    >>> b = np.zeros(3)
    >>> w_next = w - 0.1 * gw
    >>> _, _, gx_step = nk.dense_backward(grad_a, x, w, a, "sigmoid",
    ...                                   accumulate=True, scale=-0.1, out=(w, b, None))
    >>> np.allclose(w, w_next), np.allclose(b, -0.1 * gb), np.allclose(gx_step, gx)
    (True, True, True)
    """
    dense = _dispatch.dense()
    # the common call (C-contiguous arrays, out buffers given) is checked in C
    if (type(out) is tuple and (activation is None or type(activation) is str)
            and type(need_input_grad) is bool and type(accumulate) is bool
            and type(scale) is float):
        g = dense.ACTIVATIONS.get(activation)
        if g is not None:
            result = dense.backward_fast(g, grad_a, x, w, a, z, need_input_grad, accumulate,
                                         scale, out, layout.scratch_memory)
            if result is not None:
                return result
    grad_a = v.float_array(grad_a, "grad_a")
    x = v.float_array(x, "x")
    w = v.float_array(w, "w")
    named = [("grad_a", grad_a), ("x", x), ("w", w)]
    if a is not None:
        a = v.float_array(a, "a")
        named.append(("a", a))
    if z is not None:
        z = v.float_array(z, "z")
        named.append(("z", z))
    v.same_dtype(*named)
    dtype = x.dtype
    g = _activation_code(activation)
    scale = v.finite_float(scale, "scale")
    x = layout.blas_matrix(x, "x")
    w_given = w
    w = layout.blas_matrix(w, "w")
    _dense_shapes(x, w)
    (n, n_in), n_out = x.shape, w.shape[0]
    if grad_a.shape != (n, n_out):
        raise ValueError(f"grad_a must have shape (N, out) = ({n}, {n_out}) for x {x.shape} "
                         f"and w {w.shape}, got grad_a {grad_a.shape}")
    takes_z = activation in dense.GRAD_TAKES_Z
    if takes_z and z is None:
        raise ValueError(f"activation {activation!r} needs the layer's pre-activation z "
                         f"(dense_forward's z_out)")
    if a is None and activation is not None and not takes_z:
        raise ValueError(f"activation {activation!r} needs the layer output a")
    if a is not None:
        v.same_shape("grad_a", grad_a, "a", a)
    if z is not None:
        v.same_shape("grad_a", grad_a, "z", z)
    grad_a = layout.blas_matrix(grad_a, "grad_a")
    # the identity's derivative needs neither; the others read a or z in either order
    a = (None if g == dense.ACTIVATIONS[None] else
         layout.blas_matrix(z, "z") if takes_z else layout.blas_matrix(a, "a"))

    if out is None:
        out = (None, None, None)
    elif not isinstance(out, (tuple, list)) or len(out) != 3:
        raise ValueError("out must be None or a (grad_w, grad_b, grad_x) triple of arrays "
                         f"or None, got {type(out).__name__}"
                         + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
    results = []
    for buffer, shape, name, accumulates in (
            (out[0], (n_out, n_in), "out[0] (grad_w)", accumulate),
            (out[1], (n_out,), "out[1] (grad_b)", accumulate),
            (out[2], (n, n_in), "out[2] (grad_x)", False)):
        if len(results) == 2 and not need_input_grad:
            results.append(None)
        elif buffer is None:        # a fresh result starts from zero when it accumulates
            results.append((np.zeros if accumulates else np.empty)(shape, dtype))
        else:
            results.append(v.output(buffer, shape, dtype, name))
    grad_w, grad_b, grad_x = results
    # the fused SGD step: w as its own gradient's buffer is read (by grad_x's
    # product) before it is written, so it needs no temporary
    updates_w = grad_w is w_given and grad_w is w
    inputs = (grad_a, x, w, a)
    work = [None if r is None else
            layout.work_array(r, tuple(i for j, i in enumerate(inputs)
                                       if not (updates_w and k == 0 and j == 2))
                              + tuple(o for o in results if o is not r), accumulate and k < 2)
            for k, r in enumerate(results)]
    scratch = layout.scratch_memory(dense.scratch_bytes(g, grad_a))
    dense.backward(g, grad_a, x, w, a, work[0], work[1], work[2], scratch, accumulate, scale)
    for result, where in zip(results, work):
        if where is not result:
            result[...] = where
    return grad_w, grad_b, grad_x
