"""Command line of nnkernels: ``python -m nnkernels {bench,info,check}``.

- ``bench``: time every kernel against ``nnkernels.reference`` (and PyTorch
  with ``--compare torch``), with the machine's memory bandwidth as the floor
  (for the dense and training-step rows: its BLAS rate, FLOPs / GFLOP/s).
- ``info``: version, build flags, OpenMP, threads, NumPy and its BLAS.
- ``check``: gradient self-check of every kernel with ``nnkernels.gradcheck``
  (the cases are in ``nnkernels._selfcheck``).

The bench itself (registry, timing, probes, report) is ``nnkernels.benchmarks``.
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
    if args.threads is not None:
        nk.set_num_threads(args.threads)

    if args.dtype:
        dtypes = list(dict.fromkeys(args.dtype))
    else:
        dtypes = ["float32"]

    def log(msg):
        if not args.silent:
            print("  " + msg, file=sys.stderr, flush=True)

    providers = None
    if args.blas:
        from nnkernels import _blas_providers
        try:
            providers = list(dict.fromkeys(_blas_providers.resolve(b) for b in args.blas))
            for name in providers:
                _blas_providers.load(name)
        except ImportError as e:
            return _fail(str(e))
    res = benchmarks.run_bench(nk, quick=args.quick, dtypes=dtypes,
                               compare_torch=args.compare == "torch",
                               kernels=args.kernel or None, log=log, blas=providers)
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

    info = _nnkernels().build_info()
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

def _fmt_index(index):
    try:
        return "(" + ", ".join(str(int(i)) for i in index) + ")"
    except TypeError:
        return str(index)


def cmd_check(args):
    from nnkernels._selfcheck import gradient_checks

    nk = _nnkernels()
    checks = gradient_checks(nk, seed=args.seed)
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
        extra = "" if ok else f"  worst index {_fmt_index(res.worst_index)}"
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
                   help="dtype to measure; repeat for both (default: float32)")
    p.add_argument("--json", metavar="FILE", help="write all numbers to FILE as JSON")
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw the speed-ups into FILE.png (needs matplotlib)")
    p.add_argument("--compare", choices=["torch"],
                   help="also time the PyTorch equivalents")
    p.add_argument("--threads", type=_positive_int, metavar="N",
                   help="call nnkernels.set_num_threads(N) first (default: leave as is)")
    p.add_argument("--kernel", action="append", metavar="NAME",
                   help="only this kernel (repeatable)")
    p.add_argument("--blas", action="append", metavar="NAME",
                   choices=["scipy", "mkl", "openblas", "auto"],
                   help="run the dense and training rows on this BLAS provider "
                        "(repeatable; default: every installed one)")
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
