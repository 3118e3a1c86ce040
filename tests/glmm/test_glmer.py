"""glmer against lme4 (cbpp, Laplace and AGQ-10) and against the dense oracle (tests/glmm_oracle.py)
on generated crossed Poisson and binomial problems; derivatives, bad input and PIRLS failures."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import jaxlmm
from conftest import load_data, load_reference
from glmm_oracle import conditional_mode, dense_A, laplace_deviance
from jaxlmm.glmm import pirls
from jaxlmm.glmm.fit import hessian, values_grads
from jaxlmm.precision import float64


@pytest.fixture(scope="module")
def cbpp():
    d = load_data("cbpp")
    d["herd"] = pd.Categorical(d["herd"])  # lme4's level order 1..15
    d["period"] = d["period"].astype(str)
    return d


@pytest.fixture(scope="module")
def laplace(cbpp):
    return jaxlmm.glmer("prop ~ period + (1 | herd)", cbpp, "binomial", weights="size")


@pytest.fixture(scope="module")
def agq10(cbpp):
    return jaxlmm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, "binomial", nagq=10)


def _ranef(fit):
    r = fit.ranef
    return r.set_index("grp")


def test_cbpp_laplace_matches_lme4_run_to_convergence(laplace):
    """lme4 with PIRLS run to convergence (tolPwrss = 1e-12; tests/data/cbpp_tight.R)."""
    ref = load_reference("cbpp_binomial_laplace_tight")
    assert laplace.converged and not laplace.singular
    assert laplace.objective == pytest.approx(ref["minus2loglik"], rel=1e-8)
    assert laplace.loglik == pytest.approx(-0.5 * ref["minus2loglik"], rel=1e-8)
    np.testing.assert_allclose(laplace.fixef.to_numpy(), ref["beta"], rtol=1e-4)
    np.testing.assert_allclose(laplace.theta, [ref["theta"]], rtol=1e-4)
    np.testing.assert_allclose(laplace.se.to_numpy(), ref["se"], rtol=1e-3)
    np.testing.assert_allclose(laplace.vcov.to_numpy(), ref["vcov"], rtol=2e-3, atol=1e-6)
    re = _ranef(laplace)
    lv = [str(x) for x in ref["ranef"][0]["levels"]]
    np.testing.assert_allclose(re.loc[lv, "condval"], ref["ranef"][0]["values"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(re.loc[lv, "condsd"], ref["ranef"][0]["condsd"], rtol=1e-3)
    assert list(laplace.fixef.index) == ref["beta_names"]
    assert laplace.aic == pytest.approx(ref["minus2loglik"] + 10, rel=1e-8)


def test_cbpp_laplace_against_lme4_default_tolerance(laplace, cbpp):
    """lme4's default fit (PIRLS tolerance 1e-7) stops 3e-4 short in theta and reports a Laplace
    value 5.7e-4 above the one at its own estimates (3e-6 relative: the issue's 1e-6 holds against
    lme4 run to convergence, above). Our optimum is below lme4's reported value,
    and the exact Laplace value (dense oracle) at lme4's estimates is above ours."""
    ref = load_reference("cbpp_binomial_laplace")
    assert laplace.objective < ref["deviance_laplace"]
    assert laplace.objective == pytest.approx(ref["deviance_laplace"], rel=5e-6)
    np.testing.assert_allclose(laplace.fixef.to_numpy(), ref["beta"], rtol=5e-4)
    np.testing.assert_allclose(laplace.theta, [ref["theta"]], rtol=5e-4)
    # lme4's finite-difference Hessian over its inexact modes: its SEs are 1.3% below those of
    # its own converged fit (which ours match to 1e-5, above)
    np.testing.assert_allclose(laplace.se.to_numpy(), ref["se"], rtol=2e-2)
    X = np.column_stack([np.ones(len(cbpp))] + [(cbpp["period"] == p).to_numpy(float) for p in "234"])
    codes = cbpp["herd"].cat.codes.to_numpy()
    y, w = cbpp["prop"].to_numpy(float), cbpp["size"].to_numpy(float)
    A = dense_A([(codes, np.ones((len(y), 1)))], np.array([ref["theta"]]))
    at_lme4 = laplace_deviance(A, X, np.array(ref["beta"]), y, w, np.zeros(len(y)), "binomial")
    assert laplace.objective < at_lme4 < laplace.objective + 1e-4


def test_cbpp_agq10_estimates(agq10):
    for rid in ("cbpp_binomial_agq10", "cbpp_binomial_agq10_tight"):
        ref = load_reference(rid)
        np.testing.assert_allclose(agq10.fixef.to_numpy(), ref["beta"], rtol=1e-4)
        np.testing.assert_allclose(agq10.theta, [ref["theta"]], rtol=1e-4)
        np.testing.assert_allclose(agq10.se.to_numpy(), ref["se"], rtol=1e-3)
    assert agq10.nagq == 10 and agq10.converged
    assert "Adaptive Gauss-Hermite Quadrature, nAGQ = 10" in str(agq10.summary())


def test_cbind_equals_proportion_with_weights(laplace, cbpp):
    f = jaxlmm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, "binomial")
    assert f.objective == pytest.approx(laplace.objective, rel=1e-12)
    np.testing.assert_allclose(f.fixef.to_numpy(), laplace.fixef.to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(f.weights, cbpp["size"].to_numpy(float))
    assert f.formula.startswith("cbind(incidence, size - incidence) ~")


# --- the dense oracle on generated crossed problems ----------------------------------------------


def _crossed(family, seed, n=240, slope=False):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 12, n)
    h = rng.integers(0, 7, n)
    g[:12] = np.arange(12)
    h[:7] = np.arange(7)
    x = rng.normal(size=n)
    eta = 0.2 + 0.5 * x + 0.7 * rng.normal(size=12)[g] + 0.4 * rng.normal(size=7)[h]
    if slope:
        eta = eta + 0.3 * rng.normal(size=12)[g] * x
    if family == "poisson":
        y = rng.poisson(np.exp(eta)).astype(float)
        w = np.ones(n)
    else:
        w = rng.integers(1, 6, n).astype(float)
        y = rng.binomial(w.astype(int), 1 / (1 + np.exp(-eta))) / w
    off = 0.1 * rng.normal(size=n)
    df = pd.DataFrame({"y": y, "x": x, "g": [f"g{k:02d}" for k in g], "h": [f"h{k}" for k in h], "w": w,
                       "off": off})
    return df


def _oracle_parts(fit, df):
    """Dense A for the fit's (theta) and the data in the fit's term order."""
    d = fit._model.design
    terms = [(t.codes, t.columns) for t in d.terms]
    return terms, d.X, d.y, d.weights, d.offset


@pytest.mark.filterwarnings("ignore:boundary:jaxlmm.FitWarning")  # the random slope is estimated at zero
@pytest.mark.parametrize("family,link,slope", [("poisson", None, False), ("binomial", None, False),
                                                ("poisson", None, True), ("binomial", "probit", False)])
def test_laplace_equals_dense_oracle(family, link, slope):
    df = _crossed(family, seed=11 + slope, slope=slope)
    g_term = "(1 + x | g)" if slope else "(1 | g)"
    fit = jaxlmm.glmer(f"y ~ x + {g_term} + (1 | h)", df, family, link=link, offset="off",
                       weights="w" if family == "binomial" else None)
    assert fit.converged
    terms, X, y, w, off = _oracle_parts(fit, df)
    fam = family if link is None else f"{family}_{link}"
    # the objective at the optimum and at other points of (theta, beta)
    k = len(fit.theta)
    x_opt = np.concatenate([fit.theta, fit.fixef.to_numpy()])
    rng = np.random.default_rng(3)
    points = [x_opt] + [x_opt + 0.2 * rng.normal(size=x_opt.size) for _ in range(3)]
    with float64():
        vals, grads = values_grads(jnp.asarray(np.stack(points)), fit._model.arrays(), 1)
    for x, v in zip(points, np.asarray(vals)):
        ref = laplace_deviance(dense_A(terms, x[:k]), X, x[k:], y, w, off, fam)
        assert v == pytest.approx(ref, rel=1e-8), (x, v, ref)
    assert fit.objective == pytest.approx(float(vals[0]), rel=1e-12)
    # the modes at the optimum
    u, _, _ = conditional_mode(dense_A(terms, fit.theta), X, fit.fixef.to_numpy(), y, w, off, fam)
    r = fit.ranef
    b_ours = np.concatenate([bi.ravel() for bi in fit._b])
    A1 = dense_A(terms, fit.theta)
    # b = Lambda u: compare the linear predictors A u of both
    Zb = sum(np.einsum("np,np->n", t[1], b[t[0]]) for t, b in zip(terms, fit._b))
    np.testing.assert_allclose(Zb, A1 @ u, rtol=1e-7, atol=1e-8)
    assert len(r) == b_ours.size
    # the optimum: the oracle's value grows in every direction
    f0 = laplace_deviance(A1, X, fit.fixef.to_numpy(), y, w, off, fam)
    for j in range(x_opt.size):
        for s in (-1e-3, 1e-3):
            x = x_opt.copy()
            x[j] += s
            assert laplace_deviance(dense_A(terms, x[:k]), X, x[k:], y, w, off, fam) > f0 - 1e-9


def test_gradient_and_hessian():
    """The gradient (implicit function theorem at the mode) equals central differences of the value;
    the Hessian by differences of the gradient equals jax.hessian through two Newton steps."""
    df = _crossed("poisson", seed=5, slope=True)
    fit = jaxlmm.glmer("y ~ x + (1 + x | g) + (1 | h)", df, "poisson")
    G = fit._model.arrays()
    x = np.concatenate([fit.theta, fit.fixef.to_numpy()]) + 0.05
    vg = jax.jit(jax.value_and_grad(pirls.objective), static_argnums=(2, 3))
    value = jax.jit(jax.vmap(pirls.objective, in_axes=(0, None)))
    with float64():
        f0, g0 = vg(jnp.asarray(x), G, 1, 1)
        E = np.eye(x.size) * 1e-5
        fp, fm = np.asarray(value(jnp.asarray(x + E), G)), np.asarray(value(jnp.asarray(x - E), G))
        fd = (fp - fm) / 2e-5
        H_ad = np.asarray(jax.jit(jax.hessian(pirls.objective), static_argnums=(2, 3))(jnp.asarray(x), G, 1, 2))
        H_fd = hessian(fit._model, x)
    np.testing.assert_allclose(np.asarray(g0), fd, rtol=1e-6, atol=1e-6)
    # the implicit-function gradient (one Newton step, its factor reused for the adjoint solve)
    # equals the gradient through two differentiated Newton steps
    with float64():
        _, g2 = vg(jnp.asarray(x), G, 1, 2)
    np.testing.assert_allclose(np.asarray(g0), np.asarray(g2), rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(H_fd, H_ad, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fit.hessian, hessian(fit._model, np.concatenate([fit.theta, fit.fixef.to_numpy()])),
                               rtol=1e-9)


# --- results -------------------------------------------------------------------------------------


def test_results_and_residuals(laplace, cbpp):
    mu = laplace.fitted.to_numpy()
    y, w = cbpp["prop"].to_numpy(), cbpp["size"].to_numpy()
    eta = laplace.linear_predictor.to_numpy()
    np.testing.assert_allclose(mu, 1 / (1 + np.exp(-eta)), rtol=1e-12)
    np.testing.assert_allclose(laplace.resid("response"), y - mu, rtol=1e-12)
    np.testing.assert_allclose(laplace.resid("pearson"), (y - mu) * np.sqrt(w / (mu * (1 - mu))), rtol=1e-10)
    from scipy.special import xlogy

    dev = 2 * w * (xlogy(y, y / mu) + xlogy(1 - y, (1 - y) / (1 - mu)))
    np.testing.assert_allclose(laplace.residuals, np.sign(y - mu) * np.sqrt(dev), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(laplace.resid("working"), (y - mu) / (mu * (1 - mu)), rtol=1e-8)
    vc = laplace.varcorr
    assert list(vc["grp"]) == ["herd"] and vc["sdcor"].iloc[0] == pytest.approx(laplace.theta[0])
    ct = laplace.coef_table()
    np.testing.assert_allclose(ct["z"], laplace.fixef / laplace.se)
    s = str(laplace.summary())
    assert "Family: binomial  ( logit )" in s and "Pr(>|z|)" in s and "Laplace Approximation" in s
    assert laplace.df == 5 and laplace.nobs == 56 and laplace.sigma == 1.0
    assert "GlmerResult" in repr(laplace)
    with pytest.raises(jaxlmm.ArgumentError):
        laplace.resid("raw")


def test_predict_link_response_and_new_levels(laplace, cbpp):
    np.testing.assert_allclose(laplace.predict(cbpp, type="response"), laplace.fitted, rtol=1e-12)
    np.testing.assert_allclose(laplace.predict(), laplace.linear_predictor, rtol=1e-12)
    nd = cbpp.head(2).copy()
    nd["herd"] = pd.Categorical(["new", "1"])
    p = laplace.predict(nd, type="link")
    assert p.iloc[0] == pytest.approx(laplace.fixef["(Intercept)"])
    pop = laplace.predict(cbpp.head(3), re=False, type="response").to_numpy()
    per = cbpp["period"].head(3)
    X = np.column_stack([np.ones(3)] + [(per == p).to_numpy(float) for p in "234"])
    np.testing.assert_allclose(pop, 1 / (1 + np.exp(-(X @ laplace.fixef.to_numpy()))), rtol=1e-12)
    with pytest.raises(jaxlmm.DataError):
        laplace.predict(nd, new_levels="error")
    with pytest.raises(jaxlmm.ArgumentError):
        laplace.predict(cbpp, type="probability")


def test_simulate_matches_the_model(laplace):
    Y = laplace.simulate(4000, seed=1, re=False).to_numpy()
    w = laplace.weights
    assert np.allclose(Y * w[:, None], np.round(Y * w[:, None]))  # whole successes
    mu = laplace.fitted.to_numpy()
    se = np.sqrt(mu * (1 - mu) / w / 4000)
    assert np.all(np.abs(Y.mean(axis=1) - mu) < 5 * se)
    a = laplace.simulate(3, seed=7)
    b = laplace.simulate(3, seed=7)
    pd.testing.assert_frame_equal(a, b)


def test_bootstrap_and_glmer_many_agree_with_refits(laplace, cbpp):
    boot = laplace.bootstrap(6, seed=3)
    assert list(boot.columns[:4]) == list(laplace.fixef.index)
    assert "sd_(Intercept)|herd" in boot.columns and boot["converged"].all()
    Y = laplace.simulate(6, seed=3, re=True).to_numpy()
    data = cbpp.assign(**{f"s{k}": Y[:, k] for k in range(6)})
    many = jaxlmm.glmer_many("~ period + (1 | herd)", data, [f"s{k}" for k in range(6)], "binomial", weights="size")
    for k in (0, 4):
        r = laplace.refit(Y[:, k])
        np.testing.assert_allclose(many.iloc[k][list(r.fixef.index)].to_numpy(float), r.fixef.to_numpy(),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(many.iloc[k][[f"se_{c}" for c in r.fixef.index]].to_numpy(float),
                                   r.se.to_numpy(), rtol=1e-4)
        assert many.iloc[k]["objective"] == pytest.approx(r.objective, rel=1e-9)
        np.testing.assert_allclose(boot.iloc[k][list(r.fixef.index)].to_numpy(float), r.fixef.to_numpy(),
                                   rtol=1e-5, atol=1e-6)


def test_anova_between_glmer_fits(laplace, cbpp):
    f0 = jaxlmm.glmer("prop ~ 1 + (1 | herd)", cbpp, "binomial", weights="size")
    a = jaxlmm.anova(f0, laplace)
    assert a["Chisq"].iloc[1] == pytest.approx(f0.objective - laplace.objective, rel=1e-12)
    assert int(a["Df"].iloc[1]) == 3 and a["npar"].tolist() == [2, 5]
    lm = jaxlmm.lmer("prop ~ period + (1 | herd)", cbpp)
    with pytest.raises(jaxlmm.ArgumentError, match="one kind"):
        jaxlmm.anova(lm, laplace)


def test_wald_coverage_by_simulation():
    """95% Wald intervals of a Poisson GLMM cover the true fixed effects in about 95% of 200
    simulated data sets (fitted by one glmer_many program)."""
    rng = np.random.default_rng(2024)
    n, L, B = 300, 30, 200
    g = np.repeat(np.arange(L), n // L)
    x = rng.normal(size=n)
    beta = np.array([0.5, 0.4])
    eta = beta[0] + beta[1] * x
    Y = np.column_stack([rng.poisson(np.exp(eta + 0.5 * rng.normal(size=L)[g])) for _ in range(B)]).astype(float)
    df = pd.DataFrame({"x": x, "g": g.astype(str)})
    r = jaxlmm.glmer_many("~ x + (1 | g)", df, Y, "poisson")
    assert r["converged"].all()
    for k, name in enumerate(["(Intercept)", "x"]):
        cover = np.mean(np.abs(r[name] - beta[k]) <= 1.96 * r[f"se_{name}"])
        assert 0.90 <= cover <= 0.99, (name, cover)


def test_gamma_family_recovers_parameters():
    rng = np.random.default_rng(8)
    n, L = 3000, 60
    g = rng.integers(0, L, n)
    x = rng.normal(size=n)
    mu = np.exp(1.0 + 0.3 * x + 0.4 * rng.normal(size=L)[g])
    shape = 5.0
    y = rng.gamma(shape, mu / shape)
    fit = jaxlmm.glmer("y ~ x + (1 | g)", pd.DataFrame({"y": y, "x": x, "g": g}), "gamma", link="log")
    assert fit.converged
    assert fit.fixef["x"] == pytest.approx(0.3, abs=0.03)
    assert fit.dispersion == pytest.approx(1 / shape, rel=0.1)
    assert fit.theta[0] == pytest.approx(0.4, rel=0.3)
    assert fit.df == 4 and "Residual" in set(fit.varcorr["grp"])


def test_binary_bool_response_and_observation_level_effects(cbpp):
    rng = np.random.default_rng(1)
    n = 400
    g = rng.integers(0, 20, n)
    y = rng.random(n) < 1 / (1 + np.exp(-(0.3 + rng.normal(size=20)[g])))
    df = pd.DataFrame({"y": y, "g": g})
    f1 = jaxlmm.glmer("y ~ 1 + (1 | g)", df, "binomial")
    f2 = jaxlmm.glmer("y ~ 1 + (1 | g)", df.assign(y=df["y"].astype(float)), "binomial")
    assert f1.objective == pytest.approx(f2.objective, rel=1e-12)
    # one level per row (overdispersion) is allowed for glmer, as in lme4
    obs = cbpp.assign(obs=np.arange(len(cbpp)).astype(str))
    f = jaxlmm.glmer("prop ~ period + (1 | herd) + (1 | obs)", obs, "binomial", weights="size")
    assert np.isfinite(f.objective) and f.ngroups["obs"] == len(cbpp)


def test_precision_policy_leaves_jax_config(laplace):
    assert not jax.config.jax_enable_x64
    assert laplace.fixef.dtype == np.float64


# --- bad input and failures ----------------------------------------------------------------------


@pytest.mark.parametrize("family,y,match", [
    ("binomial", [0.0, 1.5], "binomial response 'y' must be 0/1 or a proportion"),
    ("poisson", [1.0, -2.0], "poisson response 'y' must be non-negative counts"),
    ("poisson", [1.0, 2.5], "whole counts"),
    ("gamma", [1.0, 0.0], "gamma response 'y' must be positive"),
])
def test_responses_outside_the_support(family, y, match):
    df = pd.DataFrame({"y": np.resize(y, 40), "g": np.arange(40) % 5})
    with pytest.raises(jaxlmm.DataError, match=match):
        jaxlmm.glmer("y ~ 1 + (1 | g)", df, family)


def test_bad_arguments(cbpp):
    f = "prop ~ period + (1 | herd)"
    with pytest.raises(jaxlmm.ArgumentError, match="unknown family"):
        jaxlmm.glmer(f, cbpp, "negbin", weights="size")
    with pytest.raises(jaxlmm.ArgumentError, match="unknown link"):
        jaxlmm.glmer(f, cbpp, "poisson", link="logit")
    with pytest.raises(jaxlmm.ArgumentError, match="nagq"):
        jaxlmm.glmer(f, cbpp, "binomial", weights="size", nagq=0)
    with pytest.raises(jaxlmm.ArgumentError, match="single scalar"):
        jaxlmm.glmer("prop ~ period + (1 | herd) + (1 | period)", cbpp, "binomial", weights="size", nagq=5)
    with pytest.raises(jaxlmm.ArgumentError, match="trials"):
        jaxlmm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, "binomial", weights="size")
    with pytest.raises(jaxlmm.FormulaError, match="cbind"):
        jaxlmm.glmer("cbind(incidence) ~ period + (1 | herd)", cbpp, "binomial")
    with pytest.raises(jaxlmm.FormulaError, match="nothere"):
        jaxlmm.glmer("prop ~ nothere + (1 | herd)", cbpp, "binomial", weights="size")
    with pytest.raises(jaxlmm.ArgumentError, match="start"):
        jaxlmm.glmer(f, cbpp, "binomial", weights="size", start={"theta": [1.0, 2.0]})
    with pytest.raises(jaxlmm.FormulaError, match="random-effects"):
        jaxlmm.glmer("prop ~ period", cbpp, "binomial", weights="size")
    with pytest.raises(jaxlmm.DataError, match="whole successes"):
        jaxlmm.glmer(f, cbpp.assign(size=cbpp["size"] + 0.5), "binomial", weights="size")


def test_pirls_non_convergence_is_reported(cbpp, monkeypatch):
    """PIRLS limited to one iteration cannot reach the modes: at the start that is a FitError,
    never a NaN estimate; directly, pirls() says converged=False."""
    d = load_data("cbpp")
    with float64():
        fit = jaxlmm.glmer("prop ~ 1 + (1 | herd)", cbpp, "binomial", weights="size")
        G = fit._model.arrays()
        u, f, it, ok = pirls.pirls(jnp.asarray([2.0]), jnp.asarray([-1.0]), jnp.asarray(1.0), G, max_iter=1)
        assert not bool(ok) and int(it) == 1
        u, f, it, ok = pirls.pirls(jnp.asarray([2.0]), jnp.asarray([-1.0]), jnp.asarray(1.0), G)
        assert bool(ok) and int(it) < 20
    monkeypatch.setattr(pirls, "PIRLS_MAX_ITER", 1)
    jax.clear_caches()
    try:
        with pytest.raises(jaxlmm.FitError, match="PIRLS"):
            jaxlmm.glmer("prop ~ 1 + (1 | herd)", d.assign(herd=d["herd"].astype(str)), "binomial", weights="size")
    finally:
        monkeypatch.undo()
        jax.clear_caches()


def test_one_warning_when_not_converged(cbpp):
    with pytest.warns(jaxlmm.FitWarning) as rec:
        fit = jaxlmm.glmer("prop ~ period + (1 | herd)", cbpp, "binomial", weights="size", max_iter=2)
    assert len(rec) == 1 and not fit.converged
    assert fit.diagnostics["pirls_converged"] and fit.diagnostics["warnings"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jaxlmm.glmer("prop ~ period + (1 | herd)", cbpp, "binomial", weights="size")


def test_tidy_and_glance(laplace):
    t = laplace.tidy(conf_int=True)
    fixed = t[t["effect"] == "fixed"]
    np.testing.assert_allclose(fixed["estimate"], laplace.fixef.to_numpy())
    np.testing.assert_allclose(fixed["statistic"], (laplace.fixef / laplace.se).to_numpy())
    assert np.isinf(fixed["df"]).all()
    np.testing.assert_allclose(fixed["conf.high"] - fixed["estimate"], 1.959963984540054 * laplace.se.to_numpy())
    rp = t[t["effect"] == "ran_pars"]
    assert rp["term"].tolist() == ["sd__(Intercept)"] and rp["estimate"].iloc[0] == pytest.approx(laplace.theta[0])
    g = laplace.glance().iloc[0]
    assert g["logLik"] == pytest.approx(laplace.loglik) and g["AIC"] == pytest.approx(laplace.aic)
    assert g["df.residual"] == 51 and g["sigma"] == 1.0


def test_wald_confint(laplace):
    ci = laplace.confint()
    np.testing.assert_allclose(ci["upper"] - laplace.fixef, 1.959963984540054 * laplace.se, rtol=1e-12)
    assert list(laplace.confint(parm="period2").index) == ["period2"]
    with pytest.raises(jaxlmm.ArgumentError, match="not available for glmer"):
        laplace.confint("profile")
    with pytest.raises(jaxlmm.ArgumentError, match="unknown parameter"):
        laplace.confint(parm="period9")
    with pytest.raises(jaxlmm.ArgumentError, match="level"):
        laplace.confint(level=95)
