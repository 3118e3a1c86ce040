"""gls and lmer with residual structures against nlme (tests/data: the five reference fits of
../shared/reference and tests/data/rside_extra.R's extra results)."""

import json

import numpy as np
import pandas as pd
import pytest

import jaxlmm as jl
from conftest import DATA, load_data

FITS = {
    "orthodont_gls_cs": lambda O: jl.gls("distance ~ age * Sex", O, correlation=jl.CompoundSymmetry("Subject")),
    "orthodont_gls_ar1": lambda O: jl.gls("distance ~ age * Sex", O, correlation=jl.AR1("Subject", "occasion")),
    "orthodont_gls_un_varident": lambda O: jl.gls(
        "distance ~ age * Sex", O, correlation=jl.Unstructured("Subject", "occasion"),
        variance=jl.VarIdent("occasion")),
    "orthodont_lme_ar1": lambda O: jl.lmer(
        "distance ~ age + Sex + (1 | Subject)", O, correlation=jl.AR1("Subject", "occasion")),
    # the reference's strata order put Female first: nlme's varIdent takes the first stratum it
    # meets in the data sorted by group, here 'F01'
    "orthodont_lme_varident_sex": lambda O: jl.lmer(
        "distance ~ age + Sex + (1 | Subject)", O, variance=jl.VarIdent("Sex", reference="Female")),
}


@pytest.fixture(scope="module")
def orthodont():
    return load_data("Orthodont")


@pytest.fixture(scope="module")
def fits(orthodont):
    return {k: f(orthodont) for k, f in FITS.items()}


def ref(name):
    return json.loads((DATA / f"{name}.json").read_text())


@pytest.mark.parametrize("name", list(FITS))
def test_reference_fit(fits, name):
    fit, r = fits[name], ref(name)
    assert fit.converged
    assert list(fit.fixef.index) == r["beta_names"]
    assert fit.loglik == pytest.approx(r["logLik"], rel=1e-6)
    np.testing.assert_allclose(fit.fixef.to_numpy(), r["beta"], rtol=1e-5)
    np.testing.assert_allclose(fit.se.to_numpy(), r["se"], rtol=1e-4)
    np.testing.assert_allclose(fit.vcov.to_numpy(), np.array(r["vcov"]), rtol=1e-4, atol=1e-9)
    assert fit.sigma == pytest.approx(r["sigma"], rel=1e-4)
    assert fit.df == r["df"]
    assert fit.aic == pytest.approx(r["AIC"], rel=1e-6)
    assert fit.bic == pytest.approx(r["BIC"], rel=1e-6)
    assert fit.nobs == r["nobs"]
    if r["corStruct"]:
        np.testing.assert_allclose(fit.correlation_params.to_numpy(), np.atleast_1d(r["corStruct"]["params"]), rtol=1e-3)
    else:
        assert fit.correlation_params.empty
    if r["varStruct"]:
        np.testing.assert_allclose(fit.variance_params.to_numpy(), np.atleast_1d(r["varStruct"]["params"]), rtol=1e-3)
        assert list(fit.variance_params.index) == list(np.atleast_1d(r["varStruct"]["names"]))
    else:
        assert fit.variance_params.empty
    if "random_sd" in r:
        sd = fit.varcorr["sdcor"].to_numpy()
        np.testing.assert_allclose(sd, r["random_sd"], rtol=1e-4)


def test_unstructured_parameter_names(fits):
    fit = fits["orthodont_gls_un_varident"]
    assert list(fit.correlation_params.index) == ["cor(1,2)", "cor(1,3)", "cor(1,4)", "cor(2,3)", "cor(2,4)", "cor(3,4)"]
    tab = fit.residual_params
    assert list(tab["kind"]) == ["correlation"] * 6 + ["variance"] * 3
    assert (tab["std_error"] > 0).all()


EXTRA = json.loads((DATA / "orthodont_rside_extra.json").read_text())
EXTRA_FITS = {
    "gls_ar1": lambda O: jl.gls("distance ~ age * Sex", O, correlation=jl.AR1("Subject", "occasion")),
    "lme_ar1": lambda O: jl.lmer("distance ~ age + Sex + (1 | Subject)", O, correlation=jl.AR1("Subject", "occasion")),
    "gls_exp": lambda O: jl.gls("distance ~ age * Sex", O, correlation=jl.Exponential("Subject", "age")),
    "gls_power": lambda O: jl.gls("distance ~ age * Sex", O, variance=jl.VarPower("age")),
    "gls_varexp_ml": lambda O: jl.gls("distance ~ age * Sex", O, variance=jl.VarExp("age"), reml=False),
}
# d natural / d nlme's unconstrained parameter, and the parameter's row in nlme's apVar
_TANH = lambda u: 2 * np.exp(u) / (1 + np.exp(u)) ** 2  # noqa: E731  (AR1: log((1+phi)/(1-phi)))
APVAR = {"gls_ar1": (0, _TANH), "lme_ar1": (1, _TANH), "gls_exp": (0, np.exp), "gls_varexp_ml": (0, lambda u: 1.0)}


@pytest.fixture(scope="module")
def extra_fits(orthodont):
    return {k: f(orthodont) for k, f in EXTRA_FITS.items()}


@pytest.mark.parametrize("name", list(EXTRA_FITS))
def test_nlme_extra(extra_fits, name):
    fit, r = extra_fits[name], EXTRA[name]
    assert fit.loglik == pytest.approx(r["logLik"], rel=1e-6)
    np.testing.assert_allclose(fit.fixef.to_numpy(), r["beta"], rtol=1e-5)
    np.testing.assert_allclose(fit.se.to_numpy(), r["se"], rtol=1e-4)
    nat = np.r_[np.atleast_1d(r["cor"] if r["cor"] is not None else []), np.atleast_1d(r["var"] if r["var"] is not None else [])]
    np.testing.assert_allclose(fit.residual_params["estimate"].to_numpy(), nat, rtol=1e-3)
    for t in ("response", "pearson", "normalized"):
        np.testing.assert_allclose(fit.resid(t).to_numpy(), r[f"resid_{t}"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(APVAR))
def test_parameter_se_against_nlme_apvar(extra_fits, name):
    """nlme's apVar (numerical Hessian on its unconstrained scale), by the delta method."""
    k, d = APVAR[name]
    r = EXTRA[name]
    u = r["apVar_pars"][k]
    se_nlme = abs(d(u)) * np.sqrt(np.array(r["apVar"])[k, k])
    se = extra_fits[name].residual_params["std_error"].iloc[0]
    assert se == pytest.approx(se_nlme, rel=2e-2)


def test_parameter_se_against_finite_differences(extra_fits, orthodont):
    """VarPower's SE against a dense REML likelihood in (power, sigma) differenced numerically
    (nlme's apVar for this fit is 15% off: its step for a small parameter is ~1e-7)."""
    fit = extra_fits["gls_power"]
    d = fit._model.design
    X, y, age = d.X, d.y, orthodont["age"].to_numpy(float)
    n, p = X.shape

    def dev(v):
        w = 1 / (v[1] ** 2 * age ** (2 * v[0]))
        XtWX = X.T @ (X * w[:, None])
        b = np.linalg.solve(XtWX, X.T @ (w * y))
        res = y - X @ b
        return -np.sum(np.log(w)) + np.linalg.slogdet(XtWX)[1] + np.sum(w * res**2) + (n - p) * np.log(2 * np.pi)

    v0 = np.array([fit.variance_params.iloc[0], fit.sigma])
    assert dev(v0) == pytest.approx(fit.objective, rel=1e-10)
    h, E = 1e-4, np.eye(2) * 1e-4
    H = np.array([[(dev(v0 + E[i] + E[j]) - dev(v0 + E[i] - E[j]) - dev(v0 - E[i] + E[j]) + dev(v0 - E[i] - E[j]))
                   / (4 * h * h) for j in range(2)] for i in range(2)])
    se_fd = np.sqrt(np.diag(2 * np.linalg.inv(H)))[0]
    assert fit.residual_params["std_error"].iloc[0] == pytest.approx(se_fd, rel=1e-4)


def test_normalized_residuals_are_white_under_the_model():
    """Simulated AR(1) errors: normalised residuals have lag-one correlation near 0, response
    residuals near phi."""
    rng = np.random.default_rng(5)
    G, T, phi = 400, 6, 0.6
    e = np.zeros((G, T))
    e[:, 0] = rng.normal(size=G)
    for t in range(1, T):
        e[:, t] = phi * e[:, t - 1] + np.sqrt(1 - phi**2) * rng.normal(size=G)
    df = pd.DataFrame({"g": np.repeat(np.arange(G), T), "t": np.tile(np.arange(T), G),
                       "x": rng.normal(size=G * T)})
    df["y"] = 1 + df["x"] + e.ravel()
    fit = jl.gls("y ~ x", df, correlation=jl.AR1("g", "t"))
    assert fit.correlation_params.iloc[0] == pytest.approx(phi, abs=0.05)
    lag1 = lambda r: np.corrcoef(r.reshape(G, T)[:, 1:].ravel(), r.reshape(G, T)[:, :-1].ravel())[0, 1]  # noqa: E731
    assert abs(lag1(fit.resid("normalized").to_numpy())) < 0.05
    assert lag1(fit.resid("response").to_numpy()) > 0.5


def test_gls_without_structure_is_ols(orthodont):
    fit = jl.gls("distance ~ age", orthodont)
    X = np.column_stack([np.ones(len(orthodont)), orthodont["age"]])
    beta, *_ = np.linalg.lstsq(X, orthodont["distance"], rcond=None)
    np.testing.assert_allclose(fit.fixef.to_numpy(), beta, rtol=1e-10)
    res = orthodont["distance"] - X @ beta
    assert fit.sigma == pytest.approx(np.sqrt(res @ res / (len(res) - 2)), rel=1e-10)
    assert fit.residual_params.empty and fit.correlation_params.empty


def test_summary_and_unavailable_methods(fits):
    fit = fits["orthodont_gls_ar1"]
    text = str(fit.summary())
    assert "Generalized least squares fit by REML" in text
    assert "Correlation structure: AR1(group='Subject', time='occasion')" in text
    lme = fits["orthodont_lme_varident_sex"]
    assert "Variance function: VarIdent" in str(lme.summary())
    for call in (lambda: fit.coef_table(), lambda: fit.confint(), lambda: fit.bootstrap(10),
                 lambda: fit.simulate(), lambda: fit.profile(), lambda: lme.hessian):
        with pytest.raises(jl.ArgumentError, match="not available yet for fits with a residual"):
            call()
    tab = fit.coef_table(ddf="residual")
    assert (tab["df"] == fit.nobs - 4).all()


def test_gls_rejects_random_effects(orthodont):
    with pytest.raises(jl.FormulaError, match="gls fits no random effects.*lmer"):
        jl.gls("distance ~ age + (1 | Subject)", orthodont)


def test_anova_between_structures(fits, orthodont):
    """LRT of AR(1) within a random intercept against the random intercept alone (ML refits)."""
    base = jl.lmer("distance ~ age + Sex + (1 | Subject)", orthodont)
    tab = jl.anova(base, fits["orthodont_lme_ar1"])
    assert list(tab["npar"]) == [5, 6]
    assert tab["Chisq"].iloc[1] >= 0


SPACED = json.loads((DATA / "orthodont_ar1_spaced.json").read_text())


@pytest.mark.parametrize("kind", ["gls", "lme"])
def test_ar1_on_spaced_occasions_starts_from_the_data(orthodont, kind):
    """Occasions 10, 20, 30, 40: the correlation one visit apart is phi^10, so the criterion is
    stationary at phi = 0, where a start at 0 stops and reports convergence (jaxlmm did, and nlme
    does: REML 483.56 for gls where 444.59 is reachable; tests/data/ar1_spaced.R). The start
    r^(1/10) from the residuals' lag correlation reaches nlme's fit started near the optimum."""
    from jaxlmm.rside.residual import start

    O = orthodont.copy()
    O["occ10"] = O["occasion"] * 10
    s = jl.AR1("Subject", "occ10")
    if kind == "gls":
        fit = jl.gls("distance ~ age * Sex", O, correlation=s)
    else:
        fit = jl.lmer("distance ~ age + Sex + (1 | Subject)", O, correlation=s)
    r, stuck = SPACED[kind], SPACED[f"{kind}_default_start"]
    assert stuck["phi"] == 0 and stuck["REML"] > r["REML"]  # nlme from phi = 0
    assert fit.converged
    assert fit.objective == pytest.approx(r["REML"], rel=1e-8)
    np.testing.assert_allclose(fit.fixef.to_numpy(), r["beta"], rtol=1e-5)
    assert fit.sigma == pytest.approx(r["sigma"], rel=1e-4)
    assert fit.correlation_params.iloc[0] == pytest.approx(r["phi"], rel=1e-4)
    phi0 = np.tanh(start(fit._model.rside.meta)[0] / 2)
    assert 0.5 < phi0 < 1.0  # away from the stationary point


def test_ar1_moment_start():
    """phi0 = r^(1/s) for the residuals' correlation r one row apart at the most common step s
    (negative r kept for odd steps; |r| clipped into [0.05, 0.9])."""
    from jaxlmm.rside.correlation import CorMeta

    s = jl.AR1("g", "t")
    meta = CorMeta(1, ("phi",), 3)
    rng = np.random.default_rng(0)
    a = rng.normal(size=500)
    a /= np.linalg.norm(a)
    c = rng.normal(size=500)
    c -= (c @ a) * a
    c /= np.linalg.norm(c)
    # two rows per group, 3 apart (and a few groups 1 apart, fewer, so step 3 is the most common)
    step = np.tile([[0.0, 3.0]], (500, 1))
    step[:100, 1] = 1.0
    for r, phi in ((0.512, 0.8), (-0.343, -0.7), (0.001, None), (0.99, 0.9 ** (1 / 3))):
        b = r * a + np.sqrt(1 - r**2) * c  # a'b = r over all rows
        b[:100], a1 = 0.0, a.copy()
        a1[:100] = 0.0  # the step-1 groups' residuals do not enter the step-3 correlation
        r3 = a1 @ b / np.sqrt((a1 @ a1) * (b @ b))
        resid = np.column_stack([a1, b])
        u = s.moment_start(meta, {"step": step}, resid, np.ones((500, 2), bool))
        want = np.sign(r3) * np.clip(abs(r3), 0.05, 0.9) ** (1 / 3)
        assert np.tanh(u[0] / 2) == pytest.approx(want, rel=1e-10)
        if phi is None:  # |r| below 0.05: |phi0| = 0.05^(1/3), not 0
            assert abs(np.tanh(u[0] / 2)) == pytest.approx(0.05 ** (1 / 3), rel=1e-10)
        else:
            assert abs(want - phi) < 0.05
    # an even step cannot make a negative correlation: phi0 = 0.05^(1/2) > 0
    step2 = np.tile([[0.0, 2.0]], (500, 1))
    u = s.moment_start(meta, {"step": step2}, np.column_stack([a, -a]), np.ones((500, 2), bool))
    assert np.tanh(u[0] / 2) == pytest.approx(0.05 ** 0.5, rel=1e-10)


@pytest.mark.parametrize("variance,column", [(jl.VarPower, "v"), (jl.VarExp, "v")])
def test_variance_function_of_a_constant_covariate_is_refused(orthodont, variance, column):
    """|v|^delta or exp(delta v) of a constant v is a constant factor of sigma: delta has no
    information (was reported as 0, its start)."""
    O = orthodont.copy()
    O["v"] = 3.0
    with pytest.raises(jl.DataError, match=r"column 'v' is constant .*cannot be told apart from sigma"):
        jl.gls("distance ~ age", O, variance=variance(column))
    O["v"] = np.where(O.index % 2 == 0, 2.0, -2.0)
    if variance is jl.VarPower:  # |v| constant
        with pytest.raises(jl.DataError, match=r"\|v\| of column 'v' is constant"):
            jl.gls("distance ~ age", O, variance=variance(column))
