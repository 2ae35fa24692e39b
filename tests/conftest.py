"""Fixtures shared by the nnkernels test-suite."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Helpers live next to the tests (tests/ has no __init__.py, so pytest's
# default "prepend" import mode already puts it on sys.path; be explicit so
# the suite also works under --import-mode=importlib).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Local runs draw fresh examples; CI ("nnkernels-ci") replays derandomised ones.
# database=None leaves no .hypothesis/ folder in the work tree.
_PROFILE = dict(max_examples=50, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])
settings.register_profile("nnkernels", derandomize=False, **_PROFILE)
settings.register_profile("nnkernels-ci", derandomize=True, **_PROFILE)
settings.load_profile(
    "nnkernels-ci" if os.environ.get("CI") else
    os.environ.get("HYPOTHESIS_PROFILE", "nnkernels"))


@pytest.fixture(params=[1, 2], ids=lambda n: f"threads{n}")
def threads(request):
    """Run the test with 1 and with 2 OpenMP threads, restoring the count."""
    import nnkernels as nk

    old = nk.get_num_threads()
    nk.set_num_threads(request.param)
    try:
        yield request.param
    finally:
        nk.set_num_threads(old)


@pytest.fixture
def rng(request):
    """A generator seeded from the test's id, so every case is reproducible."""
    import zlib

    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(params=[np.float64, np.float32], ids=["f64", "f32"])
def dtype(request):
    return np.dtype(request.param)


def pytest_terminal_summary(terminalreporter):
    """One line: how many fuzz examples (tests/test_fuzz.py) actually ran."""
    mod = sys.modules.get("_fuzz_strategies")
    if mod is None or not mod.Counter.total:
        return
    c = mod.Counter
    terminalreporter.write_line(
        f"fuzz: {c.total} examples over {len(c.per_function)} functions "
        f"(NNKERNELS_FUZZ_EXAMPLES={os.environ.get('NNKERNELS_FUZZ_EXAMPLES', 'unset: CI default')})")


def pytest_report_header(config):
    """Which BLAS provider the dense tests run on (NNKERNELS_BLAS picks it)."""
    try:
        import nnkernels as nk
        return f"nnkernels BLAS provider: {nk.get_blas()} ({nk.build_info()['blas']})"
    except Exception as e:  # noqa: BLE001 - the header must never stop the run
        return f"nnkernels BLAS provider: unknown ({type(e).__name__}: {e})"
