"""Thinc backend: ``NNKernelsOps``, Thinc's ``NumpyOps`` on nnkernels' kernels.

Thinc finds an ``Ops`` class by its ``name`` through the ``thinc_ops`` entry
point, so once nnkernels is installed with the ``thinc`` extra::

    from thinc.api import use_ops
    with use_ops("nnkernels"):
        ...                       # every layer built here runs on nnkernels

``NNKernelsOps`` overrides the methods nnkernels computes in one fused pass
(activations and their backprops, softmax, the products, Adam) with Thinc's
signatures, argument orders and ``inplace`` flags, and leaves the rest to
``NumpyOps``. A call nnkernels does not cover (an integer or float16 array,
mixed dtypes, a softmax over a 3-D array, an Adam step whose arrays share
memory) goes to ``NumpyOps`` unchanged, so results and errors are Thinc's
there.

Where the results differ from ``NumpyOps``, nnkernels is the more exact:

* ``gelu`` and its backprop use an exact erf (Thinc's ``ops.erf`` is a
  polynomial fit, good to about 1.5e-7);
* ``sigmoid`` (and ``swish``) are not clipped to z in [-20, 20] first: they
  are the correctly computed functions for every z, which differ from
  Thinc's by at most 2.1e-9 in absolute value;
* ``backprop_gelu_approx`` is the derivative of the tanh approximation,
  not Thinc's six-digit polynomial fit of it;
* ``softmax(x, inplace=True)`` writes the result into ``x``, as the flag
  says (``NumpyOps`` ignores it and returns a new array);
* ``gemm(..., out=)`` writes into ``out`` in whatever layout it has
  (``NumpyOps`` writes into a C-contiguous copy of a non-contiguous ``out``).

The products run on the BLAS provider ``nnkernels.set_blas`` selects, with
its threads; the element-wise kernels on nnkernels' OpenMP threads above
their size thresholds (``nnkernels.set_num_threads`` governs both).
"""

import importlib.util
from typing import Optional, Tuple

import numpy as np

if importlib.util.find_spec("thinc") is None:     # pragma: no cover - environment
    raise ImportError("nnkernels.thinc needs Thinc: pip install 'nnkernels[thinc]'")
from thinc.api import NumpyOps
from thinc.backends.ops import FloatsT          # the TypeVar Ops' signatures use
from thinc.types import Floats1d, Floats2d, FloatsXdT

import nnkernels as nk

__all__ = ["NNKernelsOps"]

# With this step count β^t rounds to 0 in double for every β in [0, 1), so
# adam_update's bias corrections 1 − β^t are exactly 1: Thinc's optimizer
# folds them into the learning rate it passes.
_NO_BIAS_CORRECTION_STEP = 2 ** 62


def _same_float(*arrays) -> bool:
    """Plain float32 or float64 ndarrays, all of one dtype."""
    first = arrays[0]
    if type(first) is not np.ndarray or first.dtype not in (np.float32, np.float64):
        return False
    return all(type(a) is np.ndarray and a.dtype == first.dtype for a in arrays[1:])


def _check_same_shape(a, b, a_name, b_name):
    if a.shape != b.shape:
        raise ValueError(f"{a_name} and {b_name} must have the same shape, "
                         f"got {a_name} {a.shape} and {b_name} {b.shape}")


class NNKernelsOps(NumpyOps):
    """Thinc's ``NumpyOps`` with nnkernels' fused kernels (Thinc name "nnkernels").

    Overrides ``gemm``, ``affine``, ``relu``, ``sigmoid``, ``dsigmoid``,
    ``dtanh``, ``gelu``, ``gelu_approx``, ``swish``, ``softmax``, the
    backprops of these, and ``adam``, with ``NumpyOps``' signatures and
    ``inplace`` conventions; every other method is ``NumpyOps``' own.

    Parameters
    ----------
    device_type : str, default "cpu"
        As ``NumpyOps``: the device, always the CPU.
    device_id : int, default -1
        As ``NumpyOps``.
    use_blis : bool, default True
        Accepted as ``NumpyOps`` accepts it, and unused: the products run on
        the BLAS provider of ``nnkernels.set_blas``.

    Examples
    --------
    >>> import numpy as np
    >>> from thinc.api import get_ops
    >>> ops = get_ops("nnkernels")
    >>> ops.relu(np.array([-1.0, 2.0], dtype=np.float32))
    array([0., 2.], dtype=float32)
    """

    name = "nnkernels"

    # ---- products --------------------------------------------------------

    def gemm(self, x: Floats2d, y: Floats2d, out: Optional[Floats2d] = None,
             trans1: bool = False, trans2: bool = False) -> Floats2d:
        """op(x) @ op(y) into ``out`` (op transposes where ``trans1``/``trans2``)."""
        if x.ndim != 2:
            raise ValueError(f"Provided 'x' array should be 2-dimensional, "
                             f"but found {x.ndim} dimension(s).")
        if y.ndim != 2:
            raise ValueError(f"Provided 'y' array should be 2-dimensional, "
                             f"but found {y.ndim} dimension(s).")
        if not (_same_float(x, y) and (out is None or _same_float(x, out))):
            return super().gemm(x, y, out=out, trans1=trans1, trans2=trans2)
        a = x.T if trans1 else x            # (M, K)
        w = y if trans2 else y.T            # (N, K): dense_forward takes a @ w.T
        if a.shape[1] != w.shape[1]:
            raise ValueError(f"Shape mismatch for gemm: op(x) {a.shape}, "
                             f"op(y) {w.T.shape}")
        return nk.dense_forward(a, w, out=out)

    def affine(self, X: Floats2d, W: Floats2d, b: Floats1d) -> Floats2d:
        """X @ W.T + b, the product and the bias in one call."""
        if (_same_float(X, W, b) and X.ndim == 2 and W.ndim == 2 and b.ndim == 1
                and X.shape[1] == W.shape[1] and b.shape[0] == W.shape[0]):
            return nk.dense_forward(X, W, b)
        return super().affine(X, W, b)

    # ---- activations -----------------------------------------------------

    def relu(self, X: Floats2d, inplace: bool = False) -> Floats2d:
        if not _same_float(X):
            return super().relu(X, inplace=inplace)
        return nk.relu(X, out=X if inplace else None)

    def backprop_relu(self, dY: Floats2d, Y: Floats2d, inplace: bool = False) -> Floats2d:
        if not _same_float(dY, Y):
            return super().backprop_relu(dY, Y, inplace=inplace)
        return nk.relu_backward(dY, Y, out=dY if inplace else None)

    def sigmoid(self, X: FloatsXdT, *, inplace: bool = False) -> FloatsXdT:
        if not _same_float(X):
            return super().sigmoid(X, inplace=inplace)
        return nk.sigmoid(X, out=X if inplace else None)

    def backprop_sigmoid(self, dY: FloatsXdT, Y: FloatsXdT, *,
                         inplace: bool = False) -> FloatsXdT:
        # Thinc's in-place backprop_sigmoid overwrites Y, not dY
        if not _same_float(dY, Y):
            return super().backprop_sigmoid(dY, Y, inplace=inplace)
        return nk.sigmoid_backward(dY, Y, out=Y if inplace else None)

    def dsigmoid(self, Y: FloatsXdT, *, inplace: bool = False) -> FloatsXdT:
        """Y (1 − Y): sigmoid's derivative from its output."""
        if not _same_float(Y):
            return super().dsigmoid(Y, inplace=inplace)
        one = np.broadcast_to(Y.dtype.type(1), Y.shape)
        return nk.sigmoid_backward(one, Y, out=Y if inplace else None)

    def dtanh(self, Y: FloatsT, *, inplace: bool = False) -> FloatsT:
        """1 − Y²: tanh's derivative from its output."""
        if not _same_float(Y):
            return super().dtanh(Y, inplace=inplace)
        one = np.broadcast_to(Y.dtype.type(1), Y.shape)
        return nk.tanh_backward(one, Y, out=Y if inplace else None)

    def gelu(self, X: FloatsXdT, inplace: bool = False) -> FloatsXdT:
        if not _same_float(X):
            return super().gelu(X, inplace=inplace)
        return nk.gelu(X, out=X if inplace else None)

    def backprop_gelu(self, dY: FloatsXdT, X: FloatsXdT,
                      inplace: bool = False) -> FloatsXdT:
        if not _same_float(dY, X):
            return super().backprop_gelu(dY, X, inplace=inplace)
        return nk.gelu_backward(dY, X, out=dY if inplace else None)

    def gelu_approx(self, X: FloatsXdT, inplace: bool = False) -> FloatsXdT:
        if not _same_float(X):
            return super().gelu_approx(X, inplace=inplace)
        return nk.gelu(X, approximate="tanh", out=X if inplace else None)

    def backprop_gelu_approx(self, dY: FloatsXdT, X: FloatsXdT,
                             inplace: bool = False) -> FloatsXdT:
        if not _same_float(dY, X):
            return super().backprop_gelu_approx(dY, X, inplace=inplace)
        return nk.gelu_backward(dY, X, approximate="tanh", out=dY if inplace else None)

    def swish(self, X: FloatsXdT, inplace: bool = False) -> FloatsXdT:
        if not _same_float(X):
            return super().swish(X, inplace=inplace)
        return nk.silu(X, out=X if inplace else None)

    def backprop_swish(self, dY: FloatsXdT, X: FloatsXdT, Y: FloatsXdT,
                       inplace: bool = False) -> FloatsXdT:
        # silu'(X) from X alone: Y is not needed
        if not _same_float(dY, X, Y):
            return super().backprop_swish(dY, X, Y, inplace=inplace)
        _check_same_shape(dY, Y, "dY", "Y")
        return nk.silu_backward(dY, X, out=dY if inplace else None)

    # ---- softmax ---------------------------------------------------------

    def softmax(self, x: FloatsT, *, inplace: bool = False, axis: int = -1,
                temperature: float = 1.0) -> FloatsT:
        if not (_same_float(x) and x.ndim in (1, 2) and -x.ndim <= axis < x.ndim):
            return super().softmax(x, inplace=inplace, axis=axis, temperature=temperature)
        if temperature != 1.0:
            x = np.divide(x, temperature, out=x if inplace else None)
            inplace = True              # the quotient is ours to overwrite
        return nk.softmax(x, axis=axis, out=x if inplace else None)

    def backprop_softmax(self, Y: FloatsT, dY: FloatsT, *, axis: int = -1,
                         temperature: float = 1.0) -> FloatsT:
        if not (_same_float(Y, dY) and Y.ndim in (1, 2) and -Y.ndim <= axis < Y.ndim):
            return super().backprop_softmax(Y, dY, axis=axis, temperature=temperature)
        if temperature != 1.0:
            dY = dY / temperature
        return nk.softmax_backward(dY, Y, axis=axis)

    # ---- optimizer -------------------------------------------------------

    def adam(self, weights: Floats1d, gradient: Floats1d, mom1: Floats1d, mom2: Floats1d,
             beta1: float, beta2: float, eps: float, learn_rate: float,
             mod_rate: float = 1.0) -> Tuple[Floats1d, Floats1d, Floats1d, Floats1d]:
        """Thinc's Adam step, in one pass; the gradient is zeroed after it.

        As ``NumpyOps.adam``: ``mom1 ← β₁ mom1 + (1 − β₁) g``,
        ``mom2 ← β₂ mom2 + (1 − β₂) g²``,
        ``weights ← weights − learn_rate · mom1 / (√mom2 + eps)``, with no
        bias correction (Thinc's optimizer folds it into ``learn_rate``) and
        ``mod_rate`` unused. float32 1-D arrays only, as there.
        """
        for name, array in (("gradient", gradient), ("mom1", mom1), ("mom2", mom2)):
            _check_same_shape(weights, array, "weights", name)
        betas = (float(beta1), float(beta2))
        arrays = (weights, gradient, mom1, mom2)
        # NumpyOps' sequence of passes also defines the update of arrays that
        # share memory; nnkernels' single pass needs them apart
        simple = (_same_float(*arrays) and weights.dtype == np.float32 and weights.ndim == 1
                  and not any(np.may_share_memory(a, b)
                              for k, a in enumerate(arrays) for b in arrays[:k])
                  and all(0.0 <= b < 1.0 for b in betas)
                  and float(learn_rate) >= 0.0 and float(eps) >= 0.0)
        if not simple:
            return super().adam(weights, gradient, mom1, mom2, beta1, beta2, eps,
                                learn_rate, mod_rate)
        nk.adam_update(weights, gradient, mom1, mom2, step=_NO_BIAS_CORRECTION_STEP,
                       lr=float(learn_rate), betas=betas, eps=float(eps))
        gradient.fill(0)
        return weights, gradient, mom1, mom2
