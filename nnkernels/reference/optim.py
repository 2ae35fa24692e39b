"""Optimizer updates: SGD with momentum, Adam/AdamW/AMSGrad (NumPy reference).

Written straight from the equations (docs/equations.md), one NumPy operation
per term, in the arrays' dtype: the hyperparameters and the bias corrections
are Python floats, which NumPy applies in that dtype. Like the kernels, each
function updates ``param`` and its state arrays in place and returns
``param``.
"""

from __future__ import annotations   # signatures show the aliases' names

import math
import numbers

import numpy as np

from .._typing import FloatArrayLike, FloatArrayT, Optional, SupportsFloat, SupportsIndex
from ._checks import _check_out, _check_same_shape, _common_dtype, _float_array


def _number(name, value, low=None, below=None):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if low is not None and not value >= low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if below is not None and not value < below:
        raise ValueError(f"{name} must be < {below}, got {value}")
    return value


def _step(step):
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, numbers.Integral):
        raise TypeError(f"step must be an int, got {type(step).__name__}")
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    return int(step)


def _arrays(param, grad, **states):
    """param, grad and the state arrays checked: one float dtype and shape,
    param and the states writable ndarrays."""
    if not isinstance(param, np.ndarray):
        raise TypeError(f"param must be a NumPy array, got {type(param).__name__}")
    param = _float_array("param", param)
    grad = _float_array("grad", grad, like=param.dtype)
    dtype = _common_dtype(param=param, grad=grad, **states)
    _check_same_shape("param", param, "grad", grad)
    _check_out(param, param.shape, dtype, name="param")
    for name, state in states.items():
        if state is not None:
            _check_out(state, param.shape, dtype, name=name)
    return grad


def sgd_update(param: FloatArrayT, grad: FloatArrayLike, *, lr: SupportsFloat,
               momentum: SupportsFloat = 0.0, dampening: SupportsFloat = 0.0,
               nesterov: bool = False, weight_decay: SupportsFloat = 0.0,
               maximize: bool = False, momentum_buffer: Optional[FloatArrayT] = None,
               step: SupportsIndex = 1) -> FloatArrayT:
    """One SGD step in place (torch.optim.SGD's):
    g ← −g if maximize; g ← g + λθ; b ← g at step 1, else μb + (1 − dampening)g;
    g ← g + μb if nesterov else b; θ ← θ − lr g."""
    lr = _number("lr", lr, low=0.0)
    momentum = _number("momentum", momentum, low=0.0)
    dampening = _number("dampening", dampening)
    weight_decay = _number("weight_decay", weight_decay, low=0.0)
    step = _step(step)
    if nesterov and (momentum <= 0.0 or dampening != 0.0):
        raise ValueError("nesterov=True needs momentum > 0 and dampening == 0")
    if momentum != 0.0 and momentum_buffer is None:
        raise ValueError("momentum > 0 needs momentum_buffer")
    grad = _arrays(param, grad,
                   momentum_buffer=momentum_buffer if momentum != 0.0 else None)

    g = -grad if maximize else grad
    if weight_decay != 0.0:
        g = g + weight_decay * param
    if momentum != 0.0:
        if step == 1:
            momentum_buffer[...] = g
        else:
            momentum_buffer *= momentum
            momentum_buffer += (1.0 - dampening) * g
        g = g + momentum * momentum_buffer if nesterov else momentum_buffer
    param -= lr * g
    return param


def adam_update(param: FloatArrayT, grad: FloatArrayLike, exp_avg: FloatArrayT,
                exp_avg_sq: FloatArrayT, *, step: SupportsIndex, lr: SupportsFloat = 1e-3,
                betas: tuple[SupportsFloat, SupportsFloat] = (0.9, 0.999),
                eps: SupportsFloat = 1e-8, weight_decay: SupportsFloat = 0.0,
                decoupled_weight_decay: bool = False, amsgrad: bool = False,
                max_exp_avg_sq: Optional[FloatArrayT] = None,
                maximize: bool = False) -> FloatArrayT:
    """One Adam step in place (torch.optim.Adam's, AdamW's when decoupled):
    g ← −g if maximize; g ← g + λθ, or θ ← θ(1 − lr λ) if decoupled;
    m ← m + (1 − β₁)(g − m); v ← β₂v + (1 − β₂)g²; v̂ ← max(v̂, v) if amsgrad;
    θ ← θ − (lr / (1 − β₁ᵗ)) m / (√(v or v̂) / √(1 − β₂ᵗ) + ε)."""
    lr = _number("lr", lr, low=0.0)
    eps = _number("eps", eps, low=0.0)
    beta1, beta2 = betas
    beta1 = _number("betas[0]", beta1, low=0.0, below=1.0)
    beta2 = _number("betas[1]", beta2, low=0.0, below=1.0)
    weight_decay = _number("weight_decay", weight_decay, low=0.0)
    step = _step(step)
    if amsgrad and max_exp_avg_sq is None:
        raise ValueError("amsgrad=True needs max_exp_avg_sq")
    grad = _arrays(param, grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq,
                   max_exp_avg_sq=max_exp_avg_sq if amsgrad else None)

    g = -grad if maximize else grad
    if weight_decay != 0.0:
        if decoupled_weight_decay:
            param *= 1.0 - lr * weight_decay
        else:
            g = g + weight_decay * param
    exp_avg += (1.0 - beta1) * (g - exp_avg)
    exp_avg_sq *= beta2
    exp_avg_sq += (1.0 - beta2) * g * g
    second = exp_avg_sq
    if amsgrad:
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        second = max_exp_avg_sq
    bias_correction1 = 1.0 - beta1 ** step
    bias_correction2 = 1.0 - beta2 ** step
    param -= (lr / bias_correction1) * exp_avg / (np.sqrt(second) / math.sqrt(bias_correction2)
                                                  + eps)
    return param
