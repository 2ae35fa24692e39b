"""Optimizer updates (SGD, Adam/AdamW): validate, prepare, one kernel call.

The parameter and its state arrays are updated in place, in one pass over
memory (nnkernels._optim); the arithmetic is torch.optim's single-tensor
step's, so a training loop can switch between the two.
"""

from __future__ import annotations   # signatures show the aliases' names

import numbers

import numpy as np

from . import _dispatch, _layout as layout, _overlap, _team
from . import _validation as v
from ._typing import FloatArrayLike, FloatArrayT, Optional, SupportsFloat, SupportsIndex

_opt = _dispatch.optim
_THREADS_FROM = _opt.PARALLEL_MIN


# ---- checks with messages (the path of every call the kernels' entries refuse)

def _real(value, name):
    if type(value) is float:
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def _flag(value, name):
    if value is True or value is False:
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    raise TypeError(f"{name} must be a bool, got {type(value).__name__}")


def _non_negative(value, name):
    value = _real(value, name)
    if not value >= 0.0:        # NaN too
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


# From this step on every update is the same: beta**step rounds to 0 in double
# for every beta in [0, 1) (even 1 - 2**-53: e**-512), so Adam's bias
# corrections are exactly 1, and SGD only asks whether the step is the first.
# The compiled kernels take the step as a C long long.
_STEP_SATURATES = 2 ** 62


def _step(step):
    step = v.integer(step, "step")
    if step < 1:
        raise ValueError(f"step must be >= 1 (the 1-based number of this step), got {step}")
    return min(step, _STEP_SATURATES)


def _betas(betas):
    try:
        beta1, beta2 = betas
    except (TypeError, ValueError):
        raise TypeError(f"betas must be a pair of floats (beta1, beta2), got {betas!r}") from None
    out = []
    for i, beta in enumerate((beta1, beta2)):
        beta = _real(beta, f"betas[{i}]")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"betas[{i}] must lie in [0, 1), got {beta}")
        out.append(beta)
    return tuple(out)


def _updated(x, name):
    """An array the update writes: an ndarray (a subclass is viewed as one)
    of float32/float64 in machine byte order."""
    if not isinstance(x, np.ndarray) or isinstance(x, np.ma.MaskedArray):
        raise TypeError(f"{name} must be a numpy.ndarray (it is updated in place), "
                        f"got {type(x).__name__}")
    return v.float_array(v.array(x, name), name)


def _arrays(param, grad, states):
    """[param, grad, *states] checked: one float dtype and shape, the updated
    ones writable and without self-overlap, no two sharing memory."""
    p = _updated(param, "param")
    named = [("param", p), ("grad", v.float_array(grad, "grad", like=p.dtype))]
    named += [(name, _updated(a, name)) for name, a in states]
    v.same_dtype(*named)
    for name, a in named[1:]:
        v.same_shape("param", p, name, a)
    for name, a in named[:1] + named[2:]:
        v.output(a, p.shape, p.dtype, name=name)
    for i, (name, a) in enumerate(named):
        for other, b in named[:i]:
            if _overlap.overlaps(a, b):
                raise ValueError(f"{other} and {name} share memory; the parameter, its "
                                 f"gradient and each state array need memory of their own")
    return [a for _, a in named]


def _run(key, kernel, arrays, n_updated, *options):
    """The kernel on the validated arrays: in place when they are all C- or
    all F-contiguous, else on C-ordered copies, written back afterwards."""
    n = arrays[0].size
    if n == 0:
        return
    if (all(a.flags.c_contiguous for a in arrays) or all(a.flags.f_contiguous for a in arrays)) \
            and all(a.flags.aligned for a in arrays):
        work = arrays
    else:
        work = [layout.c_contiguous(a) for a in arrays]
    if not _team.threaded_call(key, n, _THREADS_FROM, kernel, *work, *options):
        raise RuntimeError("nnkernels: internal error, validated operands were refused")
    for a, w in zip(arrays[:n_updated], work[:n_updated]):
        if w is not a:
            a[...] = w


def _sgd_checked(param, grad, lr, momentum, dampening, nesterov, weight_decay, maximize,
                 momentum_buffer, step):
    lr = _non_negative(lr, "lr")
    momentum = _non_negative(momentum, "momentum")
    dampening = _real(dampening, "dampening")
    weight_decay = _non_negative(weight_decay, "weight_decay")
    nesterov, maximize = _flag(nesterov, "nesterov"), _flag(maximize, "maximize")
    step = _step(step)
    if nesterov and (momentum <= 0.0 or dampening != 0.0):
        raise ValueError(f"nesterov=True needs momentum > 0 and dampening == 0, "
                         f"got momentum={momentum}, dampening={dampening}")
    if momentum != 0.0 and momentum_buffer is None:
        raise ValueError("momentum > 0 needs momentum_buffer, an array like param "
                         "kept from step to step (np.zeros_like(param) will do)")
    states = [("momentum_buffer", momentum_buffer)] if momentum != 0.0 else []
    p, g, *rest = _arrays(param, grad, states)
    buf = rest[0] if rest else None
    arrays = [p] + rest + [g]           # the updated ones first
    def kernel(*args):
        *work, n_threads = args
        return _opt.sgd(work[0], work[-1], work[1] if buf is not None else None, step, lr,
                        momentum, dampening, nesterov, weight_decay, maximize, n_threads)
    _run(("optim", "sgd"), kernel, arrays, len(arrays) - 1)
    return param


def _adam_checked(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay,
                  decoupled, amsgrad, max_exp_avg_sq, maximize):
    lr = _non_negative(lr, "lr")
    eps = _non_negative(eps, "eps")
    betas = _betas(betas)
    weight_decay = _non_negative(weight_decay, "weight_decay")
    decoupled = _flag(decoupled, "decoupled_weight_decay")
    amsgrad, maximize = _flag(amsgrad, "amsgrad"), _flag(maximize, "maximize")
    step = _step(step)
    if amsgrad and max_exp_avg_sq is None:
        raise ValueError("amsgrad=True needs max_exp_avg_sq, an array like param kept "
                         "from step to step (np.zeros_like(param) at the start)")
    states = [("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)]
    if amsgrad:
        states.append(("max_exp_avg_sq", max_exp_avg_sq))
    p, g, *rest = _arrays(param, grad, states)
    arrays = [p] + rest + [g]
    def kernel(*args):
        *work, n_threads = args
        return _opt.adam(work[0], work[-1], work[1], work[2], work[3] if amsgrad else None,
                         step, lr, betas, eps, weight_decay, decoupled, amsgrad, maximize,
                         n_threads)
    _run(("optim", "adam", amsgrad), kernel, arrays, len(arrays) - 1)
    return param


# ---- the public functions ----------------------------------------------------

def sgd_update(param: FloatArrayT, grad: FloatArrayLike, *, lr: SupportsFloat,
               momentum: SupportsFloat = 0.0, dampening: SupportsFloat = 0.0,
               nesterov: bool = False, weight_decay: SupportsFloat = 0.0,
               maximize: bool = False, momentum_buffer: Optional[FloatArrayT] = None,
               step: SupportsIndex = 1) -> FloatArrayT:
    """One step of stochastic gradient descent, in place: torch.optim.SGD's step.

    ::

        g ← −g                                   (maximize)
        g ← g + λ θ                              (weight decay λ)
        b ← g  at step 1,  else  μ b + (1 − dampening) g      (momentum μ > 0)
        g ← g + μ b  (Nesterov)  or  b
        θ ← θ − lr g

    `param` and `momentum_buffer` are read once and written once, in one
    pass; the arithmetic is PyTorch's single-tensor (``foreach=False``) step,
    operation for operation, in the arrays' dtype.

    Parameters
    ----------
    param : ndarray of float32 or float64, any shape
        θ, updated in place: writable, its elements distinct in memory.
    grad : array_like
        The gradient g, param's shape and dtype; read only (it may be
        read-only). A list of numbers is taken in param's dtype.
    lr : float
        The learning rate, >= 0.
    momentum : float, optional
        μ >= 0; 0 (the default) is plain SGD, without a buffer.
    dampening : float, optional
        Scales the gradient's share of the buffer by 1 − dampening.
    nesterov : bool, optional
        Nesterov momentum (needs momentum > 0 and dampening == 0).
    weight_decay : float, optional
        λ >= 0, L2 decay added to the gradient.
    maximize : bool, optional
        Ascend instead of descend.
    momentum_buffer : ndarray, optional
        b, param's shape and dtype, updated in place; required when
        momentum > 0. Keep it from step to step; at step 1 it is set to the
        gradient (its content is not read), as PyTorch creates it.
    step : int, optional
        The 1-based number of this step (default 1). With momentum it must
        count up from 1, or the buffer restarts at every call.

    Returns
    -------
    param : ndarray
        The very `param` object, updated.

    Raises
    ------
    TypeError
        If `param` or a state array is not an ndarray, an array is not
        float32 or float64 (or byte-swapped), the arrays do not share one
        dtype, a number is not a real number, a flag is not a bool, or
        `step` is not an integer.
    ValueError
        If an array's shape differs from param's, `param` or the buffer is
        read-only or has elements that share memory, two of the arrays share
        memory, lr, momentum or weight_decay is negative (or NaN), nesterov
        is set without momentum > 0 and dampening == 0, momentum > 0 comes
        without `momentum_buffer`, or step < 1.
    MemoryError
        If C-ordered copies of strided arrays cannot be allocated (arrays
        that are all C- or all F-contiguous are updated where they are).

    See Also
    --------
    adam_update : Adam and AdamW.
    nnkernels.reference.sgd_update : The same in plain NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> import nnkernels as nk
    >>> w = np.array([1.0, -2.0])
    >>> buf = np.zeros_like(w)
    >>> for step in (1, 2):
    ...     g = np.array([0.5, 0.5])
    ...     w = nk.sgd_update(w, g, lr=0.1, momentum=0.9, momentum_buffer=buf, step=step)
    >>> buf                      # 0.5, then 0.9 * 0.5 + 0.5
    array([0.95, 0.95])
    >>> w.round(6)               # 1 - 0.1 * 0.5 - 0.1 * 0.95
    array([ 0.855, -2.145])
    """
    if type(param) is np.ndarray and param.size < _THREADS_FROM and _opt.sgd(
            param, grad, momentum_buffer, step, lr, momentum, dampening, nesterov,
            weight_decay, maximize, _dispatch._num_threads):
        return param        # the common call, checked and run by the kernel's entry
    return _sgd_checked(param, grad, lr, momentum, dampening, nesterov, weight_decay,
                        maximize, momentum_buffer, step)


def adam_update(param: FloatArrayT, grad: FloatArrayLike, exp_avg: FloatArrayT,
                exp_avg_sq: FloatArrayT, *, step: SupportsIndex, lr: SupportsFloat = 1e-3,
                betas: tuple[SupportsFloat, SupportsFloat] = (0.9, 0.999),
                eps: SupportsFloat = 1e-8, weight_decay: SupportsFloat = 0.0,
                decoupled_weight_decay: bool = False, amsgrad: bool = False,
                max_exp_avg_sq: Optional[FloatArrayT] = None,
                maximize: bool = False) -> FloatArrayT:
    """One Adam step, in place: torch.optim.Adam's (AdamW's with decoupled decay).

    ::

        g ← −g                                   (maximize)
        g ← g + λ θ       (weight decay λ)   or   θ ← θ (1 − lr λ)   (decoupled: AdamW)
        m ← m + (1 − β₁)(g − m)
        v ← β₂ v + (1 − β₂) g²
        v̂ ← max(v̂, v)                            (amsgrad; then v̂ replaces v below)
        c₁ = 1 − β₁ᵗ,   c₂ = 1 − β₂ᵗ              (t = step)
        θ ← θ − (lr / c₁) m / (√v / √c₂ + ε)

    `param` and the state arrays are read once and written once, in one
    pass; the arithmetic is PyTorch's single-tensor (``foreach=False``) step,
    operation for operation: the bias corrections are computed in double
    precision and cast to the arrays' dtype, as PyTorch does.

    Parameters
    ----------
    param : ndarray of float32 or float64, any shape
        θ, updated in place: writable, its elements distinct in memory.
    grad : array_like
        The gradient g, param's shape and dtype; read only (it may be
        read-only). A list of numbers is taken in param's dtype.
    exp_avg, exp_avg_sq : ndarray
        The moments m and v, param's shape and dtype, updated in place. Start
        them at zero (``np.zeros_like(param)``) and keep them from step to
        step.
    step : int
        t, the 1-based number of this step.
    lr : float, optional
        The learning rate, >= 0.
    betas : (float, float), optional
        β₁ and β₂, each in [0, 1).
    eps : float, optional
        ε >= 0, added to the denominator.
    weight_decay : float, optional
        λ >= 0.
    decoupled_weight_decay : bool, optional
        Decay θ directly (AdamW) instead of adding λ θ to the gradient.
    amsgrad : bool, optional
        Normalise by the running maximum v̂ of v (needs `max_exp_avg_sq`).
    max_exp_avg_sq : ndarray, optional
        v̂, param's shape and dtype, updated in place; start it at zero.
    maximize : bool, optional
        Ascend instead of descend.

    Returns
    -------
    param : ndarray
        The very `param` object, updated.

    Raises
    ------
    TypeError
        If `param` or a state array is not an ndarray, an array is not
        float32 or float64 (or byte-swapped), the arrays do not share one
        dtype, a number is not a real number, `betas` is not a pair, a flag
        is not a bool, or `step` is not an integer.
    ValueError
        If an array's shape differs from param's, `param` or a state array is
        read-only or has elements that share memory, two of the arrays share
        memory, lr, eps or weight_decay is negative (or NaN), a beta is
        outside [0, 1), amsgrad comes without `max_exp_avg_sq`, or step < 1.
    MemoryError
        If C-ordered copies of strided arrays cannot be allocated (arrays
        that are all C- or all F-contiguous are updated where they are).

    See Also
    --------
    sgd_update : SGD with momentum.
    nnkernels.reference.adam_update : The same in plain NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> import nnkernels as nk
    >>> p = np.array([1.0, -1.0])
    >>> m, v = np.zeros_like(p), np.zeros_like(p)
    >>> g = np.array([0.1, -0.2])
    >>> nk.adam_update(p, g, m, v, step=1, lr=0.01) is p
    True
    >>> p.round(6)               # the first step moves each element by about lr
    array([ 0.99, -0.99])
    >>> m                        # (1 - 0.9) g
    array([ 0.01, -0.02])
    """
    if type(param) is np.ndarray and param.size < _THREADS_FROM and _opt.adam(
            param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, betas, eps,
            weight_decay, decoupled_weight_decay, amsgrad, maximize, _dispatch._num_threads):
        return param        # the common call, checked and run by the kernel's entry
    return _adam_checked(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps,
                         weight_decay, decoupled_weight_decay, amsgrad, max_exp_avg_sq,
                         maximize)
