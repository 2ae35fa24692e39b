"""Synchronous data-parallel SGD on a dask.distributed cluster, with nnkernels.

    python examples/train_dask.py --workers 2 --check     # a local cluster of 2 processes
    python examples/train_dask.py --scheduler tcp://10.0.0.5:8786 --workers 8
    python examples/train_dask.py --activation relu --dtype float32 --steps 500

An MLP (``nnkernels.mlp.MLP``'s layers, activations and initial weights) is
trained on scikit-learn's digits, split as in examples/train_mlp.py. The
training set is cut into one shard per worker, sent to that worker once and
kept there by a Dask actor. Every step takes a global batch of
``--batch-size`` samples, each shard giving its part of it; each worker
computes with dense_forward, softmax_cross_entropy and dense_backward the sum
over its part of the per-sample parameter gradients, divided by the global
batch size. The driver adds the workers' sums in shard order (so a run is
deterministic), applies one SGD step (sgd_update) and sends the new
parameters to every worker with the next step's call. The sum of the shards'
sums is the full batch's mean gradient, so the run is the one-process run up
to the order of the floating-point additions.

Every run also takes the same steps in one process (the same global
batches, each whole batch at once through ``MLP.step``, no Dask), first,
while no cluster shares the cores, to time them and to compare the
parameters. ``--check`` makes the comparison a test:
exit status 1 when the largest parameter difference exceeds ``TOLERANCE`` of
the dtype; float64 is then the default dtype. Needs
``pip install "nnkernels[distributed]"``. ``main(argv)`` returns the numbers
it prints, as a dict.
"""

import argparse
import importlib.util
import sys
import time

import numpy as np

import nnkernels
from nnkernels.mlp import MLP
from train_mlp import _widths, load_digits_split     # examples/ is this script's folder

ACTIVATIONS = ("sigmoid", "tanh", "relu", "gelu", "gelu_tanh", "silu", "leaky_relu", "elu",
               "softplus")
N_CLASSES = 10
# The largest |parameter difference| between the Dask run and the one-process
# run that --check accepts. The runs differ only in the order of the gradient
# additions, a few unit roundoffs u of the dtype per step, which the training
# carries on. In float64 (u = 2**-53) they stay many orders of magnitude below
# 1e-10 while the training is stable. float32's bound is the same number of
# roundoffs, 1e-10 / 2**-53 = 9.0e5 u with u = 2**-24: 1e-10 * 2**29 = 0.054.
# It has to be that loose because a relu-like activation's derivative jumps
# at 0: a pre-activation that rounding puts on the other side of 0 changes
# its sample's gradient by a whole term, far more than a rounding error, and
# in float32 that happens within a few hundred steps. float64 is the check.
TOLERANCE = {"float64": 1e-10, "float32": 1e-10 * 2.0 ** 29}


# ------------------------------------------------------------------- options
def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            expected = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"must be positive and finite, got {text}")
        return value
    return parse


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Synchronous data-parallel SGD of an MLP on scikit-learn's digits "
                    "over a dask.distributed cluster, with nnkernels.")
    p.add_argument("--workers", type=_positive(int), default=2,
                   help="worker processes of the local cluster, or how many workers of "
                        "--scheduler's cluster to wait for and use; one data shard each "
                        "(default: 2)")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786 "
                        "(default: start a local cluster)")
    p.add_argument("--steps", type=_positive(int), default=200, help="SGD steps (default: 200)")
    p.add_argument("--batch-size", type=_positive(int), default=256,
                   help="global batch per step, split across the shards (default: 256)")
    p.add_argument("--lr", type=_positive(float), default=0.5,
                   help="learning rate (default: 0.5)")
    p.add_argument("--hidden", type=_widths, default=(128, 64),
                   help="hidden layer widths, comma-separated (default: 128,64)")
    p.add_argument("--activation", choices=ACTIVATIONS, default="tanh",
                   help="hidden-layer activation (default: tanh)")
    p.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="default: float64 with --check, float32 otherwise")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the initial weights and of the batches (default: 0)")
    p.add_argument("--timeout", type=_positive(float), default=60.0,
                   help="seconds to wait for the cluster, its workers and each step "
                        "before giving up (default: 60)")
    p.add_argument("--check", action="store_true",
                   help="exit with status 1 if the parameters differ from the one-process "
                        "run's by more than the dtype's tolerance (1e-10 in float64)")
    p.add_argument("--quiet", action="store_true", help="print only the results")
    args = p.parse_args(argv)
    if args.dtype is None:
        args.dtype = "float64" if args.check else "float32"
    if args.seed < 0:
        p.error(f"--seed must be non-negative, got {args.seed}")
    if args.batch_size < args.workers:
        p.error(f"--batch-size ({args.batch_size}) must be at least --workers "
                f"({args.workers}): every shard takes at least one sample per step")
    return args


# ---------------------------------------------------------------------- data
def batch_plan(shard_sizes, batch_size, steps, seed):
    """The rows every shard contributes to every step's global batch.

    Parameters
    ----------
    shard_sizes : list of int
        How many samples each shard holds.
    batch_size : int
        The global batch size.
    steps : int
        How many steps to plan.
    seed : int
        The seed of the shards' shuffles (shard k draws from its own stream).

    Shard k gives ``batch_size // n_shards`` rows, one more for the first
    ``batch_size % n_shards`` shards, drawn without replacement from its own
    shuffled order; when fewer rows than that are left, it reshuffles (the
    remainder of that pass is skipped). So every global batch has exactly
    ``batch_size`` samples.

    Returns
    -------
    plan : list of list of ndarray
        ``plan[step][k]``: indices into shard k, int64.
    """
    n_shards = len(shard_sizes)
    takes = [batch_size // n_shards + (k < batch_size % n_shards) for k in range(n_shards)]
    for k, (size, take) in enumerate(zip(shard_sizes, takes)):
        if take > size:
            raise ValueError(f"shard {k} holds {size} samples but each step needs {take} "
                             f"of it: lower --batch-size or --workers")
    plan = [[] for _ in range(steps)]
    for k, (size, take) in enumerate(zip(shard_sizes, takes)):
        rng = np.random.default_rng([seed, 1, k])    # shard k's own stream
        order, position = rng.permutation(size), 0
        for step in range(steps):
            if position + take > size:
                order, position = rng.permutation(size), 0
            plan[step].append(order[position:position + take])
            position += take
    return plan


# ---------------------------------------------------------------- parameters
def parameter_shapes(sizes):
    """[(w shape, b shape)] per layer, w of shape (out, in)."""
    return [((fan_out, fan_in), (fan_out,)) for fan_in, fan_out in zip(sizes[:-1], sizes[1:])]


def pack(params):
    """One flat vector of every layer's w then b, so that one broadcast and one
    reduction move all of them."""
    return np.concatenate([a.ravel() for layer in params for a in layer])


def unpack(flat, shapes):
    """[(w, b)] views into ``flat`` (no copy)."""
    layers, start = [], 0
    for shape_w, shape_b in shapes:
        views = []
        for shape in (shape_w, shape_b):
            size = int(np.prod(shape))
            views.append(flat[start:start + size].reshape(shape))
            start += size
        layers.append(tuple(views))
    return layers


# ------------------------------------------------------ one worker's gradient
def shard_gradient_sum(flat_params, x_shard, y_shard, rows, shapes, activation, batch_size):
    """Σ over this shard's rows of the per-sample parameter gradients, / batch_size.

    Runs on a worker. The output layer's gradient is softmax_cross_entropy's
    summed one, P − Y, times 1 / batch_size (the global batch's, not this
    shard's): the 1/N of the mean lives in the loss gradient, so the shards'
    results add up to the full batch's mean gradient.

    Parameters
    ----------
    flat_params : ndarray
        Every layer's w and b, as :func:`pack` lays them out.
    x_shard, y_shard : ndarray
        This worker's shard of the training set.
    rows : ndarray of int
        The shard's rows in this step's global batch.
    shapes : list
        :func:`parameter_shapes` of the network.
    activation : str
        The hidden layers' activation.
    batch_size : int
        The global batch size N.

    Returns
    -------
    grad : ndarray
        The gradient sum, laid out as `flat_params`.
    loss_sum : float
        Σ over the rows of the cross-entropy (before the update).
    seconds : float
        How long the computation took on the worker.
    """
    start = time.perf_counter()
    nk = nnkernels
    x, labels = x_shard[rows], y_shard[rows]
    params = unpack(flat_params, shapes)
    grad = np.empty_like(flat_params)
    grads = unpack(grad, shapes)
    last = len(params) - 1

    # forward: z = a_prev wᵀ + b, a = g(z); the output layer's z are the logits.
    # Both z and a are kept: dense_backward takes g' from a for sigmoid, tanh
    # and relu, from z for the others.
    inputs, zs, acts = [], [], []
    a = x
    for l, (w, b) in enumerate(params):
        inputs.append(a)
        if l == last:
            a = nk.dense_forward(a, w, b, None)
            zs.append(None)
        else:
            z = np.empty((len(x), w.shape[0]), x.dtype)
            a = nk.dense_forward(a, w, b, activation, z_out=z)
            zs.append(z)
        acts.append(a)

    loss_sum, grad_a = nk.softmax_cross_entropy(a, labels, reduction="sum")   # P − Y
    grad_a *= 1.0 / batch_size                   # the global batch's 1/N

    # backward: grad_w = grad_zᵀ a_prev, grad_b = Σ_rows grad_z, written into
    # their place in `grad`; grad_x (the layer below's grad_a) except for layer 0
    for l in range(last, -1, -1):
        hidden = l != last
        _, _, grad_a = nk.dense_backward(
            grad_a, inputs[l], params[l][0],
            acts[l] if hidden else None, activation if hidden else None,
            z=zs[l], need_input_grad=l > 0, out=(*grads[l], None))
    return grad, float(loss_sum), time.perf_counter() - start


# -------------------------------------------------------------- the Dask run
class ShardWorker:
    """One worker's part of the training: its shard, kept between the steps.

    Lives on a worker as a Dask actor: the driver calls its methods directly,
    not through the scheduler, whose batched messages would add several
    milliseconds to every step (docs/distributed.md has the measurements).
    nnkernels runs on one thread there, so that the worker processes do not
    oversubscribe the cores between them.
    """

    def __init__(self, x_shard, y_shard, shapes, activation, batch_size):
        nnkernels.set_num_threads(1)
        self.x, self.y = x_shard, y_shard
        self.shapes, self.activation, self.batch_size = shapes, activation, batch_size

    def gradient_sum(self, flat_params, rows):
        """:func:`shard_gradient_sum` of this shard's ``rows``."""
        return shard_gradient_sum(flat_params, self.x, self.y, rows, self.shapes,
                                  self.activation, self.batch_size)

    def threads(self):
        """nnkernels' thread count on this worker."""
        return nnkernels.get_num_threads()


def connect(args):
    """(client, cluster): a local cluster of ``--workers`` processes with one
    thread each, or a client of ``--scheduler`` (cluster None). The client
    talks to the workers directly (the actors' calls skip the scheduler)."""
    from distributed import Client, LocalCluster

    if args.scheduler is not None:
        return Client(args.scheduler, timeout=args.timeout, direct_to_workers=True), None
    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    try:
        return Client(cluster, timeout=args.timeout, direct_to_workers=True), cluster
    except BaseException:
        cluster.close()
        raise


def train_dask(client, x_train, y_train, shard_rows, plan, initial, shapes, args,
               progress):
    """The synchronous data-parallel SGD run; returns its parameters and timings.

    Shard k, the rows ``shard_rows[k]`` of the training set, goes to the k-th
    worker in address order; ``plan`` is :func:`batch_plan`'s.

    The timings are means over the steps after the first (which also opens
    the connections): the whole step as the driver sees it, the gradient
    computation on the slowest and on the average worker, and the reduction
    and update on the driver; the rest of the step is communication.
    """
    client.wait_for_workers(args.workers, timeout=args.timeout)
    workers = sorted(client.scheduler_info()["workers"])[:len(shard_rows)]
    # each shard goes to its worker once; the steps send only parameters and row indices
    actors = []
    for rows, address in zip(shard_rows, workers):
        x_shard, y_shard = client.scatter([x_train[rows], y_train[rows]], workers=[address],
                                          hash=False)
        actor_future = client.submit(ShardWorker, x_shard, y_shard, shapes, args.activation,
                                     args.batch_size, workers=[address],
                                     allow_other_workers=False, actor=True, pure=False)
        actors.append(actor_future.result(timeout=args.timeout))
    threads = [actor.threads().result(timeout=args.timeout) for actor in actors]

    params = initial.copy()
    losses = []
    timing = dict.fromkeys(("step", "worker_max", "worker_mean", "reduce_update"), 0.0)
    for step, rows in enumerate(plan, 1):
        t0 = time.perf_counter()
        # the parameters and this step's rows to every worker; each call has
        # sent them by the time its result is in, before the in-place update
        calls = [actor.gradient_sum(params, r) for actor, r in zip(actors, rows)]
        results = [call.result(timeout=args.timeout) for call in calls]
        t1 = time.perf_counter()
        # the reduction, in shard order: the same sums every run
        grad = results[0][0].copy()
        for shard_grad, _, _ in results[1:]:
            grad += shard_grad
        nnkernels.sgd_update(params, grad, lr=args.lr)
        t2 = time.perf_counter()

        losses.append(sum(loss for _, loss, _ in results) / args.batch_size)
        if step > 1 or len(plan) == 1:
            worker_seconds = [seconds for _, _, seconds in results]
            timing["step"] += t2 - t0
            timing["worker_max"] += max(worker_seconds)
            timing["worker_mean"] += sum(worker_seconds) / len(worker_seconds)
            timing["reduce_update"] += t2 - t1
        progress(step, losses[-1])
    timed_steps = max(1, len(plan) - 1)
    for key in timing:
        timing[key] /= timed_steps
    return {"params": params, "losses": losses, "timing": timing, "workers": workers,
            "worker_threads": threads}


# ------------------------------------------------------- the one-process run
def train_one_process(x_train, y_train, plan, shard_rows, model, lr):
    """The same steps in this process: each global batch (the shards' rows in
    shard order) at once through ``model.step``. The time per step, a mean
    over the steps after the first as for the Dask run, includes gathering
    the batch, as a worker's includes gathering its part."""
    seconds, losses = 0.0, []
    for step, rows in enumerate(plan, 1):
        t = time.perf_counter()
        batch = np.concatenate([shard[r] for shard, r in zip(shard_rows, rows)])
        losses.append(model.step(x_train[batch], y_train[batch], lr))
        if step > 1 or len(plan) == 1:
            seconds += time.perf_counter() - t
    return {"params": pack(model.params), "losses": losses,
            "step_time": seconds / max(1, len(plan) - 1)}


def _progress(steps, enabled):
    every = max(1, steps // 10)
    start = time.perf_counter()

    def report(step, loss):
        if enabled and (step % every == 0 or step == steps):
            print(f"step {step:>{len(str(steps))}}/{steps}  loss {loss:.4f}  "
                  f"{time.perf_counter() - start:6.2f} s", flush=True)
    return report


def main(argv=None):
    args = parse_args(argv)
    if any(importlib.util.find_spec(m) is None for m in ("distributed", "sklearn")):
        print("This example needs Dask's distributed scheduler and scikit-learn:\n"
              '    pip install "nnkernels[distributed]"', file=sys.stderr)
        raise SystemExit(2)
    dtype = np.dtype(args.dtype)
    x_train, y_train, x_test, y_test = load_digits_split(dtype)
    sizes = (x_train.shape[1], *args.hidden, N_CLASSES)
    shapes = parameter_shapes(sizes)
    # MLP's initial weights, the same for both runs
    initial = pack(MLP(sizes, args.activation, dtype=dtype, seed=args.seed).params)
    shard_rows = np.array_split(np.arange(len(x_train)), args.workers)
    shard_sizes = [len(rows) for rows in shard_rows]
    try:
        plan = batch_plan(shard_sizes, args.batch_size, args.steps, args.seed)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"digits: {len(x_train)} train / {len(x_test)} test samples, MLP "
          f"{'-'.join(map(str, sizes))} {args.activation}, {args.dtype}, {args.steps} SGD "
          f"steps of global batch {args.batch_size}, lr {args.lr}, seed {args.seed}; "
          f"{args.workers} shards of {'/'.join(map(str, shard_sizes))} samples", flush=True)

    # the one-process run first, timed while no cluster shares the cores
    model = MLP(sizes, args.activation, dtype=dtype, seed=args.seed)
    one = train_one_process(x_train, y_train, plan, shard_rows, model, args.lr)
    one["test_loss"], one["test_accuracy"] = model.evaluate(x_test, y_test)

    client = cluster = None
    try:
        client, cluster = connect(args)
        dask_run = train_dask(client, x_train, y_train, shard_rows, plan, initial, shapes,
                              args, _progress(args.steps, not args.quiet))
    except (OSError, TimeoutError) as e:   # no scheduler there, too few workers, a lost step
        raise SystemExit(f"error: the Dask run failed: {type(e).__name__}: {e}") from None
    finally:
        if client is not None:
            client.close(timeout=args.timeout)
        if cluster is not None:
            cluster.close(timeout=args.timeout)
    where = (f"the cluster of {args.scheduler}" if cluster is None else
             f"a local cluster of {args.workers} processes")

    for (w, b), (w_dask, b_dask) in zip(model.params, unpack(dask_run["params"], shapes)):
        w[...], b[...] = w_dask, b_dask            # evaluate the Dask run's parameters
    test_loss, test_accuracy = model.evaluate(x_test, y_test)
    max_diff = float(np.max(np.abs(dask_run["params"] - one["params"])))
    tolerance = TOLERANCE[args.dtype]

    timing = dask_run["timing"]
    communication = timing["step"] - timing["worker_max"] - timing["reduce_update"]
    result = {
        "test_accuracy": test_accuracy, "test_loss": test_loss,
        "losses": dask_run["losses"], "params": dask_run["params"],
        "workers": dask_run["workers"], "worker_threads": dask_run["worker_threads"],
        "shard_sizes": shard_sizes,
        "dask_step_time": timing["step"], "worker_compute_time": timing["worker_max"],
        "worker_mean_compute_time": timing["worker_mean"],
        "reduce_update_time": timing["reduce_update"], "communication_time": communication,
        "overhead_fraction": 1.0 - timing["worker_max"] / timing["step"],
        "one_process_step_time": one["step_time"], "one_process_losses": one["losses"],
        "one_process_test_accuracy": one["test_accuracy"],
        "one_process_threads": nnkernels.get_num_threads(),
        "max_param_diff": max_diff, "tolerance": tolerance,
    }
    ms = 1e3
    print(f"test accuracy {100 * test_accuracy:.2f}% (one process: "
          f"{100 * one['test_accuracy']:.2f}%), final train loss {result['losses'][-1]:.6f}")
    print(f"time per step: dask {ms * timing['step']:.3f} ms on {where} "
          f"({'/'.join(map(str, result['worker_threads']))} nnkernels threads), "
          f"one process {ms * one['step_time']:.3f} ms "
          f"({result['one_process_threads']} thread{'s' * (result['one_process_threads'] != 1)})")
    print(f"  of the dask step: gradients on the workers {ms * timing['worker_max']:.3f} ms "
          f"(the slowest; mean {ms * timing['worker_mean']:.3f} ms), reduction and update "
          f"{ms * timing['reduce_update']:.3f} ms, communication {ms * communication:.3f} ms: "
          f"{100 * result['overhead_fraction']:.1f}% of the step is not the gradients")
    print(f"max |parameter difference| dask vs one process: {max_diff:.3g} "
          f"(tolerance {tolerance:.3g}, {args.dtype})")
    if args.check and not max_diff <= tolerance:
        print(f"check failed: {max_diff:.3g} > {tolerance:.3g}", file=sys.stderr)
        raise SystemExit(1)
    return result


if __name__ == "__main__":
    main()
