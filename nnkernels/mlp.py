"""A small multilayer perceptron trained by mini-batch SGD or Adam, built
from the nnkernels API only.

    from nnkernels.mlp import MLP
    net = MLP((64, 128, 64, 10), "gelu", optimizer="adam")
    for x, labels in batches:                     # x (N, 64), labels (N,)
        loss = net.step(x, labels, lr=1e-3)
    loss, accuracy = net.evaluate(x_test, labels_test)

Hidden layers are dense + activation (any of the dense layer's names); the
output layer is dense + softmax cross-entropy. A step is the calls
``dense_forward``, ``softmax_cross_entropy``, ``dense_backward`` and, unless
the update is plain SGD, ``sgd_update`` or ``adam_update``, each writing
into a buffer made on the first step for a batch size, so that every later
step of that size allocates no array. Plain SGD is done by the backward
products themselves (``dense_backward``'s ``out=(w, b, ...)``,
``accumulate=True, scale=-lr``): no weight-gradient buffer, no pass of its
own over the weights. The equations are in
docs/equations.md (batch first: x (N, in), w (out, in), z = x wᵀ + b).
"""

from __future__ import annotations   # signatures show the aliases' names

import numbers

import numpy as np

from . import _dispatch
from ._typing import Any, ArrayLike, DTypeLike, FloatArray, Iterable, Literal, Optional

__all__ = ["MLP"]

_GLOROT = ("sigmoid", "tanh")     # initialised Glorot-uniform; the others He-normal
_OPTIMIZERS = ("sgd", "adam")
_MAX_CACHED_BATCH_SIZES = 8   # buffer sets kept (the training size, the
                              # last short batch, evaluate's size, ...)


class _Buffers:
    """Everything a step for batch size n writes, one array per layer."""

    def __init__(self, n, sizes, dtype, keep_z):
        # acts[l]: output of layer l, (n, sizes[l + 1]); the last is the logits
        self.acts = [np.empty((n, s), dtype) for s in sizes[1:]]
        # grads[l]: d loss / d acts[l]; the last is d loss / d logits
        self.grads = [np.empty((n, s), dtype) for s in sizes[1:]]
        # zs[l]: layer l's pre-activation, for the hidden layers of an
        # activation whose derivative takes z (else None)
        self.zs = [np.empty((n, s), dtype) if keep_z else None for s in sizes[1:-1]]


class MLP:
    """Dense network: hidden layers with ``activation``, softmax output.

    ``sizes`` is ``(n_in, hidden..., n_classes)``. Weights are
    ``(out, in)`` as in ``torch.nn.Linear``, of float ``dtype``, drawn from
    ``np.random.default_rng(seed)``: Glorot-uniform for sigmoid and tanh,
    He-normal for the relu-like activations; biases start at zero.
    ``backend`` is a module with the nnkernels API: ``nnkernels`` (the
    default) or ``nnkernels.reference``. The initial parameters depend on
    ``sizes``, ``activation``, ``dtype`` and ``seed`` only, never on the
    backend.

    The update of :meth:`step` is ``optimizer``'s, with the options of
    ``torch.optim.SGD`` (``momentum``, ``nesterov``, ``weight_decay``) or
    ``torch.optim.Adam`` (``betas``, ``eps``, ``weight_decay``,
    ``decoupled_weight_decay`` for AdamW); its state (momentum buffers,
    moment estimates) is kept per parameter and starts at the first step.

    Parameters
    ----------
    sizes : sequence of int
        The layer widths ``(n_in, hidden..., n_classes)``, at least two, each
        >= 1.
    activation : str, default "sigmoid"
        The hidden layers' activation: "sigmoid", "tanh", "relu", "gelu",
        "gelu_tanh", "silu", "leaky_relu", "elu" or "softplus" (each with
        its default options).
    optimizer : {"sgd", "adam"}, default "sgd"
        The update rule of :meth:`step`.
    momentum : float, default 0.0
        SGD's momentum (0: plain SGD).
    nesterov : bool, default False
        SGD's Nesterov momentum (needs momentum > 0).
    weight_decay : float, default 0.0
        L2 penalty, added to the gradient (Adam with
        ``decoupled_weight_decay``: applied to the weights, as AdamW).
    betas : (float, float), default (0.9, 0.999)
        Adam's moment decay rates.
    eps : float, default 1e-8
        Adam's denominator term.
    decoupled_weight_decay : bool, default False
        Adam only: decay the weights directly (AdamW).
    dtype : float32 or float64, default float32
        The parameters' dtype; batches must have it too.
    backend : module, optional
        The module whose dense, loss and update functions it calls;
        ``nnkernels`` by default.
    seed : int or None, default 0
        The seed of the initial weights (None: fresh entropy).

    Attributes
    ----------
    params : list of (ndarray, ndarray)
        ``(w, b)`` per layer, updated in place by :meth:`step`.
    steps : int
        How many steps have been taken.

    Raises
    ------
    TypeError
        If `sizes` is not a sequence of integers, `dtype` is not float32 or
        float64, `backend` lacks the API, `seed` is not an integer, or an
        optimizer option is not a number (a bool for the flags).
    ValueError
        If `sizes` has fewer than two widths or one below 1, `activation` or
        `optimizer` is unknown, an option is out of its range or given to
        the other optimizer, or `seed` is negative.

    Examples
    --------
    >>> import numpy as np
    >>> from nnkernels.mlp import MLP
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((32, 4), dtype=np.float32)
    >>> labels = (x[:, 0] > 0).astype(np.intp)
    >>> net = MLP((4, 8, 2), "relu")
    >>> first = net.step(x, labels, lr=0.5)
    >>> for _ in range(50):
    ...     last = net.step(x, labels, lr=0.5)
    >>> last < first
    True
    >>> loss, accuracy = net.evaluate(x, labels)
    >>> 0.0 <= accuracy <= 1.0
    True
    >>> net = MLP((4, 8, 2), "gelu", optimizer="adam")
    >>> first = net.step(x, labels, lr=0.01)
    >>> for _ in range(50):
    ...     last = net.step(x, labels, lr=0.01)
    >>> last < first
    True
    """

    def __init__(self, sizes: Iterable[int], activation: str = "sigmoid", *,
                 optimizer: Literal["sgd", "adam"] = "sgd", momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 decoupled_weight_decay: bool = False,
                 dtype: DTypeLike = np.float32, backend: Any = None,
                 seed: Optional[int] = 0) -> None:
        sizes = _check_sizes(sizes)
        dense = _dispatch.dense()      # the dense layer's activation names
        names = tuple(name for name in dense.ACTIVATIONS if name is not None)
        if not isinstance(activation, str) or activation not in names:
            raise ValueError(f"activation must be one of {names}, got {activation!r}")
        # an activation whose derivative is a function of z, not of the output
        # a: the forward pass keeps z for it (dense_forward's z_out)
        self._keep_z = activation in dense.GRAD_TAKES_Z
        self._update = _check_optimizer(optimizer, momentum=momentum, nesterov=nesterov,
                                        weight_decay=weight_decay, betas=betas, eps=eps,
                                        decoupled_weight_decay=decoupled_weight_decay)
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype must be float32 or float64, "
                            f"got {dtype!r}") from None
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        if backend is None:
            import nnkernels as backend
        needed = ["dense_forward", "dense_backward", "softmax_cross_entropy"]
        if self._update is not None:
            needed.append(f"{optimizer}_update")
        missing = [f for f in needed if not callable(getattr(backend, f, None))]
        if missing:
            raise TypeError(f"backend must provide the nnkernels API; "
                            f"{backend!r} lacks {', '.join(missing)}")
        if seed is not None and (isinstance(seed, bool)
                                 or not isinstance(seed, numbers.Integral)):
            raise TypeError(f"seed must be an integer or None, got {seed!r}")
        if seed is not None and seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")

        self.sizes = sizes
        self.activation = activation
        self.optimizer = optimizer
        self.dtype = dtype
        self.backend = backend
        self.steps = 0
        rng = np.random.default_rng(seed)
        self.params = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            # Drawn in float64, then rounded: the same numbers for any dtype.
            if activation in _GLOROT:   # Glorot: U(±sqrt(6 / (fan_in + fan_out)))
                limit = np.sqrt(6.0 / (fan_in + fan_out))
                w = rng.uniform(-limit, limit, (fan_out, fan_in))
            else:                       # He: Var(w) = 2 / fan_in
                w = rng.normal(0.0, np.sqrt(2.0 / fan_in), (fan_out, fan_in))
            self.params.append((w.astype(dtype), np.zeros(fan_out, dtype)))
        # Gradient buffers (none for plain SGD, which updates inside the
        # products) and optimizer state do not depend on the batch size: made once.
        self._param_grads = [(np.empty_like(w), np.empty_like(b)) if self._update is not None
                             else (None, None) for w, b in self.params]
        n_state = {"sgd": 1 if momentum else 0, "adam": 2}[optimizer]
        self._state = [[tuple(np.zeros_like(p) for _ in range(n_state)) for p in layer]
                       for layer in self.params]
        self._buffers = {}            # batch size -> _Buffers
        self._latest_logits = None

    def _buffers_for(self, n):
        buffers = self._buffers.get(n)
        if buffers is None:
            if len(self._buffers) >= _MAX_CACHED_BATCH_SIZES:
                del self._buffers[next(iter(self._buffers))]   # the oldest
            buffers = self._buffers[n] = _Buffers(n, self.sizes, self.dtype, self._keep_z)
        return buffers

    def _forward(self, x, buffers):
        nk, last = self.backend, len(self.params) - 1
        a = x
        for l, (w, b) in enumerate(self.params):
            # z = a wᵀ + b,  a ← g(z)   (the output layer stays linear: logits)
            if l == last:
                a = nk.dense_forward(a, w, b, None, out=buffers.acts[l])
            else:
                a = nk.dense_forward(a, w, b, self.activation, z_out=buffers.zs[l],
                                     out=buffers.acts[l])
        self._latest_logits = a
        return a

    def forward(self, x: FloatArray) -> FloatArray:
        """The logits for the batch ``x`` (N, n_in): an internal buffer,
        overwritten by the next call of the same batch size; copy to keep.

        Parameters
        ----------
        x : ndarray, shape (N, n_in)
            The batch, in the network's dtype.

        Returns
        -------
        logits : ndarray, shape (N, n_classes)
            The output layer's z (no softmax applied).
        """
        return self._forward(x, self._buffers_for(len(x)))

    def step(self, x: FloatArray, labels: ArrayLike, lr: float) -> float:
        """One update on the batch (x, labels); returns the batch's mean loss.

        Forward, softmax cross-entropy, backward, then the optimizer's update
        of every layer's ``w`` and ``b``, in place (plain SGD:
        ``w ← w − lr grad_w``, ``b ← b − lr grad_b``).

        Parameters
        ----------
        x : ndarray, shape (N, n_in)
            The batch, in the network's dtype.
        labels : array_like of int, shape (N,)
            The class of every sample.
        lr : float
            The learning rate.

        Returns
        -------
        loss : float
            The batch's mean cross-entropy before the update.
        """
        nk, last = self.backend, len(self.params) - 1
        buffers = self._buffers_for(len(x))
        acts, grads, zs = buffers.acts, buffers.grads, buffers.zs
        logits = self._forward(x, buffers)

        # J = mean over the batch of −log p_label;  dZ = (P − Y) / N
        loss, _ = nk.softmax_cross_entropy(logits, labels, out=grads[last])

        plain_sgd = self._update is None
        for l in range(last, -1, -1):
            w, b = self.params[l]
            hidden = l != last
            # dZ = dA ⊙ g'(A) or g'(Z)  (output layer: dZ = dA, no activation)
            # dW = dZᵀ A_prev        db = Σ_rows dZ
            # dA_prev = dZ W         (not needed below the first layer)
            # Plain SGD: W ← W − α dW and b ← b − α db inside the products
            # (gemm's alpha = −α, beta = 1), after dA_prev has read W.
            below = grads[l - 1] if l else None
            if plain_sgd:
                kwargs = {"accumulate": True, "scale": -float(lr), "out": (w, b, below)}
            else:
                kwargs = {"out": (*self._param_grads[l], below)}
            nk.dense_backward(
                grads[l], acts[l - 1] if l else x, w,
                acts[l] if hidden else None,
                self.activation if hidden else None,
                z=zs[l] if hidden else None,
                need_input_grad=l > 0, **kwargs)

        self.steps += 1
        if not plain_sgd:
            update = getattr(nk, f"{self.optimizer}_update")
            for layer, grad_pair, state_pair in zip(self.params, self._param_grads,
                                                    self._state):
                for param, grad, state in zip(layer, grad_pair, state_pair):
                    if self.optimizer == "adam":
                        update(param, grad, state[0], state[1], step=self.steps,
                               lr=lr, **self._update)
                    else:
                        update(param, grad, lr=lr, step=self.steps,
                               momentum_buffer=state[0] if state else None,
                               **self._update)
        return float(loss)

    @property
    def logits(self) -> Optional[FloatArray]:
        """The logits of the latest step or forward (an internal buffer)."""
        return self._latest_logits

    def evaluate(self, x: FloatArray, labels: ArrayLike,
                 batch_size: int = 1024) -> tuple[float, float]:
        """(mean loss, accuracy) over the whole of (x, labels), by batches.

        Parameters
        ----------
        x : ndarray, shape (N, n_in)
            The samples, in the network's dtype; N >= 1.
        labels : array_like of int, shape (N,)
            Their classes.
        batch_size : int, default 1024
            How many samples each forward pass takes.

        Returns
        -------
        loss : float
            The mean cross-entropy.
        accuracy : float
            The fraction of samples whose largest logit is their label.

        Raises
        ------
        ValueError
            If `batch_size` is not a positive integer, or `x` is empty.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) \
                or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        labels = np.asarray(labels)
        n = len(x)
        if n == 0:
            raise ValueError("x must hold at least one sample")
        total_loss, correct = 0.0, 0
        for start in range(0, n, batch_size):
            xb, yb = x[start:start + batch_size], labels[start:start + batch_size]
            buffers = self._buffers_for(len(xb))
            logits = self._forward(xb, buffers)
            loss, _ = self.backend.softmax_cross_entropy(
                logits, yb, out=buffers.grads[-1])
            total_loss += float(loss) * len(xb)
            correct += int(np.count_nonzero(np.argmax(logits, axis=1) == yb))
        return total_loss / n, correct / n


def _check_sizes(sizes):
    try:
        sizes = tuple(sizes)
    except TypeError:
        raise TypeError(f"sizes must be a sequence of layer widths "
                        f"(n_in, hidden..., n_classes), got {sizes!r}") from None
    if len(sizes) < 2:
        raise ValueError(f"sizes needs at least (n_in, n_classes), got {sizes}")
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral):
            raise TypeError(f"sizes must hold integers, got {sizes!r}")
        if s < 1:
            raise ValueError(f"sizes must be positive, got {sizes}")
    return tuple(int(s) for s in sizes)


def _check_optimizer(optimizer, *, momentum, nesterov, weight_decay, betas, eps,
                     decoupled_weight_decay):
    """The keyword options of the update function, or None for plain SGD
    (no momentum, no weight decay), which the step fuses into the backward."""
    if not isinstance(optimizer, str) or optimizer not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {optimizer!r}")
    for name, value in (("momentum", momentum), ("weight_decay", weight_decay), ("eps", eps)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a real number, got {value!r}")
        if not 0 <= value < float("inf"):
            raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    for name, value in (("nesterov", nesterov),
                        ("decoupled_weight_decay", decoupled_weight_decay)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be a bool, got {value!r}")
    try:
        beta1, beta2 = betas
    except (TypeError, ValueError):
        raise TypeError(f"betas must be a pair of numbers, got {betas!r}") from None
    default_betas = (beta1, beta2) == (0.9, 0.999)
    if optimizer == "sgd":
        given = [name for name, off in (("betas", default_betas), ("eps", eps == 1e-8),
                                        ("decoupled_weight_decay", not decoupled_weight_decay))
                 if not off]
        if given:
            raise ValueError(f"{', '.join(given)} apply to optimizer='adam', not 'sgd'")
        if nesterov and not momentum:
            raise ValueError("nesterov=True needs momentum > 0")
        if not momentum and not weight_decay:
            return None
        return {"momentum": float(momentum), "nesterov": nesterov,
                "weight_decay": float(weight_decay)}
    if momentum or nesterov:
        raise ValueError("momentum and nesterov apply to optimizer='sgd', not 'adam'")
    for name, value in (("betas[0]", beta1), ("betas[1]", beta2)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a real number, got {value!r}")
        if not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return {"betas": (float(beta1), float(beta2)), "eps": float(eps),
            "weight_decay": float(weight_decay),
            "decoupled_weight_decay": decoupled_weight_decay}
