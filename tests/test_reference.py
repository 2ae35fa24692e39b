"""Tests of the NumPy reference (nnkernels.reference) and of gradcheck.

The reference is the baseline of every other test, so it is checked here
against independent values: torch.nn.functional and autograd (when torch is
installed), closed forms, and finite differences.
"""

import importlib
import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pytest

from _nkutil import assert_close, assert_scalar_loss, tn, tt


def _load(name):
    """Import nnkernels.<name>, or load it from its file.

    The package's __init__ imports the compiled kernels; when they are not
    built (or broken) the two pure-Python modules are still testable.
    """
    try:
        return importlib.import_module(f"nnkernels.{name}")
    except Exception:  # whatever the __init__ raised
        path = Path(__file__).resolve().parents[1] / "nnkernels" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(
            f"_nnkernels_{name}_from_file", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


ref = _load("reference")
gradcheck = _load("_gradcheck").gradcheck

REDUCTIONS = ["mean", "sum", "none"]


def _torch():
    return pytest.importorskip("torch")


# float32 results are computed in float32 throughout, as honest NumPy code
# would: a chain of a few float32 operations is off by a few ulp (2**-23 =
# 1.2e-7) of the values in play, so against exact (float64) values they are
# compared to 1e-5 relative and 2e-6 (about 17 ulp) of the scale absolute.
# float64 keeps the strict tolerances of _nkutil.
F32_RTOL = 1e-5
F32_ATOL = 2e-6


def assert_close_to_exact(got, expected, dtype, scale=None, rtol=None,
                          err_msg=""):
    """Compare a reference result of ``dtype`` with exact float64 values.

    ``rtol`` overrides the float64 tolerance only; float32 uses F32_RTOL
    and F32_ATOL times the scale (as assert_close: by default the largest
    finite magnitude of ``expected``, at least 1).
    """
    if np.dtype(dtype) != np.float32:
        assert_close(got, expected, dtype, scale=scale, rtol=rtol,
                     err_msg=err_msg)
        return
    if scale is None:
        expected_a = np.asarray(expected, dtype=np.float64)
        finite = np.abs(expected_a[np.isfinite(expected_a)])
        scale = max(1.0, float(finite.max())) if finite.size else 1.0
    assert_close(got, expected, dtype, rtol=F32_RTOL, atol=F32_ATOL * scale,
                 err_msg=err_msg)


def _torch_reduce_backward(loss):
    """Backward of a torch loss; "none" losses get an upstream gradient of one."""
    torch = _torch()
    loss.backward(torch.ones_like(loss))


# ------------------------------------------------------------- activations
def test_activations_match_torch(rng, dtype):
    torch = _torch()
    z = (rng.standard_normal((6, 7)) * 4).astype(dtype)
    z[0, :4] = [0.0, -1e4, 1e4, np.nan]
    zt = tt(z, dtype=torch.float64)
    assert_close_to_exact(ref.sigmoid(z), tn(torch.sigmoid(zt)), dtype)
    assert_close_to_exact(ref.relu(z), tn(torch.relu(zt)), dtype)
    assert ref.sigmoid(z).dtype == dtype and ref.relu(z).dtype == dtype


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu"])
def test_activation_backward_matches_autograd(rng, dtype, name):
    torch = _torch()
    z = (rng.standard_normal((5, 9)) * 3).astype(dtype)
    z[0, 0] = 0.0  # relu'(0) = 0
    grad = rng.standard_normal(z.shape).astype(dtype)
    zt = tt(z, requires_grad=True, dtype=torch.float64)
    a_t = getattr(torch, name)(zt)
    a_t.backward(tt(grad, dtype=torch.float64))
    a = tn(a_t).astype(dtype)
    got = getattr(ref, f"{name}_backward")(grad, a)
    assert got.dtype == dtype
    assert_close_to_exact(got, tn(zt.grad), dtype)


def test_relu_backward_threshold_rule():
    grad = np.array([1.0, 2.0, 3.0, 4.0])
    a = np.array([-1.0, 0.0, 0.5, np.nan])
    # 0 where a <= 0, else grad: a NaN output passes grad (threshold_backward)
    np.testing.assert_array_equal(ref.relu_backward(grad, a), [0, 0, 3, 4])


def test_sigmoid_does_not_overflow():
    z = np.array([-1e300, -1e4, -745.0, -40.0, 0.0, 40.0, 1e4, 1e300])
    with np.errstate(all="raise", under="ignore"):  # underflow to 0 is right
        a = ref.sigmoid(z)
        a32 = ref.sigmoid(np.array([-1e30, -100.0, 100.0, 1e30], np.float32))
    assert a[0] == 0.0 and a[-1] == 1.0 and a[4] == 0.5
    assert a[2] > 0  # e^-745 is subnormal, not flushed by an overflow
    np.testing.assert_array_equal(a32, np.array([0, np.exp(-100), 1, 1], np.float32))
    assert a32.dtype == np.float32


# ---------------------------------------------------------- softmax family
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_log_softmax_match_torch(rng, dtype, axis):
    torch = _torch()
    z = (rng.standard_normal((5, 8)) * 5).astype(dtype)
    z[1, 1] = 1e4
    z[2, 2] = -1e4
    zt = tt(z, dtype=torch.float64)
    assert_close_to_exact(ref.softmax(z, axis=axis),
                          tn(torch.softmax(zt, dim=axis)), dtype)
    assert_close_to_exact(ref.log_softmax(z, axis=axis),
                 tn(torch.log_softmax(zt, dim=axis)), dtype)


def test_softmax_1d_and_default_axis(rng):
    z = rng.standard_normal(6)
    expected = np.exp(z) / np.exp(z).sum()
    assert_close(ref.softmax(z), expected)
    assert_close(ref.log_softmax(z), np.log(expected))
    z2 = rng.standard_normal((3, 4))
    assert_close(ref.softmax(z2), ref.softmax(z2, axis=1))
    assert_close(ref.softmax(z2, axis=0), ref.softmax(z2.T).T)


def test_float32_is_computed_in_float32(rng):
    # The reference is the float32 speed baseline: it must be the float32
    # NumPy a user would write (the textbook formula), not float64 rounded.
    z = (rng.standard_normal((64, 33)) * 4).astype(np.float32)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_array_equal(ref.softmax(z), e / e.sum(axis=1, keepdims=True))
    z64 = z.astype(np.float64)
    e64 = np.exp(z64 - z64.max(axis=1, keepdims=True))
    rounded = (e64 / e64.sum(axis=1, keepdims=True)).astype(np.float32)
    assert (ref.softmax(z) != rounded).any()  # float32 rounding shows


def test_log_softmax_extreme_logits_are_exact():
    z = np.array([[1e4, 0.0, -1e4], [-1e4, -1e4, -1e4]])
    log_p = ref.log_softmax(z)
    np.testing.assert_array_equal(log_p[0], [0.0, -1e4, -2e4])
    assert_close(log_p[1], np.full(3, -np.log(3)))
    np.testing.assert_array_equal(ref.softmax(z)[0], [1.0, 0.0, 0.0])


def test_softmax_nan_stays_in_its_row():
    z = np.array([[0.0, np.nan, 1.0], [0.0, 1.0, 2.0]])
    for fn in (ref.softmax, ref.log_softmax):
        result = fn(z)
        assert np.isnan(result[0]).all() and np.isfinite(result[1]).all()
        result0 = fn(z, axis=0)
        assert np.isnan(result0[:, 1]).all()
        assert np.isfinite(result0[:, [0, 2]]).all()


@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_backward_matches_autograd(rng, dtype, axis):
    torch = _torch()
    z = rng.standard_normal((4, 6)).astype(dtype)
    grad = rng.standard_normal(z.shape).astype(dtype)
    zt = tt(z, requires_grad=True, dtype=torch.float64)
    p_t = torch.softmax(zt, dim=axis)
    p_t.backward(tt(grad, dtype=torch.float64))
    got = ref.softmax_backward(grad, tn(p_t).astype(dtype), axis=axis)
    assert got.dtype == dtype
    assert_close_to_exact(got, tn(zt.grad), dtype)


# ------------------------------------------------------- cross-entropy
def _ce_inputs(rng, dtype, target_kind, ignore_index, axis, n=7, c=5):
    logits = (rng.standard_normal((n, c)) * 3).astype(dtype)
    if target_kind == "index":
        target = rng.integers(0, c, n)
        target[[1, 4]] = ignore_index
    else:
        target = rng.random((n, c)) ** 3
        target = (target / target.sum(axis=1, keepdims=True)).astype(dtype)
    if axis == 0:  # classes along the rows: (C, N)
        logits = np.ascontiguousarray(logits.T)
        if target_kind == "prob":
            target = np.ascontiguousarray(target.T)
    return logits, target


def _torch_ce(logits, target, axis, **options):
    """Loss and gradient of torch's cross_entropy, in float64."""
    torch = _torch()
    as_rows = logits if axis in (-1, 1) else logits.T  # torch: classes on dim 1
    zt = tt(as_rows, requires_grad=True, dtype=torch.float64)
    if target.dtype.kind == "f":
        target_t = tt(target if axis in (-1, 1) else target.T, dtype=torch.float64)
    else:
        target_t = tt(target, dtype=torch.int64)
    if options.get("weight") is not None:
        options["weight"] = tt(options["weight"], dtype=torch.float64)
    loss = torch.nn.functional.cross_entropy(zt, target_t, **options)
    _torch_reduce_backward(loss)
    grad = tn(zt.grad)
    return tn(loss), grad if axis in (-1, 1) else grad.T


@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.25, 1.0])
@pytest.mark.parametrize("ignore_index", [-100, 1])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("target_kind", ["index", "prob"])
def test_cross_entropy_matches_torch(rng, dtype, target_kind, weighted,
                                     ignore_index, label_smoothing, reduction,
                                     axis):
    logits, target = _ce_inputs(rng, dtype, target_kind, ignore_index, axis)
    n_classes = logits.shape[axis]
    weight = (rng.random(n_classes) + 0.2).astype(dtype) if weighted else None
    options = dict(reduction=reduction, weight=weight,
                   ignore_index=ignore_index, label_smoothing=label_smoothing)
    if target_kind == "prob" and ignore_index >= 0:
        # PyTorch refuses a class ignore_index with probabilities: so do we
        with pytest.raises(ValueError, match="ignore_index"):
            ref.softmax_cross_entropy(logits, target, axis=axis, **options)
        with pytest.raises(RuntimeError, match="ignore_index"):
            _torch_ce(logits, target, axis, **options)
        return

    loss, grad = ref.softmax_cross_entropy(logits, target, axis=axis, **options)
    expected_loss, expected_grad = _torch_ce(logits, target, axis, **options)

    if reduction == "none":
        assert loss.shape == (logits.shape[1 - axis % 2],) and loss.dtype == dtype
    else:
        assert_scalar_loss(loss, dtype)
    assert grad.dtype == dtype and grad.shape == logits.shape
    assert_close_to_exact(loss, expected_loss, dtype)
    assert_close_to_exact(grad, expected_grad, dtype)
    grad_only = ref.softmax_cross_entropy_backward(logits, target, axis=axis,
                                                   **options)
    np.testing.assert_array_equal(grad_only, grad)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
def test_cross_entropy_all_ignored_mean_is_nan_with_zero_grad(label_smoothing):
    logits = np.arange(12.0).reshape(3, 4)
    target = np.full(3, -100)
    loss, grad = ref.softmax_cross_entropy(logits, target,
                                           label_smoothing=label_smoothing)
    assert np.isnan(loss)
    np.testing.assert_array_equal(grad, np.zeros_like(logits))
    loss_sum, grad_sum = ref.softmax_cross_entropy(logits, target, reduction="sum")
    assert loss_sum == 0.0 and not grad_sum.any()


@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_ignored_nan_row_has_zero_loss_and_grad(
        dtype, reduction, label_smoothing, axis):
    logits = np.array([[0.5, 1.0, -1.0],
                       [np.nan, 0.0, np.inf],
                       [2.0, 0.0, 1.0]], dtype)
    target = np.array([0, 7, 2])
    weight = np.array([1.0, 2.0, 0.5], dtype)
    loss, grad = ref.softmax_cross_entropy(
        logits if axis == -1 else logits.T, target, axis=axis,
        reduction=reduction, weight=weight, ignore_index=7,
        label_smoothing=label_smoothing)
    if axis == 0:
        grad = grad.T
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    np.testing.assert_array_equal(grad[1], np.zeros(3, dtype))  # exactly 0
    if reduction == "none":
        assert loss[1] == 0.0
    # the other rows are those of the batch without the ignored one
    kept_loss, kept_grad = ref.softmax_cross_entropy(
        logits[[0, 2]], target[[0, 2]], reduction=reduction, weight=weight,
        label_smoothing=label_smoothing)
    np.testing.assert_array_equal(grad[[0, 2]], kept_grad)
    np.testing.assert_array_equal(loss[[0, 2]] if reduction == "none" else loss,
                                  kept_loss)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
def test_cross_entropy_edge_cases_match_torch(label_smoothing):
    # zero summed weight (NaN mean, NaN gradient of the zero-weight rows),
    # a NaN logit (its row only), an ignored NaN row, logits of +-1e4 and -inf.
    # One deliberate difference: an ignored row's gradient is exactly zero
    # even when its logits hold a NaN (the contract), where PyTorch shows it.
    logits = np.array([[0.5, 1.0, -1.0, 2.0],
                       [1.0, np.nan, 0.0, 0.0],
                       [np.nan, 0.0, 0.0, 0.0],
                       [1e4, -1e4, 0.0, 3.0],
                       [-np.inf, 0.0, 1.0, 2.0]])
    target = np.array([0, 2, -100, 1, 3])
    cases = [dict(weight=np.array([0.0, 1.0, 1.0, 1.0])),
             dict(weight=None)]
    for rows, options in itertools.product(
            [[0, 2], [0, 1, 2, 3, 4], [3, 4]], cases):
        for reduction in REDUCTIONS:
            opts = dict(options, reduction=reduction,
                        label_smoothing=label_smoothing)
            loss, grad = ref.softmax_cross_entropy(logits[rows], target[rows],
                                                   **opts)
            expected_loss, expected_grad = _torch_ce(logits[rows], target[rows],
                                                     -1, **opts)
            expected_grad[target[rows] == -100] = 0.0
            assert_close(loss, expected_loss, scale=1e4, err_msg=str(opts))
            assert_close(grad, expected_grad, err_msg=str(opts))


def test_cross_entropy_one_hot_closed_form(rng, dtype):
    logits = rng.standard_normal((6, 4)).astype(dtype)
    labels = rng.integers(0, 4, 6)
    one_hot = np.eye(4, dtype=dtype)[labels]
    z = logits.astype(np.float64)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    expected_loss = -np.mean(np.log(p[np.arange(6), labels]))
    for target in (labels, one_hot):
        loss, grad = ref.softmax_cross_entropy(logits, target)
        assert_close_to_exact(loss, expected_loss, dtype)
        assert_close_to_exact(grad, (p - one_hot) / 6, dtype)  # (P - Y) / N


def test_cross_entropy_label_smoothing_and_weight_formula(rng):
    eps, n_classes = 0.2, 5
    logits = rng.standard_normal((4, n_classes))
    target = np.array([0, 3, 4, 1])
    weight = rng.random(n_classes) + 0.5
    loss, _ = ref.softmax_cross_entropy(logits, target, weight=weight,
                                        label_smoothing=eps, reduction="none")
    nll = -ref.log_softmax(logits)
    w_t = weight[target]
    expected = ((1 - eps) * w_t * nll[np.arange(4), target]
                + eps / n_classes * (nll * weight).sum(axis=1))
    assert_close(loss, expected)
    mean, _ = ref.softmax_cross_entropy(logits, target, weight=weight,
                                        label_smoothing=eps)
    assert_close(mean, expected.sum() / w_t.sum())


@pytest.mark.parametrize("int_dtype", [np.int8, np.uint8, np.int32, np.int64,
                                       np.uint64])
def test_cross_entropy_any_integer_target_dtype(rng, int_dtype):
    logits = rng.standard_normal((5, 3))
    target = np.array([0, 2, 1, 1, 0])
    expected = ref.softmax_cross_entropy(logits, target)
    got = ref.softmax_cross_entropy(logits, target.astype(int_dtype))
    assert got[0] == expected[0]
    np.testing.assert_array_equal(got[1], expected[1])


def test_cross_entropy_axis0_is_the_transpose(rng):
    logits = rng.standard_normal((6, 4))
    target = rng.integers(0, 4, 6)
    loss, grad = ref.softmax_cross_entropy(logits, target)
    loss0, grad0 = ref.softmax_cross_entropy(logits.T, target, axis=0)
    assert loss0 == loss
    np.testing.assert_array_equal(grad0, grad.T)


def test_cross_entropy_bad_class_index_names_position_and_value():
    logits = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"target\[2\] = 3 .*\[0, 3\)"):
        ref.softmax_cross_entropy(logits, np.array([0, -100, 3, 1]))
    with pytest.raises(ValueError, match=r"target\[1\] = -1"):
        ref.softmax_cross_entropy(logits, np.array([0, -1, 2, 1]))
    with pytest.raises(ValueError, match=r"target\[0\] = -100"):
        ref.softmax_cross_entropy(logits, np.array([-100, 0, 1, 2]),
                                  ignore_index=-1)


# ------------------------------------------------------- element-wise losses
def _torch_elementwise(fn_name, x, target, reduction, **options):
    torch = _torch()
    xt = tt(x, requires_grad=True, dtype=torch.float64)
    options = {k: None if v is None else tt(v, dtype=torch.float64)
               for k, v in options.items()}
    loss = getattr(torch.nn.functional, fn_name)(
        xt, tt(target, dtype=torch.float64), reduction=reduction, **options)
    _torch_reduce_backward(loss)
    return tn(loss), tn(xt.grad)


def _check_elementwise(got, expected, x, reduction, dtype, scale=None,
                       grad_rtol=None):
    loss, grad = got
    if reduction == "none":
        assert loss.shape == x.shape and loss.dtype == dtype
    else:
        assert_scalar_loss(loss, dtype)
    assert grad.shape == x.shape and grad.dtype == dtype
    assert_close_to_exact(loss, expected[0], dtype, scale=scale)
    assert_close_to_exact(grad, expected[1], dtype, rtol=grad_rtol)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("pos_weighted", [False, True], ids=["", "pos_weight"])
@pytest.mark.parametrize("weight_kind", [None, "full", "column"])
@pytest.mark.parametrize("shape", [(9,), (4, 6)])
def test_sigmoid_bce_matches_torch(rng, dtype, shape, weight_kind,
                                   pos_weighted, reduction):
    logits = (rng.standard_normal(shape) * 4).astype(dtype)
    logits.flat[:2] = [1e4, -1e4]
    target = rng.random(shape).astype(dtype)
    target.flat[2:4] = [0.0, 1.0]
    weight = {None: None, "full": rng.random(shape),
              "column": rng.random(shape[-1])}[weight_kind]
    weight = None if weight is None else weight.astype(dtype)
    pos_weight = (rng.random(shape[-1]) * 3).astype(dtype) if pos_weighted else None
    got = ref.sigmoid_binary_cross_entropy(
        logits, target, reduction=reduction, weight=weight, pos_weight=pos_weight)
    expected = _torch_elementwise("binary_cross_entropy_with_logits", logits,
                                  target, reduction, weight=weight,
                                  pos_weight=pos_weight)
    _check_elementwise(got, expected, logits, reduction, dtype, scale=1e4)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight_kind", [None, "full", "column"])
@pytest.mark.parametrize("shape", [(9,), (4, 6)])
def test_bce_matches_torch(rng, dtype, shape, weight_kind, reduction):
    probs = rng.uniform(0.01, 0.99, shape).astype(dtype)
    target = rng.random(shape).astype(dtype)
    # clamped logs: p = 0 and 1 against targets 0 and 1
    probs.flat[:4] = [0.0, 1.0, 0.0, 1.0]
    target.flat[:4] = [0.0, 1.0, 1.0, 0.0]
    weight = {None: None, "full": rng.random(shape),
              "column": rng.random(shape[-1])}[weight_kind]
    weight = None if weight is None else weight.astype(dtype)
    got = ref.binary_cross_entropy(probs, target, reduction=reduction,
                                   weight=weight)
    expected = _torch_elementwise("binary_cross_entropy", probs, target,
                                  reduction, weight=weight)
    # PyTorch's clamp 1e-12 of p (1 - p) is the float32 constant 1e-12f,
    # 4e-9 above the contract's 1e-12, even in float64.
    _check_elementwise(got, expected, probs, reduction, dtype, scale=100,
                       grad_rtol=1e-8 if dtype == np.float64 else None)


def test_bce_clamps_and_rejects_out_of_range():
    loss, grad = ref.binary_cross_entropy(np.array([0.0, 1.0]),
                                          np.array([1.0, 0.0]), reduction="none")
    np.testing.assert_array_equal(loss, [100.0, 100.0])
    np.testing.assert_array_equal(grad, [-1e12, 1e12])
    with pytest.raises(ValueError, match=r"probs\[1, 0\] = 1.5"):
        ref.binary_cross_entropy(np.array([[0.5, 0.5], [1.5, 0.2]]),
                                 np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ref.binary_cross_entropy(np.array([-1e-9]), np.zeros(1))


def test_bce_nan_propagates():
    loss, grad = ref.binary_cross_entropy(np.array([0.5, np.nan]),
                                          np.array([1.0, 0.0]), reduction="none")
    assert np.isfinite(loss[0]) and np.isnan(loss[1]) and np.isnan(grad[1])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(9,), (4, 6)])
def test_mse_matches_torch(rng, dtype, shape, reduction):
    pred = rng.standard_normal(shape).astype(dtype)
    target = rng.standard_normal(shape).astype(dtype)
    got = ref.mse(pred, target, reduction=reduction)
    expected = _torch_elementwise("mse_loss", pred, target, reduction)
    _check_elementwise(got, expected, pred, reduction, dtype)


def test_elementwise_mean_divides_by_element_count(rng):
    pred = rng.standard_normal((3, 4))
    target = rng.standard_normal((3, 4))
    loss, grad = ref.mse(pred, target)
    assert_close(loss, np.mean((pred - target) ** 2))
    assert_close(grad, 2 * (pred - target) / 12)
    loss, grad = ref.sigmoid_binary_cross_entropy(pred, np.ones_like(pred))
    assert_close(grad, (ref.sigmoid(pred) - 1) / 12)  # dL/dz = sigmoid(z) - y


# ------------------------------------------------------------- dense layer
@pytest.mark.parametrize("activation", [None, "sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("transposed", [False, True], ids=["C", "T"])
def test_dense_matches_torch(rng, dtype, activation, with_bias, transposed):
    torch = _torch()
    n, n_in, n_out = 6, 5, 4
    x = rng.standard_normal((n, n_in)).astype(dtype)
    w = rng.standard_normal((n_out, n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype) if with_bias else None
    grad_a = rng.standard_normal((n, n_out)).astype(dtype)
    if transposed:  # the seed notes' column layout, passed as .T views
        x = np.ascontiguousarray(x.T).T
        w = np.ascontiguousarray(w.T).T

    xt = tt(x, requires_grad=True, dtype=torch.float64)
    wt = tt(w, requires_grad=True, dtype=torch.float64)
    bt = tt(b, requires_grad=True, dtype=torch.float64) if with_bias else None
    a_t = torch.nn.functional.linear(xt, wt, bt)
    if activation is not None:
        a_t = getattr(torch, activation)(a_t)
    a_t.backward(tt(grad_a, dtype=torch.float64))

    a = ref.dense_forward(x, w, b, activation)
    assert a.dtype == dtype
    assert_close_to_exact(a, tn(a_t), dtype)
    grad_w, grad_b, grad_x = ref.dense_backward(grad_a, x, w, a, activation)
    assert_close_to_exact(grad_w, tn(wt.grad), dtype)
    assert_close_to_exact(grad_x, tn(xt.grad), dtype)
    if with_bias:
        assert_close_to_exact(grad_b, tn(bt.grad), dtype)
    assert all(g.dtype == dtype for g in (grad_w, grad_b, grad_x))


def test_dense_closed_form(rng):
    x = rng.standard_normal((5, 3))
    w = rng.standard_normal((4, 3))
    b = rng.standard_normal(4)
    assert_close(ref.dense_forward(x, w, b), x @ w.T + b)
    a = ref.dense_forward(x, w, b, "sigmoid")
    assert_close(a, 1 / (1 + np.exp(-(x @ w.T + b))))
    grad_a = rng.standard_normal((5, 4))
    grad_w, grad_b, grad_x = ref.dense_backward(grad_a, x, w, a, "sigmoid")
    grad_z = grad_a * a * (1 - a)
    assert_close(grad_w, grad_z.T @ x)
    assert_close(grad_b, grad_z.sum(axis=0))
    assert_close(grad_x, grad_z @ w)


def test_dense_backward_out_accumulate_and_no_input_grad(rng, dtype):
    x = rng.standard_normal((5, 3)).astype(dtype)
    w = rng.standard_normal((4, 3)).astype(dtype)
    grad_a = rng.standard_normal((5, 4)).astype(dtype)
    fresh = ref.dense_backward(grad_a, x, w)

    buffers = tuple(np.ones_like(g) for g in fresh)
    result = ref.dense_backward(grad_a, x, w, accumulate=True, out=buffers)
    for k, (got, buffer, g) in enumerate(zip(result, buffers, fresh)):
        assert got is buffer
        # the parameter gradients accumulate; grad_x is written
        assert_close(got, (1 if k < 2 else 0) + g.astype(np.float64), dtype)

    # scale multiplies the parameter gradients only; w as its own buffer is
    # an SGD step whose grad_x comes from w before the update
    w_step, b_step = w.copy(), np.zeros(4, dtype)
    gw, gb, gx = ref.dense_backward(grad_a, x, w_step, accumulate=True, scale=-0.5,
                                    out=(w_step, b_step, None))
    assert gw is w_step and gb is b_step
    assert_close(w_step, w.astype(np.float64) - 0.5 * fresh[0], dtype)
    assert_close(b_step, -0.5 * fresh[1].astype(np.float64), dtype)
    assert_close(gx, fresh[2], dtype)

    buffers = (np.full_like(fresh[0], 7), None, np.full_like(fresh[2], 7))
    grad_w, grad_b, grad_x = ref.dense_backward(
        grad_a, x, w, need_input_grad=False, out=buffers)
    assert grad_w is buffers[0] and grad_x is None
    assert_close(grad_w, fresh[0], dtype)
    assert_close(grad_b, fresh[1], dtype)  # always computed
    assert (buffers[2] == 7).all()  # left alone


# ----------------------------------------------------------------- gradcheck
def _smooth_logits(rng, shape, dtype):
    return (rng.standard_normal(shape) * 2).astype(dtype)


@pytest.mark.parametrize("options", [
    dict(),
    dict(reduction="sum", label_smoothing=0.1),
    dict(reduction="none", weight=True, ignore_index=2),
    dict(weight=True, label_smoothing=0.3, axis=0),
    dict(soft=True, weight=True, label_smoothing=0.2),
], ids=["plain", "sum-ls", "none-weight-ignore", "axis0", "soft"])
def test_gradcheck_cross_entropy(rng, dtype, options):
    options = dict(options)
    axis = options.get("axis", -1)
    logits = _smooth_logits(rng, (5, 4) if axis == -1 else (4, 5), dtype)
    if options.pop("soft", False):
        target = rng.random(logits.shape)
        target /= target.sum(axis=axis, keepdims=True)
    else:
        target = rng.integers(0, 4, 5)
        target[1] = options.get("ignore_index", -100)
    weight = rng.random(4) + 0.5 if options.pop("weight", False) else None

    def f(x):
        # the other float arrays follow x's dtype: gradcheck calls f in float64
        loss, grad = ref.softmax_cross_entropy(
            x, target.astype(x.dtype) if target.dtype.kind == "f" else target,
            weight=None if weight is None else weight.astype(x.dtype), **options)
        return np.sum(loss), grad  # "none": the gradient is that of the sum

    assert gradcheck(f, logits)


@pytest.mark.parametrize("loss_name", ["sigmoid_binary_cross_entropy",
                                       "binary_cross_entropy", "mse"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_elementwise_losses(rng, dtype, loss_name, reduction):
    shape = (4, 3)
    if loss_name == "binary_cross_entropy":
        x = rng.uniform(0.1, 0.9, shape).astype(dtype)
    else:
        x = _smooth_logits(rng, shape, dtype)
    target = rng.random(shape)
    extra = {}
    if loss_name != "mse":
        extra["weight"] = rng.random(shape[-1]) + 0.5
    if loss_name == "sigmoid_binary_cross_entropy":
        extra["pos_weight"] = rng.random(shape[-1]) * 3

    def f(x):
        loss, grad = getattr(ref, loss_name)(
            x, target.astype(x.dtype), reduction=reduction,
            **{k: v.astype(x.dtype) for k, v in extra.items()})
        return np.sum(loss), grad

    assert gradcheck(f, x)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "sigmoid", "relu"])
def test_gradcheck_activations(rng, dtype, name):
    z = _smooth_logits(rng, (3, 4), dtype)
    z[np.abs(z) < 0.1] = 0.5  # keep relu away from its kink
    upstream = rng.standard_normal(z.shape)

    def f(x):
        out = getattr(ref, name)(x)
        g = upstream.astype(x.dtype)
        if name == "softmax":
            grad = ref.softmax_backward(g, out)
        elif name == "log_softmax":  # d log p = dz - sum(dz * p)
            grad = g - np.exp(out) * g.sum(axis=-1, keepdims=True)
        else:
            grad = getattr(ref, f"{name}_backward")(g, out)
        return np.sum(out * g), grad

    assert gradcheck(f, z)


@pytest.mark.parametrize("activation", [None, "sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("wrt", ["x", "w", "b"])
def test_gradcheck_dense(rng, dtype, activation, wrt):
    params = {"x": _smooth_logits(rng, (4, 3), dtype),
              "w": _smooth_logits(rng, (2, 3), dtype),
              "b": _smooth_logits(rng, 2, dtype)}
    upstream = rng.standard_normal((4, 2))
    z = params["x"] @ params["w"].T + params["b"]
    assert np.abs(z).min() > 1e-3  # relu has no derivative at 0

    def f(value):
        p = {k: v.astype(value.dtype) for k, v in params.items()}
        p[wrt] = value
        g = upstream.astype(value.dtype)
        a = ref.dense_forward(p["x"], p["w"], p["b"], activation)
        grad_w, grad_b, grad_x = ref.dense_backward(g, p["x"], p["w"], a,
                                                    activation)
        return np.sum(a * g), {"x": grad_x, "w": grad_w, "b": grad_b}[wrt]

    assert gradcheck(f, params[wrt])


def test_gradcheck_catches_a_wrong_gradient(rng):
    x = rng.standard_normal((3, 4))
    target = rng.integers(0, 4, 3)

    def right(x):
        return ref.softmax_cross_entropy(x, target)

    def scaled(x):
        loss, grad = right(x)
        return loss, grad * 1.01

    def one_wrong(x):
        loss, grad = right(x)
        grad = grad.copy()
        grad[2, 1] += 1e-3
        return loss, grad

    assert gradcheck(right, x)
    result = gradcheck(scaled, x)
    assert not result and result.ok is False
    assert result.max_rel_error > 5e-3
    result = gradcheck(one_wrong, x)
    assert not result and result.worst_index == (2, 1)
    assert abs(result.max_abs_error - 1e-3) < 1e-6
    assert "ok=False" in repr(result) and "(2, 1)" in repr(result)


def test_gradcheck_result_and_nan():
    x = np.ones(3)
    result = gradcheck(lambda v: (np.sum(v ** 2), 2 * v), x)
    assert result and result.ok and result.max_abs_error < 1e-8
    assert "ok=True" in repr(result)
    result = gradcheck(lambda v: (np.sum(v), np.array([1.0, np.nan, 1.0])), x)
    assert not result and result.worst_index == (1,)


def test_gradcheck_does_not_modify_x_and_copies_reused_buffers(rng):
    x = rng.standard_normal((2, 3))
    x_copy = x.copy()
    target = np.array([0, 2])
    buffer = np.empty_like(x)

    def f(v):  # reuses one gradient buffer, as a training loop would
        return ref.softmax_cross_entropy(v, target, out=buffer)

    assert gradcheck(f, x)
    np.testing.assert_array_equal(x, x_copy)


def test_gradcheck_validates_arguments():
    x = np.ones(3)
    good = lambda v: (np.sum(v), np.ones_like(v))  # noqa: E731
    with pytest.raises(TypeError, match="callable"):
        gradcheck(None, x)
    with pytest.raises(TypeError, match="float ndarray"):
        gradcheck(good, np.ones(3, dtype=np.int64))
    with pytest.raises(TypeError, match="float ndarray"):
        gradcheck(good, [1.0, 2.0])
    with pytest.raises(ValueError, match="scalar loss"):
        gradcheck(lambda v: (v, np.ones_like(v)), x)
    with pytest.raises(ValueError, match="shape"):
        gradcheck(lambda v: (np.sum(v), np.ones(4)), x)
    with pytest.raises(TypeError, match="pair"):
        gradcheck(lambda v: np.sum(v), x)
    with pytest.raises(ValueError, match="eps"):
        gradcheck(good, x, eps=0.0)
    # float32 x: f is evaluated on float64 copies and must accept them
    weight = np.ones(3, np.float32)
    with pytest.raises(TypeError, match="float64"):
        gradcheck(lambda v: ref.mse(v, weight), x.astype(np.float32))


# -------------------------------------------------------------- validation
def test_unknown_options_raise_value_error():
    z = np.zeros((2, 3))
    target = np.array([0, 1])
    with pytest.raises(ValueError, match="reduction"):
        ref.softmax_cross_entropy(z, target, reduction="Mean")
    with pytest.raises(ValueError, match="reduction"):
        ref.mse(z, z, reduction="avg")
    for smoothing in (-0.1, 1.5, np.nan):
        with pytest.raises(ValueError, match="label_smoothing"):
            ref.softmax_cross_entropy(z, target, label_smoothing=smoothing)
    with pytest.raises(ValueError, match="activation"):
        ref.dense_forward(z, np.zeros((2, 3)), activation="Sigmoid")
    with pytest.raises(ValueError, match="activation"):
        ref.dense_backward(z[:, :2], z, np.zeros((2, 3)), z[:, :2],
                           activation="softmax")
    with pytest.raises(ValueError, match="axis"):
        ref.softmax(z, axis=2)


def test_shape_mismatches_name_arguments_and_shapes():
    z = np.zeros((2, 3))
    cases = [
        (lambda: ref.sigmoid_backward(z, np.zeros((3, 2))), r"grad.*a.*\(3, 2\)"),
        (lambda: ref.softmax_cross_entropy(z, np.array([0, 1, 2])),
         r"target.*\(3,\)"),
        (lambda: ref.softmax_cross_entropy(z, np.zeros((3, 2))),
         r"logits.*target.*\(3, 2\)"),
        (lambda: ref.softmax_cross_entropy(z, np.array([0, 1]),
                                           weight=np.ones(2)), r"weight.*\(2,\)"),
        (lambda: ref.mse(z, np.zeros(3)), r"pred.*target.*\(3,\)"),
        (lambda: ref.sigmoid_binary_cross_entropy(z, z, pos_weight=np.ones(2)),
         r"pos_weight.*\(2,\)"),
        (lambda: ref.binary_cross_entropy(z, z, weight=np.ones(2)),
         r"weight.*\(2,\)"),
        (lambda: ref.dense_forward(z, np.zeros((4, 2))), r"x.*w.*\(4, 2\)"),
        (lambda: ref.dense_forward(z, np.zeros((4, 3)), np.zeros(3)),
         r"b.*\(3,\)"),
        (lambda: ref.dense_backward(np.zeros((2, 5)), z, np.zeros((4, 3))),
         r"grad_a.*\(2, 5\)"),
        (lambda: ref.dense_backward(np.zeros((2, 4)), z, np.zeros((4, 3)),
                                    out=(np.zeros((3, 4)), None, None)),
         r"grad_w.*\(3, 4\)"),
        (lambda: ref.softmax(z, out=np.zeros((3, 2))), r"out.*\(3, 2\)"),
        (lambda: ref.mse(z, z, out=np.zeros(6)), r"out.*\(6,\)"),
    ]
    for call, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            call()


def test_dtype_errors():
    z = np.zeros((2, 3))
    with pytest.raises(TypeError, match="int64"):
        ref.sigmoid(np.zeros(3, dtype=np.int64))
    with pytest.raises(TypeError, match="bool"):
        ref.relu(np.zeros(3, dtype=bool))
    with pytest.raises(TypeError, match="logits float64.*target float32"):
        ref.softmax_cross_entropy(z, z.astype(np.float32))
    with pytest.raises(TypeError, match="weight"):
        ref.softmax_cross_entropy(z, np.array([0, 1]),
                                  weight=np.ones(3, np.float32))
    with pytest.raises(TypeError, match="target"):
        ref.softmax_cross_entropy(z, np.array([True, False]))
    with pytest.raises(TypeError, match="x float32.*w float64"):
        ref.dense_forward(z.astype(np.float32), z)
    with pytest.raises(TypeError, match="out"):
        ref.softmax(z, out=np.zeros((2, 3), np.float32))
    readonly = np.zeros((2, 3))
    readonly.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        ref.softmax(z, out=readonly)


# ---------------------------------------------------------------- out= use
def test_out_is_written_and_returned(rng, dtype):
    z = rng.standard_normal((3, 4)).astype(dtype)
    grad = rng.standard_normal((3, 4)).astype(dtype)
    for fn in (ref.sigmoid, ref.relu, ref.softmax, ref.log_softmax):
        out = np.empty_like(z)
        assert fn(z, out=out) is out
        np.testing.assert_array_equal(out, fn(z))
    a = ref.sigmoid(z)
    expected = ref.sigmoid_backward(grad, a)
    in_place = grad.copy()
    assert ref.sigmoid_backward(in_place, a, out=in_place) is in_place
    np.testing.assert_array_equal(in_place, expected)
    out = np.empty_like(z)
    loss, got = ref.softmax_cross_entropy(z, np.array([0, 1, 3]), out=out)
    assert got is out
    assert_scalar_loss(loss, dtype)
    out = np.empty((3, 5), dtype)
    assert ref.dense_forward(z, np.ones((5, 4), dtype), out=out) is out
