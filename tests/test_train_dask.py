"""examples/train_dask.py: synchronous data-parallel SGD over dask.distributed.

The example runs on a local cluster of 2 worker processes, as a user runs it
(a subprocess under a timeout, so that a hang fails the test instead of
stopping the suite), and through ``main`` against a cluster the test starts
(``--scheduler``); bad options must fail at once with a message. The
gradient arithmetic is checked without Dask as well.
"""

import re
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("distributed")
pytest.importorskip("sklearn")

from nnkernels.mlp import MLP
from _nkutil import EXAMPLES, load_example

# Absent when the suite runs from a copy of tests/ against an installed wheel.
EXAMPLE = EXAMPLES / "train_dask.py"
# Seconds a whole training run may take: 5–10 on 2 busy cores; far more
# means it hangs.
RUN_TIMEOUT = 180
# Seconds for a run that must fail before any training.
FAIL_TIMEOUT = 60
# 50 steps of batch 256 (about 10 passes over the data) reach 96% test
# accuracy with the default tanh network (measured: 96.0%; 25 steps 94.9%).
STEPS = 50
MIN_ACCURACY = 0.9


@pytest.fixture(scope="module")
def example():
    return load_example("train_dask")


@pytest.fixture(scope="module")
def scheduler_address(example):
    """A cluster of 2 worker processes, one thread each, for --scheduler."""
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close(timeout=FAIL_TIMEOUT)


def _run_example(args, timeout, cwd):
    return subprocess.run([sys.executable, str(EXAMPLE), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


def _printed_number(pattern, text):
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in the output:\n{text}"
    return float(match.group(1))


# ------------------------------------------------------------------ the runs
def test_two_workers_match_one_process(example, tmp_path):
    run = _run_example(["--workers", "2", "--check", "--steps", str(STEPS), "--quiet"],
                       RUN_TIMEOUT, tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "float64" in run.stdout                  # --check's default dtype
    max_diff = _printed_number(r"max \|parameter difference\| dask vs one process: (\S+)",
                               run.stdout)
    assert max_diff <= 1e-10
    accuracy = _printed_number(r"test accuracy ([\d.]+)%", run.stdout)
    assert accuracy > 100 * MIN_ACCURACY
    for label in ("time per step: dask", "one process", "gradients on the workers",
                  "communication"):
        assert label in run.stdout


def test_scheduler_option_deterministic(example, scheduler_address):
    argv = ["--scheduler", scheduler_address, "--workers", "2", "--check",
            "--steps", "20", "--quiet"]
    first = example.main(argv)
    second = example.main(argv)
    # the reduction adds the shards in a fixed order: bit-identical runs
    np.testing.assert_array_equal(first["params"], second["params"])
    assert first["losses"] == second["losses"]
    assert first["max_param_diff"] <= 1e-10
    assert first["params"].dtype == np.float64
    assert first["worker_threads"] == [1, 1]
    assert first["shard_sizes"] == [674, 673]
    assert first["losses"][-1] < 0.5 * first["losses"][0]
    np.testing.assert_allclose(first["losses"], first["one_process_losses"], rtol=1e-12)
    assert 0 < first["worker_compute_time"] < first["dask_step_time"]
    assert 0 < first["one_process_step_time"]


# ------------------------------------------------------------- bad arguments
BAD_ARGUMENTS = [
    (["--workers", "0"], "--workers: must be positive and finite, got 0"),
    (["--workers", "1.5"], "--workers: expected an integer, got '1.5'"),
    (["--batch-size", "1"], "--batch-size (1) must be at least --workers (2)"),
    (["--steps", "0"], "--steps: must be positive"),
    (["--seed", "-1"], "--seed must be non-negative"),
    (["--lr", "x"], "--lr: expected a number"),
    (["--dtype", "float16"], "--dtype: invalid choice"),
    (["--hidden", "12,x"], "--hidden: expected comma-separated layer widths"),
]


@pytest.mark.parametrize("argv, message", BAD_ARGUMENTS,
                         ids=[" ".join(argv) for argv, _ in BAD_ARGUMENTS])
def test_bad_argument_fails_at_once(example, argv, message, tmp_path):
    run = _run_example(argv, FAIL_TIMEOUT, tmp_path)
    assert run.returncode == 2
    assert message in run.stderr, run.stderr


def test_batch_larger_than_a_shard_is_an_error(example, capsys):
    with pytest.raises(SystemExit, match="shard 0 holds 674 samples but each step needs 700"):
        example.main(["--batch-size", "1400"])


def test_without_dask_says_what_to_install(example, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)   # import -> ImportError
    with pytest.raises(SystemExit) as exit_info:
        example.main(["--steps", "1"])
    assert exit_info.value.code == 2
    assert 'pip install "nnkernels[distributed]"' in capsys.readouterr().err


def test_unreachable_scheduler_fails_within_timeout(example, tmp_path):
    # port 1 on this machine: nothing listens there, every connection is refused
    run = _run_example(["--scheduler", "tcp://127.0.0.1:1", "--timeout", "2", "--quiet"],
                       FAIL_TIMEOUT, tmp_path)
    assert run.returncode == 1
    assert "error: the Dask run failed" in run.stderr
    assert "Timed out trying to connect" in run.stderr, run.stderr


# ------------------------------------------------------ without Dask: pieces
def test_batch_plan(example):
    plan = example.batch_plan([5, 4], batch_size=5, steps=6, seed=3)
    assert [[len(r) for r in step] for step in plan] == [[3, 2]] * 6
    # a pass over shard 0 gives one step's 3 rows of its 5, then reshuffles
    assert all(len(set(step[0])) == 3 for step in plan)
    # shard 1: two steps without repeating a row, then a new pass
    for i in range(0, 6, 2):
        assert sorted(np.concatenate([plan[i][1], plan[i + 1][1]])) == [0, 1, 2, 3]
    again = example.batch_plan([5, 4], batch_size=5, steps=6, seed=3)
    assert all(np.array_equal(a, b) for s, t in zip(plan, again) for a, b in zip(s, t))
    with pytest.raises(ValueError, match="shard 1 holds 4 samples"):
        example.batch_plan([5, 4], batch_size=10, steps=1, seed=0)


@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu"])   # from a, from z
def test_shard_sums_add_up_to_the_batch_gradient(example, activation, rng):
    sizes, n = (12, 16, 8, 5), 30
    shapes = example.parameter_shapes(sizes)
    model = MLP(sizes, activation, dtype=np.float64, seed=1)
    params = example.pack(model.params)
    np.testing.assert_array_equal(example.unpack(params, shapes)[1][0], model.params[1][0])
    x = rng.standard_normal((n, sizes[0]))
    labels = rng.integers(0, sizes[-1], n)

    whole, loss_sum, _ = example.shard_gradient_sum(params, x, labels, np.arange(n), shapes,
                                                    activation, n)
    parts = [example.shard_gradient_sum(params, x, labels, rows, shapes, activation, n)
             for rows in (np.arange(0, 11), np.arange(11, n))]
    np.testing.assert_allclose(parts[0][0] + parts[1][0], whole, rtol=1e-12, atol=1e-15)
    assert parts[0][1] + parts[1][1] == pytest.approx(loss_sum, rel=1e-12)

    lr = 0.25                           # MLP.step's update is −lr × the mean gradient
    mean_loss = model.step(x, labels, lr)
    assert mean_loss == pytest.approx(loss_sum / n, rel=1e-12)
    np.testing.assert_allclose((params - example.pack(model.params)) / lr, whole,
                               rtol=1e-9, atol=1e-12)
