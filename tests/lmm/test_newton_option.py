"""``lmer(optimizer="newton")``: the trust-region Newton wired into fit_theta reaches lme4's
optimum on the reference fits (or lower), and the same end as BFGS; refits keep the optimiser;
what it cannot do is refused before any computation."""

import warnings

import numpy as np
import pandas as pd
import pytest

import jaxlmm
from conftest import load_data, load_reference

CASES = ["sleepstudy_slope_reml", "sleepstudy_slope_ml", "sleepstudy_uncorr_reml", "penicillin_crossed_reml",
         "dyestuff2_reml_singular", "sleepstudy_weights_reml", "sleepstudy_offset_ml", "pastes_nested_reml",
         "cake_factorial_reml"]


def _fit(ref, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jaxlmm.FitWarning)
        return jaxlmm.lmer(ref["formula"], load_data(ref["data"]), reml=ref["REML"], weights=ref["weights"],
                           offset=ref["offset"], **kw)


@pytest.mark.parametrize("fid", CASES)
def test_newton_reaches_lme4s_optimum(fid):
    ref = load_reference(fid)
    fit = _fit(ref, optimizer="newton")
    assert fit.optinfo["optimizer"] == "newton trust region (jax)"
    assert fit.converged
    assert fit.objective <= ref["objective"] * (1 + 1e-6) + 1e-9
    assert fit.objective == pytest.approx(ref["objective"], rel=1e-6)
    assert fit.singular == ref["singular"]
    theta = np.asarray(ref["theta"], float).ravel()
    np.testing.assert_allclose(np.abs(fit.theta), np.abs(theta), rtol=2e-4, atol=1e-6)
    bfgs = _fit(ref)
    assert fit.objective == pytest.approx(bfgs.objective, rel=1e-10)
    np.testing.assert_allclose(fit.fixef, bfgs.fixef, rtol=1e-6, atol=1e-8)


def test_newton_leaves_a_stationary_start():
    """Theta started at exactly zero is stationary for the slope; Newton (and the shared end
    checks) still reach the optimum."""
    sleep = load_data("sleepstudy")
    fit = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", sleep, optimizer="newton", start=[1.0, 0.0, 0.0])
    ref = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    assert fit.objective == pytest.approx(ref.objective, rel=1e-10)


def test_refits_keep_the_optimizer():
    sleep = load_data("sleepstudy")
    fit = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", sleep, optimizer="newton")
    y = sleep["Reaction"].to_numpy() * 2.0
    r = fit.refit(y)
    assert isinstance(r, jaxlmm.LmerResult) and r.optinfo["optimizer"] == fit.optinfo["optimizer"]
    assert r.objective == pytest.approx(jaxlmm.lmer("Reaction ~ Days + (Days | Subject)",
                                                    sleep.assign(Reaction=y)).objective, rel=1e-10)
    m0 = jaxlmm.lmer("Reaction ~ 1 + (Days | Subject)", sleep, optimizer="newton")
    a = jaxlmm.anova(m0, fit)
    b = jaxlmm.anova(jaxlmm.lmer("Reaction ~ 1 + (Days | Subject)", sleep),
                     jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", sleep))
    np.testing.assert_allclose(a["Chisq"].to_numpy()[1], b["Chisq"].to_numpy()[1], rtol=1e-7)


@pytest.mark.parametrize("kw, match", [
    ({"optimizer": "nelder-mead"}, "optimizer must be one of"),
    ({"optimizer": None}, "optimizer must be one of"),
    ({"optimizer": "newton", "correlation": jaxlmm.AR1("Subject", "Days")}, "residual correlation"),
])
def test_bad_optimizer_arguments(kw, match, monkeypatch):
    import jaxlmm.lmm.model as model_module

    monkeypatch.setattr(model_module, "gram_blocks", lambda *a, **k: pytest.fail("computed before refusing"))
    with pytest.raises(jaxlmm.ArgumentError, match=match):
        jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", load_data("sleepstudy"), **kw)


def test_newton_refuses_wide_terms():
    rng = np.random.default_rng(1)
    n = 400
    df = pd.DataFrame({f"x{j}": rng.normal(size=n) for j in range(7)})
    df["g"] = np.repeat(np.arange(40), 10).astype(str)
    df["y"] = rng.normal(size=n)
    with pytest.raises(jaxlmm.ArgumentError, match="at most 6"):
        jaxlmm.lmer("y ~ 1 + (x0 + x1 + x2 + x3 + x4 + x5 + x6 | g)", df, optimizer="newton")
