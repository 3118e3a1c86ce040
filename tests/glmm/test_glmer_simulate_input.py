"""Bad arguments to a glmer fit's simulate, bootstrap and refit: jaxlmm errors naming the
argument, before any draw or fit."""

import numpy as np
import pandas as pd
import pytest
from conftest import load_data

import jaxlmm


@pytest.fixture(scope="module")
def cbpp():
    d = load_data("cbpp")
    d["period"] = d["period"].astype(str)
    return d


@pytest.fixture(scope="module")
def binomial(cbpp):
    return jaxlmm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, "binomial")


@pytest.fixture(scope="module")
def poisson(cbpp):
    return jaxlmm.glmer("incidence ~ period + (1 | herd)", cbpp, "poisson")


@pytest.mark.parametrize("seed", ["abc", -1, 2.5, False])
def test_bad_seed(binomial, seed):
    for call in (lambda: binomial.simulate(2, seed=seed), lambda: binomial.bootstrap(2, seed=seed)):
        with pytest.raises(jaxlmm.ArgumentError, match="seed"):
            call()
    # what numpy seeds from stays accepted: a Generator continues its stream
    a = binomial.simulate(3, seed=np.random.default_rng(8)).to_numpy()
    np.testing.assert_array_equal(a, binomial.simulate(3, seed=np.random.SeedSequence(8)).to_numpy())


def test_bad_batch_size_is_refused_before_simulating(binomial, monkeypatch):
    import jaxlmm.glmm.simulate as gs

    monkeypatch.setattr(gs, "templates_np", lambda *a: pytest.fail("simulated before checking batch_size"))
    for bad in (0, "4"):
        with pytest.raises(jaxlmm.ArgumentError, match="batch_size must be a positive integer"):
            binomial.bootstrap(2, batch_size=bad)


def test_simulations_larger_than_memory(binomial, monkeypatch):
    for call in (binomial.simulate, binomial.bootstrap):
        with pytest.raises(jaxlmm.ArgumentError, match=r"n is too large: .* 56 rows .* PB of memory"):
            call(10**12)
    from jaxlmm import arguments

    monkeypatch.setattr(arguments, "physical_memory", lambda: 10**6)
    with pytest.raises(jaxlmm.ArgumentError, match="about 1.8 MB of memory, and this machine has 1.0 MB"):
        binomial.simulate(1000)


@pytest.mark.parametrize("y, cls, match", [
    (["a"] * 56, jaxlmm.DataError, "y must be numeric; it holds strings such as 'a'"),
    (np.full(56, np.nan), jaxlmm.DataError, "y has 56 missing or infinite values"),
    (np.zeros(55), jaxlmm.ArgumentError, "y has 55 values but the fit used 56 rows"),
    (np.zeros((56, 2)), jaxlmm.ArgumentError, "y must be one-dimensional"),
    (pd.DataFrame({"a": np.zeros(56), "b": np.zeros(56)}), jaxlmm.ArgumentError, "DataFrame with 2 columns"),
])
def test_bad_binomial_refit(binomial, y, cls, match):
    with pytest.raises(cls, match=match):
        binomial.refit(y)


def test_refit_response_must_suit_the_family(binomial, poisson):
    # booleans are a binomial response only
    with pytest.raises(jaxlmm.DataError, match="y is boolean"):
        poisson.refit(np.arange(56) % 2 == 0)
    y = binomial._model.design.y > 0.1
    assert binomial.refit(y).objective == pytest.approx(binomial.refit(y.astype(float)).objective, rel=1e-12)
    # values outside the family's support (family.check_response)
    with pytest.raises(jaxlmm.DataError, match=r"binomial y must be 0/1 or a proportion in \[0, 1\]"):
        binomial.refit(np.full(56, 2.0))
    with pytest.raises(jaxlmm.DataError, match="poisson y must be non-negative counts"):
        poisson.refit(-np.ones(56))
    with pytest.raises(jaxlmm.DataError, match="whole counts"):
        poisson.refit(np.full(56, 1.5))
