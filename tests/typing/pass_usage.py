"""Every public function called correctly: ``mypy --strict`` must accept this.

It also runs (``python pass_usage.py``), so the calls are real ones.
"""

import numpy as np
from numpy.typing import NDArray

import nnkernels as nk
import nnkernels.reference as ref
from nnkernels.mlp import MLP

rng = np.random.default_rng(0)
n, n_in, n_out, n_classes = 16, 5, 4, 3

# element-wise activations, into new arrays and in place
z: NDArray[np.float32] = rng.standard_normal((n, n_out), dtype=np.float32)
a = nk.sigmoid(z)
r = nk.relu(z, out=np.empty_like(z))
grad = np.ones_like(z)
g1 = nk.sigmoid_backward(grad, a)
g2 = nk.tanh_backward(grad, np.tanh(z), out=np.empty_like(z))
g3 = nk.relu_backward(grad, r, out=grad)            # in place
from_list = nk.sigmoid([[0.0, 1.0], [2.0, 3.0]])    # a list of numbers: float64

# the softmax family, batch first and one sample per column
logits = rng.standard_normal((n, n_classes))
p = nk.softmax(logits)
p_cols = nk.softmax(logits.T, axis=0)
log_p = nk.log_softmax(logits, axis=-1, out=np.empty_like(logits))
gz = nk.softmax_backward(np.ones_like(p), p)
gz_cols = nk.softmax_backward(np.ones_like(p_cols), p_cols, axis=np.int64(0))

# softmax cross-entropy: every option
labels = rng.integers(0, n_classes, n)
loss, dz = nk.softmax_cross_entropy(logits, labels)
mean_loss: float = float(loss)
loss_rows, dz_rows = nk.softmax_cross_entropy(
    logits, labels, reduction="none", weight=np.ones(n_classes), ignore_index=1,
    label_smoothing=0.1, out=np.empty_like(logits))
_, dz_cols = nk.softmax_cross_entropy(logits.T, labels, axis=0, reduction="sum")
soft = nk.softmax(rng.standard_normal((n, n_classes)))
dz_soft = nk.softmax_cross_entropy_backward(logits, soft, reduction="mean")
dz_only = nk.softmax_cross_entropy_backward(logits.T, labels, axis=0, weight=[1.0, 2.0, 1.0],
                                            ignore_index=-1, label_smoothing=0.0)

# the element-wise losses
y = (rng.random((n, n_out)) > 0.5).astype(np.float32)
bce_loss, bce_grad = nk.sigmoid_binary_cross_entropy(z, y)
bce_sum, bce_sum_grad = nk.sigmoid_binary_cross_entropy(z, y, reduction="sum",
                                                     weight=np.ones(n_out, np.float32),
                                                     pos_weight=np.full(n_out, 2.0, np.float32),
                                                     out=np.empty_like(z))
probs_loss, probs_grad = nk.binary_cross_entropy(a, y, reduction="none", weight=None)
mse_loss, mse_grad = nk.mse(z, y, reduction="mean", out=np.empty_like(z))

# the dense layer: forward and backward, with and without buffers
x = rng.standard_normal((n, n_in))
w = rng.standard_normal((n_out, n_in))
b = np.zeros(n_out)
h = nk.dense_forward(x, w, b, "tanh")
h_linear = nk.dense_forward(x, w, out=np.empty((n, n_out)))
h_f = nk.dense_forward(np.asfortranarray(x), w.T.copy().T, None, activation="relu")  # F order
grad_h = np.ones_like(h)
gw, gb, gx = nk.dense_backward(grad_h, x, w, h, "tanh")
assert gx is not None
gx_sum: float = float(gx.sum())
gw_buf, gb_buf = np.zeros_like(w), np.zeros_like(b)
gw2, gb2, gx2 = nk.dense_backward(grad_h, x, w, need_input_grad=False, accumulate=True,
                                  out=(gw_buf, gb_buf, None))
assert gx2 is None

# the NumPy twins have the same signatures
ref_loss, ref_dz = ref.softmax_cross_entropy(logits, labels, reduction="sum")
ref_h = ref.dense_forward(x, w, b, "tanh")
ref_gw, ref_gb, ref_gx = ref.dense_backward(grad_h, x, w, h, activation="tanh")

# threads and build facts
before: int = nk.get_num_threads()
nk.set_num_threads(1)
nk.set_num_threads(before)
provider: str = nk.get_blas()
nk.set_blas(provider)
info = nk.build_info()
isa: str = str(info["isa"])

# the gradient check
target = rng.standard_normal(7)


def mse_of(v: NDArray[np.float64]) -> tuple[np.floating, NDArray[np.floating]]:
    lv, gv = nk.mse(v, target)
    return np.float64(np.sum(lv)), gv


result: nk.GradcheckResult = nk.gradcheck(mse_of, rng.standard_normal(7))
ok: bool = result.ok and bool(result)
worst = result.worst_index
err: float = result.max_abs_error + result.max_rel_error
result2 = nk.gradcheck(lambda v: nk.softmax_cross_entropy(v, labels[:2]), logits[:2].copy(),
                       eps=1e-5, rtol=1e-3, atol=1e-7)

# the MLP built on them
net = MLP((n_in, 8, n_classes), "relu", dtype=np.float64, seed=1)
step_loss: float = net.step(x, labels, lr=0.1)
net_logits = net.forward(x)
eval_loss, accuracy = net.evaluate(x, labels, batch_size=8)
ref_net = MLP([n_in, n_classes], backend=ref, seed=None)

if __name__ == "__main__":
    assert np.allclose(ref_h, h) and np.allclose(ref_gw, gw) and ok and result2
    print("pass_usage: ran every call;", f"loss {mean_loss:.4f}, isa {isa}")
