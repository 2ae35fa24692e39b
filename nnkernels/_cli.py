"""Command line of nnkernels: ``python -m nnkernels {bench,info,check}``.

- ``bench``: time every kernel against ``nnkernels.reference`` (and PyTorch
  with ``--compare torch``), with the machine's memory bandwidth as the floor
  (for the dense and training-step rows: its BLAS rate, FLOPs / GFLOP/s).
- ``info``: version, build flags, OpenMP, threads, NumPy and its BLAS.
- ``check``: gradient self-check of every kernel with ``nnkernels.gradcheck``.
"""

import argparse
import json
import os
import sys

import numpy as np

__all__ = ["main"]


def _nnkernels():
    import nnkernels
    return nnkernels


def _version():
    """The version, read without importing the compiled kernels."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("nnkernels")
    except PackageNotFoundError:
        return _nnkernels().__version__


def _fail(msg):
    print(f"nnkernels: error: {msg}", file=sys.stderr)
    return 1


_NOT_BUILT = ("the compiled extension does not seem to be built: build it with "
              "`python setup.py build_ext --inplace` (source tree) or `pip install .`")


# --------------------------------------------------------------------------
# bench
# --------------------------------------------------------------------------

def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def cmd_bench(args):
    from nnkernels import benchmarks

    nk = _nnkernels()
    if args.kernel:
        unknown = [k for k in args.kernel if k not in {e.name for e in benchmarks.KERNELS}]
        if unknown:
            return _fail(f"unknown kernel(s) {', '.join(unknown)}; known: "
                         + ", ".join(e.name for e in benchmarks.KERNELS))
    if not hasattr(nk, "relu_backward"):
        return _fail(_NOT_BUILT)
    if args.threads is not None:
        if not hasattr(nk, "set_num_threads"):
            return _fail("nnkernels.set_num_threads is missing; " + _NOT_BUILT)
        nk.set_num_threads(args.threads)

    if args.dtype:
        dtypes = list(dict.fromkeys(args.dtype))
    else:
        dtypes = ["float32"] if args.quick else ["float32", "float64"]

    def log(msg):
        if not args.silent:
            print("  " + msg, file=sys.stderr, flush=True)

    try:
        res = benchmarks.run_bench(nk, quick=args.quick, dtypes=dtypes,
                               compare_torch=args.compare == "torch",
                               kernels=args.kernel or None, log=log)
    except RuntimeError as exc:
        return _fail(str(exc))
    print(benchmarks.format_report(res), flush=True)

    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1, default=_json_default)
            f.write("\n")
        print(f"wrote {args.json}")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print(f"--plot: matplotlib is not installed, {args.plot} not written "
                  "(pip install matplotlib)", file=sys.stderr)
        else:
            benchmarks.plot_report(res, args.plot)
            print(f"wrote {args.plot}")
    failed = any(b in r["errors"] for r in res["rows"] for b in ("nnkernels", "reference"))
    return 1 if failed else 0


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


# --------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------

def _fmt_value(value):
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value) if value else "(none)"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def _numpy_blas():
    """{name, version, configuration} of NumPy's BLAS, or None when unknown."""
    try:
        cfg = np.show_config(mode="dicts")
    except Exception:  # NumPy < 1.26 has no mode="dicts"
        return None
    blas = (cfg or {}).get("Build Dependencies", {}).get("blas")
    if not blas:
        return None
    out = {"name": blas.get("name"), "version": blas.get("version")}
    if blas.get("openblas configuration"):
        out["configuration"] = blas["openblas configuration"].strip()
    return out


def cmd_info(args):
    import platform

    nk = _nnkernels()
    if not hasattr(nk, "build_info"):
        return _fail("nnkernels.build_info() is missing; " + _NOT_BUILT)
    info = nk.build_info()
    rows = [(str(k), _fmt_value(v)) for k, v in info.items()]
    rows.append(("numpy", np.__version__))
    blas = _numpy_blas()
    if blas is None:
        rows.append(("numpy_blas", "unknown"))
    else:
        rows.append(("numpy_blas", f"{blas['name']} {blas['version']}"))
        if "configuration" in blas:
            rows.append(("numpy_blas_config", blas["configuration"]))
    rows.append(("python", sys.version.split()[0]))
    rows.append(("platform", platform.platform()))
    width = max(len(k) for k, _ in rows)
    print("nnkernels build info")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    return 0


# --------------------------------------------------------------------------
# check
# --------------------------------------------------------------------------

def _scalar(loss):
    """A loss as one float: the sum for reduction="none"."""
    return float(np.sum(loss))


def _loss_fn(fn, *args, **kwargs):
    """f(x) = (summed loss, grad) of a fused loss ``fn(x, *args, **kwargs)``."""
    def f(x):
        loss, grad = fn(x, *args, **kwargs)
        return _scalar(loss), grad
    return f


def _probabilities(rng, shape, axis=-1):
    p = rng.uniform(0.05, 1.0, size=shape)
    return p / p.sum(axis=axis, keepdims=True)


def _away_from_zero(rng, shape, gap=0.1):
    """Random values with |x| >= gap (finite differences stay off relu's kink)."""
    x = rng.standard_normal(shape)
    return np.where(x < 0, x - gap, x + gap)


def gradient_checks(nk, seed=0):
    """(label, f, x) for every gradient self-check of ``nk``: f(x) = (loss, dloss/dx)."""
    rng = np.random.default_rng(seed)
    checks = []

    def add(label, f, x):
        checks.append((label, f, x))

    n, c = 6, 5
    z = rng.standard_normal((n, c)) * 2.0
    r = rng.standard_normal((n, c))

    # ---- activations: L = sum(r * f(z)), dL/dz = backward(r, f(z))
    if hasattr(nk, "sigmoid_backward"):
        add("sigmoid_backward (L = sum(r * sigmoid(z)))",
            lambda x: (float(np.sum(r * nk.sigmoid(x))),
                       nk.sigmoid_backward(r, nk.sigmoid(x))), z)
    if hasattr(nk, "tanh_backward"):
        add("tanh_backward (L = sum(r * tanh(z)))",
            lambda x: (float(np.sum(r * np.tanh(x))),
                       nk.tanh_backward(r, np.tanh(x))), z)
    if hasattr(nk, "relu_backward"):
        add("relu_backward (L = sum(r * relu(z)))",
            lambda x: (float(np.sum(r * nk.relu(x))),
                       nk.relu_backward(r, nk.relu(x))), _away_from_zero(rng, (n, c)))

    # ---- softmax family
    if hasattr(nk, "softmax_backward"):
        for axis in (-1, 0):
            add(f"softmax_backward axis={axis} (L = sum(r * softmax(z)))",
                lambda x, axis=axis: (float(np.sum(r * nk.softmax(x, axis=axis))),
                                      nk.softmax_backward(r, nk.softmax(x, axis=axis),
                                                          axis=axis)), z)
    if hasattr(nk, "log_softmax"):
        # analytic: d/dz sum(r * log_softmax(z)) = r - softmax(z) * sum(r)
        for axis in (-1, 0):
            add(f"log_softmax axis={axis} (L = sum(r * log_softmax(z)), analytic grad)",
                lambda x, axis=axis: (
                    float(np.sum(r * nk.log_softmax(x, axis=axis))),
                    r - nk.softmax(x, axis=axis) * r.sum(axis=axis, keepdims=True)), z)

    # ---- softmax cross-entropy with its options
    if hasattr(nk, "softmax_cross_entropy"):
        labels = rng.integers(0, c, size=n)
        ignored = labels.copy()
        ignored[[1, 4]] = -100
        weight = rng.uniform(0.5, 2.0, size=c)
        soft = _probabilities(rng, (n, c))
        variants = [
            ("class indices", labels, {}),
            ("weight", labels, {"weight": weight}),
            ("ignore_index=-100 (2 rows)", ignored, {}),
            ("label_smoothing=0.1", labels, {"label_smoothing": 0.1}),
            ("weight, ignore_index, label_smoothing=0.2", ignored,
             {"weight": weight, "label_smoothing": 0.2}),
            ("soft targets", soft, {}),
            ("soft targets, weight, label_smoothing=0.1", soft,
             {"weight": weight, "label_smoothing": 0.1}),
        ]
        for reduction in ("mean", "sum", "none"):
            for desc, target, kw in variants:
                add(f"softmax_cross_entropy {desc}, reduction={reduction}",
                    _loss_fn(nk.softmax_cross_entropy, target, reduction=reduction, **kw), z)
        add("softmax_cross_entropy ignore_index=2",
            _loss_fn(nk.softmax_cross_entropy, labels, ignore_index=2), z)
        add("softmax_cross_entropy axis=0 (column layout), weight",
            _loss_fn(nk.softmax_cross_entropy, labels, axis=0, weight=weight),
            np.ascontiguousarray(z.T))
        add("softmax_cross_entropy axis=0 (column layout), soft targets",
            _loss_fn(nk.softmax_cross_entropy, np.ascontiguousarray(soft.T), axis=0),
            np.ascontiguousarray(z.T))
        if hasattr(nk, "softmax_cross_entropy_backward"):
            for desc, target, kw in (variants[0], variants[4], variants[6]):
                add(f"softmax_cross_entropy_backward {desc}",
                    lambda x, target=target, kw=kw: (
                        _scalar(nk.softmax_cross_entropy(x, target, **kw)[0]),
                        nk.softmax_cross_entropy_backward(x, target, **kw)), z)

    # ---- element-wise losses, 2-D and 1-D
    m = 7
    shapes = ((n, c), (m,))
    if hasattr(nk, "sigmoid_binary_cross_entropy"):
        for shape in shapes:
            x = rng.standard_normal(shape) * 2.0
            y = rng.uniform(0.0, 1.0, size=shape)
            cols = shape[-1]
            variants = [
                ("", {}),
                ("weight (full shape)", {"weight": rng.uniform(0.5, 2.0, size=shape)}),
                ("weight (per column)", {"weight": rng.uniform(0.5, 2.0, size=cols)}),
                ("pos_weight", {"pos_weight": rng.uniform(0.5, 3.0, size=cols)}),
                ("weight, pos_weight", {"weight": rng.uniform(0.5, 2.0, size=shape),
                                        "pos_weight": rng.uniform(0.5, 3.0, size=cols)}),
            ]
            for reduction in ("mean", "sum", "none"):
                for desc, kw in variants:
                    add(f"sigmoid_binary_cross_entropy {shape} {desc}, reduction={reduction}"
                        .replace(" ,", ","),
                        _loss_fn(nk.sigmoid_binary_cross_entropy, y, reduction=reduction, **kw),
                        x)
    if hasattr(nk, "binary_cross_entropy"):
        for shape in shapes:
            p = rng.uniform(0.05, 0.95, size=shape)
            y = (rng.uniform(size=shape) < 0.5).astype(np.float64)
            for reduction in ("mean", "sum", "none"):
                add(f"binary_cross_entropy {shape}, reduction={reduction}",
                    _loss_fn(nk.binary_cross_entropy, y, reduction=reduction), p)
                add(f"binary_cross_entropy {shape} weight, reduction={reduction}",
                    _loss_fn(nk.binary_cross_entropy, y, reduction=reduction,
                             weight=rng.uniform(0.5, 2.0, size=shape)), p)
    if hasattr(nk, "mse"):
        for shape in shapes:
            x = rng.standard_normal(shape)
            y = rng.standard_normal(shape)
            for reduction in ("mean", "sum", "none"):
                add(f"mse {shape}, reduction={reduction}",
                    _loss_fn(nk.mse, y, reduction=reduction), x)

    # ---- dense layer (when present)
    if hasattr(nk, "dense_forward") and hasattr(nk, "dense_backward"):
        nb, n_in, n_out = 4, 3, 5
        x0 = rng.standard_normal((nb, n_in))
        w0 = rng.standard_normal((n_out, n_in))
        b0 = rng.standard_normal(n_out)
        ra = rng.standard_normal((nb, n_out))
        for act in (None, "sigmoid", "tanh", "relu"):
            def layer(x, w, b, act=act):
                a = nk.dense_forward(x, w, b, activation=act)
                grads = nk.dense_backward(ra, x, w, a, activation=act)
                return float(np.sum(ra * a)), grads
            add(f"dense_backward activation={act}: grad_x",
                lambda x, layer=layer: (lambda L, g: (L, g[2]))(*layer(x, w0, b0)), x0)
            add(f"dense_backward activation={act}: grad_w",
                lambda w, layer=layer: (lambda L, g: (L, g[0]))(*layer(x0, w, b0)), w0)
            add(f"dense_backward activation={act}: grad_b",
                lambda b, layer=layer: (lambda L, g: (L, g[1]))(*layer(x0, w0, b)), b0)
    return checks


def _fmt_index(index):
    try:
        return "(" + ", ".join(str(int(i)) for i in index) + ")"
    except TypeError:
        return str(index)


def cmd_check(args):
    nk = _nnkernels()
    if not hasattr(nk, "gradcheck"):
        return _fail("nnkernels.gradcheck is missing; " + _NOT_BUILT)
    checks = gradient_checks(nk, seed=args.seed)
    if not checks:
        return _fail("no kernel to check; " + _NOT_BUILT)
    width = max(len(label) for label, _, _ in checks)
    failed = 0
    for label, f, x in checks:
        try:
            res = nk.gradcheck(f, x)
        except Exception as exc:
            failed += 1
            print(f"FAIL  {label:<{width}}  {type(exc).__name__}: {exc}")
            continue
        ok = bool(res)
        failed += not ok
        extra = "" if ok else f"  worst index {_fmt_index(getattr(res, 'worst_index', '?'))}"
        print(f"{'PASS' if ok else 'FAIL'}  {label:<{width}}  "
              f"max abs err {res.max_abs_error:.2e}  max rel err {res.max_rel_error:.2e}{extra}")
    print(f"{len(checks) - failed} of {len(checks)} gradient checks passed (float64)")
    return 1 if failed else 0


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(
        prog="nnkernels",
        description="nnkernels command line: benchmarks, build info, gradient self-check.")
    parser.add_argument("--version", action="version", version=f"nnkernels {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="{bench,info,check}")

    p = sub.add_parser(
        "bench", help="time every kernel against the NumPy reference (and torch)",
        description="Time every kernel at small/medium/large sizes against "
                    "nnkernels.reference (and PyTorch with --compare torch), with "
                    "the machine's measured memory bandwidth as the floor (for the "
                    "dense layer and the MLP training step: the matrix-product FLOPs "
                    "over its measured BLAS rate).")
    p.add_argument("--quick", action="store_true",
                   help="fewer sizes and repeats (well under a minute)")
    p.add_argument("--dtype", action="append", choices=["float32", "float64"],
                   help="dtype to measure; repeat for both (default: float32 with "
                        "--quick, both otherwise)")
    p.add_argument("--json", metavar="FILE", help="write all numbers to FILE as JSON")
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw the speed-ups into FILE.png (needs matplotlib)")
    p.add_argument("--compare", choices=["torch"],
                   help="also time the PyTorch equivalents")
    p.add_argument("--threads", type=_positive_int, metavar="N",
                   help="call nnkernels.set_num_threads(N) first (default: leave as is)")
    p.add_argument("--kernel", action="append", metavar="NAME",
                   help="only this kernel (repeatable)")
    p.add_argument("--silent", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("info", help="version, build flags, OpenMP, threads, BLAS")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("check", help="gradient self-check of every kernel (float64)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the problems")
    p.set_defaults(func=cmd_check)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        status = args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader closed the pipe (`nnkernels check | head`): stop quietly.
        # stdout goes to devnull so the interpreter's final flush cannot
        # raise again, and the exit code says the output was cut short.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return status
