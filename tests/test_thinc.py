"""nnkernels.thinc.NNKernelsOps against Thinc's own NumpyOps.

Every override is compared with NumpyOps on the same inputs (float32 and
float64, C-ordered and strided), with Thinc's in-place conventions: which
array a call with ``inplace=True`` writes and returns. NumpyOps is the
independent reference here; where nnkernels is deliberately more exact
(unclipped sigmoid, the exact derivative of gelu's tanh approximation) the
comparison is against float64 formulas too. Thinc's own suite runs
against the backend in tests/thinc_suite.py.
"""

import numpy as np
import pytest
from scipy.special import erf
from scipy.special import expit as sp_expit

thinc_api = pytest.importorskip("thinc.api")

from nnkernels.thinc import NNKernelsOps  # noqa: E402
from _nkutil import load_example  # noqa: E402

NUMPY = thinc_api.NumpyOps()
OPS = NNKernelsOps()
DTYPES = [np.float32, np.float64]
# a few ulp of the dtype, relative, for results of one rounded formula
RTOL = {np.float32: 2e-6, np.float64: 1e-13}


def _arrays(rng, dtype, shape=(7, 33), strided=False):
    make = (lambda: rng.uniform(-6, 6, (shape[0], 2 * shape[1])).astype(dtype)[:, ::2]
            if strided else rng.uniform(-6, 6, shape).astype(dtype))
    return make(), make()


def test_found_by_name():
    assert isinstance(thinc_api.get_ops("nnkernels"), NNKernelsOps)
    with thinc_api.use_ops("nnkernels"):
        assert isinstance(thinc_api.get_current_ops(), NNKernelsOps)
    assert NNKernelsOps.name == "nnkernels"


def _gelu(x):
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


# name -> (float64 formula, how far NumpyOps' own result may be from it):
# Thinc's ops.erf is a polynomial fit good to about 1.5e-7
FORWARD = {
    "relu": (lambda x: np.maximum(x, 0), 0.0),
    "sigmoid": (lambda x: 1 / (1 + np.exp(-x)), 0.0),
    "swish": (lambda x: x / (1 + np.exp(-x)), 0.0),
    "gelu": (_gelu, 1e-6),
    "gelu_approx": (_gelu_tanh, 0.0),
}
# name -> (arguments from (x, g), the argument written with inplace=True,
#          float64 formula of the result, how far NumpyOps may be from it)
BACKWARD = {
    "backprop_relu": (lambda x, g: (g, NUMPY.relu(x)), 0, lambda x, g: g * (x > 0), 0.0),
    # Thinc's in-place backprop_sigmoid writes Y, not dY
    "backprop_sigmoid": (lambda x, g: (g, NUMPY.sigmoid(x)), 1,
                         lambda x, g: g * sp_expit(x) * (1 - sp_expit(x)), 0.0),
    "backprop_gelu": (lambda x, g: (g, x), 0,
                      lambda x, g: g * (0.5 * (1 + erf(x / np.sqrt(2)))
                                        + x * np.exp(-x * x / 2) / np.sqrt(2 * np.pi)),
                      2e-6),
    "backprop_swish": (lambda x, g: (g, x, NUMPY.swish(x)), 0,
                       lambda x, g: g * sp_expit(x) * (1 + x * (1 - sp_expit(x))), 0.0),
}
# derivatives from the function's output y: name -> (y from z, float64 formula)
OF_OUTPUT = {"dtanh": (np.tanh, lambda y: 1 - y * y),
             "dsigmoid": (sp_expit, lambda y: y * (1 - y))}


@pytest.mark.parametrize("strided", [False, True], ids=["C", "strided"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", sorted(FORWARD))
def test_forward(name, dtype, strided, rng):
    x, _ = _arrays(rng, dtype, strided=strided)
    formula, numpy_ops_error = FORWARD[name]
    exact = formula(x.astype(np.float64))
    got = getattr(OPS, name)(x)
    assert got is not x and got.dtype == dtype and got.shape == x.shape
    np.testing.assert_allclose(got, exact, rtol=RTOL[dtype] * 4, atol=RTOL[dtype] * 4)
    # the same function as NumpyOps' (|x| <= 6: Thinc's sigmoid clip is inactive)
    np.testing.assert_allclose(got, getattr(NUMPY, name)(x.copy()), rtol=RTOL[dtype] * 8,
                               atol=numpy_ops_error + RTOL[dtype] * 8)
    inplace = x.copy()
    assert getattr(OPS, name)(inplace, inplace=True) is inplace
    np.testing.assert_array_equal(inplace, got)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", sorted(BACKWARD))
def test_backward(name, dtype, rng):
    x, g = _arrays(rng, dtype)
    make_args, written, formula, numpy_ops_error = BACKWARD[name]
    args = make_args(x, g)
    got = getattr(OPS, name)(*args)
    assert all(got is not a for a in args)
    exact = formula(x.astype(np.float64), g.astype(np.float64))
    np.testing.assert_allclose(got, exact, rtol=RTOL[dtype] * 8, atol=RTOL[dtype] * 8)
    np.testing.assert_allclose(got, getattr(NUMPY, name)(*[a.copy() for a in args]),
                               rtol=RTOL[dtype] * 8, atol=numpy_ops_error + RTOL[dtype] * 8)
    copies = [a.copy() for a in args]
    result = getattr(OPS, name)(*copies, inplace=True)
    assert result is copies[written]
    np.testing.assert_array_equal(result, got)
    for k, (a, c) in enumerate(zip(args, copies)):
        if k != written:
            np.testing.assert_array_equal(a, c)      # nothing else written


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", sorted(OF_OUTPUT))
def test_derivative_from_output(name, dtype, rng):
    make_y, formula = OF_OUTPUT[name]
    y = make_y(rng.uniform(-4, 4, (5, 9))).astype(dtype)
    exact = formula(y.astype(np.float64))
    got = getattr(OPS, name)(y)
    # 1 − y² near |y| = 1 cancels: NumpyOps' float32 formula loses digits there
    np.testing.assert_allclose(got, exact, rtol=RTOL[dtype] * 4)
    np.testing.assert_allclose(got, getattr(NUMPY, name)(y.copy()), rtol=1e-4 if
                               dtype == np.float32 else 1e-12)
    copy = y.copy()
    assert getattr(OPS, name)(copy, inplace=True) is copy
    np.testing.assert_array_equal(copy, got)


def test_more_exact_than_numpy_ops():
    """Unclipped sigmoid and swish; gelu_approx's exact derivative."""
    z = np.array([-40.0, -25.0, 25.0, 40.0])
    np.testing.assert_allclose(OPS.sigmoid(z), 1 / (1 + np.exp(-z)), rtol=1e-15)
    np.testing.assert_allclose(OPS.swish(z), z / (1 + np.exp(-z)), rtol=1e-15)
    assert np.max(np.abs(OPS.sigmoid(z) - NUMPY.sigmoid(z))) < 2.1e-9
    x = np.linspace(-5, 5, 41)
    h = 1e-6
    numeric = (OPS.gelu_approx(x + h) - OPS.gelu_approx(x - h)) / (2 * h)
    np.testing.assert_allclose(OPS.backprop_gelu_approx(np.ones_like(x), x), numeric,
                               atol=1e-8)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_softmax_and_backprop(dtype, axis, temperature, rng):
    x, dy = _arrays(rng, dtype, (6, 11))
    expected = NUMPY.softmax(x.copy(), axis=axis, temperature=temperature)
    y = OPS.softmax(x, axis=axis, temperature=temperature)
    np.testing.assert_allclose(y, expected, rtol=RTOL[dtype] * 8, atol=RTOL[dtype] / 8)
    np.testing.assert_allclose(
        OPS.backprop_softmax(y, dy, axis=axis, temperature=temperature),
        NUMPY.backprop_softmax(y, dy, axis=axis, temperature=temperature),
        rtol=RTOL[dtype] * 8, atol=RTOL[dtype] * 8)
    inplace = x.copy()
    assert OPS.softmax(inplace, inplace=True, axis=axis, temperature=temperature) is inplace
    np.testing.assert_array_equal(inplace, y)


def test_softmax_falls_back_for_3d(rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(OPS.softmax(x), NUMPY.softmax(x), rtol=1e-6)


@pytest.mark.parametrize("trans1", [False, True])
@pytest.mark.parametrize("trans2", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_gemm(dtype, trans1, trans2, rng):
    m, k, n = 5, 7, 3
    a = rng.standard_normal((k, m) if trans1 else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans2 else (k, n)).astype(dtype)
    expected = (a.T if trans1 else a).astype(np.float64) @ (b.T if trans2 else b)
    got = OPS.gemm(a, b, trans1=trans1, trans2=trans2)
    np.testing.assert_allclose(got, expected, rtol=RTOL[dtype] * 20, atol=RTOL[dtype] * 20)
    # out= is written in place, whatever its layout
    out = np.full((n, 2 * m), np.nan, dtype).T[::2]
    assert OPS.gemm(a, b, out=out, trans1=trans1, trans2=trans2) is out
    np.testing.assert_array_equal(out, got)


def test_gemm_errors_and_fallback():
    f = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="2-dimensional"):
        OPS.gemm(np.ones(3, np.float32), f)
    with pytest.raises(ValueError, match="Shape mismatch"):
        OPS.gemm(f, f)
    # mixed dtypes go to NumpyOps, which refuses them as Thinc does
    with pytest.raises(ValueError):
        OPS.gemm(f, np.ones((3, 2)))
    with pytest.raises(ValueError):
        NUMPY.gemm(f, np.ones((3, 2)))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_affine(dtype, rng):
    x = rng.standard_normal((9, 6)).astype(dtype)
    w = rng.standard_normal((4, 6)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    np.testing.assert_allclose(OPS.affine(x, w, b), x.astype(np.float64) @ w.T + b,
                               rtol=RTOL[dtype] * 20, atol=RTOL[dtype] * 20)


def test_adam_matches_numpy_ops(rng):
    n = 1000
    params = rng.standard_normal(n).astype(np.float32)
    mine = [params.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)]
    theirs = [params.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)]
    for step in range(1, 21):
        grad = rng.standard_normal(n).astype(np.float32)
        lr = 0.01 * np.sqrt(1 - 0.999 ** step) / (1 - 0.9 ** step)  # as Thinc's Optimizer
        g1, g2 = grad.copy(), grad.copy()
        out = OPS.adam(mine[0], g1, mine[1], mine[2], 0.9, 0.999, 1e-8, lr)
        NUMPY.adam(theirs[0], g2, theirs[1], theirs[2], 0.9, 0.999, 1e-8, lr)
        assert out[0] is mine[0] and out[1] is g1 and out[2] is mine[1] and out[3] is mine[2]
        assert not g1.any()                       # zeroed, as NumpyOps does
        for a, b in zip(mine, theirs):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(mine[0], params)


def test_adam_errors():
    one, two = np.zeros(1, np.float32), np.zeros(2, np.float32)
    for k in range(4):
        args = [one] * 4
        args[k] = two
        with pytest.raises(ValueError, match="same shape"):
            OPS.adam(*args, 0.9, 0.999, 1e-8, 0.1)
    # float64 weights: NumpyOps' float32-only kernel refuses them, and so does this
    with pytest.raises(ValueError):
        OPS.adam(*[np.zeros(3)] * 4, 0.9, 0.999, 1e-8, 0.1)


def test_falls_back_to_numpy_ops_for_other_dtypes():
    x = np.array([-1.5, 0.0, 2.5], np.float16)
    np.testing.assert_array_equal(OPS.relu(x), NUMPY.relu(x))
    assert OPS.relu(x).dtype == np.float16


def test_a_model_trains_the_same(rng):
    """Relu >> Relu >> Softmax with Adam: equal losses to rounding on both backends."""
    from thinc.api import Adam, Relu, Softmax, chain

    x = rng.standard_normal((64, 12)).astype(np.float32)
    y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 64)]
    results = []
    for ops in (NUMPY, OPS):
        thinc_api.fix_random_seed(0)
        with thinc_api.use_ops(ops.name):
            model = chain(Relu(nO=16), Relu(nO=16), Softmax())
            model.initialize(X=x[:5], Y=y[:5])
            optimizer = Adam(0.01)
            losses = []
            for _ in range(30):
                guesses, backprop = model.begin_update(x)
                losses.append(float(((guesses - y) ** 2).sum()))
                backprop((guesses - y) / len(x))
                model.finish_update(optimizer)
            results.append(np.array(losses))
    assert results[0][-1] < results[0][0]
    np.testing.assert_allclose(results[1], results[0], rtol=1e-4)


def test_training_example():
    """examples/train_thinc.py: equal accuracies on both backends, both learning."""
    result = load_example("train_thinc").main(["--quiet", "--hidden", "64", "--epochs", "10", "--lr", "0.003"])
    numpy_acc = result["numpy"]["test_accuracy"]
    assert numpy_acc > 0.9
    # 450 test images: one prediction flipped by rounding is 0.0022
    assert abs(result["nnkernels"]["test_accuracy"] - numpy_acc) <= 0.005
