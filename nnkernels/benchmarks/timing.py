"""The timing harness: side-by-side medians of zero-argument functions.

``time_functions`` is the one harness of ``python -m nnkernels bench``: every
function is warmed up and calibrated to a number of calls per sample lasting
at least ``min_sample`` seconds; the samples of the functions of one row are
taken in alternating blocks on the same input arrays, and each function's
median, min and max per-call time are returned with its samples.
``stalled`` says whether a function's samples spread so widely (max/median
above ``STALL_RATIO``) that a call stalled and its ratios are unreliable.
``prime_allocator`` puts malloc in a long-running process's state first.
"""

import gc
import itertools
import math
import statistics
import time

import numpy as np

__all__ = ["time_functions", "prime_allocator", "stalled", "STALL_RATIO", "sample", "settle"]

# max/median of a function's samples above which one of its calls stalled
# (preempted, or waiting on another process): its ratios are then unreliable
STALL_RATIO = 3.0


def sample(fn, number, _timer=time.perf_counter):
    """Seconds per call of ``number`` back-to-back calls of ``fn``."""
    it = itertools.repeat(None, number)
    t0 = _timer()
    for _ in it:
        fn()
    return (_timer() - t0) / number


def _calibrate(fn, min_sample):
    """Warm ``fn`` up; return (calls per sample lasting >= min_sample, seconds per call)."""
    fn()
    number = 1
    while True:
        t = sample(fn, number)
        if t * number >= min_sample or number >= 1 << 24:
            return number, t
        # aim a little above the target; grow at least 2x, at most 100x per step
        want = math.ceil(1.2 * min_sample / max(t, 1e-9))
        number = min(max(2 * number, want), 100 * number)


def settle(step=0.01, max_wait=0.5):
    """Sleep until the process's other threads are idle (at most ``max_wait`` s).

    Idle worker threads of a thread pool spin before they sleep: libgomp's
    for a few ms, OpenBLAS's for about 2**28 cycles (~0.1 s, a whole core).
    While the main thread sleeps ``step`` seconds, the process's CPU time
    shows whether any still spin.
    """
    deadline = time.perf_counter() + max_wait
    while time.perf_counter() < deadline:
        cpu = time.process_time()
        time.sleep(step)
        if time.process_time() - cpu < 0.1 * step:
            return


def time_functions(fns, *, min_sample=2e-3, budget=1.0, min_repeat=5, max_repeat=200):
    """Time several zero-argument functions side by side.

    Each function is warmed up and calibrated to ``number`` calls per sample
    (a sample lasts at least ``min_sample`` seconds), then ``repeat`` samples
    are taken of each, ``repeat`` chosen so that all samples of all functions
    take about ``budget`` seconds (within [min_repeat, max_repeat]).

    The samples of one function run back to back in blocks, and the blocks
    of the functions alternate (twice when there are enough samples): the
    median is then robust both to slow drifts of the machine, which hit every
    function alike, and to what a switch costs the first sample of a block
    (cold caches). Every block (and calibration) starts once the previous
    function's thread pools have gone to sleep (``settle``): an OpenBLAS
    worker spins on a core for about 0.1 s after each call, which would
    otherwise slow the next function's whole block.

    Returns a dict name -> dict(median, min, max, number, repeat, samples),
    times in seconds per call.
    """
    fns = {k: f for k, f in fns.items() if f is not None}
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        cal = {}
        for k, f in fns.items():
            settle()
            cal[k] = _calibrate(f, min_sample)
        round_s = sum(n * t for n, t in cal.values())
        repeat = int(budget / max(round_s, 1e-9))
        repeat = max(min_repeat, min(max_repeat, repeat))
        passes = 2 if repeat >= 10 else 1
        samples = {k: [] for k in fns}
        for p in range(passes):
            for k, f in fns.items():
                number = cal[k][0]
                settle()
                for _ in range(repeat // passes + (p < repeat % passes)):
                    samples[k].append(sample(f, number))
    finally:
        if gc_was_enabled:
            gc.enable()
    return {k: {"median": statistics.median(s), "min": min(s), "max": max(s),
                "number": cal[k][0], "repeat": repeat, "samples": s}
            for k, s in samples.items()}


def prime_allocator():
    """Put the C allocator in the state of a long-running process.

    glibc's malloc serves blocks above its mmap threshold (128 KiB at start)
    with fresh mmaps, page-faulting on first touch; freeing such a block
    raises the threshold (up to 32 MiB), after which those sizes come from
    the heap. The reference allocates temporaries on every call, so without
    this its time for a (128, 512) input differs ~10x depending on what ran
    before in the process. Freeing one 30 MiB block settles it up front.
    """
    block = np.empty(30 << 20, dtype=np.uint8)
    del block



def stalled(timing):
    """Whether a ``time_functions`` result for one function spread widely:
    max/median > STALL_RATIO (a call stalled), or median/min > STALL_RATIO
    (most calls did: the median itself is a stalled time)."""
    return (timing["max"] > STALL_RATIO * timing["median"]
            or timing["median"] > STALL_RATIO * timing["min"])
