"""Activations and their backward: nnkernels vs nnkernels.reference.

Parametrized by ``conftest.pytest_generate_tests`` from the registry group
named after the test function.
"""


def test_activations(bench_call, kernel, shape, backend):
    bench_call(kernel, shape, backend)
