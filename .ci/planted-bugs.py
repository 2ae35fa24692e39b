"""Planted-bug check of the test suite: does it catch bugs it was not written for?

    python .ci/planted-bugs.py                      # the work tree's tests/, every bug
    python .ci/planted-bugs.py --ref main           # the tests/ of a git revision
    python .ci/planted-bugs.py --bugs relu_nan_to_zero,accumulate_ignored
    python .ci/planted-bugs.py --list               # the bugs and what each does
    python .ci/planted-bugs.py --json new.json      # results as JSON too
    python .ci/planted-bugs.py --compare old.json new.json   # the two side by side

Not run by CI (it runs the suite once per bug: 10-40 minutes on 2 cores).
Run it with the Python of a venv where nnkernels is installed.

How a bug is planted, without rebuilding anything: the suite runs in a
subprocess as ``python -m pytest -x -q -p nk_planted_bugs`` with this file
copied into a temporary folder on PYTHONPATH as ``nk_planted_bugs.py``. When
pytest loads it as a plugin, it reads NNKERNELS_PLANTED_BUG and replaces one
public function of ``nnkernels`` by a wrapper around the real one that
misbehaves in one way (a result a few ulp off for one dtype, out= ignored, an
input written, no error for a bad argument, a thread-count-dependent result,
an option ignored, ...). Tests call ``nk.<name>(...)`` through the module, so
they all see the wrapper; ``nnkernels.reference`` is never touched.

A bug is *caught* when pytest fails (exit status 1); an exit status of 0 is
*missed*; anything else (a crash, a collection error, a timeout) is reported
as such. The control run ("none") plants nothing and must pass. The suite is
copied, as CI does, into a temporary folder with examples/, and run with
``-x``: the first failure ends a run, and test files that concern the bug's
function run first (the verdict does not depend on that order, only the
time). Hypothesis does not shrink a failing example here (it would only make
the report nicer). test_accuracy, test_isa, test_processes, test_team and
test_mlp are left out: they are the same in every suite this compares, run
the kernels in child processes the plugin does not reach, or are slow.
"""

from __future__ import annotations

import functools
import inspect
import os

BUGS = {}            # name -> (function name, description, hints, make_wrapper)


def bug(name, target, description, hints=()):
    def register(make):
        BUGS[name] = (target, description, tuple(hints), make)
        return make
    return register


# ---------------------------------------------------------------- helpers
def _np():
    import numpy as np
    return np


def _args(orig, args, kwargs):
    """The call's arguments by name (defaults filled in), or None if they do not bind."""
    try:
        bound = inspect.signature(orig).bind(*args, **kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    return dict(bound.arguments)


def _arr(value):
    np = _np()
    try:
        return np.array(value, copy=True)
    except Exception:  # noqa: BLE001 - whatever it is, the real function judges it
        return None


def _wrapper(orig, body):
    """A wrapper calling body(a) with the named arguments; calls orig as is when
    they do not bind (so argument errors stay the real function's)."""
    @functools.wraps(orig)
    def wrapped(*args, **kwargs):
        a = _args(orig, args, kwargs)
        if a is None:
            return orig(*args, **kwargs)
        return body(a)
    return wrapped


def _is_float_array(x, dtype=None):
    np = _np()
    return (isinstance(x, np.ndarray) and x.dtype.kind == "f"
            and (dtype is None or x.dtype == np.dtype(dtype)))


# ------------------------------------------------------------------ bugs
@bug("f32_sigmoid_64ulp", "sigmoid", "float32 results 64 ulp too large", ["activation"])
def _(orig):
    np = _np()

    def body(a):
        r = orig(**a)
        if _is_float_array(r, np.float32):
            r *= np.float32(1 + 64 * 2.0 ** -23)
        return r
    return _wrapper(orig, body)


@bug("f64_log_softmax_off", "log_softmax", "float64 results off by 2e-11 relative (~1e5 ulp)",
     ["softmax"])
def _(orig):
    np = _np()

    def body(a):
        r = orig(**a)
        if _is_float_array(r, np.float64):
            r *= 1 + 2e-11
        return r
    return _wrapper(orig, body)


@bug("relu_last_element", "relu", "the last element of the result is off by 0.5",
     ["activation"])
def _(orig):
    def body(a):
        r = orig(**a)
        if _is_float_array(r) and r.size:
            r.flat[r.size - 1] += 0.5
        return r
    return _wrapper(orig, body)


@bug("relu_nan_to_zero", "relu", "relu(NaN) = 0 (NaN not propagated)", ["activation"])
def _(orig):
    np = _np()

    def body(a):
        z = _arr(a["z"])
        r = orig(**a)
        if z is not None and z.dtype.kind == "f" and z.shape == np.shape(r):
            r[np.isnan(z)] = 0
        return r
    return _wrapper(orig, body)


@bug("log_softmax_minus_inf", "log_softmax", "log_softmax(-inf) = -1e30 instead of -inf",
     ["softmax"])
def _(orig):
    np = _np()

    def body(a):
        z = _arr(a["z"])
        r = orig(**a)
        if z is not None and z.dtype.kind == "f" and z.shape == np.shape(r):
            r[np.isneginf(z) & np.isneginf(r)] = -1e30
        return r
    return _wrapper(orig, body)


@bug("softmax_overflow", "softmax", "no max subtraction: rows (columns) holding a logit "
     "past log(max float) become NaN", ["softmax"])
def _(orig):
    np = _np()

    def body(a):
        z = _arr(a["z"])
        r = orig(**a)
        if z is not None and z.dtype.kind == "f" and z.ndim in (1, 2) and z.size:
            try:
                ax = int(a["axis"])
                big = np.max(np.where(np.isnan(z), -np.inf, z), axis=ax, keepdims=True) > \
                    np.log(np.finfo(z.dtype).max)
                r[np.broadcast_to(big, z.shape)] = np.nan
            except Exception:  # noqa: BLE001
                pass
        return r
    return _wrapper(orig, body)


@bug("softmax_backward_ignores_out", "softmax_backward",
     "out= is ignored: a new array is returned", ["softmax"])
def _(orig):
    def body(a):
        a["out"] = None
        return orig(**a)
    return _wrapper(orig, body)


@bug("sigmoid_backward_writes_grad", "sigmoid_backward",
     "the result is also written into the input grad", ["activation"])
def _(orig):
    np = _np()

    def body(a):
        r = orig(**a)
        g = a["grad"]
        if (isinstance(g, np.ndarray) and g.flags.writeable and g.shape == r.shape
                and not np.shares_memory(g, r)):
            g[...] = r
        return r
    return _wrapper(orig, body)


@bug("relu_backward_in_place_on_a", "relu_backward",
     "in place (out=grad) writes the result into a and leaves grad alone", ["activation"])
def _(orig):
    np = _np()

    def body(a):
        out, x = a["out"], a["a"]
        if (out is not None and out is a["grad"] and isinstance(x, np.ndarray)
                and x.flags.writeable and x.shape == np.shape(out)):
            r = orig(a["grad"], x)
            x[...] = r
            return out
        return orig(**a)
    return _wrapper(orig, body)


@bug("mse_out_also_into_target", "mse", "with out=, the gradient is also written into target",
     ["elementwise_loss"])
def _(orig):
    np = _np()

    def body(a):
        r = orig(**a)
        t, out = a["target"], a["out"]
        if (out is not None and isinstance(t, np.ndarray) and t.flags.writeable
                and t.shape == r[1].shape and not np.shares_memory(t, r[1])):
            t[...] = r[1]
        return r
    return _wrapper(orig, body)


@bug("ce_loss_python_float", "softmax_cross_entropy",
     "a reduced loss is a Python float, not a NumPy scalar of the input dtype", ["cross_entropy"])
def _(orig):
    def body(a):
        loss, grad = orig(**a)
        if a["reduction"] != "none":
            loss = float(loss)
        return loss, grad
    return _wrapper(orig, body)


@bug("mse_loss_float64_for_float32", "mse", "a reduced float32 loss is np.float64",
     ["elementwise_loss"])
def _(orig):
    np = _np()

    def body(a):
        loss, grad = orig(**a)
        if a["reduction"] != "none" and grad.dtype == np.float32:
            loss = np.float64(loss)
        return loss, grad
    return _wrapper(orig, body)


@bug("sbce_mean_is_sum", "sigmoid_binary_cross_entropy",
     "reduction='mean' returns the summed loss (the gradient is right)", ["elementwise_loss"])
def _(orig):
    def body(a):
        loss, grad = orig(**a)
        if a["reduction"] == "mean":
            loss = orig(**dict(a, reduction="sum", out=None))[0]
        return loss, grad
    return _wrapper(orig, body)


@bug("ce_backward_ignores_reduction", "softmax_cross_entropy_backward",
     "the gradient-only kernel always returns the 'sum' gradient", ["cross_entropy"])
def _(orig):
    def body(a):
        return orig(**dict(a, reduction="sum"))
    return _wrapper(orig, body)


@bug("sigmoid_backward_no_shape_error", "sigmoid_backward",
     "a ValueError (mismatched shapes, bad out) becomes a zero result", ["activation"])
def _(orig):
    np = _np()

    def body(a):
        try:
            return orig(**a)
        except ValueError:
            return np.zeros(np.shape(a["grad"]))
    return _wrapper(orig, body)


@bug("softmax_backward_mixed_dtypes", "softmax_backward",
     "float32 mixed with float64 is cast instead of refused", ["softmax"])
def _(orig):
    np = _np()

    def body(a):
        g, p = a["grad"], a["p"]
        if _is_float_array(g) and _is_float_array(p) and g.dtype != p.dtype:
            a["p"] = p.astype(g.dtype)
        return orig(**a)
    return _wrapper(orig, body)


@bug("relu_readonly_out_accepted", "relu",
     "a read-only out is ignored (a new array comes back) instead of refused", ["activation"])
def _(orig):
    np = _np()

    def body(a):
        if isinstance(a["out"], np.ndarray) and not a["out"].flags.writeable:
            a["out"] = None
        return orig(**a)
    return _wrapper(orig, body)


@bug("softmax_list_out_accepted", "softmax",
     "an out= that is a list is ignored instead of refused", ["softmax"])
def _(orig):
    def body(a):
        if isinstance(a["out"], list):
            a["out"] = None
        return orig(**a)
    return _wrapper(orig, body)


@bug("sigmoid_masked_accepted", "sigmoid",
     "a numpy.ma.MaskedArray is computed (mask dropped) instead of refused", ["activation"])
def _(orig):
    np = _np()

    def body(a):
        if isinstance(a["z"], np.ma.MaskedArray):
            a["z"] = np.asarray(a["z"].data)
            if isinstance(a["out"], np.ma.MaskedArray):
                a["out"] = None
        return orig(**a)
    return _wrapper(orig, body)


@bug("mse_bad_reduction_accepted", "mse", "an unknown reduction is taken as 'mean'",
     ["elementwise_loss"])
def _(orig):
    def body(a):
        if a["reduction"] not in ("mean", "sum", "none"):
            a["reduction"] = "mean"
        return orig(**a)
    return _wrapper(orig, body)


@bug("log_softmax_type_as_value_error", "log_softmax",
     "TypeError is raised as ValueError (same message)", ["softmax"])
def _(orig):
    def body(a):
        try:
            return orig(**a)
        except TypeError as e:
            raise ValueError(str(e)) from None
    return _wrapper(orig, body)


@bug("dense_forward_value_as_runtime_error", "dense_forward",
     "ValueError is raised as RuntimeError (same message)", ["dense"])
def _(orig):
    def body(a):
        try:
            return orig(**a)
        except ValueError as e:
            raise RuntimeError(str(e)) from None
    return _wrapper(orig, body)


@bug("sbce_message_unnamed", "sigmoid_binary_cross_entropy",
     "error messages do not name the argument", ["elementwise_loss"])
def _(orig):
    def body(a):
        try:
            return orig(**a)
        except (TypeError, ValueError) as e:
            raise type(e)("invalid input") from None
    return _wrapper(orig, body)


@bug("sigmoid_thread_dependent", "sigmoid",
     "with 2+ threads, a threaded call's first element is 1 ulp up", ["thread"])
def _(orig):
    np = _np()
    import nnkernels as nk
    threshold = nk.build_info()["thread_thresholds"]["elementwise"]
    get = nk.get_num_threads

    def body(a):
        r = orig(**a)
        if _is_float_array(r) and r.size >= threshold and get() >= 2:
            r.flat[0] = np.nextafter(r.flat[0], r.dtype.type(2))
        return r
    return _wrapper(orig, body)


@bug("softmax_axis0_ignored", "softmax", "axis=0 (-2) of a 2-D array computes along -1",
     ["softmax"])
def _(orig):
    np = _np()

    def body(a):
        try:
            if np.ndim(a["z"]) == 2 and int(a["axis"]) in (0, -2) and a["axis"] is not True:
                a["axis"] = -1
        except Exception:  # noqa: BLE001
            pass
        return orig(**a)
    return _wrapper(orig, body)


@bug("softmax_backward_axis0_ignored", "softmax_backward",
     "axis=0 (-2) of a 2-D array computes along -1", ["softmax"])
def _(orig):
    np = _np()

    def body(a):
        try:
            if np.ndim(a["grad"]) == 2 and int(a["axis"]) in (0, -2) and a["axis"] is not True:
                a["axis"] = -1
        except Exception:  # noqa: BLE001
            pass
        return orig(**a)
    return _wrapper(orig, body)


@bug("ce_label_smoothing_ignored", "softmax_cross_entropy", "label_smoothing is ignored",
     ["cross_entropy"])
def _(orig):
    def body(a):
        ls = a["label_smoothing"]
        if isinstance(ls, (int, float)) and not isinstance(ls, bool) and 0 <= ls <= 1:
            a["label_smoothing"] = 0.0
        return orig(**a)
    return _wrapper(orig, body)


@bug("ce_backward_ignore_index_ignored", "softmax_cross_entropy_backward",
     "rows labelled ignore_index count as class 0", ["cross_entropy"])
def _(orig):
    np = _np()

    def body(a):
        t = a["target"]
        try:
            if isinstance(t, np.ndarray) and t.dtype.kind in "iu" and np.ndim(a["logits"]) == 2 \
                    and np.shape(a["logits"])[int(a["axis"])] > 0:
                a["target"] = np.where(t == int(a["ignore_index"]), 0, t).astype(t.dtype)
        except Exception:  # noqa: BLE001
            pass
        return orig(**a)
    return _wrapper(orig, body)


@bug("ce_mean_divides_by_rows", "softmax_cross_entropy",
     "with class weights, 'mean' divides by the row count, not the summed weight",
     ["cross_entropy"])
def _(orig):
    np = _np()

    def body(a):
        t = a["target"]
        if (a["reduction"] == "mean" and a["weight"] is not None and isinstance(t, np.ndarray)
                and t.dtype.kind in "iu"):
            try:
                n = int(np.sum(t != int(a["ignore_index"])))
            except Exception:  # noqa: BLE001
                return orig(**a)
            loss, grad = orig(**dict(a, reduction="sum"))
            if n:
                loss = loss / loss.dtype.type(n)
                grad /= grad.dtype.type(n)
            return loss, grad
        return orig(**a)
    return _wrapper(orig, body)


@bug("ce_labels_clipped", "softmax_cross_entropy",
     "an out-of-range class index is clipped to C-1 instead of refused", ["cross_entropy"])
def _(orig):
    np = _np()

    def body(a):
        t = a["target"]
        try:
            c = np.shape(a["logits"])[int(a["axis"])]
            if isinstance(t, np.ndarray) and t.dtype.kind in "iu" and c > 0:
                ti = t.astype(object)
                bad = (ti != int(a["ignore_index"])) & ((ti < 0) | (ti >= c))
                if bad.any():
                    a["target"] = np.where(bad, c - 1, t).astype(t.dtype)
        except Exception:  # noqa: BLE001
            pass
        return orig(**a)
    return _wrapper(orig, body)


@bug("bce_weight_ignored", "binary_cross_entropy", "weight is ignored", ["elementwise_loss"])
def _(orig):
    def body(a):
        a["weight"] = None
        return orig(**a)
    return _wrapper(orig, body)


@bug("sbce_pos_weight_ignored", "sigmoid_binary_cross_entropy", "pos_weight is ignored",
     ["elementwise_loss"])
def _(orig):
    def body(a):
        a["pos_weight"] = None
        return orig(**a)
    return _wrapper(orig, body)


@bug("bce_log_not_clamped", "binary_cross_entropy",
     "log(0) is not clamped at -100: p = 0 with y > 0 (or p = 1 with y < 1) gives inf",
     ["elementwise_loss"])
def _(orig):
    np = _np()

    def body(a):
        p, y = _arr(a["probs"]), _arr(a["target"])
        loss, grad = orig(**a)
        if p is not None and y is not None and p.shape == y.shape and p.dtype.kind == "f":
            with np.errstate(invalid="ignore"):
                hit = ((p == 0) & (y > 0)) | ((p == 1) & (y < 1))
            if hit.any():
                if a["reduction"] == "none":
                    loss[hit] = np.inf
                else:
                    loss = loss.dtype.type(np.inf)
        return loss, grad
    return _wrapper(orig, body)


@bug("tanh_backward_f_as_c", "tanh_backward",
     "an F-ordered input is read as if it were C-ordered", ["activation"])
def _(orig):
    np = _np()

    def as_c(x):
        if (isinstance(x, np.ndarray) and x.ndim >= 2 and x.flags.f_contiguous
                and not x.flags.c_contiguous):
            return x.ravel(order="K").reshape(x.shape)
        return x

    def body(a):
        a["grad"], a["a"] = as_c(a["grad"]), as_c(a["a"])
        return orig(**a)
    return _wrapper(orig, body)


@bug("softmax_strided_reads_wrong", "softmax",
     "a strided 2-D input is read as if its rows were contiguous", ["softmax"])
def _(orig):
    np = _np()

    def body(a):
        z = a["z"]
        if isinstance(z, np.ndarray) and z.ndim == 2 and z.size and not z.flags.c_contiguous \
                and not z.flags.f_contiguous:
            s0, s1 = z.strides
            item = z.itemsize
            if s1 >= item and s0 >= z.shape[1] * item and s1 % item == 0 and s0 % item == 0:
                a["z"] = np.lib.stride_tricks.as_strided(z, z.shape, (z.shape[1] * item, item))
        return orig(**a)
    return _wrapper(orig, body)


@bug("softmax_overlapping_out_row_by_row", "softmax",
     "an out= overlapping z (not z itself) is written row by row, while z is read", ["softmax"])
def _(orig):
    np = _np()

    def body(a):
        z, out = a["z"], a["out"]
        if (isinstance(z, np.ndarray) and isinstance(out, np.ndarray) and z.ndim == 2
                and out.shape == z.shape and out is not z and np.shares_memory(z, out)
                and a["axis"] in (-1, 1)):
            for i in range(z.shape[0]):
                out[i] = orig(z[i])
            return out
        return orig(**a)
    return _wrapper(orig, body)


@bug("relu_backward_passes_at_zero", "relu_backward",
     "grad passes where a == 0 (a >= 0 instead of a > 0)", ["activation"])
def _(orig):
    np = _np()

    def body(a):
        g, x = _arr(a["grad"]), _arr(a["a"])
        r = orig(**a)
        if g is not None and x is not None and g.shape == x.shape == np.shape(r) \
                and x.dtype.kind == "f":
            hit = x == 0
            r[hit] = g[hit]
        return r
    return _wrapper(orig, body)


@bug("sigmoid_tail_flushed", "sigmoid", "sigmoid(z) = 0 for z < -30 (the tail's relative "
     "accuracy lost)", ["activation"])
def _(orig):
    np = _np()

    def body(a):
        z = _arr(a["z"])
        r = orig(**a)
        if z is not None and z.dtype.kind == "f" and z.shape == np.shape(r):
            r[z < -30] = 0
        return r
    return _wrapper(orig, body)


@bug("dense_grad_b_skips_activation", "dense_backward",
     "grad_b is the batch sum of grad_a, not of grad_z (the activation's derivative skipped)",
     ["dense"])
def _(orig):
    np = _np()

    def body(a):
        r = orig(**a)
        if a["activation"] is not None and _is_float_array(a["grad_a"]) and a["grad_a"].ndim == 2:
            r[1][...] = np.sum(a["grad_a"], axis=0)
        return r
    return _wrapper(orig, body)


@bug("dense_grad_x_when_not_needed", "dense_backward",
     "need_input_grad=False still computes (and writes) grad_x", ["dense"])
def _(orig):
    def body(a):
        a["need_input_grad"] = True
        return orig(**a)
    return _wrapper(orig, body)


@bug("dense_accumulate_ignored", "dense_backward", "accumulate=True overwrites the buffers",
     ["dense"])
def _(orig):
    def body(a):
        a["accumulate"] = False
        return orig(**a)
    return _wrapper(orig, body)


@bug("dense_empty_batch_out_untouched", "dense_backward",
     "with N = 0, given grad_w/grad_b buffers are returned unwritten (not zeroed)", ["dense"])
def _(orig):
    np = _np()

    def body(a):
        x, out = a["x"], a["out"]
        if (isinstance(x, np.ndarray) and x.ndim == 2 and x.shape[0] == 0
                and isinstance(out, (tuple, list)) and len(out) == 3 and not a["accumulate"]
                and out[0] is not None and out[1] is not None):
            r = orig(**dict(a, out=(None, None, out[2])))
            return (out[0], out[1], r[2])
        return orig(**a)
    return _wrapper(orig, body)


@bug("dense_forward_f32_bias_dropped", "dense_forward", "the bias is ignored for float32",
     ["dense"])
def _(orig):
    np = _np()

    def body(a):
        if _is_float_array(a["x"], np.float32):
            a["b"] = None
        return orig(**a)
    return _wrapper(orig, body)


@bug("dense_forward_alias_row_by_row", "dense_forward",
     "an out= sharing memory with x or w is written row by row while they are read", ["dense"])
def _(orig):
    np = _np()

    def body(a):
        x, w, out = a["x"], a["w"], a["out"]
        if (isinstance(out, np.ndarray) and isinstance(x, np.ndarray) and isinstance(w, np.ndarray)
                and x.ndim == 2 and out.ndim == 2 and out.shape[0] == x.shape[0]
                and (np.shares_memory(out, x) or np.shares_memory(out, w))):
            for i in range(x.shape[0]):
                out[i:i + 1] = orig(x[i:i + 1], w, a["b"], a["activation"])
            return out
        return orig(**a)
    return _wrapper(orig, body)


@bug("set_num_threads_zero_accepted", "set_num_threads", "n <= 0 silently sets one thread",
     ["thread"])
def _(orig):
    def body(a):
        n = a["n"]
        if isinstance(n, int) and not isinstance(n, bool) and n <= 0:
            a["n"] = 1
        return orig(**a)
    return _wrapper(orig, body)


# ------------------------------------------------------------- the plugin
def plant(name):
    import nnkernels as nk
    target, _, _, make = BUGS[name]
    setattr(nk, target, make(getattr(nk, target)))


def _no_shrinking():
    """Hypothesis: stop at the first failing example (shrinking it changes nothing here)."""
    from hypothesis.internal.conjecture import engine
    engine.ConjectureRunner.shrink_interesting_test_cases = lambda self: None


if __name__ != "__main__" and os.environ.get("NNKERNELS_PLANTED_BUG"):
    _no_shrinking()
    if os.environ["NNKERNELS_PLANTED_BUG"] != "none":
        plant(os.environ["NNKERNELS_PLANTED_BUG"])


# ----------------------------------------------------------------- driver
LEFT_OUT = ["test_accuracy.py", "test_isa.py", "test_processes.py", "test_team.py",
            "test_mlp.py"]
HINT_FILES = {   # words in test file names that concern a kind of bug (run first)
    "activation": ["activation", "vs_reference", "layouts", "bad_inputs", "validation"],
    "softmax": ["softmax", "vs_reference", "layouts", "bad_inputs", "validation"],
    "cross_entropy": ["losses", "cross_entropy", "vs_reference", "layouts", "bad_inputs",
                      "validation"],
    "elementwise_loss": ["elementwise", "vs_reference", "layouts", "bad_inputs", "validation"],
    "dense": ["dense", "vs_reference", "layouts", "bad_inputs"],
    "thread": ["thread", "concurrency"],
}


def main(argv=None):
    import argparse
    import json
    import shutil
    import subprocess
    import sys
    import tempfile
    import time

    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(here)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ref", help="test the tests/ of this git revision instead of the work tree's")
    p.add_argument("--tests", help="a tests/ folder to test (default: the work tree's)")
    p.add_argument("--bugs", help="comma-separated bug names (default: all)")
    p.add_argument("--list", action="store_true", help="list the bugs and exit")
    p.add_argument("--json", help="write the results to this file")
    p.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"), help="compare two JSON results")
    p.add_argument("--timeout", type=int, default=900, help="seconds per run")
    opts = p.parse_args(argv)

    if opts.list:
        for name, (target, desc, _, _) in BUGS.items():
            print(f"{name:40s} {target}: {desc}")
        return 0
    if opts.compare:
        old, new = (json.load(open(f)) for f in opts.compare)
        print(f"{'bug':40s} {'old':8s} {'new':8s}")
        worse = []
        for name in new:
            o, n = old.get(name, {}).get("verdict", "-"), new[name]["verdict"]
            print(f"{name:40s} {o:8s} {n:8s}")
            if o == "caught" and n != "caught":
                worse.append(name)
        bugs = [n for n in new if n != "none"]
        print(f"caught: old {sum(old.get(n, {}).get('verdict') == 'caught' for n in bugs)}"
              f"/{len(bugs)}, new {sum(new[n]['verdict'] == 'caught' for n in bugs)}/{len(bugs)}")
        if worse:
            print("caught by the old suite only:", ", ".join(worse))
        return 1 if worse else 0

    names = ["none"] + (opts.bugs.split(",") if opts.bugs else list(BUGS))
    unknown = [n for n in names if n != "none" and n not in BUGS]
    if unknown:
        p.error(f"unknown bugs: {unknown}")
    work = tempfile.mkdtemp(prefix="nk-planted-")
    try:
        shutil.copy(os.path.abspath(__file__), os.path.join(work, "nk_planted_bugs.py"))
        suite = os.path.join(work, "suite")
        os.makedirs(suite)
        if opts.ref:
            archive = subprocess.run(["git", "-C", repo, "archive", opts.ref, "tests", "examples"],
                                     check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", suite], input=archive, check=True)
        else:
            shutil.copytree(opts.tests or os.path.join(repo, "tests"),
                            os.path.join(suite, "tests"))
            shutil.copytree(os.path.join(repo, "examples"), os.path.join(suite, "examples"))
        tests = os.path.join(suite, "tests")
        files = sorted(f for f in os.listdir(tests)
                       if f.startswith("test_") and f.endswith(".py") and f not in LEFT_OUT)
        results = {}
        for name in names:
            hints = () if name == "none" else BUGS[name][2]
            words = [w for h in hints for w in HINT_FILES.get(h, [h])]
            first = [f for w in words for f in files if w in f]
            order = list(dict.fromkeys(first + files))
            env = dict(os.environ, NNKERNELS_PLANTED_BUG=name,
                       PYTHONPATH=os.pathsep.join([work] + [x for x in os.environ.get(
                           "PYTHONPATH", "").split(os.pathsep) if x]))
            cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "nk_planted_bugs",
                   "-p", "no:cacheprovider", *order]
            t0 = time.time()
            try:
                proc = subprocess.run(cmd, cwd=tests, env=env, capture_output=True, text=True,
                                      timeout=opts.timeout)
                code, out = proc.returncode, proc.stdout + proc.stderr
            except subprocess.TimeoutExpired as e:
                code, out = "timeout", (e.stdout or b"").decode(errors="replace") \
                    if isinstance(e.stdout, bytes) else (e.stdout or "")
            secs = time.time() - t0
            verdict = {0: "missed", 1: "caught"}.get(code, f"error:{code}")
            if name == "none":
                verdict = "passes" if code == 0 else f"FAILS:{code}"
            failed = [ln.split(" ")[1] for ln in out.splitlines() if ln.startswith("FAILED ")]
            results[name] = dict(verdict=verdict, seconds=round(secs, 1),
                                 first_failure=failed[0] if failed else None)
            print(f"{name:40s} {verdict:8s} {secs:6.1f}s  {failed[0] if failed else ''}",
                  flush=True)
            if name == "none" and code != 0:
                print(out[-3000:])
                print("the suite fails with no bug planted: nothing to measure")
                return 2
        if opts.json:
            with open(opts.json, "w") as f:
                json.dump(results, f, indent=1)
        caught = sum(r["verdict"] == "caught" for n, r in results.items() if n != "none")
        print(f"caught {caught} of {len(results) - 1} planted bugs")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
