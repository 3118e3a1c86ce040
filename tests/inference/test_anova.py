"""Likelihood-ratio tests between nested models against lme4's anova()."""

import numpy as np
import pytest

import jaxlmm
from conftest import load_data


@pytest.fixture(scope="module")
def fits():
    d = load_data("sleepstudy")
    return (jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", d),
            jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", d))


def test_matches_lme4(fits):
    # lme4 1.1-31: anova(lmer(Reaction ~ Days + (1|Subject), sleepstudy),
    #                    lmer(Reaction ~ Days + (Days|Subject), sleepstudy))
    #   npar 4: AIC 1802.078643 BIC 1814.850470 logLik -897.0393215 deviance 1794.078643
    #   npar 6: AIC 1763.939345 BIC 1783.097086 logLik -875.9696722 deviance 1751.939345
    #           Chisq 42.1393 Df 2 Pr(>Chisq) 7.0724e-10   ("refitting model(s) with ML")
    f0, f1 = fits
    a = jaxlmm.anova(f1, f0)  # ordered by npar whatever the order given
    assert list(a.index) == ["model2", "model1"]
    assert list(a.columns) == ["npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", "p"]
    np.testing.assert_allclose(a["AIC"], [1802.078643, 1763.939345], rtol=1e-8)
    np.testing.assert_allclose(a["BIC"], [1814.850470, 1783.097086], rtol=1e-8)
    np.testing.assert_allclose(a["logLik"], [-897.0393215, -875.9696722], rtol=1e-8)
    assert a["Chisq"].iloc[1] == pytest.approx(42.1393, rel=1e-5)
    assert a["Df"].iloc[1] == 2
    assert a["p"].iloc[1] == pytest.approx(7.0724e-10, rel=1e-4)
    assert a.attrs["refitted"] == ("model1", "model2")


def test_ml_fits_are_not_refitted(fits):
    d = load_data("sleepstudy")
    m0 = jaxlmm.lmer("Reaction ~ 1 + (1 | Subject)", d, reml=False)
    m1 = jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", d, reml=False)
    a = jaxlmm.anova(m0, m1, names=["null", "days"])
    assert a.attrs["refitted"] == ()
    assert a.loc["days", "Chisq"] == pytest.approx(m0.objective - m1.objective)


def test_bad_input(fits):
    f0, f1 = fits
    d = load_data("sleepstudy")
    other = jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", d.iloc[:150])
    with pytest.raises(jaxlmm.ArgumentError, match="different data"):
        jaxlmm.anova(f0, other)
    d2 = d.assign(R2=d.Reaction * 2)
    resp = jaxlmm.lmer("R2 ~ Days + (1 | Subject)", d2)
    with pytest.raises(jaxlmm.ArgumentError, match="response"):
        jaxlmm.anova(f0, resp)
    with pytest.raises(jaxlmm.ArgumentError, match="at least two"):
        jaxlmm.anova(f0)
    with pytest.raises(jaxlmm.ArgumentError, match="not a fitted model"):
        jaxlmm.anova(f0, "model")
