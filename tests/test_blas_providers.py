"""BLAS providers: set_blas/get_blas, NNKERNELS_BLAS, the "auto" rule, the
messages for a provider that is not installed, and every installed
provider's products agreeing with SciPy's BLAS (and the float64 reference).
The whole dense suite runs under each provider in CI (NNKERNELS_BLAS=...).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import nnkernels as nk
import nnkernels.reference as ref
from nnkernels import _blas_providers as providers

INSTALLED = providers.installed()


@pytest.fixture
def restore_blas():
    before = nk.get_blas()
    yield
    nk.set_blas(before)


def test_scipy_is_always_installed_and_get_blas_names_one():
    assert "scipy" in INSTALLED
    assert nk.get_blas() in INSTALLED


@pytest.mark.parametrize("name", INSTALLED)
def test_set_blas_switches_and_build_info_reports_it(name, restore_blas):
    nk.set_blas(name)
    assert nk.get_blas() == name
    info = nk.build_info()
    assert info["blas_provider"] == name
    assert info["blas"].startswith(f"{name}: ")
    assert os.path.exists(providers.load(name).path) or name == "scipy"


@pytest.mark.parametrize("name", INSTALLED)
@pytest.mark.parametrize("act", [None, "sigmoid", "gelu"])
def test_every_provider_agrees_with_scipy_and_the_reference(name, act, dtype, restore_blas, rng):
    x = rng.standard_normal((67, 300)).astype(dtype)
    w = rng.standard_normal((45, 300)).astype(dtype)
    b = rng.standard_normal(45).astype(dtype)
    ga = rng.standard_normal((67, 45)).astype(dtype)
    results = {}
    for provider in ("scipy", name):
        nk.set_blas(provider)
        z = np.empty((67, 45), dtype)
        a = nk.dense_forward(x, w, b, act, z_out=z)
        results[provider] = (a, *nk.dense_backward(ga, x, w, a if act else None, act, z=z))
    tol = 1e-4 if dtype == np.float32 else 1e-12
    for got, base in zip(results[name], results["scipy"]):
        np.testing.assert_allclose(got, base, rtol=tol, atol=tol * np.abs(base).max())
    exp = ref.dense_backward(ga.astype(np.float64), x.astype(np.float64), w.astype(np.float64))
    got = nk.dense_backward(ga, x, w)
    for g, e in zip(got, exp):
        np.testing.assert_allclose(g, e, rtol=tol, atol=tol * np.abs(e).max())


@pytest.mark.parametrize("name", INSTALLED)
def test_provider_threads_follow_set_num_threads(name, restore_blas):
    before = nk.get_num_threads()
    nk.set_blas(name)
    try:
        nk.set_num_threads(1)
        assert nk.build_info()["blas_threads"] in (1, None)
        nk.set_num_threads(2)
        assert nk.build_info()["blas_threads"] in (2, None)
    finally:
        nk.set_num_threads(before)


@pytest.mark.parametrize("bad, exc", [("MKL", ValueError), ("", ValueError), ("blis", ValueError),
                                      (None, TypeError), (1, TypeError), (b"mkl", TypeError)])
def test_set_blas_refuses_unknown_names(bad, exc, restore_blas):
    before = nk.get_blas()
    with pytest.raises(exc, match="name"):
        nk.set_blas(bad)
    assert nk.get_blas() == before


@pytest.mark.parametrize("name, package", [("mkl", "mkl"), ("openblas", "scipy-openblas32")])
def test_a_missing_provider_raises_import_error_naming_the_package(name, package, monkeypatch):
    """As on a machine without the package: its loader's lookup fails."""
    def missing():
        raise providers._not_installed(name, "it is not installed")
    monkeypatch.setitem(providers._LOADERS, name, missing)
    monkeypatch.delitem(providers._loaded, name, raising=False)
    with pytest.raises(ImportError, match=f"{package}.*nnkernels\\[{name}\\]"):
        providers.load(name)
    # "auto" passes over it
    assert providers.resolve("auto") in INSTALLED


def test_auto_order_prefers_mkl_only_on_intel(monkeypatch):
    monkeypatch.setattr(providers, "cpu_vendor", lambda: "AuthenticAMD")
    assert providers.resolve("auto") == ("openblas" if "openblas" in INSTALLED else "scipy")
    monkeypatch.setattr(providers, "cpu_vendor", lambda: "GenuineIntel")
    expected = next(p for p in ("mkl", "openblas", "scipy") if p in INSTALLED)
    assert providers.resolve("auto") == expected


@pytest.mark.parametrize("value", ["scipy"] + [p for p in INSTALLED if p != "scipy"])
def test_environment_variable_picks_the_provider(value):
    code = "import nnkernels as nk; print(nk.get_blas())"
    env = dict(os.environ, NNKERNELS_BLAS=value)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == value


def test_environment_variable_with_a_bad_name_says_so():
    code = "import numpy as np, nnkernels as nk; nk.dense_forward(np.ones((2, 2)), np.ones((2, 2)))"
    env = dict(os.environ, NNKERNELS_BLAS="fastest")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0
    assert "NNKERNELS_BLAS" in out.stderr and "fastest" in out.stderr
