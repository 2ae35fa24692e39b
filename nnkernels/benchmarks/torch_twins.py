"""The PyTorch twin of every benchmarked kernel, for ``--compare torch``.

Each twin is a setup function ``twin(torch, *args) -> fn``, named after its
kernel: ``args`` are the kernel's inputs with the arrays turned into tensors
sharing their memory, and ``fn()`` runs PyTorch's fastest equivalent once.
Element-wise ops write into a preallocated output (``out=``) as nnkernels
does; the losses run forward + autograd backward; the dense backward runs
autograd's ops explicitly into preallocated outputs, checked once against
autograd itself; the training step is ``nn.Sequential`` + autograd +
``optim.SGD``; the optimizer updates are ``torch.optim`` steps on a
parameter sharing the array's memory. Nothing here imports torch: the caller passes the module in
(``import_torch``).
"""

__all__ = [
    "import_torch",
    "sigmoid", "relu", "sigmoid_backward", "tanh_backward", "relu_backward",
    "tanh", "gelu", "gelu_backward", "gelu_tanh", "gelu_tanh_backward", "silu", "silu_backward",
    "leaky_relu", "leaky_relu_backward", "elu", "elu_backward", "softplus", "softplus_backward",
    "softmax", "log_softmax", "softmax_backward",
    "softmax_cross_entropy", "sigmoid_binary_cross_entropy", "binary_cross_entropy", "mse",
    "dense_forward", "dense_backward", "mlp_step",
    "adam_update", "adam_update_foreach", "adam_update_amsgrad", "sgd_update",
]


def import_torch():
    """(torch module or None, note)."""
    try:
        import torch
    except Exception as exc:  # ImportError, or a broken install
        return None, f"torch is not importable ({type(exc).__name__}: {exc}); no torch columns"
    return torch, ""


def _torch_out(op):
    """PyTorch op writing into a preallocated output like the first tensor."""
    def setup(torch, first, *rest):
        out = torch.empty_like(first)
        return lambda: op(torch, first, *rest, out)
    return setup


def _torch_autograd(loss):
    """PyTorch loss forward + backward (autograd), returning (loss, grad)."""
    def setup(torch, x, *rest):
        x = x.detach().requires_grad_(True)
        F = torch.nn.functional
        grad = torch.autograd.grad

        def run():
            value = loss(F, x, *rest)
            return value, grad(value, x)[0]
        return run
    return setup


sigmoid = _torch_out(lambda torch, z, o: torch.sigmoid(z, out=o))
# torch.relu has no out=; clamp_min is the same function (NaN included) and is
# PyTorch's fastest way to write relu into an existing tensor
relu = _torch_out(lambda torch, z, o: torch.clamp_min(z, 0, out=o))
# grad ⊙ g'(a) into o, as autograd computes it, by activation
_TORCH_ACT_BW = {
    "sigmoid": lambda torch, g, a, o: torch.ops.aten.sigmoid_backward.grad_input(
        g, a, grad_input=o),
    "tanh": lambda torch, g, a, o: torch.ops.aten.tanh_backward.grad_input(g, a, grad_input=o),
    "relu": lambda torch, g, a, o: torch.ops.aten.threshold_backward.grad_input(
        g, a, 0, grad_input=o),
}
sigmoid_backward = _torch_out(_TORCH_ACT_BW["sigmoid"])
tanh_backward = _torch_out(_TORCH_ACT_BW["tanh"])
relu_backward = _torch_out(_TORCH_ACT_BW["relu"])
# the activations whose derivative takes z: aten's out= forms and the backward
# ops autograd runs, with torch.nn.functional's defaults
tanh = _torch_out(lambda torch, z, o: torch.tanh(z, out=o))
gelu = _torch_out(lambda torch, z, o: torch.ops.aten.gelu.out(z, approximate="none", out=o))
gelu_backward = _torch_out(lambda torch, g, z, o: torch.ops.aten.gelu_backward.grad_input(
    g, z, approximate="none", grad_input=o))
gelu_tanh = _torch_out(lambda torch, z, o: torch.ops.aten.gelu.out(z, approximate="tanh", out=o))
gelu_tanh_backward = _torch_out(lambda torch, g, z, o: torch.ops.aten.gelu_backward.grad_input(
    g, z, approximate="tanh", grad_input=o))
silu = _torch_out(lambda torch, z, o: torch.ops.aten.silu.out(z, out=o))
silu_backward = _torch_out(lambda torch, g, z, o: torch.ops.aten.silu_backward.grad_input(
    g, z, grad_input=o))
leaky_relu = _torch_out(lambda torch, z, o: torch.ops.aten.leaky_relu.out(z, 0.01, out=o))
leaky_relu_backward = _torch_out(
    lambda torch, g, z, o: torch.ops.aten.leaky_relu_backward.grad_input(
        g, z, 0.01, False, grad_input=o))
elu = _torch_out(lambda torch, z, o: torch.ops.aten.elu.out(z, 1.0, 1, 1, out=o))
elu_backward = _torch_out(lambda torch, g, z, o: torch.ops.aten.elu_backward.grad_input(
    g, 1.0, 1, 1, False, z, grad_input=o))
softplus = _torch_out(lambda torch, z, o: torch.ops.aten.softplus.out(z, 1, 20, out=o))
softplus_backward = _torch_out(
    lambda torch, g, z, o: torch.ops.aten.softplus_backward.grad_input(g, z, 1, 20, grad_input=o))
softmax = _torch_out(lambda torch, z, o: torch.softmax(z, -1, out=o))
log_softmax = _torch_out(lambda torch, z, o: torch.log_softmax(z, -1, out=o))
softmax_backward = _torch_out(
    lambda torch, g, p, o: torch.ops.aten._softmax_backward_data.out(
        g, p, -1, p.dtype, grad_input=o))
softmax_cross_entropy = _torch_autograd(lambda F, x, t: F.cross_entropy(x, t))
sigmoid_binary_cross_entropy = _torch_autograd(
    lambda F, x, t: F.binary_cross_entropy_with_logits(x, t))
binary_cross_entropy = _torch_autograd(lambda F, x, t: F.binary_cross_entropy(x, t))
mse = _torch_autograd(lambda F, x, t: F.mse_loss(x, t))


def dense_forward(torch, x, w, b, activation):
    """F.linear, then the activation into a preallocated output (F.linear has
    no out=; addmm(b, x, w.T, out=) then an in-place activation is no faster)."""
    linear = torch.nn.functional.linear
    if activation is None:
        return lambda: linear(x, w, b)
    act = getattr(torch, activation)
    out = torch.empty((x.shape[0], w.shape[0]), dtype=x.dtype)
    return lambda: act(linear(x, w, b), out=out)


def dense_backward(torch, grad_a, x, w, a, activation):
    """What autograd runs for linear + activation, as explicit ops into
    preallocated outputs; checked once against autograd itself."""
    grad_z = grad_a if activation is None else torch.empty_like(grad_a)
    grad_zt = grad_z.T
    gw, gb, gx = torch.empty_like(w), torch.empty(w.shape[0], dtype=w.dtype), torch.empty_like(x)

    def run():
        if activation is not None:
            _TORCH_ACT_BW[activation](torch, grad_a, a, grad_z)
        torch.mm(grad_zt, x, out=gw)
        torch.sum(grad_z, 0, out=gb)
        torch.mm(grad_z, w, out=gx)
        return gw, gb, gx

    _check_against_autograd(torch, run(), grad_a, x, w, activation)
    return run


def _check_against_autograd(torch, grads, grad_a, x, w, activation):
    """Raise unless (grad_w, grad_b, grad_x) equal autograd's for a = g(x wᵀ)."""
    x = x.detach().clone().requires_grad_(True)
    w = w.detach().clone().requires_grad_(True)
    b = torch.zeros(w.shape[0], dtype=w.dtype, requires_grad=True)
    z = torch.nn.functional.linear(x, w, b)
    (z if activation is None else getattr(torch, activation)(z)).backward(grad_a)
    rtol = 1e-3 if x.dtype == torch.float32 else 1e-9
    for name, got, want in zip(("grad_w", "grad_b", "grad_x"), grads, (w.grad, b.grad, x.grad)):
        err = float((got - want).abs().max())
        if not err <= rtol * float(want.abs().max()):
            raise AssertionError(f"the explicit torch ops' {name} differs from autograd's "
                                 f"by {err:.3g}")


_TORCH_ACTIVATION_MODULE = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "ReLU"}


def mlp_step(torch, x, labels, sizes, activation, lr):
    """The same MLP as nn.Sequential, trained by autograd and optim.SGD."""
    nn = torch.nn
    layers = []
    with torch.random.fork_rng():  # the init leaves torch's global RNG alone
        torch.manual_seed(0)
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            if layers:
                layers.append(getattr(nn, _TORCH_ACTIVATION_MODULE[activation])())
            layers.append(nn.Linear(fan_in, fan_out, dtype=x.dtype))
    model = nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    cross_entropy = nn.functional.cross_entropy

    def run():
        opt.zero_grad(set_to_none=True)
        loss = cross_entropy(model(x), labels)
        loss.backward()
        opt.step()
        return loss.item()
    return run



def _optimizer_step(optimizer, **options):
    """optimizer([param], **options).step() on a parameter that shares the
    array's memory, its .grad the gradient; PyTorch keeps its own state
    (created, like the kernels' state, by the first checked call)."""
    def setup(torch, param, grad, *state):
        p = torch.nn.Parameter(param)
        p.grad = grad
        opt = getattr(torch.optim, optimizer)([p], **options)
        return opt.step
    return setup


adam_update = _optimizer_step("Adam", lr=1e-3, fused=True)
adam_update_foreach = _optimizer_step("Adam", lr=1e-3, foreach=True)
adam_update_amsgrad = _optimizer_step("Adam", lr=1e-3, amsgrad=True, fused=True)
sgd_update = _optimizer_step("SGD", lr=0.01, momentum=0.9, fused=True)
