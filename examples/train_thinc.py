"""Train Thinc's standard MLP on scikit-learn's digits, on NumpyOps and on nnkernels.

    pip install "nnkernels[thinc]" scikit-learn
    python examples/train_thinc.py                  # hidden 256, 20 epochs
    python examples/train_thinc.py --hidden 32 --epochs 10

The model is the one of Thinc's MNIST introduction: ``Relu >> Relu >>
Softmax`` with dropout and the Adam optimizer, trained on mini-batches with
the gradient ``Yh - Y`` of the softmax cross-entropy. It is trained twice in
the same run, from the same seed (same initial weights, batch order and
dropout masks): on Thinc's ``NumpyOps`` and on ``NNKernelsOps``, the
nnkernels backend Thinc finds by the name "nnkernels". The two test
accuracies agree to rounding; the script prints them and the speed-up of
the training loop. ``main(argv)`` returns those numbers as a dict.
"""

import argparse
import sys
import time

import numpy as np

try:
    import thinc
    import thinc.api as thinc_api
except ImportError:
    print("This example needs Thinc: pip install 'nnkernels[thinc]'", file=sys.stderr)
    raise SystemExit(2)

import nnkernels
from train_mlp import load_digits_split   # examples/ is this script's folder

BACKENDS = ("numpy", "nnkernels")     # Thinc's CPU backend, then nnkernels'
N_CLASSES = 10


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=256, help="hidden width (default: 256)")
    p.add_argument("--epochs", type=int, default=20, help="default: 20")
    p.add_argument("--batch-size", type=int, default=128, help="default: 128")
    p.add_argument("--lr", type=float, default=0.001, help="Adam's rate (default: 0.001)")
    p.add_argument("--dropout", type=float, default=0.2, help="default: 0.2")
    p.add_argument("--seed", type=int, default=0, help="default: 0")
    p.add_argument("--quiet", action="store_true", help="print nothing")
    args = p.parse_args(argv)
    for name in ("hidden", "epochs", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 <= args.dropout < 1:
        p.error("--dropout must be in [0, 1)")
    return args


def make_model(hidden, dropout):
    """Thinc's MNIST MLP: two ReLU layers with dropout, softmax output."""
    from thinc.api import Relu, Softmax, chain

    return chain(Relu(nO=hidden, dropout=dropout), Relu(nO=hidden, dropout=dropout),
                 Softmax())


def train(backend, data, args):
    """Train on ``backend``; return (test accuracy, seconds spent in the loop)."""
    x_train, y_train, x_test, y_test = data
    onehot = np.eye(N_CLASSES, dtype=np.float32)[y_train]
    thinc_api.fix_random_seed(args.seed)      # same weights, order and masks
    with thinc_api.use_ops(backend):
        model = make_model(args.hidden, args.dropout)
        model.initialize(X=x_train[:5], Y=onehot[:5])
        optimizer = thinc_api.Adam(args.lr)
        order = np.random.default_rng(args.seed)
        elapsed = 0.0
        for _ in range(args.epochs):
            batches = np.array_split(order.permutation(len(x_train)),
                                     max(1, len(x_train) // args.batch_size))
            start = time.perf_counter()
            for idx in batches:
                guesses, backprop = model.begin_update(x_train[idx])
                backprop(guesses - onehot[idx])
                model.finish_update(optimizer)
            elapsed += time.perf_counter() - start
        predicted = model.predict(x_test).argmax(axis=1)
    return float((predicted == y_test).mean()), elapsed


def main(argv=None):
    args = parse_args(argv)
    data = load_digits_split(np.dtype(np.float32))
    results = {}
    for backend in BACKENDS:
        accuracy, seconds = train(backend, data, args)
        results[backend] = {"test_accuracy": accuracy, "seconds": seconds}
    speedup = results["numpy"]["seconds"] / results["nnkernels"]["seconds"]
    results["speedup"] = speedup
    if not args.quiet:
        n_steps = args.epochs * max(1, len(data[0]) // args.batch_size)
        print(f"Thinc {thinc.__version__} MLP 64-{args.hidden}-{args.hidden}-10, "
              f"Adam, batch {args.batch_size}, {n_steps} steps, "
              f"nnkernels {nnkernels.__version__} on BLAS {nnkernels.get_blas()}, "
              f"{nnkernels.get_num_threads()} thread(s)")
        for backend in BACKENDS:
            r = results[backend]
            print(f"  {backend:<10} test accuracy {r['test_accuracy']:.4f}   "
                  f"{1e3 * r['seconds'] / n_steps:7.3f} ms per step")
        print(f"  speed-up of the training loop: {speedup:.2f}x")
    return results


if __name__ == "__main__":
    main()
