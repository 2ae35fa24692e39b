"""Softmax family and the fused losses: nnkernels vs nnkernels.reference.

Parametrized by ``conftest.pytest_generate_tests`` from the registry group
named after each test function.
"""


def test_softmax(bench_call, kernel, shape, backend):
    bench_call(kernel, shape, backend)


def test_losses(bench_call, kernel, shape, backend):
    bench_call(kernel, shape, backend)
