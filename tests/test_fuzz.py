"""Hypothesis fuzz suite over every kernel of the table (issue 4, "trust and shipping").

Random shapes (0- and 1-sized axes included), dtypes (float16, int, bool,
object, complex, mixed float32/float64), layouts (C, F, strided, negative
strides, unaligned, out= the input itself or a partially overlapping view of
it), labels (out of range, negative, ignore_index, every integer dtype, float
labels) and values (NaN, +-inf, +-1e30, subnormals, +-1e4).  Every example
calls nnkernels and nnkernels.reference on fresh, identical arguments
(tests/_fuzz_strategies.py:check): either both raise, nnkernels with the
contract's exception and a message naming the broken argument, having
written nothing, or both return and agree (shape, dtype, NaN positions,
infinities, finite values within the dtype's tolerance), out= is the result,
and every array is left as the reference leaves it.

The in-place optimizer updates (sgd_update, adam_update) are fuzzed the same
way (_fuzz_strategies.check_update): read-only, self-overlapping and
memory-sharing param and state arrays must be refused with nothing written,
a read-only 0-stride grad is computed; a valid call returns param itself,
its updated arrays (param, momentum_buffer, exp_avg, exp_avg_sq,
max_exp_avg_sq) agree with the reference's updated copies within a bound
per element, and every other array is untouched.

Example counts: NNKERNELS_FUZZ_EXAMPLES sets max_examples per test (CI
default below: about ten thousand in total, derandomised so CI is repeatable);
NNKERNELS_FUZZ_EXAMPLES=50000 is the long run, with fresh random examples.
A crash (segfault) kills pytest, which is the failure signal for "never
crash".  Each kernel_table entry names its case strategy (``fuzz``, in
_fuzz_cases.py, the optimizers' in _fuzz_cases_optim.py); a new kernel with one is
fuzzed here at once.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import _fuzz_cases
import _fuzz_cases_optim
import nnkernels as nk
import nnkernels.reference as ref
from _fuzz_strategies import Counter, check
from kernel_table import KERNELS

# ------------------------------------------------------------------ settings
_DEFAULT_EXAMPLES = 350          # per test; 30 tests -> ~10,000 examples, ~50 s
_ENV = os.environ.get("NNKERNELS_FUZZ_EXAMPLES")
EXAMPLES = int(_ENV) if _ENV else _DEFAULT_EXAMPLES
# deadline=None: a shared, noisy machine (and AddressSanitizer runs) make
# per-example timings meaningless.  database=None: CI runs from a temp copy,
# and no .hypothesis/ folder is left in the work tree.  Health checks:
# too_slow (drawing many structured arguments per example is slower than
# hypothesis likes under ASan) and data_too_large (a few examples draw many
# choices: big label vectors) -- neither is a property of the code under test.
# The default run is derandomised so CI sees the same examples every time;
# an explicit NNKERNELS_FUZZ_EXAMPLES (the long run) draws fresh random ones.
settings.register_profile(
    "nnkernels-fuzz", max_examples=EXAMPLES, deadline=None, database=None,
    derandomize=_ENV is None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FUZZ = settings.get_profile("nnkernels-fuzz")

FUZZED = [k for k in KERNELS if k.fuzz is not None]


@pytest.fixture(autouse=True)
def _one_thread_count_per_example():
    old = nk.get_num_threads()
    yield
    nk.set_num_threads(old)


@pytest.fixture(scope="module")
def _dense_scratch_warm():
    # Grow this thread's dense scratch once: the first call of a thread with
    # a 0-byte scratch failed (see test_regression_dense_backward_empty_first_call),
    # which would make this test's outcome depend on the tests run before it.
    nk.dense_backward(np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 2)))


def strategy(kernel):
    make = getattr(_fuzz_cases_optim if kernel.in_place_state else _fuzz_cases, kernel.fuzz)
    return make() if kernel.name.startswith("dense") else make(kernel.name)


@pytest.mark.parametrize("kernel", FUZZED, ids=lambda k: k.name)
@FUZZ
@given(data=st.data())
def test_fuzz(kernel, data, _dense_scratch_warm):
    check(data.draw(strategy(kernel)))


def test_every_kernel_is_fuzzed():
    # the in-place optimizer updates too: their state is compared with the
    # reference's updated copy (_fuzz_strategies.check_update)
    assert [k.name for k in FUZZED] == [k.name for k in KERNELS]


# ======================================================== set_num_threads
@FUZZ
@given(n=st.one_of(st.integers(-2**40, 0), st.floats(allow_nan=True), st.text(max_size=3),
                   st.none(), st.just([2]), st.just(np.float64(2.0))))
def test_fuzz_set_num_threads_bad_values(n):
    Counter.hit("set_num_threads")
    before = nk.get_num_threads()
    with pytest.raises((TypeError, ValueError)) as info:
        nk.set_num_threads(n)
    assert "n" in str(info.value).split(":")[-1] or " n " in str(info.value), info.value
    assert nk.get_num_threads() == before          # a refused value changes nothing


@FUZZ
@given(n=st.one_of(st.integers(1, 4), st.integers(1, 4).map(np.int64)))
def test_fuzz_set_num_threads_good_values(n):
    Counter.hit("set_num_threads")
    nk.set_num_threads(n)
    # a build without OpenMP always runs on one thread
    assert nk.get_num_threads() == (int(n) if nk.build_info()["openmp"] else 1)
    z = np.linspace(-5, 5, 70000)
    np.testing.assert_allclose(nk.sigmoid(z), ref.sigmoid(z), rtol=1e-12, atol=1e-14)
