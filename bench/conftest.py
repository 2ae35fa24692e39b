"""Shared fixtures of the pytest-benchmark suites.

The kernels, their sizes and their inputs come from the registry in
``nnkernels.benchmarks``; these suites only turn its entries into benchmarks,
with ``benchmark.group`` set per kernel + shape + dtype so that nnkernels and
the reference sit side by side in pytest-benchmark's table.

    python -m pytest bench                        # run the benchmarks
    python -m pytest bench --benchmark-disable -q # just check that they run
"""

import numpy as np
import pytest

from nnkernels import benchmarks

try:
    import pytest_benchmark  # noqa: F401
except ImportError:
    HAVE_PYTEST_BENCHMARK = False
else:
    HAVE_PYTEST_BENCHMARK = True

BACKENDS = ("nnkernels", "reference")
DTYPE = np.dtype(np.float32)


def pytest_generate_tests(metafunc):
    """Parametrize ``test_<group>(kernel, shape, backend)`` over a registry group.

    ``<group>`` is a ``group`` of ``nnkernels.benchmarks.KERNELS`` ("activations",
    "softmax", "losses", "dense", "training"). The two backends of one case are adjacent, so the
    inputs built for the first are reused by the second (``bench_call``).
    """
    if not {"kernel", "shape", "backend"} <= set(metafunc.fixturenames):
        return
    group = metafunc.function.__name__.removeprefix("test_")
    params = [pytest.param(kernel, shape, backend,
                           id=f"{kernel.name}-{'x'.join(map(str, shape))}-{backend}")
              for kernel, _, shape in benchmarks.bench_cases(group)
              for backend in BACKENDS]
    if not params:
        raise ValueError(f"{metafunc.function.__name__}: no kernel in group {group!r}")
    metafunc.parametrize("kernel, shape, backend", params)


def pytest_collection_modifyitems(config, items):
    if not HAVE_PYTEST_BENCHMARK:
        skip = pytest.mark.skip(reason="pytest-benchmark is not installed")
        for item in items:
            item.add_marker(skip)


class _InputCache:
    """Inputs of the most recent (kernel, shape, dtype), built once."""

    def __init__(self):
        self.key = None
        self.inputs = None

    def get(self, kernel, shape, dtype):
        key = (kernel.name, tuple(shape), dtype.name)
        if key != self.key:
            self.key, self.inputs = None, None  # free the previous arrays first
            self.inputs = kernel.make_inputs(shape, dtype, np.random.default_rng(0))
            self.key = key
        return self.inputs


@pytest.fixture(scope="session")
def _input_cache():
    benchmarks.prime_allocator()  # steady-state malloc, as ``python -m nnkernels bench``
    return _InputCache()


@pytest.fixture
def bench_call(benchmark, _input_cache):
    """run(kernel, shape, backend): benchmark one call of ``backend``."""
    import nnkernels
    from nnkernels import reference

    def run(kernel, shape, backend):
        inputs = _input_cache.get(kernel, shape, DTYPE)
        if backend == "nnkernels":
            fn = kernel.bind(nnkernels, inputs, kernel.make_out(inputs))
        else:
            fn = kernel.bind(reference, inputs)
        benchmark.group = f"{kernel.name} {shape} {DTYPE.name}"
        result = benchmark(fn)
        # bytes moved, or the matrix-product FLOPs of the dense and training rows
        quantity, amount, unit = kernel.work(shape, inputs, result)
        benchmark.extra_info[quantity] = amount
        if benchmark.stats is not None:  # None with --benchmark-disable
            benchmark.extra_info[unit] = amount / benchmark.stats.stats.median / benchmarks.GB
        return result

    return run
