"""Thinc's own backend tests, run against nnkernels.thinc.NNKernelsOps.

Runs the installed Thinc's ``thinc/tests/backends/test_ops.py`` twice, each
time in a fresh interpreter: once as shipped (its ``NUMPY_OPS`` and
``BLIS_OPS`` are ``NumpyOps``), and once with ``thinc.api.NumpyOps``
bound to ``NNKernelsOps`` while the test module is imported, so those same
cases, ``test_ops_consistency``'s signature check included, run on
nnkernels. Every test that passes for ``NumpyOps`` must pass for
``NNKernelsOps``; the script prints both tallies and every test whose
outcome differs, and exits 1 if one that passed for ``NumpyOps`` does not.

    python tests/thinc_suite.py [--json FILE] [extra pytest arguments]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

SUITE = "thinc.tests.backends.test_ops"


def _import_suite_on_nnkernels():
    """Import the suite with thinc.api.NumpyOps bound to NNKernelsOps.

    The suite builds its NUMPY_OPS, BLIS_OPS and test_ops_consistency's
    parameter from that name while it is imported; the name is given back
    afterwards, so that a test asking whether get_ops("numpy") is a NumpyOps
    still gets Thinc's class. pytest then collects the imported module.
    """
    import importlib

    import thinc.api

    from nnkernels.thinc import NNKernelsOps

    numpy_ops = thinc.api.NumpyOps
    thinc.api.NumpyOps = NNKernelsOps
    try:
        module = importlib.import_module(SUITE)
    finally:
        thinc.api.NumpyOps = numpy_ops
    module.NumpyOps = numpy_ops


def _child(backend, out_path, extra):
    """Run the suite in this process on `backend`; write {nodeid: outcome}."""
    import pytest

    outcomes = {}

    class Recorder:
        def pytest_sessionstart(self, session):
            if backend == "nnkernels":
                _import_suite_on_nnkernels()

        def pytest_collection_finish(self, session):
            module = sys.modules[SUITE]
            used = type(module.NUMPY_OPS).__name__
            expected = "NNKernelsOps" if backend == "nnkernels" else "NumpyOps"
            if used != expected:
                raise SystemExit(f"the suite's NUMPY_OPS is {used}, not {expected}")

        def pytest_runtest_logreport(self, report):
            # a parameter that is the class itself is named after it
            nodeid = report.nodeid.replace("[NNKernelsOps]", "[NumpyOps]")
            before = outcomes.get(nodeid, "passed")
            if report.failed:
                outcomes[nodeid] = "failed"
            elif report.skipped and before != "failed":
                outcomes[nodeid] = "skipped"
            elif report.when == "call" and before == "passed":
                outcomes[nodeid] = "passed"

    # one line per failure: the failures common to both runs are Thinc's own
    status = pytest.main(["-q", "-p", "no:cacheprovider", "--tb=line", "--pyargs", SUITE, *extra],
                         plugins=[Recorder()])
    with open(out_path, "w") as f:
        json.dump({"status": int(status), "outcomes": outcomes}, f)


def _run(backend, extra, workdir):
    out_path = os.path.join(workdir, f"{backend}.json")
    # from a folder of its own, so no project conftest or ini file applies
    subprocess.run([sys.executable, os.path.abspath(__file__), "--child", backend,
                    "--child-out", out_path, *extra], cwd=workdir, check=False)
    if not os.path.exists(out_path):
        raise SystemExit(f"the {backend} run of {SUITE} ended without a result")
    with open(out_path) as f:
        return json.load(f)["outcomes"]


def _tally(outcomes):
    counts = {}
    for outcome in outcomes.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write both runs' outcomes to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args(argv)
    if args.child:
        _child(args.child, args.child_out, extra)
        return 0

    import thinc

    with tempfile.TemporaryDirectory() as workdir:
        numpy_ops = _run("numpy", extra, workdir)
        ours = _run("nnkernels", extra, workdir)
    print(f"\nThinc {thinc.__version__}, {SUITE}")
    print(f"  NumpyOps:     {_tally(numpy_ops)}")
    print(f"  NNKernelsOps: {_tally(ours)}")
    differ = sorted(k for k in set(numpy_ops) | set(ours) if numpy_ops.get(k) != ours.get(k))
    for nodeid in differ:
        print(f"  differs: {nodeid}: NumpyOps {numpy_ops.get(nodeid)}, "
              f"NNKernelsOps {ours.get(nodeid)}")
    lost = [k for k in differ if numpy_ops.get(k) == "passed"]
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"thinc": thinc.__version__, "numpy_ops": numpy_ops,
                       "nnkernels_ops": ours}, f, indent=1)
    if not numpy_ops or lost:
        print(f"FAILED: {len(lost)} test(s) that pass for NumpyOps do not pass for "
              "NNKernelsOps" if numpy_ops else "FAILED: no test ran")
        return 1
    print("every test that passes for NumpyOps passes for NNKernelsOps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
