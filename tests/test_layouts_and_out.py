"""Memory layouts and out= buffers, for every kernel of the table.

The same values in any layout (C, F, strided with NaN between the elements,
negative strides, unaligned, strides that are no multiple of the item size,
transposed views) give the reference's results, each argument in its own
layout too.  out= is the result (``is``), in any layout, over read-only
inputs; it may be an input itself, a reversed view of one or a shifted view
of one buffer with it, and the result is as if it were a fresh array.
Inputs never change, and results made without out= share no memory with
them.
"""

from __future__ import annotations

import numpy as np
import pytest

from _nkutil import DTYPES, assert_unchanged, layout, readonly, snapshot
from kernel_table import KERNELS, cases

LAYOUTS = ["C", "F", "strided", "neg", "unaligned", "odd", "T"]
SHAPES = {"dense_forward": [(17, 33, 9), (33, 257, 65)],
          "dense_backward": [(17, 33, 9), (33, 257, 65)]}
DEFAULT_SHAPES = [(13, 29), (1, 7), (5, 1)]
SQUARE = {"dense_forward": (10, 10, 10), "dense_backward": (10, 10, 10)}   # out = x or w
WITH_OUT = [k for k in KERNELS if k.has_out]


def shapes_of(kernel):
    return SHAPES.get(kernel.name, DEFAULT_SHAPES)


def laid_out(values, kinds):
    """``values`` with every array argument in layout ``kinds[name]``."""
    return {n: layout(v.copy(), kinds(n)) if isinstance(v, np.ndarray) and v.ndim else v
            for n, v in values.items()}


@pytest.mark.parametrize("lay", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("kernel,opts", cases(per_option="each"))
def test_every_layout_gives_the_reference_values(kernel, opts, dtype, lay, rng):
    dtype = np.dtype(dtype)
    for shape in shapes_of(kernel):
        base = kernel.make(rng, shape, dtype, opts)
        values = laid_out(base, lambda n: lay)
        names = kernel.unchanged_inputs(values)
        copies = snapshot(*(values[n] for n in names))
        got = kernel.run(values)
        kernel.check(got, kernel.reference64(base), base, dtype, opts)
        assert_unchanged([values[n] for n in names], copies)
        for r in got:               # fresh results: no memory shared with an input
            for n in names:
                assert r is None or not np.shares_memory(r, values[n]), (n, "shares memory")


@pytest.mark.parametrize("rotation", range(len(LAYOUTS)))
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("kernel,opts", cases(per_option=False))
def test_mixed_layouts_and_out_layout(kernel, opts, dtype, rotation, rng):
    """Each argument (and out) in a layout of its own."""
    dtype = np.dtype(dtype)
    for shape in shapes_of(kernel):
        base = kernel.make(rng, shape, dtype, opts)
        order = {n: i for i, n in enumerate(base)}
        values = laid_out(base, lambda n: LAYOUTS[(rotation + order[n]) % len(LAYOUTS)])
        extra = {}
        if kernel.has_out:
            extra["out"] = kernel.out_buffers(base, dtype, layout=LAYOUTS[
                (rotation + len(order)) % len(LAYOUTS)])
        names = kernel.unchanged_inputs(values)
        copies = snapshot(*(values[n] for n in names))
        got = kernel.run(values, **extra)
        kernel.check(got, kernel.reference64(base), base, dtype, opts)
        assert_unchanged([values[n] for n in names], copies)
        if extra:
            _assert_is_out(kernel, got, extra["out"], base)


def _assert_is_out(kernel, got, out, values):
    held = kernel.out_result(got)
    if isinstance(out, tuple):
        for i, (r, o) in enumerate(zip(held, out)):
            if r is not None and o is not None:
                assert r is o, f"result {kernel.results[i]} is not out[{i}]"
    else:
        assert held is out, "the result is not the out= array"


@pytest.mark.parametrize("lay", ["C", "F", "strided", "neg"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("kernel,opts", cases(WITH_OUT, per_option="each"))
def test_out_is_the_result_over_readonly_inputs(kernel, opts, dtype, lay, rng):
    dtype = np.dtype(dtype)
    base = kernel.make(rng, shapes_of(kernel)[0], dtype, opts)
    values = {n: readonly(v) if isinstance(v, np.ndarray) else v
              for n, v in laid_out(base, lambda n: lay).items()}
    # out is overwritten whatever it held (a reused buffer of a training loop)
    for fill in (7.0, np.nan):
        out = kernel.out_buffers(base, dtype, fill=fill, layout=lay)
        got = kernel.results_of(kernel.call(values, out=out))
        _assert_is_out(kernel, got, out, base)
        kernel.check(got, kernel.reference64(base), base, dtype, opts)
    for n, v in values.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(v, base[n], err_msg=n)


def _aliases(kernel, values, dtype, out_index):
    """The input names an out= buffer of result ``out_index`` may alias."""
    shape = np.shape(kernel.results_of(kernel.call(values))[out_index])
    return [n for n in kernel.float_inputs if isinstance(values.get(n), np.ndarray)
            and values[n].shape == shape and values[n].dtype == dtype and values[n].ndim]


def _alias(v, name, mode, shift=3):
    """Rebind v[name] and return an out sharing its memory (``mode``)."""
    x = v[name]
    if mode == "same":
        return x
    if mode == "reversed":
        return x[(slice(None, None, -1),) * x.ndim]
    n = x.size
    buf = np.full(n + shift, np.nan, x.dtype)
    lo, hi = (0, shift) if mode == "shift+" else (shift, 0)
    v[name] = buf[lo:lo + n].reshape(x.shape)
    v[name][...] = x
    return buf[hi:hi + n].reshape(x.shape)


@pytest.mark.parametrize("mode", ["same", "reversed", "shift+", "shift-"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("kernel,opts", cases(WITH_OUT, per_option="each"))
def test_out_overlapping_an_input(kernel, opts, dtype, mode, rng):
    """out= the input itself (in place), reversed, or shifted by a few
    elements in one buffer: computed as if out were fresh."""
    dtype = np.dtype(dtype)
    base = kernel.make(rng, SQUARE.get(kernel.name, (13, 29)), dtype, opts)
    expected = kernel.reference64(base)
    indices = kernel.out_results if isinstance(kernel.out_results, tuple) else (kernel.out_results,)
    done = 0
    for k, index in enumerate(indices):
        for name in _aliases(kernel, base, dtype, index):
            v = {n: np.array(a, copy=True) if isinstance(a, np.ndarray) else a
                 for n, a in base.items()}
            o = _alias(v, name, mode)
            out = tuple(o if j == k else None for j in range(len(indices))) \
                if isinstance(kernel.out_results, tuple) else o
            got = kernel.results_of(kernel.call(v, out=out))
            _assert_is_out(kernel, got, out, base)
            kernel.check(got, expected, base, dtype, opts)
            done += 1
    assert done or kernel.name in ("softmax_cross_entropy", "softmax_cross_entropy_backward") \
        and opts.get("target") == "int64", "no input to alias"
