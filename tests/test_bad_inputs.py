"""Every bad input of the contract raises the stated exception, with a
message naming the argument, before any work is done -- for every kernel
of the table.

Wrong dtypes (integers, bool, complex, object, float16, float32 mixed with
float64), wrong shapes, bad out= buffers (shape, dtype, read-only, a list,
a masked array), masked-array inputs and bad option values.  Each failing
call is given a valid out= buffer as well, which must come back unwritten.
"""

from __future__ import annotations

import numpy as np
import pytest

import nnkernels as nk
from _nkutil import names_in
from kernel_table import KERNELS, NOT_KERNELS

BAD_DTYPES = {"int64": np.int64, "int32": np.int32, "bool": np.bool_,
              "complex128": np.complex128, "complex64": np.complex64, "object": object,
              "float16": np.float16}
IDS = [k.name for k in KERNELS]


def valid(kernel, dtype=np.float64):
    rng = np.random.default_rng(0)
    return kernel.make(rng, kernel.small_shape, np.dtype(dtype), kernel.default_options())


def with_weight(kernel, values, dtype=np.float64, need=None):
    """Valid values with every optional float input given (weights), so its
    checks run too; ``need``: an argument that only some options give (the
    dense layer's z), taken from the first option set that gives it."""
    rng = np.random.default_rng(1)
    opts = kernel.default_options()
    for knob, choices in kernel.options.items():
        if knob in ("weight", "pos_weight", "bias"):
            opts[knob] = ("full" if "full" in choices else choices[-1])
    values = kernel.make(rng, kernel.small_shape, np.dtype(dtype), opts)
    if need is not None and values.get(need) is None:
        for other in kernel.option_sets("each"):
            made = kernel.make(rng, kernel.small_shape, np.dtype(dtype), dict(opts, **other))
            if made.get(need) is not None:
                return made
    return values


def assert_raises_unwritten(kernel, values, exc_type, *names, out=None):
    """The call raises exc_type naming ``names``; a valid out stays as it was
    (``out=False``: the call gets no out)."""
    if out is None and kernel.has_out:
        out = kernel.out_buffers(valid(kernel), np.float64, fill=7.0)
    extra = {} if out is None or out is False else {"out": out}
    with pytest.raises(exc_type) as info:
        kernel.call(values, **extra)
    names_in(str(info.value), *names)
    for o in (out if isinstance(out, tuple) else (out,)):
        if isinstance(o, np.ndarray):
            assert (o == 7.0).all(), "out was written although the call failed"
    return str(info.value)


def test_every_public_kernel_is_in_the_table():
    assert set(nk.__all__) - NOT_KERNELS == {k.name for k in KERNELS}


@pytest.mark.parametrize("kernel", KERNELS, ids=IDS)
def test_the_valid_calls_work(kernel):
    """The builders make valid calls, so the failures below are due to the
    one bad argument only."""
    for dtype in (np.float32, np.float64):
        for values in (valid(kernel, dtype), with_weight(kernel, None, dtype)):
            results = kernel.results_of(kernel.call(values))
            assert all(r is None or np.asarray(r).dtype == dtype for r in results)


def _float_args(first_too=False):
    return [pytest.param(k, a, id=f"{k.name}-{a}") for k in KERNELS
            for a in k.float_inputs[(0 if first_too else 1):]]


@pytest.mark.parametrize("first", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kernel,arg", _float_args())
def test_float32_mixed_with_float64(kernel, arg, first):
    other = np.float64 if first == np.float32 else np.float32
    values = with_weight(kernel, None, first, need=arg)
    if values.get(arg) is None or values[arg].dtype.kind != "f":
        pytest.skip(f"{arg} is not a float array here")
    values[arg] = values[arg].astype(other)
    assert_raises_unwritten(kernel, values, TypeError, kernel.float_inputs[0], arg,
                            "float32", "float64", out=None if kernel.has_out else False)


@pytest.mark.parametrize("bad", list(BAD_DTYPES), ids=list(BAD_DTYPES))
@pytest.mark.parametrize("kernel,arg", _float_args(first_too=True))
def test_non_float_arrays_are_refused(kernel, arg, bad):
    values = with_weight(kernel, None, need=arg)
    if values.get(arg) is None:
        pytest.skip(f"no {arg} here")
    if values[arg].dtype.kind != "f" and bad in ("int64", "int32", "bool"):
        pytest.skip("integer targets are class indices (test_cross_entropy)")
    if values[arg].dtype.kind != "f" and bad == "float16":
        pytest.skip("float labels: test_cross_entropy")
    values[arg] = values[arg].astype(BAD_DTYPES[bad])
    assert_raises_unwritten(kernel, values, TypeError, arg)


def _shape_cases():
    for k in KERNELS:
        shapes = k.bad_shapes
        if shapes is None:      # every float input but the first, mismatched
            shapes = [(a, (k.small_shape[0] + 1, k.small_shape[1] + 2))
                      for a in k.float_inputs[1:]]
        for arg, shape in shapes:
            yield pytest.param(k, arg, shape, id=f"{k.name}-{arg}-{shape}")


@pytest.mark.parametrize("kernel,arg,shape", list(_shape_cases()))
def test_wrong_shapes(kernel, arg, shape):
    values = with_weight(kernel, None, need=arg)
    good = values[arg]
    values[arg] = np.ones(shape, good.dtype if isinstance(good, np.ndarray) else np.float64)
    msg = assert_raises_unwritten(kernel, values, ValueError, arg)
    if kernel.messages_show_shapes:
        assert str(shape) in msg, msg
        if arg in kernel.positional and arg != "target":   # both arrays and both shapes
            names_in(msg, kernel.positional[0])
            assert str(tuple(kernel.small_shape)) in msg, msg


def _bad_out(kind, shape):
    if kind == "shape":
        return np.zeros(tuple(s + 1 for s in shape)), ValueError
    if kind == "transposed-shape":
        return (np.zeros(shape[::-1]) if len(shape) > 1 else np.zeros((1,) + shape)), ValueError
    if kind == "dtype":
        return np.zeros(shape, np.float32), (TypeError, ValueError)
    if kind == "readonly":
        o = np.zeros(shape)
        o.setflags(write=False)
        return o, (ValueError, TypeError)
    if kind == "masked":
        return np.ma.masked_array(np.zeros(shape)), TypeError
    return np.zeros(shape).tolist(), (TypeError, ValueError)


OUT_PROBLEMS = ["shape", "transposed-shape", "dtype", "readonly", "list", "masked"]


def _out_cases():
    for k in KERNELS:
        if not k.has_out:
            continue
        slots = k.out_results if isinstance(k.out_results, tuple) else (None,)
        for slot in slots:
            for p in OUT_PROBLEMS:
                yield pytest.param(k, slot, p, id=f"{k.name}-{'' if slot is None else slot}-{p}")


@pytest.mark.parametrize("kernel,slot,problem", list(_out_cases()))
def test_bad_out(kernel, slot, problem):
    values = valid(kernel)
    good = kernel.out_buffers(values, np.float64, fill=7.0)
    shape = (good[slot] if slot is not None else good).shape
    bad, exc_type = _bad_out(problem, shape)
    if problem == "transposed-shape" and shape[::-1] == shape:
        pytest.skip("square")
    if slot is None:
        out = bad
    else:
        out = tuple(bad if i == slot else g for i, g in enumerate(good))
    with pytest.raises(exc_type) as info:
        kernel.call(values, out=out)
    msg = str(info.value)
    names_in(msg, "out")
    if slot is not None:     # which buffer: out[i] or the result's name
        assert f"out[{slot}]" in msg or kernel.results[slot] in msg, msg
        for i, g in enumerate(good):
            assert i == slot or (g == 7.0).all(), "out written although the call failed"
    if isinstance(bad, np.ndarray):
        assert not np.asarray(bad).any(), "out was written although the call failed"


@pytest.mark.parametrize("kernel,arg", _float_args(first_too=True))
def test_masked_array_inputs_are_refused(kernel, arg):
    """The mask would be ignored: refused with TypeError naming the argument."""
    values = with_weight(kernel, None, need=arg)
    if not isinstance(values.get(arg), np.ndarray):
        pytest.skip(f"no {arg} here")
    values[arg] = np.ma.masked_array(values[arg])
    assert_raises_unwritten(kernel, values, TypeError, arg)


def _option_cases():
    for k in KERNELS:
        for kwargs, exc, name in k.bad_options:
            yield pytest.param(k, kwargs, exc, name, id=f"{k.name}-{kwargs}")


@pytest.mark.parametrize("kernel,kwargs,exc,name", list(_option_cases()))
def test_bad_option_values(kernel, kwargs, exc, name):
    for target in ("int64", "probs") if "label_smoothing" in kwargs else ("int64",):
        opts = dict(kernel.default_options(), **({"target": target}
                                                  if "target" in kernel.options else {}))
        values = kernel.make(np.random.default_rng(0), kernel.small_shape, np.dtype(np.float64),
                             opts)
        values.update(kwargs)
        assert_raises_unwritten(kernel, values, exc, name)


@pytest.mark.parametrize("n", [0, -1, -8])
def test_set_num_threads_refuses_counts_below_one(n):
    before = nk.get_num_threads()
    with pytest.raises(ValueError):
        nk.set_num_threads(n)
    assert nk.get_num_threads() == before
