"""Train a small MLP on scikit-learn's digits with nnkernels (no download).

    python examples/train_mlp.py                       # sigmoid, 128-64 hidden, SGD
    python examples/train_mlp.py --activation relu --dtype float64
    python examples/train_mlp.py --activation gelu --optimizer adam
    python examples/train_mlp.py --compare             # same loop on nnkernels.reference too

The 1797 8x8 digit images are split 75/25 into train and test sets (fixed
split, stratified), the 64 pixel features standardised with the training
set's mean and standard deviation, and the network ``nnkernels.mlp.MLP``
trained on shuffled mini-batches by SGD (plain, or with --momentum and
--weight-decay) or Adam. ``main(argv)`` returns
the numbers it prints, as a dict.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

try:
    import nnkernels
except ImportError:  # a source checkout, not installed: use its in-place build
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import nnkernels
import nnkernels.reference
from nnkernels.mlp import MLP

ACTIVATIONS = ("sigmoid", "tanh", "relu", "gelu", "gelu_tanh", "silu", "leaky_relu", "elu",
               "softplus")
DEFAULT_LR = {"sgd": 0.5, "adam": 0.003}
SPLIT_SEED = 0          # the train/test split is the same for every --seed
TEST_FRACTION = 0.25


def _positive(kind):
    def parse(text):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def _widths(text):
    try:
        widths = tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer widths such as 128,64, got {text!r}")
    if any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"widths must be positive, got {text!r}")
    return widths


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Train an MLP on scikit-learn's digits with nnkernels.")
    p.add_argument("--activation", choices=ACTIVATIONS,
                   default="sigmoid", help="hidden-layer activation (default: sigmoid)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                   help="the update rule (default: sgd)")
    p.add_argument("--momentum", type=float, default=0.0,
                   help="SGD momentum (default: 0, plain SGD)")
    p.add_argument("--weight-decay", type=float, default=0.0,
                   help="L2 weight decay of either optimizer (default: 0)")
    p.add_argument("--hidden", type=_widths, default=(128, 64),
                   help="hidden layer widths, comma-separated (default: 128,64)")
    p.add_argument("--epochs", type=_positive(int), default=30, help="default: 30")
    p.add_argument("--batch-size", type=_positive(int), default=32, help="default: 32")
    p.add_argument("--lr", type=_positive(float), default=None,
                   help=f"learning rate (default: {DEFAULT_LR['sgd']} for SGD, "
                        f"{DEFAULT_LR['adam']} for Adam)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="default: float32")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the initial weights and of the batch order (default: 0)")
    p.add_argument("--compare", action="store_true",
                   help="run the identical loop on nnkernels.reference too and "
                        "compare losses and training time")
    p.add_argument("--quiet", action="store_true", help="print only the results")
    args = p.parse_args(argv)
    if args.lr is None:
        args.lr = DEFAULT_LR[args.optimizer]
    return args


def load_digits_split(dtype):
    """(x_train, y_train, x_test, y_test): standardised features of ``dtype``."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        print("This example needs scikit-learn for its digits data set:\n"
              "    pip install scikit-learn", file=sys.stderr)
        raise SystemExit(2)
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std[std == 0] = 1.0                     # pixels that are always blank
    return ((x_train - mean) / std).astype(dtype), y_train, \
           ((x_test - mean) / std).astype(dtype), y_test


class Progress:
    """A one-line progress bar per epoch: redrawn with \\r on a terminal,
    printed once at the end of the epoch otherwise (logs, pipes)."""

    def __init__(self, epochs, n_batches, enabled=True, stream=None):
        stream = sys.stdout if stream is None else stream
        self.epochs, self.n_batches, self.stream = epochs, n_batches, stream
        self.enabled = enabled
        self.tty = enabled and stream.isatty()
        self._drawn, self._width = 0.0, 0

    def update(self, epoch, batch, loss, accuracy, elapsed):
        done = batch == self.n_batches
        if not self.enabled or not (done or self.tty):
            return
        now = time.perf_counter()
        if not done and now - self._drawn < 0.05:   # redraw 20 times a second at most
            return
        self._drawn = now
        filled = 24 * batch // self.n_batches
        line = (f"epoch {epoch:>{len(str(self.epochs))}}/{self.epochs} "
                f"[{'#' * filled}{'.' * (24 - filled)}] {batch}/{self.n_batches}  "
                f"loss {loss:.4f}  acc {100 * accuracy:6.2f}%  {elapsed:6.2f} s")
        if self.tty:   # pad to cover a longer line drawn before
            self._width = max(self._width, len(line))
            self.stream.write("\r" + line.ljust(self._width) + ("\n" if done else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def train(model, x, y, *, epochs, batch_size, lr, seed, progress):
    """Mini-batch SGD over shuffled batches; per-epoch mean loss and accuracy."""
    n = len(x)
    n_batches = -(-n // batch_size)
    rng = np.random.default_rng([seed, 1])    # the batch order's own stream
    xs, ys = np.empty_like(x), np.empty_like(y)
    epoch_losses, epoch_accuracies = [], []
    step_time = 0.0
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        order = rng.permutation(n)
        np.take(x, order, axis=0, out=xs)       # shuffled copy, contiguous batches
        np.take(y, order, out=ys)
        loss_sum, correct = 0.0, 0
        for i in range(n_batches):
            batch = slice(i * batch_size, (i + 1) * batch_size)
            xb, yb = xs[batch], ys[batch]
            t = time.perf_counter()
            loss = model.step(xb, yb, lr)
            step_time += time.perf_counter() - t
            loss_sum += loss * len(xb)
            # the logits of this step's forward pass (before the update)
            correct += int(np.count_nonzero(model.logits.argmax(axis=1) == yb))
            seen = min((i + 1) * batch_size, n)
            progress.update(epoch, i + 1, loss, correct / seen,
                            time.perf_counter() - start)
        epoch_losses.append(loss_sum / n)
        epoch_accuracies.append(correct / n)
    return {"epoch_losses": epoch_losses, "epoch_accuracies": epoch_accuracies,
            "train_time": time.perf_counter() - start, "step_time": step_time}


def run(backend, data, args):
    x_train, y_train, x_test, y_test = data
    sizes = (x_train.shape[1], *args.hidden, 10)
    options = {"momentum": args.momentum} if args.optimizer == "sgd" else {}
    model = MLP(sizes, args.activation, optimizer=args.optimizer,
                weight_decay=args.weight_decay, dtype=args.dtype, backend=backend,
                seed=args.seed, **options)
    progress = Progress(args.epochs, -(-len(x_train) // args.batch_size),
                        enabled=not args.quiet)
    result = train(model, x_train, y_train, epochs=args.epochs,
                   batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                   progress=progress)
    result["test_loss"], result["test_accuracy"] = model.evaluate(x_test, y_test)
    result["model"] = model
    print(f"{backend.__name__}: final train loss {result['epoch_losses'][-1]:.6f}, "
        f"test loss {result['test_loss']:.4f}, "
        f"test accuracy {100 * result['test_accuracy']:.2f}%, "
        f"training {result['train_time']:.3f} s "
        f"({result['step_time']:.3f} s in MLP.step)")
    return result


def main(argv=None):
    args = parse_args(argv)
    data = load_digits_split(np.dtype(args.dtype))
    print(f"digits: {len(data[0])} train / {len(data[2])} test samples, MLP "
        f"{'-'.join(map(str, (data[0].shape[1], *args.hidden, 10)))} "
        f"{args.activation}, {args.dtype}, {args.optimizer}, {args.epochs} epochs of batch "
        f"{args.batch_size}, lr {args.lr}, seed {args.seed}")
    result = run(nnkernels, data, args)
    if args.compare:
        ref = run(nnkernels.reference, data, args)
        diff = float(np.max(np.abs(np.subtract(result["epoch_losses"],
                                               ref["epoch_losses"]))))
        result.update(reference=ref, max_epoch_loss_diff=diff,
                      speedup=ref["train_time"] / result["train_time"],
                      step_speedup=ref["step_time"] / result["step_time"])
        print(f"final train loss: nnkernels {result['epoch_losses'][-1]!r}, "
            f"reference {ref['epoch_losses'][-1]!r}")
        print(f"max |per-epoch loss difference|: {diff:.3g}")
        print(f"speed-up nnkernels vs reference: {result['speedup']:.2f}x training "
            f"time, {result['step_speedup']:.2f}x time in MLP.step")
    return result


if __name__ == "__main__":
    main()
