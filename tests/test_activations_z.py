"""tanh, gelu (both forms), silu, leaky relu, elu, softplus and their
backward passes from the input z.

Checked against nnkernels.reference (float64 NumPy/SciPy), against values
computed with mpmath at 40 digits (written down here), against torch's
functional forms and autograd, by finite differences, and for out=, in
place, layouts, threads and bad arguments.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")

import nnkernels as nk
import nnkernels.reference as ref
from _nkutil import DTYPES, LAYOUTS, assert_close, layout, readonly, torch_module

# (forward, backward or None, options): every function and a non-default option set
CASES = [
    ("tanh", None, {}),
    ("gelu", "gelu_backward", {}),
    ("gelu", "gelu_backward", {"approximate": "tanh"}),
    ("silu", "silu_backward", {}),
    ("leaky_relu", "leaky_relu_backward", {}),
    ("leaky_relu", "leaky_relu_backward", {"negative_slope": 0.2}),
    ("elu", "elu_backward", {}),
    ("elu", "elu_backward", {"alpha": 2.0}),
    ("softplus", "softplus_backward", {}),
    ("softplus", "softplus_backward", {"beta": 2.0, "threshold": 10.0}),
]
BACKWARD_CASES = [c for c in CASES if c[1] is not None]
IDS = [f"{f}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'default'}" for f, _, kw in CASES]
BACKWARD_IDS = [i for i, c in zip(IDS, CASES) if c[1] is not None]


def grid(dtype):
    """The whole float range: 0, ±0, ±inf, NaN, subnormals, the softplus
    thresholds and their neighbours, a dense stretch around 0, large |z|."""
    fi = np.finfo(dtype)
    dtype = fi.dtype.type
    pos = np.geomspace(fi.smallest_subnormal, fi.max, 3000)
    edges = [dtype(20), dtype(5)]      # thresholds / β of the cases
    near = [np.nextafter(e, dtype(np.inf)) for e in edges] + [np.nextafter(e, dtype(0)) for e in edges]
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, fi.tiny, -fi.tiny, fi.smallest_subnormal,
               -fi.smallest_subnormal, fi.max, -fi.max, -0.7517916, -1.2784645]
    z = np.concatenate([np.linspace(-40, 40, 8001), pos, -pos, special, edges, near])
    return z.astype(dtype)


def call(name, *args, **kw):
    return getattr(nk, name)(*args, **kw)


def torch_values(fwd, kw, z64):
    """torch.nn.functional's value and autograd's derivative, in float64."""
    torch = torch_module()
    F = torch.nn.functional
    fns = {"tanh": torch.tanh, "gelu": F.gelu, "silu": F.silu, "leaky_relu": F.leaky_relu,
           "elu": F.elu, "softplus": F.softplus}
    t = torch.from_numpy(z64.copy()).requires_grad_(True)
    y = fns[fwd](t, **kw)
    (g,) = torch.autograd.grad(y.sum(), t)
    return y.detach().numpy(), g.numpy()


# ---- values ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fwd, bwd, kw", CASES, ids=IDS)
def test_matches_reference_over_the_float_range(fwd, bwd, kw, dtype):
    z = grid(dtype)
    got = call(fwd, z, **kw)
    assert got.dtype == dtype and got.shape == z.shape
    assert_close(got, getattr(ref, fwd)(z, **kw), err_msg=fwd)
    if bwd is not None:
        g = np.random.default_rng(0).uniform(0.5, 2.0, z.shape).astype(dtype)
        got = call(bwd, g, z, **kw)
        assert got.dtype == dtype
        assert_close(got, getattr(ref, bwd)(g, z, **kw), err_msg=bwd)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fwd, bwd, kw", CASES, ids=IDS)
def test_matches_torch_over_the_float_range(fwd, bwd, kw, dtype):
    """torch in float64 on the same inputs; where torch's float64 formula
    cancels or overflows the comparison is relative to the scale (atol),
    and where it gives NaN for a finite z (gelu tanh's z² overflow) our
    value is the limit instead (checked below)."""
    z = grid(dtype)
    z64 = z.astype(np.float64)
    value, deriv = torch_values(fwd, kw, z64)
    assert_close(call(fwd, z, **kw), value, dtype=dtype, err_msg=fwd)
    if bwd is not None:
        got = call(bwd, np.ones_like(z), z, **kw)
        keep = ~(np.isnan(deriv) & np.isfinite(z64))
        # torch's only NaN at a finite z: gelu tanh's 0 · ∞ once z² overflows
        assert (np.abs(z64[~keep]) > 1e100).all() and (kw.get("approximate") == "tanh"
                                                        or keep.all())
        assert_close(got[keep], deriv[keep], dtype=dtype, err_msg=bwd)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_tanh_backward_limits_where_torch_overflows(dtype):
    big = np.array([1e200, -1e200] if dtype == np.float64 else [1e30, -1e30], dtype)
    np.testing.assert_array_equal(nk.gelu_backward(np.ones_like(big), big, approximate="tanh"),
                                  np.array([1.0, 0.0], dtype))


# mpmath at 40 digits: z Φ(z), Φ(z) + z φ(z), z σ(2u), z σ(z), log1p(e^z)
MPMATH = [
    ("gelu", {}, -8.0, -4.9767684594174273e-15),
    ("gelu", {}, -10.0, -7.6198530241605261e-23),
    ("gelu", {}, -20.0, -5.5072482372124674e-88),
    ("gelu", {}, -37.0, -2.1184613523340934e-298),
    ("gelu_backward", {}, -10.0, -7.6184000964648141e-22),
    ("gelu_backward", {}, -20.0, -1.1014360483133464e-86),
    ("gelu", {"approximate": "tanh"}, -5.0, -2.291796196629506e-7),
    ("gelu", {"approximate": "tanh"}, -8.0, -3.1077829375011112e-21),
    ("silu", {}, -100.0, -3.720075976020836e-42),
    ("softplus", {}, -100.0, 3.720075976020836e-44),
    ("softplus", {}, 20.0, 20.000000002061154),
]


@pytest.mark.parametrize("name, kw, z, want", MPMATH)
def test_tails_keep_their_relative_accuracy(name, kw, z, want):
    """Where torch (and the textbook formulas) cancel to 0, the kernels keep
    a few ulp: Φ(z) from its own tail approximation, 1 + tanh u as 2σ(2u)."""
    zz = np.array([z])
    got = call(name, np.ones(1), zz, **kw)[0] if name.endswith("_backward") else call(name, zz, **kw)[0]
    assert got == pytest.approx(want, rel=2e-15 if name != "gelu" or not kw else 1e-13)
    if abs(want) > 1e-37:    # float32 too (above its subnormals)
        got32 = call(name, zz.astype(np.float32), **kw)[0] if not name.endswith("_backward") \
            else call(name, np.ones(1, np.float32), zz.astype(np.float32), **kw)[0]
        assert float(got32) == pytest.approx(want, rel=1e-6)


def test_float32_gelu_tanh_tail_keeps_its_accuracy_where_sigma_is_subnormal():
    """Below z ≈ -9.9, σ(2u) is a float32 subnormal (0 below z ≈ -10.9) while
    gelu-tanh's g' is ~250 times larger: computed from that σ it would carry
    its absolute rounding (130 ulp).  Against the float64 reference rounded
    once: a few ulp for normal results, a few smallest subnormals below."""
    z = np.linspace(-11.5, -9.0, 20001).astype(np.float32)
    x = z.astype(np.float64)
    tiny, least = np.finfo(np.float32).tiny, np.finfo(np.float32).smallest_subnormal
    for got, exact, ulps, leasts in (
            (nk.gelu_backward(np.ones_like(z), z, approximate="tanh"),
             ref.gelu_backward(np.ones(z.size), x, approximate="tanh"), 8, 4),
            (nk.gelu(z, approximate="tanh"), ref.gelu(x, approximate="tanh"), 4, 2)):
        err = np.abs(got.astype(np.float64) - exact)
        subnormal = np.abs(exact) < tiny
        ulp = np.spacing(np.abs(exact[~subnormal]).astype(np.float32)).astype(np.float64)
        assert np.max(err[~subnormal] / ulp) <= ulps
        assert np.max(err[subnormal]) <= leasts * least


def test_infinite_grad_times_underflowed_slope_is_nan_in_float32():
    """grad × g'(z) with g' rounded to float32 first, as PyTorch: ±∞ while g'
    is a float32 number, NaN (∞ · 0) once it underflows (z < -10.9 for the
    tanh form); the float64 kernel keeps ±∞ down to z ≈ -21."""
    z = np.array([-10.5, -10.8, -11.5, -13.0], np.float32)
    for dtype, want in ((np.float32, [-np.inf, -np.inf, np.nan, np.nan]),
                        (np.float64, [-np.inf] * 4)):
        got = nk.gelu_backward(np.full(4, np.inf, dtype), z.astype(dtype), approximate="tanh")
        np.testing.assert_array_equal(got, np.array(want, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_conventions_at_special_points(dtype):
    one = np.ones(4, dtype)
    z = np.array([0.0, -0.0, np.nan, -1.0], dtype)
    # leaky relu and elu: the z <= 0 slope at 0 (and leaky relu's at NaN); elu's NaN is NaN
    np.testing.assert_array_equal(nk.leaky_relu_backward(one, z, negative_slope=0.5),
                                  np.array([0.5, 0.5, 0.5, 0.5], dtype))
    np.testing.assert_array_equal(nk.elu_backward(one, z, alpha=2.0)[:3],
                                  np.array([2.0, 2.0, np.nan], dtype))
    assert nk.elu(np.array([-np.inf], dtype), alpha=3.0)[0] == -3.0
    # ∞ · 0 = NaN as in torch: gelu(-inf), silu(-inf), the derivatives at ±inf
    inf = np.array([np.inf, -np.inf], dtype)
    assert np.isnan(nk.gelu(inf)[1]) and nk.gelu(inf)[0] == np.inf
    assert np.isnan(nk.silu(inf)[1]) and nk.silu(inf)[0] == np.inf
    for kw in ({}, {"approximate": "tanh"}):
        assert np.isnan(nk.gelu_backward(np.ones(2, dtype), inf, **kw)).all()
    assert np.isnan(nk.silu_backward(np.ones(2, dtype), inf)).all()
    # softplus: linear strictly above the threshold, from βz formed in the dtype
    t = np.array([20.0, np.nextafter(dtype(20), dtype(30))], dtype)
    a = nk.softplus(t)
    assert a[1] == t[1] and a[0] == pytest.approx(20.000000002061154, rel=1e-7)
    assert dtype == np.float32 or a[0] != t[0]      # log1p(e^20), not 20 (float64)
    np.testing.assert_array_equal(nk.softplus_backward(np.ones(2, dtype), t)[1:], [1.0])
    assert nk.softplus(np.array([5.5], dtype), beta=4.0, threshold=21.0)[0] == dtype(5.5)
    assert nk.tanh(np.array([-0.0], dtype))[0] == 0 and np.signbit(nk.tanh(np.array([-0.0], dtype))[0])


# ---- gradients ---------------------------------------------------------------

@pytest.mark.parametrize("fwd, bwd, kw", BACKWARD_CASES, ids=BACKWARD_IDS)
def test_backward_is_the_derivative_by_finite_differences(fwd, bwd, kw):
    rng = np.random.default_rng(1)
    z = rng.standard_normal(400) * 3
    z = np.where(np.abs(z) < 0.05, z + 0.1, z)            # off the kinks at 0
    if "threshold" in kw or fwd == "softplus":
        z = np.concatenate([z, [4.0, 4.9, 19.0]])         # below the thresholds
    r = rng.standard_normal(z.shape)
    h = 1e-6
    fd = (call(fwd, z + h, **kw) - call(fwd, z - h, **kw)) / (2 * h)
    np.testing.assert_allclose(call(bwd, r, z, **kw), r * fd, rtol=1e-6, atol=1e-8)


def test_gradcheck_of_every_backward():
    rng = np.random.default_rng(2)
    z0 = rng.standard_normal((4, 5)) + 0.3
    for fwd, bwd, kw in BACKWARD_CASES:
        r = rng.standard_normal((4, 5))
        result = nk.gradcheck(lambda x: (float(np.sum(r * call(fwd, x, **kw))),
                                         call(bwd, r, x, **kw)), z0)
        assert result, (fwd, kw, result)


# ---- out=, in place, layouts, threads ----------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fwd, bwd, kw", CASES, ids=IDS)
def test_out_and_in_place(fwd, bwd, kw, dtype):
    rng = np.random.default_rng(3)
    z = (rng.standard_normal((7, 33)) * 4).astype(dtype)
    g = rng.standard_normal((7, 33)).astype(dtype)
    want = call(fwd, z, **kw)
    out = np.empty_like(z)
    assert call(fwd, z, out=out, **kw) is out
    np.testing.assert_array_equal(out, want)
    zc = z.copy()
    assert call(fwd, zc, out=zc, **kw) is zc
    np.testing.assert_array_equal(zc, want)
    if bwd is not None:
        want = call(bwd, g, z, **kw)
        for target in ("grad", "z"):
            gc, zc = g.copy(), z.copy()
            out = gc if target == "grad" else zc
            assert call(bwd, gc, zc, out=out, **kw) is out
            np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("fwd, bwd, kw", CASES, ids=IDS)
def test_layouts(fwd, bwd, kw, kind):
    rng = np.random.default_rng(4)
    z = rng.standard_normal((9, 13)) * 4
    g = rng.standard_normal((9, 13))
    want = call(fwd, z, **kw)
    np.testing.assert_array_equal(call(fwd, layout(z, kind), **kw), want)
    out = layout(np.zeros_like(z), kind)
    call(fwd, z, out=out, **kw)
    np.testing.assert_array_equal(out, want)
    if bwd is not None:
        np.testing.assert_array_equal(call(bwd, layout(g, kind), layout(z, kind), **kw),
                                      call(bwd, g, z, **kw))


@pytest.mark.parametrize("fwd, bwd, kw", CASES[:4] + CASES[8:9], ids=IDS[:4] + IDS[8:9])
def test_threads_give_the_same_result(fwd, bwd, kw, threads):
    z = np.random.default_rng(5).standard_normal(300_000).astype(np.float32) * 4
    before = nk.get_num_threads()
    nk.set_num_threads(1)
    want = call(fwd, z, **kw), (call(bwd, z, z, **kw) if bwd else None)
    nk.set_num_threads(before)
    np.testing.assert_array_equal(call(fwd, z, **kw), want[0])
    if bwd:
        np.testing.assert_array_equal(call(bwd, z, z, **kw), want[1])


def test_lists_are_float64():
    a = nk.gelu([-1.0, 0.0, 2.0])
    assert a.dtype == np.float64
    assert_close(a, ref.gelu(np.array([-1.0, 0.0, 2.0])))


# ---- bad arguments -------------------------------------------------------------

@pytest.mark.parametrize("fwd, bwd, kw", CASES, ids=IDS)
def test_bad_arrays_are_refused_with_the_argument_named(fwd, bwd, kw):
    z = np.ones((3, 4))
    with pytest.raises(TypeError, match="z must be a float32 or float64"):
        call(fwd, np.ones((3, 4), np.int64), **kw)
    with pytest.raises(ValueError, match="out is read-only"):
        call(fwd, z, out=readonly(z), **kw)
    with pytest.raises(ValueError, match="out must have shape"):
        call(fwd, z, out=np.empty((4, 3)), **kw)
    with pytest.raises(TypeError, match="out must have dtype"):
        call(fwd, z, out=np.empty((3, 4), np.float32), **kw)
    if bwd is not None:
        with pytest.raises(TypeError, match="grad float64, z float32"):
            call(bwd, z, z.astype(np.float32), **kw)
        with pytest.raises(ValueError, match="grad and z must have the same shape"):
            call(bwd, z, np.ones((4, 3)), **kw)
        with pytest.raises(TypeError, match="grad must be a float32 or float64"):
            call(bwd, np.ones((3, 4), bool), z, **kw)
        with pytest.raises(ValueError, match="out is read-only"):
            call(bwd, z, z, out=readonly(z), **kw)


OPTIONS = [("leaky_relu", "negative_slope"), ("elu", "alpha"), ("softplus", "beta"),
           ("softplus", "threshold")]


@pytest.mark.parametrize("module", [nk, ref], ids=["nnkernels", "reference"])
@pytest.mark.parametrize("fwd, option", OPTIONS)
def test_bad_options(module, fwd, option):
    z = np.ones(3)
    for fn in (lambda **k: getattr(module, fwd)(z, **k),
               lambda **k: getattr(module, fwd + "_backward")(z, z, **k)):
        for bad in (True, "0.5", None, [0.5]):
            with pytest.raises(TypeError, match=option):
                fn(**{option: bad})
        for bad in (np.inf, -np.inf, np.nan):
            with pytest.raises(ValueError, match=option):
                fn(**{option: bad})
        fn(**{option: 3})              # an int is a number
        fn(**{option: np.float32(0.5)})


@pytest.mark.parametrize("module", [nk, ref], ids=["nnkernels", "reference"])
def test_unknown_approximate(module):
    z = np.ones(3)
    for bad in ("Tanh", "NONE", "erf", None, 1):
        with pytest.raises(ValueError, match="approximate"):
            module.gelu(z, approximate=bad)
        with pytest.raises(ValueError, match="approximate"):
            module.gelu_backward(z, z, approximate=bad)


def test_options_are_keyword_only():
    z = np.ones(3)
    with pytest.raises(TypeError):
        nk.leaky_relu(z, 0.1)
    with pytest.raises(TypeError):
        nk.gelu(z, "tanh")
