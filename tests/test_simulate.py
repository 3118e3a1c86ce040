"""Simulation, refits and the vmapped parametric bootstrap."""

import numpy as np
import pytest

import jaxlmm


@pytest.fixture(scope="module")
def fit():
    from conftest import load_data

    return jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", load_data("sleepstudy"))


def test_simulate_is_reproducible_and_has_the_model_moments(fit):
    a = fit.simulate(3, seed=11)
    b = fit.simulate(3, seed=11)
    assert a.shape == (180, 3) and list(a.columns) == ["sim_1", "sim_2", "sim_3"]
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())
    assert not np.array_equal(a.to_numpy(), fit.simulate(3, seed=12).to_numpy())
    # re=False keeps the conditional modes: residuals around the fitted values have SD sigma
    Y = fit.simulate(400, seed=1, re=False).to_numpy()
    resid = Y - fit.fitted.to_numpy()[:, None]
    assert resid.std() == pytest.approx(fit.sigma, rel=0.02)
    # re=True: the variance of a day-0 response is sd_int^2 + sigma^2
    Y = fit.simulate(2000, seed=2).to_numpy()
    day0 = (fit._model.design.X[:, 1] == 0)
    vc = fit._varcorr
    want = vc.vcov.iloc[0] + fit.sigma**2
    assert Y[day0].var(axis=1).mean() == pytest.approx(want, rel=0.05)


def test_refit_equals_a_fresh_fit(fit):
    from conftest import load_data

    y = fit.simulate(1, seed=3)["sim_1"]
    g = fit.refit(y)
    df = load_data("sleepstudy").assign(Reaction=y.to_numpy())
    h = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", df)
    assert g.objective == pytest.approx(h.objective, rel=1e-10)
    np.testing.assert_allclose(g.fixef, h.fixef, rtol=1e-7)
    np.testing.assert_allclose(g.theta, h.theta, rtol=1e-4, atol=1e-6)
    # the original response gives the original fit
    same = fit.refit(fit._model.design.y)
    assert same.objective == pytest.approx(fit.objective, rel=1e-10)


def test_bootstrap_replicates_equal_individual_refits(fit):
    boot = fit.bootstrap(4, seed=5)
    from jaxlmm.simulate import simulate_matrix

    Y = simulate_matrix(fit, 4, seed=5)
    for k in range(4):
        g = fit.refit(Y[:, k])
        assert boot["objective"].iloc[k] == pytest.approx(g.objective, rel=1e-9)
        np.testing.assert_allclose(boot.loc[k, list(g.fixef.index)], g.fixef, rtol=1e-7)
        assert boot.loc[k, "sigma"] == pytest.approx(g.sigma, rel=1e-6)
        assert boot.loc[k, "sd_Days|Subject"] == pytest.approx(g.varcorr.sdcor.iloc[1], rel=1e-4)
    again = fit.bootstrap(4, seed=5)
    np.testing.assert_array_equal(boot.to_numpy(), again.to_numpy())


def test_bootstrap_sd_of_fixed_effects_matches_wald_se(fit):
    boot = fit.bootstrap(1000, seed=20261125)
    assert boot["converged"].mean() > 0.99
    ratio = boot[list(fit.fixef.index)].std() / fit.se
    assert ((ratio > 0.9) & (ratio < 1.1)).all(), ratio
    ci = fit.confint("boot", replicates=boot)
    assert list(ci.index)[-2:] == ["(Intercept)", "Days"]
    assert (ci["lower"] < ci["upper"]).all()
    lo, hi = ci.loc["Days"]
    assert lo < fit.fixef["Days"] < hi


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_bad_counts(fit, n):
    with pytest.raises(jaxlmm.ArgumentError, match="positive integer"):
        fit.bootstrap(n)
    with pytest.raises(jaxlmm.ArgumentError, match="positive integer"):
        fit.simulate(n)


def test_bad_refit_response(fit):
    with pytest.raises(jaxlmm.ArgumentError, match="180"):
        fit.refit(np.zeros(10))
    y = fit._model.design.y.copy()
    y[3] = np.nan
    with pytest.raises(jaxlmm.DataError, match="missing"):
        fit.refit(y)
