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
    from jaxlmm.inference.simulate import simulate_matrix

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


@pytest.mark.parametrize("seed", ["abc", -1, 1.5, True, [1, "x"]])
def test_bad_seed_is_an_argument_error(fit, seed):
    for call in (lambda: fit.simulate(2, seed=seed), lambda: fit.bootstrap(2, seed=seed),
                 lambda: fit.confint("boot", n=2, seed=seed)):
        with pytest.raises(jaxlmm.ArgumentError, match="seed"):
            call()


def test_seed_may_be_what_numpy_seeds_from_but_not_a_bool(fit):
    with pytest.raises(jaxlmm.ArgumentError, match=r"got True \(bool\)"):
        fit.simulate(2, seed=True)  # numpy would take it as 1
    a = fit.simulate(2, seed=np.random.default_rng(4)).to_numpy()
    b = fit.simulate(2, seed=np.random.SeedSequence(4)).to_numpy()
    c = fit.simulate(2, seed=np.int64(4)).to_numpy()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_bad_batch_size_is_refused_before_simulating(fit, monkeypatch):
    import jaxlmm.inference.simulate as sim

    monkeypatch.setattr(sim, "templates_np", lambda *a: pytest.fail("simulated before checking batch_size"))
    with pytest.raises(jaxlmm.ArgumentError, match="batch_size must be a positive integer"):
        fit.bootstrap(3, seed=1, batch_size="8")


@pytest.mark.parametrize("call", ["simulate", "bootstrap", "confint"])
def test_simulations_larger_than_memory_are_refused(fit, call):
    run = {"simulate": lambda n: fit.simulate(n), "bootstrap": lambda n: fit.bootstrap(n),
           "confint": lambda n: fit.confint("boot", n=n)}[call]
    with pytest.raises(jaxlmm.ArgumentError, match=r"n is too large: .* would need about .* PB of memory"):
        run(10**12)


def test_memory_bound_uses_the_machines_memory(fit, monkeypatch):
    from jaxlmm import arguments

    monkeypatch.setattr(arguments, "physical_memory", lambda: 10**6)  # a 1 MB machine
    with pytest.raises(jaxlmm.ArgumentError, match="would need about 7.2 MB of memory, and this machine has 1.0 MB"):
        fit.simulate(1000)
    assert fit.simulate(100).shape == (180, 100)  # 0.7 MB


@pytest.mark.parametrize("y, cls, match", [
    (["a"] * 180, jaxlmm.DataError, "y must be numeric; it holds strings such as 'a'"),
    (["1.5"] * 180, jaxlmm.DataError, "y must be numeric; it holds strings such as '1.5'"),
    ([1.0] * 179 + ["x"], jaxlmm.DataError, "y must be numeric; it holds strings such as 'x'"),
    (np.array([1.0] * 179 + ["x"], dtype=object), jaxlmm.DataError, "it holds mixed values such as 'x'"),
    (np.arange(180) % 2 == 0, jaxlmm.DataError, "y is boolean"),
    (np.ones(180) * 1j, jaxlmm.DataError, "y must be real numbers"),
    (np.zeros((180, 2)), jaxlmm.ArgumentError, r"y must be one-dimensional.*shape \(180, 2\)"),
    (np.zeros((1, 180)), jaxlmm.ArgumentError, r"y must be one-dimensional.*shape \(1, 180\)"),
    (np.zeros(179), jaxlmm.ArgumentError, "y has 179 values but the fit used 180 rows"),
    ({"a": 1}, jaxlmm.ArgumentError, "y must be an array or Series .* got dict"),
    ("Reaction", jaxlmm.ArgumentError, "got str"),
])
def test_bad_refit_responses_name_y(fit, y, cls, match):
    with pytest.raises(cls, match=match):
        fit.refit(y)


def test_refit_frames_and_series(fit):
    import pandas as pd

    y = fit._model.design.y
    two = pd.DataFrame({"a": y, "b": y})
    with pytest.raises(jaxlmm.ArgumentError, match=r"y is a DataFrame with 2 columns \('a', 'b'\); pass one column"):
        fit.refit(two)
    na = pd.Series(y, dtype="Float64")
    na.iloc[5] = pd.NA
    with pytest.raises(jaxlmm.DataError, match="y has 1 missing or infinite value .*missing, at position 5"):
        fit.refit(na)
    inf = y.copy()
    inf[[2, 9]] = np.inf
    with pytest.raises(jaxlmm.DataError, match="2 missing or infinite values .*infinite, at position 2"):
        fit.refit(inf)
    # a one-column frame, a nullable float Series and an object array of numbers are fine
    for good in (two[["a"]], pd.Series(y, dtype="Float64"), y.astype(object)):
        assert fit.refit(good).objective == pytest.approx(fit.objective, rel=1e-10)


def test_confint_arguments(fit):
    with pytest.raises(jaxlmm.ArgumentError, match=r"unexpected arguments for bootstrap intervals: \['foo'\]"):
        fit.confint("boot", n=2, foo=1)
    with pytest.raises(jaxlmm.ArgumentError, match=r"unexpected arguments for profile intervals: \['nn'\]"):
        fit.confint("profile", nn=3)
    with pytest.raises(jaxlmm.ArgumentError, match="replicates must be a DataFrame from fit.bootstrap"):
        fit.confint("boot", replicates=[[1.0, 2.0]])
    boot = fit.bootstrap(4, seed=5).assign(converged=False)
    with pytest.raises(jaxlmm.ArgumentError, match="no converged replicate"):
        fit.confint("boot", replicates=boot)


def test_refit_matches_a_series_by_label(fit):
    import pandas as pd

    y = fit.simulate(1, seed=9)["sim_1"]
    g = fit.refit(y)
    shuffled = y.sample(frac=1.0, random_state=2)  # the same values, rows in another order
    assert fit.refit(shuffled).objective == pytest.approx(g.objective, rel=1e-12)
    longer = pd.concat([y, pd.Series([1e6], index=[9999])])  # a row the fit did not use: ignored
    assert fit.refit(longer).objective == pytest.approx(g.objective, rel=1e-12)
    relabelled = pd.Series(y.to_numpy(), index=y.index + 1000)
    with pytest.raises(jaxlmm.ArgumentError, match=r"y is a Series whose index lacks label 0 .*to_numpy\(\)"):
        fit.refit(relabelled)
    with pytest.raises(jaxlmm.ArgumentError, match="duplicate index labels"):
        fit.refit(pd.Series(y.to_numpy(), index=[0] * 180))
