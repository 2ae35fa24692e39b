"""Dense layer forward/backward and one training step: nnkernels vs nnkernels.reference.

Parametrized by ``conftest.pytest_generate_tests`` from the registry group
named after each test function: "dense" (``dense_forward``, ``dense_backward``
with sigmoid) and "training" (``MLP.step`` of the 784-512-256-10 sigmoid
network: forward, loss, backward, SGD update). pytest-benchmark reports the
matrix-product FLOPs of each case in ``extra_info`` (and GFLOP/s when timed).
"""


def test_dense(bench_call, kernel, shape, backend):
    bench_call(kernel, shape, backend)


def test_training(bench_call, kernel, shape, backend):
    bench_call(kernel, shape, backend)
