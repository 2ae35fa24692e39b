"""The table of kernels every concern module of the suite runs over (not a test module).

One ``Kernel`` entry per public function of nnkernels.  The per-concern
modules (test_vs_reference, test_finite_differences, test_vs_torch,
test_layouts_and_out, test_bad_inputs, test_threads_and_concurrency,
test_leaks, test_fuzz) are parametrised over ``KERNELS`` with the function
names as ids, so an entry added here is covered by all of them at once.

Schema of an entry (``Kernel``):

  name            the public name: ``getattr(nnkernels, name)`` and
                  ``getattr(nnkernels.reference, name)`` (its NumPy twin)
                  are looked up at call time (``.fn``, ``.ref``)
  positional      argument names passed positionally, in order; every other
                  argument ``make`` returns is passed by keyword
  make            ``make(rng, shape, dtype, opts) -> dict`` of valid argument
                  values (name -> value) for a shape of ``shapes`` and one
                  combination ``opts`` of ``options``.  Knobs that are not
                  keywords of the function (a target kind, "weight": "full")
                  are read by make; keywords are returned in the dict
  float_inputs    the float array arguments (dtype and shape checks)
  shapes          the shapes the reference comparison runs over
  small_shape     the shape of the bad-input and leak calls
  threaded_shape  a shape past the kernel's OpenMP thread threshold
  options         ``{knob: [values]}``; their product (filtered by
                  ``valid_options``) is what the value checks cover.  The
                  first value of each is the default
  results         names of the results: ("a",), ("loss", "grad"),
                  ("grad_w", "grad_b", "grad_x")
  has_out         whether the function takes ``out=``
  out_results     which results ``out=`` holds: one index (an array), or a
                  tuple of indices (a tuple of buffers, dense_backward)
  elementwise     element-wise: ``out`` may be any input of the result's
                  shape and dtype (in place), and every result is
                  bit-identical for any thread count
  is_loss         results are (loss, grad): a reduced loss is a 0-d NumPy
                  scalar of the input dtype, "none" an array
  check           ``check(got, expected, values, dtype, opts, **override)``
                  asserts the results ``got`` (a list) agree with ``expected``
                  (a list of float64 arrays) within this kernel's rounding
                  (``override``: assert_close keywords, e.g. rtol)
  torch           ``torch(values, opts) -> list`` of float64 results computed
                  with torch (None: no counterpart)
  fd              ``fd(rng, opts) -> [(label, f, x0)]``: scalar-loss
                  functions (``f(x) -> (loss, grad)``) for nnkernels.gradcheck
  thread_exact    ``thread_exact(opts) -> tuple of bool``: which results are
                  bit-identical for any thread count (the others agree to
                  float rounding)
  bad_options     ``[(kwargs, exception, name)]``: option values that must
                  raise ``exception`` with a message naming ``name``
  bad_shapes      ``[(argument, shape)]``: shapes that must raise ValueError
                  naming the argument (default: a mismatched shape for every
                  float input but the first)
  fuzz            the name of a case strategy in _fuzz_cases (None: no fuzz)
  in_place_state  arguments the function updates in place (optimizers'
                  param, exp_avg, ...); they are exempt from "inputs never
                  change" and are checked against the reference's updates
  inputs_that_must_not_change  the array arguments that must come back
                  unmodified (default: every array argument not in
                  in_place_state)
  messages_show_shapes  a shape error's message shows the shapes involved

Adding a kernel: write its reference twin, one entry below (most fields have
defaults), and run the suite; docs/testing.md walks through it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

import nnkernels as nk
import nnkernels.reference as ref
from _nkutil import assert_close, assert_within, backward_bounds, f64, forward_bound
import _kernel_values as kv
import _optimizer_values as ov
import _z_activation_values as zv


@dataclass(frozen=True)
class Kernel:
    name: str
    positional: tuple
    make: Callable
    float_inputs: tuple
    shapes: tuple
    small_shape: tuple
    threaded_shape: tuple
    results: tuple
    check: Callable
    options: dict = field(default_factory=dict)
    valid_options: Callable = lambda opts: True
    has_out: bool = True
    out_results: Any = 0
    elementwise: bool = False
    is_loss: bool = False
    torch: Callable | None = None
    fd: Callable | None = None
    thread_exact: Callable = lambda opts: (False,)
    bad_options: tuple = ()
    bad_shapes: tuple | None = None
    fuzz: str | None = None
    in_place_state: tuple = ()
    inputs_that_must_not_change: tuple | None = None
    messages_show_shapes: bool = True

    # ------------------------------------------------------------ access
    @property
    def fn(self):
        return getattr(nk, self.name)

    @property
    def ref(self):
        return getattr(ref, self.name)

    def __repr__(self):
        return self.name

    def option_sets(self, mode="all"):
        """Valid combinations of the options (dicts), defaults first: "all"
        of them, or (mode "each") the defaults and every other value of
        each option with the rest at their defaults."""
        keys = list(self.options)
        if mode == "each":
            d = self.default_options()
            combos = [d] + [dict(d, **{k: v}) for k in keys for v in self.options[k][1:]]
        else:
            combos = [dict(zip(keys, vals))
                      for vals in itertools.product(*(self.options[k] for k in keys))]
        return [c for c in combos if self.valid_options(c)] or [{}]

    def default_options(self):
        return {k: v[0] for k, v in self.options.items()}

    def unchanged_inputs(self, values):
        names = self.inputs_that_must_not_change
        if names is None:
            names = [n for n, v in values.items()
                     if isinstance(v, np.ndarray) and n not in self.in_place_state]
        return list(names)

    # ------------------------------------------------------------- calls
    def split(self, values):
        args = [values[n] for n in self.positional]
        kwargs = {k: v for k, v in values.items() if k not in self.positional}
        return args, kwargs

    def call(self, values, module=None, **extra):
        fn = self.fn if module is None else getattr(module, self.name)
        args, kwargs = self.split(values)
        return fn(*args, **kwargs, **extra)

    def results_of(self, r):
        """A call's results as a list (one array, or the tuple's items)."""
        return list(r) if isinstance(r, tuple) else [r]

    def fresh(self, values):
        """``values`` with copies of the in_place_state arrays (same order in
        memory), so that repeated calls start from the same state."""
        return {n: np.copy(v, order="K") if n in self.in_place_state and
                isinstance(v, np.ndarray) else v for n, v in values.items()}

    def run(self, values, module=None, **extra):
        """Call and return the results, then the in_place_state arrays as
        the call left them (an optimizer's param, exp_avg, ...)."""
        results = self.results_of(self.call(values, module, **extra))
        return results + [values[n] for n in self.in_place_state]

    def reference64(self, values):
        """The NumPy reference on float64 copies of the float arrays: exact to
        float64 rounding, the yardstick of float32 and float64 results."""
        up = {k: (v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype.kind == "f"
                  else v) for k, v in values.items()}
        up.pop("out", None)
        with np.errstate(all="ignore"):
            return [None if r is None else np.asarray(r, dtype=np.float64)
                    for r in self.run(up, ref)]

    def out_buffers(self, values, dtype, fill=7.0, layout=None):
        """Fresh out= buffers (filled with ``fill``) of the results' shapes."""
        from _nkutil import layout as lay
        shapes = [None if r is None else np.shape(r)
                  for r in self.results_of(self.call(values))]

        def make(s):
            if s is None:
                return None
            buf = np.full(s, fill, dtype)
            return buf if layout is None else lay(buf, layout)
        if isinstance(self.out_results, tuple):
            return tuple(make(shapes[i]) for i in self.out_results)
        return make(shapes[self.out_results])

    def out_result(self, results):
        """The result(s) out= holds."""
        if isinstance(self.out_results, tuple):
            return tuple(results[i] for i in self.out_results)
        return results[self.out_results]


# ------------------------------------------------------------------ checks
def _check_types(got, expected, dtype, is_loss):
    for i, (g, e) in enumerate(zip(got, expected)):
        if e is None:
            assert g is None, f"result {i} should be None"
            continue
        if is_loss and i == 0 and np.ndim(e) == 0:
            # a reduced loss: a 0-d NumPy scalar of the input dtype
            assert np.ndim(g) == 0 and isinstance(g, (np.generic, np.ndarray)), type(g)
        else:
            assert isinstance(g, np.ndarray), (i, type(g))
        assert np.asarray(g).dtype == dtype, (i, np.asarray(g).dtype)
        assert np.shape(g) == np.shape(e), (i, np.shape(g), np.shape(e))


def close_check(tolerance, is_loss=False):
    """A ``check`` comparing each result with assert_close, its keyword
    arguments (scale, n, rtol) from ``tolerance(values, dtype, opts, i)``."""
    def check(got, expected, values, dtype, opts, **override):
        assert len(got) == len(expected)
        _check_types(got, expected, dtype, is_loss)
        for i, (g, e) in enumerate(zip(got, expected)):
            if e is not None:
                assert_close(g, e, dtype, err_msg=f"result {i}",
                             **dict(tolerance(values, dtype, opts, i), **override))
    return check


def dense_forward_check(got, expected, v, dtype, opts, **override):
    _check_types(got, expected, dtype, False)
    assert_within(got[0], expected[0], forward_bound(v["x"], v["w"], v.get("b"), dtype,
                                                     expected[0]), "a")


def dense_backward_check(got, expected, v, dtype, opts, **override):
    _check_types(got, expected, dtype, False)
    bounds = backward_bounds(v["grad_a"], v["x"], v["w"], v.get("a"), v.get("activation"),
                             dtype, v.get("z"))
    for name, g, e, bnd in zip(("grad_w", "grad_b", "grad_x"), got, expected, bounds):
        if e is not None:
            assert_within(g, e, bnd, name)


def _max(a):
    a = np.abs(f64(a))
    a = a[np.isfinite(a)]
    return float(a.max()) if a.size else 0.0


def _elementwise_tol(values, dtype, opts, i):
    return {}


def _backward_tol(values, dtype, opts, i):
    return dict(scale=max(1.0, _max(values["grad"])))


def _optimizer_tol(values, dtype, opts, i):
    # a step moves param by about lr; Adam's m / sqrt(v) can be large where v is small
    return dict(scale=max(1.0, _max(values["param"]), _max(values["grad"])),
                rtol=None if dtype == np.float64 else 2e-5)


def _softmax_tol(values, dtype, opts, i):
    z = values["z"]
    n = np.shape(z)[opts.get("axis", -1)] if np.ndim(z) else 1
    return dict(n=n)


def _log_softmax_tol(values, dtype, opts, i):
    return dict(_softmax_tol(values, dtype, opts, i), scale=_max(values["z"]) + 1.0)


def _softmax_backward_tol(values, dtype, opts, i):
    n = np.shape(values["grad"])[opts.get("axis", -1)]
    return dict(n=n, scale=max(1.0, _max(values["grad"])))


def _ce_tol(values, dtype, opts, i):
    n = np.shape(values["logits"])[opts.get("axis", -1)]
    scale = 1.0
    if i == 0 and values.get("weight") is not None:
        scale = max(1.0, _max(values["weight"]))
    return dict(n=n, scale=scale * max(1.0, _max(values["logits"])) if i == 0 else None)


def _loss_tol(values, dtype, opts, i):
    name, x = opts["_name"], values[kv.LOSS_INPUT[opts["_name"]]]
    weights = {k: values[k] for k in ("weight", "pos_weight") if values.get(k) is not None}
    if i == 0:
        return dict(scale=kv.loss_scale(name, x, values["target"], weights, opts["reduction"]))
    return dict(scale=kv.grad_scale(name, x, values["target"], weights)
                / (np.size(x) if opts["reduction"] == "mean" else 1))


def _with_name(name, tol):
    def t(values, dtype, opts, i):
        return tol(values, dtype, dict(opts, _name=name), i)
    return t


# ------------------------------------------------------------------ entries
ACT_SHAPES = ((1, 1), (1, 7), (5, 1), (3, 17), (33, 1000), (64, 10), (7, 130),
              (1,), (17,), (1000,))
SOFTMAX_SHAPES = ((1, 1), (1, 7), (5, 1), (3, 17), (33, 1000), (64, 10), (7, 130))
LOSS_SHAPES = ((1,), (1, 1), (17,), (1, 7), (5, 1), (3, 17), (33, 1000), (64, 10), (1000,))
DENSE_SHAPES = ((1, 1, 1), (1, 7, 3), (5, 1, 4), (6, 3, 1), (17, 33, 9), (33, 257, 65),
                (410, 20, 170))
REDUCTIONS = ["mean", "sum", "none"]
ACTIVATIONS = [None, "sigmoid", "tanh", "relu", "gelu", "gelu_tanh", "silu", "leaky_relu",
               "elu", "softplus"]
BAD_REDUCTIONS = tuple(({"reduction": r}, ValueError, "reduction")
                       for r in ("Mean", "SUM", "None", "avg", "", "mean "))
BAD_AXES = tuple(({"axis": a}, ValueError, "axis") for a in (2, -3, 5, -100)) + \
    (({"axis": True}, TypeError, "axis"), ({"axis": 1.0}, TypeError, "axis"))
BAD_ACTIVATIONS = tuple(({"activation": a}, ValueError, "activation")
                        for a in ("Sigmoid", "TANH", "Relu", "linear", "none", "None", "",
                                  "relu ", "softmax", "identity")) + \
    tuple(({"activation": a}, (ValueError, TypeError), "activation")
          for a in (1, True, ("relu",), b"relu"))


def _activation_entry(name):
    return Kernel(
        name, ("z",), kv.make_forward(name), ("z",), ACT_SHAPES, (4, 5), (513, 521), ("a",),
        close_check(_elementwise_tol), elementwise=True, torch=kv.torch_activation(name),
        fd=kv.fd_activation(name), thread_exact=lambda o: (True,), fuzz="elementwise_cases")


def _backward_entry(name):
    return Kernel(
        name, ("grad", "a"), kv.make_backward(name), ("grad", "a"), ACT_SHAPES, (4, 5),
        (513, 521), ("grad_z",), close_check(_backward_tol), elementwise=True,
        torch=kv.torch_activation(name), fd=kv.fd_activation(name),
        thread_exact=lambda o: (True,), fuzz="elementwise_cases")


def _z_activation_entry(name):
    """tanh, and the activations whose backward takes z (options by keyword)."""
    act = name[: -len("_backward")] if name.endswith("_backward") else name
    backward = act != name
    pos = ("grad", "z") if backward else ("z",)
    make = zv.make_z_backward(name) if backward else zv.make_z_forward(name)
    return Kernel(
        name, pos, make, pos, ACT_SHAPES, (4, 5), (513, 521),
        ("grad_z",) if backward else ("a",),
        close_check(_backward_tol if backward else _elementwise_tol),
        options=zv.Z_ACTIVATIONS.get(act, {}), elementwise=True,
        torch=zv.torch_z_activation(name), fd=zv.fd_z_activation(name),
        thread_exact=lambda o: (True,),
        bad_options=zv.bad_z_options(name) if act != "tanh" else (),
        fuzz="elementwise_cases")


def _optimizer_entry(name):
    sgd = name == "sgd_update"
    state = ov.SGD_STATE if sgd else ov.ADAM_STATE
    pos = ("param", "grad") if sgd else ("param", "grad", "exp_avg", "exp_avg_sq")
    return Kernel(
        name, pos, ov.make_sgd if sgd else ov.make_adam,
        pos + state[1:], ACT_SHAPES, (4, 5), (513, 521), ("param",),
        close_check(_optimizer_tol), options=ov.SGD_OPTIONS if sgd else ov.ADAM_OPTIONS,
        valid_options=ov.sgd_valid if sgd else (lambda o: True), has_out=False,
        torch=ov.torch_sgd if sgd else ov.torch_adam,
        # an element's update depends on that element only: any thread count, same bits
        thread_exact=lambda o: (True,) * (1 + len(state)),
        bad_options=ov.BAD_SGD_OPTIONS if sgd else ov.BAD_ADAM_OPTIONS,
        bad_shapes=tuple((arg, (5, 4)) for arg in pos[1:]),
        fuzz="optimizer_cases", in_place_state=state)


def _softmax_entry(name, tol):
    pos = ("z",) if name != "softmax_backward" else ("grad", "p")
    return Kernel(
        name, pos, kv.make_softmax(name), pos, SOFTMAX_SHAPES, (4, 5), (512, 1000),
        ("p",) if name != "softmax_backward" else ("grad_z",), close_check(tol),
        options={"axis": [-1, 1, 0, -2]}, torch=kv.torch_softmax(name),
        fd=kv.fd_softmax(name), bad_options=BAD_AXES, fuzz="softmax_cases")


def _ce_entry(name):
    return Kernel(
        name, ("logits", "target"), kv.make_cross_entropy(name), ("logits", "target", "weight"),
        SOFTMAX_SHAPES, (4, 5), (512, 1000),
        ("loss", "grad") if name == "softmax_cross_entropy" else ("grad",),
        close_check(_ce_tol, is_loss=name == "softmax_cross_entropy"),
        options={"axis": [-1, 0], "target": ["int64", "probs"], "reduction": REDUCTIONS,
                 "weight": [False, True], "label_smoothing": [0.0, 0.1, 1.0],
                 "ignore": [False, True]},
        valid_options=lambda o: not (o["target"] == "probs" and o["ignore"]),
        out_results=1 if name == "softmax_cross_entropy" else 0,
        is_loss=name == "softmax_cross_entropy", torch=kv.torch_cross_entropy(name),
        fd=kv.fd_cross_entropy(name),
        bad_options=BAD_REDUCTIONS + BAD_AXES[:4] + tuple(
            ({"label_smoothing": v}, ValueError, "label_smoothing")
            for v in (-0.1, -1e-12, 1.0000001, 2.0, np.nan)),
        bad_shapes=(("target", (5,)), ("target", (3,)), ("target", (4, 1)),
                    ("weight", (6,)), ("weight", (4, 5))),
        fuzz="cross_entropy_cases")


def _loss_entry(name):
    x = kv.LOSS_INPUT[name]
    weights = {"sigmoid_binary_cross_entropy": ["none", "full", "column"],
               "binary_cross_entropy": ["none", "full", "column"], "mse": ["none"]}[name]
    options = {"reduction": REDUCTIONS, "weight": weights}
    if name == "sigmoid_binary_cross_entropy":
        options["pos_weight"] = [False, True]
    floats = (x, "target") + (("weight",) if name != "mse" else ()) + \
        (("pos_weight",) if name == "sigmoid_binary_cross_entropy" else ())
    return Kernel(
        name, (x, "target"), kv.make_loss(name), floats, LOSS_SHAPES, (4, 5), (800, 400),
        ("loss", "grad"), close_check(_with_name(name, _loss_tol), is_loss=True),
        options=options, out_results=1, is_loss=True, torch=kv.torch_loss(name),
        fd=kv.fd_loss(name),
        # element by element: the gradient for every reduction, "none"'s loss
        thread_exact=lambda o: (o.get("reduction") == "none", True),
        bad_options=BAD_REDUCTIONS,
        bad_shapes=((("target", (5, 7)), ("target", (7,)))
                    + ((("weight", (7,)), ("weight", (5, 5)), ("weight", (2, 4, 5)))
                       if name != "mse" else ())
                    + ((("pos_weight", (4,)), ("pos_weight", (4, 5)), ("pos_weight", (6,)))
                       if name == "sigmoid_binary_cross_entropy" else ())),
        fuzz="elementwise_loss_cases")


KERNELS = [
    _activation_entry("sigmoid"),
    _activation_entry("relu"),
    _backward_entry("sigmoid_backward"),
    _backward_entry("tanh_backward"),
    _backward_entry("relu_backward"),
    _z_activation_entry("tanh"),
    *[_z_activation_entry(f"{act}{suffix}") for act in zv.Z_ACTIVATIONS
      for suffix in ("", "_backward")],
    _softmax_entry("softmax", _softmax_tol),
    _softmax_entry("log_softmax", _log_softmax_tol),
    _softmax_entry("softmax_backward", _softmax_backward_tol),
    _ce_entry("softmax_cross_entropy"),
    _ce_entry("softmax_cross_entropy_backward"),
    _loss_entry("sigmoid_binary_cross_entropy"),
    _loss_entry("binary_cross_entropy"),
    _loss_entry("mse"),
    Kernel("dense_forward", ("x", "w", "b", "activation"), kv.make_dense_forward,
           ("x", "w", "b"), DENSE_SHAPES, (4, 3, 5), (520, 40, 160), ("a",),
           dense_forward_check, options={"activation": ACTIVATIONS, "bias": [True, False]},
           torch=kv.torch_dense_forward, fd=kv.fd_dense, bad_options=BAD_ACTIVATIONS,
           bad_shapes=(("x", (4,)), ("x", (4, 3, 1)), ("x", (4, 4)), ("x", (4, 2)),
                       ("w", (5,)), ("w", (5, 4)), ("w", (3, 5)), ("w", (1, 5, 3)),
                       ("b", (6,)), ("b", (4,)), ("b", (1, 5)), ("b", (5, 1)), ("b", ())),
           fuzz="dense_forward_cases", messages_show_shapes=False),
    Kernel("dense_backward", ("grad_a", "x", "w", "a", "activation"), kv.make_dense_backward,
           ("grad_a", "x", "w", "a", "z"), DENSE_SHAPES, (4, 3, 5), (520, 40, 160),
           ("grad_w", "grad_b", "grad_x"), dense_backward_check,
           options={"activation": ACTIVATIONS, "need_input_grad": [True, False]},
           out_results=(0, 1, 2), torch=kv.torch_dense_backward, fd=kv.fd_dense,
           bad_options=BAD_ACTIVATIONS[:10] + (
               ({"scale": float("nan")}, ValueError, "scale"),
               ({"scale": float("-inf")}, ValueError, "scale"),
               ({"scale": "0.1"}, TypeError, "scale"), ({"scale": True}, TypeError, "scale")),
           bad_shapes=(("x", (4,)), ("x", (4, 4)), ("x", (3, 3)), ("w", (5, 4)), ("w", (5,)),
                       ("w", (4, 3)), ("grad_a", (4, 4)), ("grad_a", (5, 5)),
                       ("grad_a", (20,)), ("grad_a", (5, 4)), ("a", (4, 4)), ("a", (5, 4)),
                       ("a", (20,)), ("z", (4, 4)), ("z", (5, 4)), ("z", (20,))),
           fuzz="dense_backward_cases", messages_show_shapes=False),
    _optimizer_entry("sgd_update"),
    _optimizer_entry("adam_update"),
]
BY_NAME = {k.name: k for k in KERNELS}
IDS = [k.name for k in KERNELS]

# Public names that are not kernels (nothing to compute over arrays)
NOT_KERNELS = {"set_num_threads", "get_num_threads", "build_info", "set_blas", "get_blas",
               "gradcheck",
               "GradcheckResult"}


def cases(kernels=KERNELS, per_option=True):
    """(kernel, options) pairs for pytest.mark.parametrize, ids "name-opt=value...".

    per_option: True, every combination; "each", every value of each option
    once; False, the defaults only."""
    import pytest
    out = []
    for k in kernels:
        sets = (k.option_sets() if per_option is True else
                k.option_sets("each") if per_option == "each" else [k.default_options()])
        for o in sets:
            oid = "-".join(f"{key}={val}" for key, val in o.items())
            out.append(pytest.param(k, o, id=k.name + (f"-{oid}" if oid else "")))
    return out
