"""The dense layer, forward and backward (NumPy reference)."""

from __future__ import annotations   # signatures show the aliases' names

import numbers

import numpy as np

from .._typing import Activation, FloatArray, FloatArrayLike, Optional
from . import activations as _act
from ._checks import (_GRAD_TAKES_Z, _check_activation, _check_ndim, _check_out,
                      _check_same_shape, _common_dtype, _float_array, _store)
from .activations import relu, relu_backward, sigmoid, sigmoid_backward, tanh_backward

# activation name -> (forward of z, backward of (grad, z)), with the defaults
_Z_ACTIVATIONS = {
    "gelu": (_act.gelu, _act.gelu_backward),
    "gelu_tanh": (lambda z: _act.gelu(z, approximate="tanh"),
                  lambda g, z: _act.gelu_backward(g, z, approximate="tanh")),
    "silu": (_act.silu, _act.silu_backward),
    "leaky_relu": (_act.leaky_relu, _act.leaky_relu_backward),
    "elu": (_act.elu, _act.elu_backward),
    "softplus": (_act.softplus, _act.softplus_backward),
}


def _check_dense_shapes(x, w):
    _check_ndim("x", x, (2,))
    _check_ndim("w", w, (2,))
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"x (N, in) and w (out, in) disagree on in_features: "
                         f"x {x.shape}, w {w.shape}")


def dense_forward(x: FloatArrayLike, w: FloatArrayLike, b: Optional[FloatArrayLike] = None,
                  activation: Activation = None, *, z_out: Optional[FloatArray] = None,
                  out: Optional[FloatArray] = None) -> FloatArray:
    """a = g(x @ w.T + b) for a batch x (N, in) and weights w (out, in);
    z = x @ w.T + b also into ``z_out`` when given."""
    x = _float_array("x", x)
    w = _float_array("w", w)
    b = None if b is None else _float_array("b", b)
    dtype = _common_dtype(x=x, w=w, b=b)
    _check_dense_shapes(x, w)
    if b is not None and b.shape != (w.shape[0],):
        raise ValueError(f"b must have shape ({w.shape[0]},) (out_features of "
                         f"w {w.shape}), got b {b.shape}")
    _check_activation(activation)
    _check_out(out, (x.shape[0], w.shape[0]), dtype)
    _check_out(z_out, (x.shape[0], w.shape[0]), dtype, name="z_out")

    z = x @ w.T
    if b is not None:
        z += b
    if activation in _Z_ACTIVATIONS:
        a = _Z_ACTIVATIONS[activation][0](z)
    elif activation == "sigmoid":
        a = sigmoid(z)
    elif activation == "tanh":
        a = np.tanh(z)
    elif activation == "relu":
        a = relu(z)
    else:
        a = z
    if z_out is not None:
        z_out[...] = z
    return _store(a, dtype, out)


def dense_backward(grad_a: FloatArrayLike, x: FloatArrayLike, w: FloatArrayLike,
                   a: Optional[FloatArrayLike] = None, activation: Activation = None, *,
                   z: Optional[FloatArrayLike] = None,
                   need_input_grad: bool = True, accumulate: bool = False,
                   scale: float = 1.0,
                   out: Optional[tuple[Optional[FloatArray], Optional[FloatArray],
                                       Optional[FloatArray]]] = None,
                   ) -> tuple[FloatArray, FloatArray, Optional[FloatArray]]:
    """Gradients of a dense layer: (grad_w, grad_b, grad_x).

    grad_z = grad_a * g'(a) (or g'(z), z = x @ w.T + b, for the activations
    whose derivative takes z), grad_w = grad_z.T @ x, grad_b = sum of grad_z
    over the batch, grad_x = grad_z @ w (None when ``need_input_grad`` is
    false). ``out`` is None or a (grad_w, grad_b, grad_x) triple of buffers,
    any of them None. grad_w and grad_b are multiplied by ``scale``, and
    with ``accumulate`` added into their buffers; grad_x is always the plain
    input gradient, so out=(w, b, grad_x), accumulate=True, scale=-lr is an
    SGD step whose grad_x comes from w before the update. The grad_x buffer
    is left alone when ``need_input_grad`` is false.
    """
    grad_a = _float_array("grad_a", grad_a)
    x = _float_array("x", x)
    w = _float_array("w", w)
    a = None if a is None else _float_array("a", a)
    z = None if z is None else _float_array("z", z)
    dtype = _common_dtype(grad_a=grad_a, x=x, w=w, a=a, z=z)
    _check_dense_shapes(x, w)
    _check_activation(activation)
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a float, got {type(scale).__name__}")
    if not np.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    n_samples, n_out = x.shape[0], w.shape[0]
    if grad_a.shape != (n_samples, n_out):
        raise ValueError(f"grad_a must have shape (N, out) = "
                         f"({n_samples}, {n_out}) for x {x.shape} and "
                         f"w {w.shape}, got grad_a {grad_a.shape}")
    if activation in _GRAD_TAKES_Z and z is None:
        raise ValueError(f"activation {activation!r} needs the layer's pre-activation z")
    if a is None and activation is not None and activation not in _GRAD_TAKES_Z:
        raise ValueError(f"activation {activation!r} needs the layer output a")
    if a is not None:
        _check_same_shape("grad_a", grad_a, "a", a)
    if z is not None:
        _check_same_shape("grad_a", grad_a, "z", z)

    if out is None:
        out = (None, None, None)
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        raise ValueError("out must be None or a (grad_w, grad_b, grad_x) "
                         "triple of arrays or None")
    out_w, out_b, out_x = out
    _check_out(out_w, w.shape, dtype, name="out[0] (grad_w)")
    _check_out(out_b, (n_out,), dtype, name="out[1] (grad_b)")
    if need_input_grad:
        _check_out(out_x, x.shape, dtype, name="out[2] (grad_x)")

    if activation in _Z_ACTIVATIONS:
        grad_z = _Z_ACTIVATIONS[activation][1](grad_a, z)
    elif activation == "sigmoid":
        grad_z = sigmoid_backward(grad_a, a)
    elif activation == "tanh":
        grad_z = tanh_backward(grad_a, a)
    elif activation == "relu":
        grad_z = relu_backward(grad_a, a)
    else:
        grad_z = grad_a

    # All three results are known before any buffer is written, so that a
    # buffer may alias an input.
    grad_w = scale * (grad_z.T @ x)
    grad_b = scale * np.sum(grad_z, axis=0)
    grad_x = grad_z @ w if need_input_grad else None
    if accumulate:
        grad_w, grad_b = (result if buffer is None else buffer + result
                          for result, buffer in ((grad_w, out_w), (grad_b, out_b)))
    return (_store(grad_w, dtype, out_w), _store(grad_b, dtype, out_b),
            None if grad_x is None else _store(grad_x, dtype, out_x))
