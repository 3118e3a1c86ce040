"""Families and links against scipy's distributions and JAX's own derivatives."""

import jax
import numpy as np
import pytest
from scipy import stats

from jaxlmm.errors import ArgumentError, DataError
from jaxlmm.glmm.family import Family, binomial, family, gamma, poisson
from jaxlmm.precision import float64

LINK_CASES = [("binomial", "logit"), ("binomial", "probit"), ("binomial", "cloglog"), ("poisson", "log"),
              ("gamma", "inverse"), ("gamma", "log")]


def _mu_grid(fam):
    return np.linspace(0.02, 0.98, 25) if fam == "binomial" else np.linspace(0.1, 20.0, 25)


@pytest.mark.parametrize("fam,link", LINK_CASES)
def test_link_inverse_and_derivative(fam, link):
    f = family(fam, link)
    mu = _mu_grid(fam)
    with float64():
        eta = f.link.link(mu)
        np.testing.assert_allclose(f.link.inverse(eta), mu, rtol=1e-12)
        d = jax.vmap(jax.grad(f.link.inverse))(eta)
        np.testing.assert_allclose(f.link.mu_eta(eta), d, rtol=1e-10)


def test_binomial_against_scipy():
    rng = np.random.default_rng(0)
    w = rng.integers(1, 12, 40).astype(float)
    k = np.floor(rng.uniform(0, 1, 40) * (w + 1)).clip(0, w)
    y, mu = k / w, rng.uniform(0.05, 0.95, 40)
    f = binomial()
    with float64():
        np.testing.assert_allclose(f.neg2_loglik(y, mu, w), -2 * stats.binom.logpmf(k, w, mu), rtol=1e-10)
        sat = np.clip(y, 1e-300, 1 - 1e-16)
        dev = -2 * (stats.binom.logpmf(k, w, mu) - stats.binom.logpmf(k, w, sat))
        np.testing.assert_allclose(w * f.unit_deviance(y, mu), dev, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(f.variance(mu), mu * (1 - mu), rtol=1e-15)


def test_poisson_against_scipy():
    rng = np.random.default_rng(1)
    y, mu = rng.poisson(3.0, 50).astype(float), rng.uniform(0.2, 8.0, 50)
    f = poisson()
    with float64():
        np.testing.assert_allclose(f.neg2_loglik(y, mu, np.ones(50)), -2 * stats.poisson.logpmf(y, mu), rtol=1e-10)
        dev = -2 * (stats.poisson.logpmf(y, mu) - stats.poisson.logpmf(y, np.maximum(y, 1e-300)))
        np.testing.assert_allclose(f.unit_deviance(y, mu), dev, rtol=1e-8, atol=1e-10)
        r = np.asarray(f.deviance_residuals(y, mu, np.ones(50)))
        np.testing.assert_allclose(r**2, dev, rtol=1e-8, atol=1e-10)
        assert np.all(np.sign(r) == np.sign(y - mu))


def test_gamma_against_scipy():
    rng = np.random.default_rng(2)
    y, mu = rng.gamma(2.0, 1.5, 30), rng.uniform(0.5, 6.0, 30)
    f, phi = gamma(), 0.4
    with float64():
        ref = -2 * stats.gamma.logpdf(y, a=1 / phi, scale=mu * phi)
        np.testing.assert_allclose(f.neg2_loglik(y, mu, np.ones(30), phi), ref, rtol=1e-10)
        dev = -2 * (stats.gamma.logpdf(y, a=1.0, scale=mu) - stats.gamma.logpdf(y, a=1.0, scale=y))
        np.testing.assert_allclose(f.unit_deviance(y, mu), dev, rtol=1e-8)
        np.testing.assert_allclose(f.pearson_residuals(y, mu, np.ones(30)), (y - mu) / mu, rtol=1e-12)


def test_names_objects_and_bad_arguments():
    assert repr(family("Binomial")) == "Family('binomial', link='logit')"
    f = family("binomial", "probit")
    assert family(f) is f and isinstance(f, Family)
    assert family(f, "cloglog").link.name == "cloglog"
    assert not gamma().scale_free and poisson().scale_free
    with pytest.raises(ArgumentError, match="unknown family 'gaussian2'"):
        family("gaussian2")
    with pytest.raises(ArgumentError, match="unknown link 'identity' for the poisson family"):
        family("poisson", "identity")
    with pytest.raises(ArgumentError, match="family must be a name"):
        family(3)


def test_responses_outside_the_support():
    ones = np.ones(3)
    with pytest.raises(DataError, match=r"binomial response must be 0/1 or a proportion in \[0, 1\]; row 1 has 2.0"):
        binomial().check_response(np.array([0.0, 2.0, 1.0]), ones)
    with pytest.raises(DataError, match="whole successes; row 0"):
        binomial().check_response(np.array([0.5, 1.0, 0.0]), np.array([3.0, 1.0, 1.0]))
    binomial().check_response(np.array([0.5, 1.0, 0.25]), np.array([2.0, 1.0, 4.0]))  # proportions: fine
    with pytest.raises(DataError, match="poisson response must be non-negative counts; row 2 has -1.0"):
        poisson().check_response(np.array([0.0, 3.0, -1.0]), ones)
    with pytest.raises(DataError, match="whole counts"):
        poisson().check_response(np.array([0.0, 2.5, 1.0]), ones)
    with pytest.raises(DataError, match="gamma response must be positive; row 0 has 0.0"):
        gamma().check_response(np.array([0.0, 2.5, 1.0]), ones)
