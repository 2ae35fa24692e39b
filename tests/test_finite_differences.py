"""Every gradient against central finite differences, in float64.

Each table entry's ``fd`` gives scalar losses f(x) -> (loss, grad) whose
gradient comes from the kernels (a backward kernel after its forward one,
a fused loss, the dense layer's three gradients); nnkernels.gradcheck
compares it with central differences of the loss.  Each check must also
fail for the same gradient scaled by 1.01, so none passes vacuously.
"""

from __future__ import annotations

import numpy as np
import pytest

import nnkernels as nk
from kernel_table import KERNELS, cases

WITH_FD = [k for k in KERNELS if k.fd is not None]
# the dense layer's activations are away from kinks; its products need a
# smaller step than gradcheck's default (x, w and b enter bilinearly)
TOLERANCES = {"dense_forward": dict(eps=1e-6, rtol=1e-5, atol=1e-7),
              "dense_backward": dict(eps=1e-6, rtol=1e-5, atol=1e-7)}


def _fd_cases():
    out = []
    for p in cases(WITH_FD):
        kernel, opts = p.values
        # the options that change the gradient's formula; the rest (dtype-free) once
        keep = {k: v for k, v in opts.items() if k not in ("need_input_grad",)}
        if keep != opts and opts.get("need_input_grad") is False:
            continue
        out.append(p)
    return out


@pytest.mark.parametrize("kernel,opts", _fd_cases())
def test_gradient_matches_central_differences(kernel, opts, rng):
    tol = TOLERANCES.get(kernel.name, {})
    for label, f, x0 in kernel.fd(rng, opts):
        res = nk.gradcheck(f, x0, **tol)
        assert res.ok, (label, res)

        def scaled(x, f=f):
            loss, grad = f(x)
            return loss, 1.01 * np.asarray(grad)
        assert not nk.gradcheck(scaled, x0, **tol).ok, \
            f"{label}: a gradient 1% off passes: the check cannot fail"


def test_a_wrongly_paired_gradient_fails(rng):
    """The cross-entropy gradient of another target is caught."""
    z = rng.standard_normal((4, 6))
    t = np.array([0, 5, -100, 2])
    assert not nk.gradcheck(
        lambda x: (nk.softmax_cross_entropy(x, t)[0],
                   nk.softmax_cross_entropy(x, np.array([1, 5, -100, 2]))[1]), z)
