"""The thread-count policy of nnkernels._team, on a simulated clock.

No timing of real calls here (the machines are shared and noisy): a fake
kernel records the thread count it was given, and a fake clock says how
long each call took.
"""

from __future__ import annotations

import numpy as np
import pytest

import nnkernels as nk
from nnkernels import _team


class FakeClock:
    def __init__(self):
        self.now = 100.0
        self.next_call = 1e-3       # how long the next kernel call takes

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(_team, "_clock", fake)
    _team.reset()
    old = nk.get_num_threads()
    nk.set_num_threads(2)
    yield fake
    nk.set_num_threads(old)
    _team.reset()


def run(clock, size=10 ** 6, threshold=1000):
    """One call through the policy; returns the thread count the kernel got."""
    got = []

    def kernel(x, n_threads):
        got.append(n_threads)
        clock.now += clock.next_call
        return x + 1

    assert _team.threaded_call("fake", size, threshold, kernel, 41) == 42
    return got[0]


def test_a_stall_puts_calls_on_one_thread_for_a_while(clock):
    assert [run(clock) for _ in range(3)] == [2, 2, 2]     # 1 ms each: the fastest
    clock.next_call = 20e-3                                # a 20 ms stall
    assert run(clock) == 2
    clock.next_call = 1e-3
    # then one thread for BACKOFF_FACTOR x 20 ms (1 s), then a team again
    assert run(clock) == 1
    clock.now += 20e-3 * _team.BACKOFF_FACTOR
    assert run(clock) == 2


def test_slow_but_not_stalled_calls_keep_their_threads(clock):
    run(clock)
    clock.next_call = 3e-3              # 3x the fastest: a busy machine, not a stall
    assert [run(clock) for _ in range(5)] == [2] * 5
    clock.next_call = 3e-3
    assert run(clock, size=10 ** 3) == 2    # 5x slower per element, but under 4 ms


def test_small_calls_and_one_thread_bypass_the_policy(clock):
    clock.next_call = 1.0
    assert run(clock, size=999) == 2        # below the threshold: the kernel stays serial
    assert _team._fastest == {}
    nk.set_num_threads(1)
    assert run(clock) == 1
    assert _team._fastest == {}


def test_a_new_thread_count_forgets_the_timings(clock):
    run(clock)
    assert "fake" in _team._fastest
    nk.set_num_threads(1)
    assert _team._fastest == {}


def test_results_do_not_depend_on_the_policy(clock):
    z = np.random.default_rng(0).standard_normal((1024, 300)).astype(np.float32)
    labels = np.arange(1024) % 300
    first = nk.softmax_cross_entropy(z, labels)
    _team._single_until = clock.now + 10.0      # backing off: one thread
    second = nk.softmax_cross_entropy(z, labels)
    assert first[0] == second[0]
    np.testing.assert_array_equal(first[1], second[1])
