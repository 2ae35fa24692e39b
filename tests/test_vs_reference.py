"""Every kernel against the NumPy reference computed in float64.

For each entry of kernel_table.KERNELS, every combination of its options,
both dtypes, 1 and 2 threads and the table's shapes (1-sized axes, odd
sizes, sizes past the vector width): the results have the right types,
shapes and dtypes, agree with ``nnkernels.reference`` evaluated on float64
copies of the inputs within the kernel's rounding (kernel_table's ``check``),
and leave the inputs unchanged.
"""

from __future__ import annotations

import numpy as np
import pytest

from _nkutil import DTYPES, assert_unchanged, snapshot
from kernel_table import KERNELS, cases


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("kernel,opts", cases())
def test_matches_float64_reference(kernel, opts, dtype, threads, rng):
    dtype = np.dtype(dtype)
    for shape in kernel.shapes:
        values = kernel.make(rng, shape, dtype, opts)
        inputs = kernel.unchanged_inputs(values)
        copies = snapshot(*(values[n] for n in inputs))
        expected = kernel.reference64(values)      # first: in-place state starts fresh
        got = kernel.run(values)
        assert_unchanged([values[n] for n in inputs], copies)
        try:
            kernel.check(got, expected, values, dtype, opts)
        except AssertionError as e:
            raise AssertionError(f"{kernel.name} shape {shape}: {e}") from None


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.name)
def test_defaults_equal_explicit_defaults(kernel, dtype, rng):
    """Omitting an option is passing its documented default: same bits."""
    values = kernel.make(rng, kernel.small_shape, np.dtype(dtype), kernel.default_options())
    explicit = kernel.run(kernel.fresh(values))
    args, kwargs = kernel.split(kernel.fresh(values))
    import inspect
    sig = inspect.signature(kernel.fn)
    implicit_kw = {k: v for k, v in kwargs.items()
                   if not (k in sig.parameters and sig.parameters[k].default is not
                           inspect.Parameter.empty and _same(sig.parameters[k].default, v))}
    implicit = kernel.results_of(kernel.fn(*args, **implicit_kw)) + [
        kwargs.get(n, args[kernel.positional.index(n)] if n in kernel.positional else None)
        for n in kernel.in_place_state]
    for e, i in zip(explicit, implicit):
        if e is None:
            assert i is None
        else:
            np.testing.assert_array_equal(e, i)


def _same(a, b):
    try:
        return type(a) is type(b) and a == b
    except Exception:  # noqa: BLE001 - arrays: not a default
        return False
