"""Tail latency of the threaded kernels, with an idle and with a busy neighbour.

    python bench/tail_latency.py [--calls 2000] [--json FILE]

For each kernel and shape, 2,000 back-to-back calls are timed one by one at
1 and at 2 OpenMP threads, first with the machine otherwise idle, then with
a busy neighbour (a process spinning on another core).  The table gives
p50, p99 and the maximum per call; the rule it checks is p99 at 2 threads
with the busy neighbour <= 3x the 1-thread p99 with the same neighbour
(a team of two must not leave the caller waiting on a descheduled worker).
"""

import argparse
import json
import multiprocessing
import os
import time

import numpy as np

import nnkernels as nk

SHAPES = [(128, 512), (1024, 1024), (8192, 4096)]


def kernels(shape, rng):
    z = rng.standard_normal(shape).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    a = np.maximum(z, 0)
    labels = rng.integers(0, shape[1], shape[0])
    out = np.empty_like(z)
    return {
        "relu_backward": lambda: nk.relu_backward(g, a, out=out),
        "sigmoid": lambda: nk.sigmoid(z, out=out),
        "softmax": lambda: nk.softmax(z, out=out),
        "softmax_cross_entropy": lambda: nk.softmax_cross_entropy(z, labels, out=out),
        "mse": lambda: nk.mse(z, g, out=out),
    }


def spin(stop):
    """The busy neighbour: spin on the last core until told to stop."""
    try:
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    except (AttributeError, OSError):
        pass
    while not stop.is_set():
        pass


def percentiles(fn, calls):
    fn()
    times = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - t0
    return {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99)),
            "max": float(times.max())}


def fmt(s):
    return f"{s * 1e6:9.1f}" if s < 1e-2 else f"{s * 1e3:7.1f}ms"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--shapes", default=None, help="e.g. 128x512,1024x1024")
    p.add_argument("--kernels", default=None, help="comma-separated names")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    shapes = SHAPES if not args.shapes else [
        tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    rng = np.random.default_rng(0)
    rows, results = [], []
    ctx = multiprocessing.get_context("spawn")
    for neighbour in ("idle", "busy"):
        stop = ctx.Event()
        spinner = None
        if neighbour == "busy":
            spinner = ctx.Process(target=spin, args=(stop,), daemon=True)
            spinner.start()
            time.sleep(0.5)
        try:
            for shape in shapes:
                calls = args.calls if shape[0] * shape[1] <= 2 ** 21 else max(args.calls // 10, 50)
                for name, fn in kernels(shape, rng).items():
                    if args.kernels and name not in args.kernels.split(","):
                        continue
                    entry = {"kernel": name, "shape": shape, "neighbour": neighbour,
                             "calls": calls}
                    for threads in (1, 2):
                        nk.set_num_threads(threads)
                        entry[f"t{threads}"] = percentiles(fn, calls)
                    entry["p99_ratio"] = entry["t2"]["p99"] / entry["t1"]["p99"]
                    results.append(entry)
                    t1, t2 = entry["t1"], entry["t2"]
                    rows.append(f"{name:22s} {str(shape):13s} {neighbour:5s} "
                                f"{fmt(t1['p50'])} {fmt(t1['p99'])} {fmt(t1['max'])}  "
                                f"{fmt(t2['p50'])} {fmt(t2['p99'])} {fmt(t2['max'])}  "
                                f"{entry['p99_ratio']:5.2f}")
                    print(rows[-1], flush=True)
        finally:
            stop.set()
            if spinner is not None:
                spinner.join()
    print(f"\n{'kernel':22s} {'shape':13s} {'nbr':5s} {'1T p50':>9s} {'1T p99':>9s} "
          f"{'1T max':>9s}  {'2T p50':>9s} {'2T p99':>9s} {'2T max':>9s}  p99 2T/1T  (us)")
    print("\n".join(rows))
    worst = max(r["p99_ratio"] for r in results if r["neighbour"] == "busy")
    print(f"\nbusy neighbour: worst p99(2 threads) / p99(1 thread) = {worst:.2f} (rule: <= 3)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
