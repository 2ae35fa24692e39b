"""Every kernel against its PyTorch counterpart (skipped without torch).

torch computes in float64 (kernel_table's ``torch``: the activations' aten
backward ops, softmax and its autograd, torch.nn.functional's losses with
every option, linear layers), an implementation independent of
nnkernels.reference; the kernels' results must agree within the same
rounding as against the reference.  Some inputs hold the extremes torch
and nnkernels must agree on (±1e4 logits, NaN, probabilities of 0 and 1).
"""

from __future__ import annotations

import numpy as np
import pytest

from _nkutil import DTYPES
from kernel_table import KERNELS, cases

pytest.importorskip("torch")

WITH_TORCH = [k for k in KERNELS if k.torch is not None]
SHAPE = {"dense_forward": (23, 31, 17), "dense_backward": (23, 31, 17)}


def _extremes(name, v):
    """Plant values at the edges of each kernel's formulas (in place)."""
    if name in ("sigmoid", "relu", "tanh") or "z" in v and name.endswith("_backward"):
        v["z" if "z" in v else "a"].flat[:5] = [-1e4, 1e4, -80, 80, 0]
    elif "z" in v:                  # gelu, silu, leaky_relu, elu, softplus
        v["z"].flat[:6] = [-1e4, 1e4, -80, 80, 0, 1e-30]
    elif name in ("softmax", "log_softmax"):
        v["z"].flat[:3] = [1e4, -1e4, 0]
        v["z"][3, 5] = np.nan
    elif name in ("softmax_cross_entropy", "softmax_cross_entropy_backward"):
        v["logits"].flat[:2] = [1e4, -1e4]
    elif name == "sigmoid_binary_cross_entropy":
        v["logits"].flat[:4] = [1e4, -1e4, 60.0, -60.0]
    elif name == "binary_cross_entropy":
        v["probs"].flat[:4] = [0.0, 1.0, 0.0, 1.0]
        v["target"].flat[:4] = [1.0, 0.0, 0.0, 1.0]


# torch clamps BCE's p(1 - p) at the float32 1e-12, 4e-9 above the contract's
RTOL = {("binary_cross_entropy", np.dtype(np.float64)): 1e-8}


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("kernel,opts", cases(WITH_TORCH))
def test_matches_torch(kernel, opts, dtype, rng):
    dtype = np.dtype(dtype)
    for shape in [SHAPE.get(kernel.name, (17, 30)), (31,)]:
        if len(shape) == 1 and (not any(len(s) == 1 for s in kernel.shapes)
                                or opts.get("weight") == "column"):
            continue        # 1-D: the element-wise kernels (a column weight = the full one)
        values = kernel.make(rng, shape, dtype, opts)
        if len(shape) == 2:
            _extremes(kernel.name, values)
        expected = kernel.torch(values, opts)     # first: an update changes its inputs
        got = kernel.run(values)
        override = {"rtol": RTOL[kernel.name, dtype]} if (kernel.name, dtype) in RTOL else {}
        kernel.check(got, expected, values, dtype, opts, **override)
