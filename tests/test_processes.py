"""Processes: fork, multiprocessing's start methods, and memory limits.

Each case runs in a fresh interpreter under a timeout, so that a hang (a
child waiting on OpenMP threads that fork did not copy, a team waiting at a
barrier for a thread that failed to allocate) fails the test instead of the
suite, and a crash shows as a signal in the return code.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import nnkernels as nk

TIMEOUT = 120

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork")
needs_openmp = pytest.mark.skipif(not nk.build_info()["openmp"],
                                  reason="a build without OpenMP has no threads")
# a sanitizer runtime reserves terabytes of shadow address space and fails
# its own allocations under an address-space limit
no_sanitizer = pytest.mark.skipif("-fsanitize" in nk.build_info()["compile_args"],
                                  reason="RLIMIT_AS and a sanitizer runtime do not mix")

# Every threaded kernel family on arrays large enough to start a team.
CALLS = textwrap.dedent("""
    import numpy as np, nnkernels as nk, nnkernels.reference
    rng = np.random.default_rng(0)
    z = rng.standard_normal((512, 1000)).astype(np.float32)
    labels = rng.integers(0, 1000, 512)
    def run_kernels():
        p = nk.softmax(z)
        assert np.allclose(p.sum(axis=1), 1, atol=1e-5)
        assert np.allclose(nk.sigmoid(z), 1 / (1 + np.exp(-z.astype(np.float64))), atol=1e-6)
        loss, grad = nk.softmax_cross_entropy(z, labels)
        expected = nk.reference.softmax_cross_entropy(z.astype(np.float64), labels)[0]
        assert abs(loss - expected) < 1e-4 * abs(expected), (loss, expected)
        loss, _ = nk.mse(z, np.zeros_like(z))
        assert abs(loss - np.mean(z.astype(np.float64) ** 2)) < 1e-5
        gw, gb, gx = nk.dense_backward(z[:, :64], z[:, :32], z[:64, :32])
        assert np.allclose(gw, z[:, :64].T @ z[:, :32], rtol=1e-4, atol=1e-3)
        return float(loss)
""")


def run_python(code, timeout=TIMEOUT):
    """Run `code` in a fresh interpreter; fail on a timeout or a non-zero exit."""
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                              text=True, timeout=timeout, cwd=os.path.dirname(__file__))
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"hung: no exit within {timeout} s\nstdout: {e.stdout}\nstderr: {e.stderr}")
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@needs_fork
@needs_openmp
def test_forked_child_runs_every_kernel_after_the_parent_used_threads():
    out = run_python(CALLS + textwrap.dedent("""
        import os, warnings
        nk.set_num_threads(2)
        run_kernels()                       # the parent's OpenMP team exists now
        pid = os.fork()
        if pid == 0:
            try:
                run_kernels()
                assert nk.get_num_threads() == 1
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    nk.set_num_threads(2)   # asked again: still one thread, and told so
                assert nk.get_num_threads() == 1
                assert any("fork" in str(w.message) for w in caught), caught
                run_kernels()
            except BaseException as e:
                print("child failed:", repr(e), flush=True)
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        assert nk.get_num_threads() == 2    # the parent keeps its threads
        run_kernels()
        print("ok")
    """))
    assert out.strip().endswith("ok")


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_multiprocessing_pool_runs_kernels(method, tmp_path):
    import multiprocessing
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method!r} start method here")
    # a module the workers can import by name (spawn pickles functions by name)
    (tmp_path / "nk_worker.py").write_text(CALLS + textwrap.dedent("""
        def work(seed):
            return run_kernels() + seed
    """))
    out = run_python(textwrap.dedent(f"""
        import multiprocessing, sys
        sys.path.insert(0, {str(tmp_path)!r})
        import nk_worker
        if __name__ == "__main__":
            import nnkernels as nk
            nk.set_num_threads(2)
            first = nk_worker.run_kernels()     # threads used before the pool starts
            with multiprocessing.get_context({method!r}).Pool(2) as pool:
                got = pool.map(nk_worker.work, range(4))
            assert got == [first + s for s in range(4)], (got, first)
            print("ok")
    """))
    assert out.strip().endswith("ok")


# Under an address-space limit: a call either succeeds or raises MemoryError;
# it never hangs, crashes, or aborts in the OpenMP runtime.
LIMITED = CALLS + textwrap.dedent("""
    import resource
    nk.set_num_threads(2)
    run_kernels()       # start the team while memory is free: later calls reuse it

    def vm_bytes():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")

    import os
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    n = 2 ** 24                    # a row of 64 MiB (float32), 2 rows: a team of 2
    cases = {
        # non-contiguous rows: scratch rows for every operand and thread
        "softmax_F": lambda: nk.softmax(np.zeros((2, n), np.float32, order="F")),
        "log_softmax_F": lambda: nk.log_softmax(np.zeros((2, n), np.float32, order="F")),
        "softmax_backward_F": lambda: nk.softmax_backward(
            np.zeros((2, n), np.float32, order="F"), np.zeros((2, n), np.float32, order="F")),
        "cross_entropy_F": lambda: nk.softmax_cross_entropy(
            np.zeros((2, n), np.float32, order="F"), np.array([0, 1])),
        "cross_entropy_probs_F": lambda: nk.softmax_cross_entropy(
            np.zeros((2, n), np.float32, order="F"), np.zeros((2, n), np.float32, order="F")),
        # contiguous rows and the element-wise kernels
        "softmax": lambda: nk.softmax(np.zeros((2, n), np.float32)),
        "cross_entropy": lambda: nk.softmax_cross_entropy(
            np.zeros((2, n), np.float32), np.array([0, 1])),
        "sigmoid": lambda: nk.sigmoid(np.zeros((2, n), np.float32)),
        "relu_backward": lambda: nk.relu_backward(np.zeros((2, n), np.float32),
                                                  np.zeros((2, n), np.float32)),
        "mse": lambda: nk.mse(np.zeros(2 * n, np.float32), np.zeros(2 * n, np.float32)),
        "bce": lambda: nk.binary_cross_entropy(np.full((2, n), .5, np.float32),
                                               np.zeros((2, n), np.float32)),
    }
    row = 4 * n
    outcomes = {}
    for name, call in cases.items():
        for extra_rows in range(0, 24, 2):
            # headroom for the arrays, not always for the scratch
            limit = vm_bytes() + extra_rows * row
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
            try:
                call()
                result = "ok"
            except MemoryError:
                result = "MemoryError"
            finally:
                resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
            outcomes.setdefault(name, set()).add(result)
        run_kernels()    # and the kernels work afterwards
    for name, seen in outcomes.items():
        # each case met both a limit too tight and one that fits
        assert seen == {"ok", "MemoryError"}, (name, seen)
    print("ok")
""")


@needs_openmp
@no_sanitizer
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc")
def test_memory_limit_raises_never_hangs():
    out = run_python(LIMITED, timeout=300)
    assert out.strip().endswith("ok")


@needs_openmp
@no_sanitizer
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc")
def test_too_many_threads_for_the_address_space_is_an_exception():
    # each thread needs a stack; libgomp would print "Thread creation failed"
    # and exit the process
    out = run_python(textwrap.dedent("""
        import resource, numpy as np, nnkernels as nk
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, hard))
        try:
            nk.set_num_threads(1024)
        except MemoryError as e:
            assert "1024" in str(e), e
            print("refused:", e)
        else:
            nk.softmax(np.zeros((1024, 1024), np.float32))    # it had room after all
        nk.set_num_threads(2)
        assert np.allclose(nk.softmax(np.zeros((1024, 64), np.float32)), 1 / 64)
        print("ok")
    """))
    assert out.strip().endswith("ok")
