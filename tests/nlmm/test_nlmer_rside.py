"""nlmer (Lindstrom-Bates) with residual structures against nlme's ``correlation=`` and
``weights=`` (tests/data/orange_nlme_ar1, co2_nlme_varpower, co2_nlme_varident_reml, written by
tests/data/nlmm_extra.R at tolerance 1e-7), and the structures' bad input."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxlmm
from conftest import load_data, load_reference
from jaxlmm.lmm.engine import fit_model
from jaxlmm.lmm.model import LmerModel
from jaxlmm.nlmm import lb
from jaxlmm.nlmm.build import arrays_of
from jaxlmm.precision import float64

LOGIS = "circumference ~ Asym / (1 + exp((xmid - age) / scal))"
ORANGE_START = {"Asym": 192, "xmid": 727, "scal": 348}
ASYMP_OFF = "uptake ~ Asym * (1 - exp(-exp(lrc) * (conc - c0)))"
CO2_START = {"Asym": 32.4, "lrc": -4.6, "c0": 49.3}


def rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.abs(b)))


@pytest.fixture(scope="module")
def orange():
    o = load_data("Orange")
    return o.assign(occasion=o.groupby("Tree").cumcount() + 1)


@pytest.fixture(scope="module")
def co2():
    return load_data("CO2")


def check(fit, ref, ll, fixef, se, sd):
    assert list(fit.fixef.index) == ref["beta_names"]
    assert rel(fit.loglik, ref["logLik"]) < ll
    assert rel(fit.fixef, ref["beta"]) < fixef
    assert rel(fit.se, ref["se"]) < se
    assert rel(fit.sigma, ref["sigma"]) < sd
    vc = fit.varcorr
    assert rel(vc.loc[vc.grp != "Residual", "sdcor"], ref["random_sd"][:-1]) < max(sd, 1e-6)  # nlme prints 7 digits
    assert fit.df == ref["df"] and fit.aic == pytest.approx(ref["AIC"], rel=ll)
    assert fit.converged and not fit.diagnostics["warnings"]


@pytest.fixture(scope="module")
def ar1_fit(orange):
    return jaxlmm.nlmer(LOGIS, orange, ORANGE_START, "(Asym | Tree)", method="lb",
                        correlation=jaxlmm.AR1("Tree", "occasion"))


def test_orange_ar1_ml(ar1_fit):
    ref = load_reference("orange_nlme_ar1")
    check(ar1_fit, ref, ll=1e-8, fixef=1e-6, se=1e-6, sd=1e-6)
    assert ar1_fit.correlation_params["phi"] == pytest.approx(ref["cor_params"], abs=1e-6)
    assert ar1_fit.variance_params.empty
    text = ar1_fit.summary()
    assert "Correlation structure: AR1" in str(text) and "phi = -0.04078" in str(text)


def test_co2_varpower_ml(co2):
    fit = jaxlmm.nlmer(ASYMP_OFF, co2, CO2_START, "(Asym | Plant)", method="lb", variance=jaxlmm.VarPower("conc"))
    ref = load_reference("co2_nlme_varpower")
    # nlme's sigma is 1.6e-5 from ours (its tolerance on the variance parameter); logLik 1e-9
    check(fit, ref, ll=1e-8, fixef=1e-6, se=1e-5, sd=3e-5)
    assert fit.variance_params["power"] == pytest.approx(ref["var_params"], abs=1e-5)
    # Pearson residuals divide by sigma |conc|^power: nlme's standardised residual quantiles
    q = np.quantile(fit.pearson_residuals, [0, 0.25, 0.5, 0.75, 1])
    assert np.allclose(q, [-2.9843763, -0.5652677, 0.0387269, 0.5089392, 2.1392079], atol=2e-5)


def test_co2_varident_reml_fixed_point(co2):
    """nlme's REML fit with varIdent converges but reports estimates recomputed after its
    iterations (sd ratio 5.598) that differ from its own last LME step's (header of nlmm_extra.R:
    log(sigma / sd) = -1.752039, log(delta) = 0.3433713, verbose output); and its PNLS step gives
    Asym 32.45644 where ours, at nlme's own (theta, delta), gives 32.45896 (by ML the two agree to
    1e-8). Ours is checked as a fixed point: the LME fitted by REML, with the structure, to the
    linearisation at our estimates returns them; and nlme's last LME step is within 2e-5."""
    fit = jaxlmm.nlmer(ASYMP_OFF, co2, CO2_START, "(Asym | Plant)", method="lb", reml=True,
                       variance=jaxlmm.VarIdent("Type"))
    vc = fit.varcorr
    assert np.log(fit.sigma / vc.loc[vc.grp == "Plant", "sdcor"].iloc[0]) == pytest.approx(-1.752039, abs=2e-5)
    assert np.log(fit.variance_params.iloc[0]) == pytest.approx(0.3433713, abs=2e-5)
    ref = load_reference("co2_nlme_varident_reml")
    assert fit.loglik > ref["logLik"] and rel(fit.loglik, ref["logLik"]) < 1e-4
    assert rel(fit.fixef, ref["beta"]) < 5e-4 and fit.reml and fit.df == ref["df"]
    d = fit._design
    with float64():
        G = arrays_of(d, "lb", 1)
        u = [jnp.asarray(fit._b[0] / fit.theta[0])]
        Xt, Zt, w = lb._linearise(jnp.asarray(fit.theta), jnp.asarray(fit.fixef.to_numpy()), u, G)
    model = LmerModel.from_design(lb._linear_design(d, Xt, Zt, w), None, d.variance)
    lme = fit_model(model, reml=True)
    # to the LMM optimiser's tolerance (the host iterations stop at 1e-5 in theta)
    assert lme.theta[0] == pytest.approx(fit.theta[0], rel=1e-5)
    assert lme.variance_params.iloc[0] == pytest.approx(fit.variance_params.iloc[0], rel=1e-5)
    assert np.allclose(lme.fixef, fit.fixef, rtol=1e-6) and lme.objective == pytest.approx(fit.objective, rel=1e-9)


def test_refit_and_rescaling_keep_the_structure(ar1_fit, orange):
    c = 2.0
    g = ar1_fit.refit(c * orange["circumference"])
    assert g.fixef["Asym"] == pytest.approx(c * ar1_fit.fixef["Asym"], rel=1e-6)
    assert g.sigma == pytest.approx(c * ar1_fit.sigma, rel=1e-6)
    assert g.correlation_params["phi"] == pytest.approx(ar1_fit.correlation_params["phi"], abs=1e-6)
    # the AR(1) fit nests the independent one (phi = 0): an LR test of one degree of freedom
    iid = jaxlmm.nlmer(LOGIS, orange, ORANGE_START, "(Asym | Tree)", method="lb")
    a = jaxlmm.anova(iid, ar1_fit)
    assert int(a["Df"].iloc[1]) == 1 and a["Chisq"].iloc[1] == pytest.approx(iid.objective - ar1_fit.objective)
    assert ar1_fit.objective <= iid.objective + 1e-6


def test_structure_bad_input(orange, ar1_fit):
    kw = dict(model=LOGIS, data=orange, start=ORANGE_START, random="(Asym | Tree)")
    with pytest.raises(jaxlmm.ArgumentError, match="must be nested in the random-effects grouping factor 'Tree'"):
        jaxlmm.nlmer(**kw, method="lb", correlation=jaxlmm.AR1("age", "occasion"))
    with pytest.raises(jaxlmm.ArgumentError, match="correlation must be one of jaxlmm's structures"):
        jaxlmm.nlmer(**kw, method="lb", correlation="ar1")
    with pytest.raises(jaxlmm.DataError, match="unknown column 'ocasion'.*did you mean 'occasion'"):
        jaxlmm.nlmer(**kw, method="lb", correlation=jaxlmm.AR1("Tree", "ocasion"))
    with pytest.raises(jaxlmm.ArgumentError, match="method='lb'"):
        jaxlmm.nlmer(**kw, correlation=jaxlmm.AR1("Tree", "occasion"))
    with pytest.raises(jaxlmm.ArgumentError, match="variance must be"):
        jaxlmm.nlmer(**kw, method="lb", variance="power")
    with pytest.raises(jaxlmm.ArgumentError, match="not available yet"):
        ar1_fit.simulate(2)
    with pytest.raises(jaxlmm.ArgumentError, match="not available yet"):
        ar1_fit.bootstrap(2)
    with pytest.raises(jaxlmm.ArgumentError, match="independent residuals"):
        jaxlmm.nlmer_many(LOGIS, orange, ORANGE_START, "(Asym | Tree)", method="lb",
                          correlation=jaxlmm.AR1("Tree", "occasion"))
