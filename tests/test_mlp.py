"""nnkernels.mlp.MLP and the training example examples/train_mlp.py.

The MLP is checked against itself on the reference backend, against torch
autograd and torch.optim, for zero allocations per step, and through the
example's main().
"""

import sys
import tracemalloc

import numpy as np
import pytest

import nnkernels
from nnkernels import reference
from nnkernels.mlp import MLP
from _nkutil import load_example

ACTIVATIONS = ["sigmoid", "tanh", "relu", "gelu", "gelu_tanh", "silu", "leaky_relu", "elu",
               "softplus"]
# the MLP's optimizer options, by name (plain SGD is fused into the backward pass)
OPTIMIZERS = {
    "sgd": {},
    "sgd_momentum": dict(momentum=0.9, nesterov=True, weight_decay=1e-3),
    "sgd_decay": dict(weight_decay=1e-2),
    "adam": dict(optimizer="adam"),
    "adamw": dict(optimizer="adam", betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05,
                  decoupled_weight_decay=True),
}
BACKENDS = {"nnkernels": nnkernels, "reference": reference}


def _data(rng, n, n_in, n_classes, dtype=np.float64):
    x = rng.standard_normal((n, n_in)).astype(dtype)
    labels = rng.integers(0, n_classes, n)
    return x, labels


# (a) ------------------------------------------------- nnkernels == reference
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_backends_agree_step_by_step(activation, rng, threads):
    sizes = (20, 32, 16, 7)
    fast = MLP(sizes, activation, dtype=np.float64, backend=nnkernels, seed=5)
    slow = MLP(sizes, activation, dtype=np.float64, backend=reference, seed=5)
    # same seed: bit-identical initial parameters, whatever the backend
    for (w1, b1), (w2, b2) in zip(fast.params, slow.params):
        np.testing.assert_array_equal(w1, w2)
        np.testing.assert_array_equal(b1, b2)

    initial = [w.copy() for w, _ in fast.params]
    # full batches, then a short one (its own buffers), then full ones again
    batches = [_data(rng, n, 20, 7) for n in (24, 24, 9, 24, 24)]
    fast_losses = [fast.step(x, y, 0.5) for x, y in batches]
    slow_losses = [slow.step(x, y, 0.5) for x, y in batches]
    np.testing.assert_allclose(fast_losses, slow_losses, rtol=1e-10)
    for (w1, b1), (w2, b2), w0 in zip(fast.params, slow.params, initial):
        assert not np.allclose(w1, w0)          # the steps did move the weights
        np.testing.assert_allclose(w1, w2, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(b1, b2, rtol=1e-10, atol=1e-13)
    x, y = batches[0]
    np.testing.assert_allclose(fast.forward(x), slow.forward(x), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=OPTIMIZERS.keys())
@pytest.mark.parametrize("activation", ["relu", "gelu", "softplus"])
def test_backends_agree_with_every_optimizer(activation, optimizer, rng):
    sizes = (20, 32, 16, 7)
    fast = MLP(sizes, activation, dtype=np.float64, backend=nnkernels, seed=5,
               **OPTIMIZERS[optimizer])
    slow = MLP(sizes, activation, dtype=np.float64, backend=reference, seed=5,
               **OPTIMIZERS[optimizer])
    initial = [w.copy() for w, _ in fast.params]
    batches = [_data(rng, n, 20, 7) for n in (24, 24, 9, 24, 24)]
    lr = 0.01 if "adam" in optimizer else 0.2
    np.testing.assert_allclose([fast.step(x, y, lr) for x, y in batches],
                               [slow.step(x, y, lr) for x, y in batches], rtol=1e-10)
    assert fast.steps == slow.steps == len(batches)
    for (w1, b1), (w2, b2), w0 in zip(fast.params, slow.params, initial):
        assert not np.allclose(w1, w0)
        np.testing.assert_allclose(w1, w2, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(b1, b2, rtol=1e-10, atol=1e-13)


def test_backends_agree_float32(rng):
    sizes = (20, 32, 7)
    fast = MLP(sizes, "tanh", backend=nnkernels, seed=1)
    slow = MLP(sizes, "tanh", backend=reference, seed=1)
    assert fast.params[0][0].dtype == np.float32
    batches = [_data(rng, 16, 20, 7, np.float32) for _ in range(4)]
    np.testing.assert_allclose([fast.step(x, y, 0.2) for x, y in batches],
                               [slow.step(x, y, 0.2) for x, y in batches], rtol=1e-5)
    for (w1, _), (w2, _) in zip(fast.params, slow.params):
        assert w1.dtype == np.float32
        np.testing.assert_allclose(w1, w2, rtol=1e-4, atol=1e-6)


# (b) ------------------------------------------------------------ the example
@pytest.fixture(scope="module")
def example():
    return load_example("train_mlp")


def test_example_trains_and_backends_agree(example, capsys):
    pytest.importorskip("sklearn")
    epochs = 4
    result = example.main(["--epochs", str(epochs), "--hidden", "32",
                           "--dtype", "float64", "--activation", "tanh",
                           "--compare"])
    losses = result["epoch_losses"]
    assert len(losses) == epochs
    assert all(a > b for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.3 * losses[0], losses
    assert result["test_accuracy"] > 0.9
    assert 0 <= result["test_loss"] < 0.5
    # --compare: the identical loop on nnkernels.reference
    ref = result["reference"]
    np.testing.assert_allclose(losses, ref["epoch_losses"], rtol=1e-10)
    assert result["max_epoch_loss_diff"] < 1e-10
    assert ref["test_accuracy"] == result["test_accuracy"]
    assert result["speedup"] > 0 and result["step_speedup"] > 0

    out = capsys.readouterr().out
    # not a TTY: one progress line per epoch and run
    assert sum(line.startswith("epoch ") for line in out.splitlines()) == 2 * epochs
    assert f"epoch {epochs}/{epochs}" in out
    assert "max |per-epoch loss difference|" in out and "speed-up" in out
    assert "nnkernels.reference: final train loss" in out


def test_example_quiet_and_seeded(example, capsys):
    pytest.importorskip("sklearn")
    argv = ["--epochs", "1", "--hidden", "16", "--quiet", "--seed", "3"]
    first, second = example.main(argv), example.main(argv)
    assert first["epoch_losses"] == second["epoch_losses"]   # same seed, same run
    out = capsys.readouterr().out
    assert "epoch " not in out and "test accuracy" in out


def test_example_without_sklearn(example, monkeypatch, capsys):
    for name in ("sklearn", "sklearn.datasets", "sklearn.model_selection"):
        monkeypatch.setitem(sys.modules, name, None)   # import -> ImportError
    with pytest.raises(SystemExit) as exit_info:
        example.main(["--epochs", "1"])
    assert exit_info.value.code == 2
    assert "pip install scikit-learn" in capsys.readouterr().err


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_example_reaches_95_percent(example, activation, optimizer, capsys):
    pytest.importorskip("sklearn")
    result = example.main(["--activation", activation, "--optimizer", optimizer, "--quiet"])
    assert result["test_accuracy"] > 0.95, result["test_accuracy"]
    assert result["epoch_losses"][-1] < 0.1 * result["epoch_losses"][0]


@pytest.mark.parametrize("argv", [["--activation", "swish"], ["--hidden", "12,x"],
                                  ["--optimizer", "rmsprop"], ["--momentum", "x"],
                                  ["--epochs", "0"], ["--lr", "-1"],
                                  ["--dtype", "float16"]])
def test_example_rejects_bad_options(example, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        example.main(argv)
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err


# (c) ---------------------------------------------- no allocation per step
@pytest.mark.parametrize("activation, optimizer",
                         [(a, "sgd") for a in ACTIVATIONS]
                         + [("relu", "sgd_momentum"), ("gelu", "adam")])
def test_step_allocates_nothing(activation, optimizer, dtype, rng):
    n, width = 256, 256
    model = MLP((64, width, width, 10), activation, dtype=dtype, seed=0,
                **OPTIMIZERS[optimizer])
    x, labels = _data(rng, n, 64, 10, dtype)
    activation_bytes = n * width * dtype.itemsize     # one hidden buffer

    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        # The first step of a batch size makes its buffers, and tracemalloc
        # sees them (NumPy reports its data allocations): the probe works.
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        model.step(x, labels, 0.01)
        first_peak = tracemalloc.get_traced_memory()[1] - before
        assert first_peak > 2 * activation_bytes

        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        losses = [model.step(x, labels, 0.01) for _ in range(3)]
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        if not was_tracing:
            tracemalloc.stop()
    assert np.all(np.isfinite(losses))
    assert peak < activation_bytes / 16, (
        f"3 steps after warm-up allocated up to {peak} bytes "
        f"(one activation buffer is {activation_bytes})")


# (d) ----------------------------------------------- one step vs torch autograd
@pytest.mark.parametrize("backend", BACKENDS.values(), ids=BACKENDS.keys())
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_step_matches_torch_autograd(activation, backend, rng):
    torch = pytest.importorskip("torch")
    lr = 0.7
    model = MLP((12, 16, 8, 5), activation, dtype=np.float64, backend=backend, seed=2)
    # nonzero biases, so that the forward pass really adds them
    for _, b in model.params:
        b[:] = rng.uniform(-0.5, 0.5, b.shape)
    x, labels = _data(rng, 10, 12, 5)

    ws = [torch.tensor(w, requires_grad=True) for w, _ in model.params]
    bs = [torch.tensor(b, requires_grad=True) for _, b in model.params]
    g = _torch_activation(torch, activation)
    a = torch.tensor(x)
    for l, (w, b) in enumerate(zip(ws, bs)):
        a = torch.nn.functional.linear(a, w, b)
        if l < len(ws) - 1:
            a = g(a)
    torch_loss = torch.nn.functional.cross_entropy(a, torch.tensor(labels))
    torch_loss.backward()

    np.testing.assert_allclose(model.forward(x), a.detach().numpy(), rtol=1e-12, atol=1e-14)
    loss = model.step(x, labels, lr)
    assert isinstance(loss, float)
    np.testing.assert_allclose(loss, torch_loss.item(), rtol=1e-12)
    for (w, b), tw, tb in zip(model.params, ws, bs):
        assert np.abs(tw.grad.numpy()).max() > 1e-6       # a real update
        np.testing.assert_allclose(w, (tw - lr * tw.grad).detach().numpy(),
                                   rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(b, (tb - lr * tb.grad).detach().numpy(),
                                   rtol=1e-10, atol=1e-14)


def _torch_activation(torch, name):
    F = torch.nn.functional
    return {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
            "gelu": F.gelu, "gelu_tanh": lambda z: F.gelu(z, approximate="tanh"),
            "silu": F.silu, "leaky_relu": F.leaky_relu, "elu": F.elu,
            "softplus": F.softplus}[name]


def _torch_optimizer(torch, params, optimizer, lr):
    options = dict(OPTIMIZERS[optimizer])
    if options.pop("optimizer", "sgd") == "sgd":
        return torch.optim.SGD(params, lr=lr, foreach=False, **options)
    decoupled = options.pop("decoupled_weight_decay", False)
    kind = torch.optim.AdamW if decoupled else torch.optim.Adam
    if not decoupled:
        options.setdefault("weight_decay", 0.0)
    return kind(params, lr=lr, foreach=False, **options)


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=OPTIMIZERS.keys())
@pytest.mark.parametrize("activation", ["tanh", "gelu", "elu"])
def test_steps_match_torch_optim(activation, optimizer, rng):
    torch = pytest.importorskip("torch")
    lr = 0.01 if "adam" in optimizer else 0.3
    model = MLP((12, 16, 8, 5), activation, dtype=np.float64, seed=3,
                **OPTIMIZERS[optimizer])
    ws = [torch.tensor(w, requires_grad=True) for w, _ in model.params]
    bs = [torch.tensor(b, requires_grad=True) for _, b in model.params]
    opt = _torch_optimizer(torch, [p for pair in zip(ws, bs) for p in pair], optimizer, lr)
    g = _torch_activation(torch, activation)
    for _ in range(6):
        x, labels = _data(rng, 10, 12, 5)
        a = torch.tensor(x)
        for l, (w, b) in enumerate(zip(ws, bs)):
            a = torch.nn.functional.linear(a, w, b)
            if l < len(ws) - 1:
                a = g(a)
        torch_loss = torch.nn.functional.cross_entropy(a, torch.tensor(labels))
        opt.zero_grad()
        torch_loss.backward()
        opt.step()
        np.testing.assert_allclose(model.step(x, labels, lr), torch_loss.item(), rtol=1e-11)
    for (w, b), tw, tb in zip(model.params, ws, bs):
        np.testing.assert_allclose(w, tw.detach().numpy(), rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(b, tb.detach().numpy(), rtol=1e-9, atol=1e-13)


def test_evaluate_in_batches(rng):
    model = MLP((6, 9, 4), "relu", dtype=np.float64, seed=0)
    x, labels = _data(rng, 23, 6, 4)
    logits = model.forward(x).copy()
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected_loss = -log_p[np.arange(23), labels].mean()
    expected_accuracy = np.mean(logits.argmax(axis=1) == labels)
    for batch_size in (5, 23, 1024):      # 5 leaves a short last batch of 3
        loss, accuracy = model.evaluate(x, labels, batch_size=batch_size)
        np.testing.assert_allclose(loss, expected_loss, rtol=1e-12)
        assert accuracy == expected_accuracy
    with pytest.raises(ValueError, match="batch_size"):
        model.evaluate(x, labels, batch_size=0)


# (e) --------------------------------------------------- constructor arguments
def test_initialisation():
    glorot = MLP((30, 50, 10), "tanh", dtype=np.float64, seed=4)
    he = MLP((30, 50, 10), "relu", dtype=np.float64, seed=4)
    single = MLP((30, 50, 10), "tanh", dtype=np.float32, seed=4)
    assert [w.shape for w, _ in glorot.params] == [(50, 30), (10, 50)]
    assert [b.shape for _, b in glorot.params] == [(50,), (10,)]
    limit = np.sqrt(6 / (30 + 50))
    w = glorot.params[0][0]
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.9 * limit
    assert 0.8 < np.std(he.params[0][0]) / np.sqrt(2 / 30) < 1.2
    for (w64, b64), (w32, b32) in zip(glorot.params, single.params):
        assert w32.dtype == b32.dtype == np.float32
        np.testing.assert_array_equal(w32, w64.astype(np.float32))
        assert not b64.any() and not b32.any()
    other = MLP((30, 50, 10), "tanh", dtype=np.float64, seed=5)
    assert not np.array_equal(other.params[0][0], w)


@pytest.mark.parametrize("kwargs, error, name", [
    (dict(sizes=(10,)), ValueError, "sizes"),
    (dict(sizes=(10, 0, 3)), ValueError, "sizes"),
    (dict(sizes=(10, 2.5, 3)), TypeError, "sizes"),
    (dict(sizes=(10, True, 3)), TypeError, "sizes"),
    (dict(sizes=5), TypeError, "sizes"),
    (dict(activation="Sigmoid"), ValueError, "activation"),
    (dict(activation=None), ValueError, "activation"),
    (dict(activation="softmax"), ValueError, "activation"),
    (dict(dtype=np.int32), TypeError, "dtype"),
    (dict(dtype=np.float16), TypeError, "dtype"),
    (dict(dtype="no such type"), TypeError, "dtype"),
    (dict(backend=np), TypeError, "backend"),
    (dict(optimizer="rmsprop"), ValueError, "optimizer"),
    (dict(optimizer="Adam"), ValueError, "optimizer"),
    (dict(momentum=-0.1), ValueError, "momentum"),
    (dict(momentum="0.9"), TypeError, "momentum"),
    (dict(weight_decay=float("nan")), ValueError, "weight_decay"),
    (dict(nesterov=True), ValueError, "nesterov"),
    (dict(nesterov=1, momentum=0.9), TypeError, "nesterov"),
    (dict(betas=(0.9, 0.99)), ValueError, "betas"),
    (dict(optimizer="adam", betas=(0.9, 1.0)), ValueError, "betas"),
    (dict(optimizer="adam", betas=0.9), TypeError, "betas"),
    (dict(optimizer="adam", momentum=0.9), ValueError, "momentum"),
    (dict(optimizer="adam", eps=-1.0), ValueError, "eps"),
    (dict(decoupled_weight_decay=True), ValueError, "decoupled_weight_decay"),
    (dict(seed=1.5), TypeError, "seed"),
    (dict(seed=-1), ValueError, "seed"),
])
def test_constructor_rejects(kwargs, error, name):
    args = dict(sizes=(10, 8, 3))
    args.update(kwargs)
    with pytest.raises(error, match=name):
        MLP(args.pop("sizes"), **args)
