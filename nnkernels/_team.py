"""How many threads a kernel call gets: all of them, unless the machine is busy.

A team of OpenMP threads ends at a barrier that waits for its slowest
member.  When another process keeps a core busy, a worker can wait a whole
time slice (several milliseconds) for that core, and the caller waits with
it: on a 2-vCPU machine with a neighbour spinning on one core, 1-2% of the
threaded calls of (1024, 1024) arrays took 8-16 ms instead of 0.4 ms.

So each threaded call is timed (two clock reads).  A call that took more
than STALL_FACTOR times the fastest time per element seen for the same
kernel, and more than STALL_MIN_S, stalled; the kernels then run on one
thread for BACKOFF_FACTOR times the stall's length, and try a team again
after that.  With a busy neighbour a stall then costs a fraction of a
percent of the calls instead of one or two percent; on an idle machine, a
rare hiccup costs a short spell on one thread.  Results do not depend on
the thread count, so the switch changes timings only.  Calls below the
kernels' thread thresholds never start a team and are not timed.
"""

from time import perf_counter

from . import _dispatch

STALL_FACTOR = 5.0      # times the fastest time per element of that kernel
STALL_MIN_S = 4e-3      # a stall is at least this long (a time slice is longer)
BACKOFF_FACTOR = 50.0   # one thread for this many times the stall's length

_fastest = {}           # kernel key -> fastest seconds per element with a team
_single_until = 0.0     # perf_counter() time until which calls run on one thread
_clock = perf_counter   # replaced by the tests


def threaded_call(key, size, threshold, kernel, *args):
    """kernel(*args, n_threads): with the thread count set, or with one
    thread while backing off after a stall.  `key` names the kernel and its
    operation, `size` is the call's element count, `threshold` the count
    from which the kernel starts a team."""
    global _single_until
    n_threads = _dispatch._num_threads
    if n_threads == 1 or size < threshold:
        return kernel(*args, n_threads)
    start = _clock()
    if start < _single_until:
        return kernel(*args, 1)
    result = kernel(*args, n_threads)
    elapsed = _clock() - start
    per_element = elapsed / size
    fastest = _fastest.get(key)
    if fastest is None or per_element < fastest:
        _fastest[key] = per_element
    elif elapsed > STALL_MIN_S and per_element > STALL_FACTOR * fastest:
        _single_until = start + elapsed * (1 + BACKOFF_FACTOR)
    return result


def forget_timings():
    """Forget the fastest times (they depend on the thread count); a back-off
    in progress stays: the machine is as busy as it was."""
    _fastest.clear()


def reset():
    """Forget the timings and any back-off (for the tests)."""
    global _single_until
    _fastest.clear()
    _single_until = 0.0
