"""Exact Hessians, variance-parameter SEs, Satterthwaite tests and Wald intervals.

Against lme4's numerical Hessians, lmerTest's Satterthwaite df/t/p (reference fits and extra
`contest` results), and an independent dense-V likelihood differenced numerically on the
sd/cor scale.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import jaxlmm
from conftest import load_data
from test_reference import IDS, fit_reference



def refs_with(field):
    from conftest import load_reference

    return [f for f in IDS if load_reference(f).get(field) is not None]


@pytest.mark.parametrize("fid", refs_with("hessian_theta"))
def test_hessian_matches_lme4(fid):
    ref, fit = fit_reference(fid)
    H = fit.hessian
    want = np.array(ref["hessian_theta"], float).reshape(H.shape)
    # lme4's Hessian is numerical (Richardson extrapolation): about 6 digits
    np.testing.assert_allclose(H, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert not H.flags.writeable


@pytest.mark.parametrize("fid", refs_with("satterthwaite"))
def test_satterthwaite_matches_lmertest(fid):
    ref, fit = fit_reference(fid)
    st = ref["satterthwaite"]
    names = ref["beta_names"] if isinstance(ref["beta_names"], list) else [ref["beta_names"]]
    ct = fit.coef_table("satterthwaite").loc[names]
    np.testing.assert_allclose(ct["df"], np.atleast_1d(st["df"]), rtol=1e-3)
    np.testing.assert_allclose(ct["t"], np.atleast_1d(st["t"]), rtol=1e-3)
    np.testing.assert_allclose(ct["p"], np.atleast_1d(st["p"]), rtol=1e-3)
    assert list(ct.columns) == ["estimate", "std_error", "df", "t", "p"]


# lmerTest 3.1-3: contest(fit, L, joint = TRUE) (see the R lines beside each case)
CONTESTS = [
    # cake$temperature <- factor(cake$temperature)
    # f <- lmer(angle ~ recipe * temperature + (1 | recipe:replicate), cake)
    # L <- diag(18)[grep("^temperature", names(fixef(f))), ]
    ("cake", "angle ~ recipe * temperature + (1 | recipe:replicate)",
     lambda names: [n.startswith("temperature") for n in names], 8.57596795575, 5, 210.000000044),
    # L2 <- diag(18)[grep(":", names(fixef(f))), ]
    ("cake", "angle ~ recipe * temperature + (1 | recipe:replicate)",
     lambda names: [":" in n for n in names], 1.00619798461, 10, 210.000000068),
    # s <- lmer(Reaction ~ Days + (Days|Subject), sleepstudy); contest(s, rbind(c(0,1), c(1,0)))
    ("sleepstudy", "Reaction ~ Days + (Days | Subject)", lambda names: [True, True],
     749.950453899, 2, 16.9998460493),
]


@pytest.mark.parametrize("case", range(len(CONTESTS)))
def test_multirow_f_test_matches_lmertest(case):
    data, formula, select, F, q, ddf = CONTESTS[case]
    fit = jaxlmm.lmer(formula, load_data(data))
    names = list(fit.fixef.index)
    L = np.eye(len(names))[np.array(select(names))]
    res = fit.test(L)
    assert res["num_df"] == q
    assert res["F"] == pytest.approx(F, rel=1e-4)  # the optima agree to ~1e-5
    assert res["den_df"] == pytest.approx(ddf, rel=1e-3)
    assert res["p"] == pytest.approx(stats.f.sf(F, q, ddf), rel=1e-3)


def test_one_row_test_equals_coefficient_t_squared(sleepstudy):
    fit = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", sleepstudy)
    ct = fit.coef_table()
    res = fit.test({"Days": 1.0})
    assert res["F"] == pytest.approx(ct.loc["Days", "t"] ** 2, rel=1e-10)
    assert res["den_df"] == pytest.approx(ct.loc["Days", "df"], rel=1e-10)
    # a non-zero right-hand side shifts the estimate
    res2 = fit.test({"Days": 1.0}, rhs=fit.fixef["Days"])
    assert res2["F"] == pytest.approx(0.0, abs=1e-20)
    # DataFrame form
    L = pd.DataFrame([[0.0, 1.0]], columns=["(Intercept)", "Days"])
    assert fit.test(L)["F"] == pytest.approx(res["F"])


def test_other_ddf_methods(sleepstudy):
    fit = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", sleepstudy)
    z = fit.coef_table(None)
    assert np.isinf(z["df"]).all()
    np.testing.assert_allclose(z["p"], 2 * stats.norm.sf(np.abs(z["t"])))
    r = fit.coef_table("residual")
    assert (r["df"] == fit.nobs - 2).all()
    np.testing.assert_allclose(r["p"], 2 * stats.t.sf(np.abs(r["t"]), fit.nobs - 2))
    np.testing.assert_allclose(r["std_error"], fit.se)


# --- variance-parameter SEs against a dense-V likelihood on the sd/cor scale -------------

def dense_deviance(sdcor, fit):
    """-2 log L (restricted for REML) from V = Z G Z' + sigma^2 W^{-1}, the slow obvious way;
    ``sdcor`` in lme4's order (theta order per term, then sigma)."""
    d = fit._model.design
    n, p = d.X.shape
    sigma = sdcor[-1]
    V = np.diag(sigma**2 / d.weights)
    k = 0
    for t, s in zip(d.terms, fit._model.specs):
        vals = sdcor[k : k + s.size]
        sd = np.zeros(s.p)
        C = np.eye(s.p)
        for a, (r, c) in enumerate(zip(s.rows, s.cols)):
            if r == c:
                sd[r] = vals[a]
            else:
                C[r, c] = C[c, r] = vals[a]
        G = np.outer(sd, sd) * C
        Z = np.zeros((n, t.n_levels * s.p))
        for j in range(s.p):
            Z[np.arange(n), t.codes * s.p + j] = t.columns[:, j]
        V += Z @ np.kron(np.eye(t.n_levels), G) @ Z.T
        k += s.size
    Vi = np.linalg.inv(V)
    XtViX = d.X.T @ Vi @ d.X
    beta = np.linalg.solve(XtViX, d.X.T @ Vi @ d.y)
    r = d.y - d.X @ beta
    out = np.linalg.slogdet(V)[1] + r @ Vi @ r
    if fit.reml:
        return out + np.linalg.slogdet(XtViX)[1] + (n - p) * np.log(2 * np.pi)
    return out + n * np.log(2 * np.pi)


def numerical_hessian(f, x, h):
    k = len(x)
    H = np.zeros((k, k))
    for i in range(k):
        for j in range(i, k):
            ei, ej = np.eye(k)[i] * h[i], np.eye(k)[j] * h[j]
            H[i, j] = H[j, i] = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (4 * h[i] * h[j])
    return H


@pytest.mark.parametrize("formula,data,reml", [
    ("Reaction ~ Days + (Days | Subject)", "sleepstudy", True),
    ("Reaction ~ Days + (Days | Subject)", "sleepstudy", False),
    ("diameter ~ 1 + (1 | plate) + (1 | sample)", "Penicillin", True),
])
def test_sdcor_standard_errors_match_dense_likelihood(formula, data, reml):
    fit = jaxlmm.lmer(formula, load_data(data), reml=reml)
    tab = fit._sdcor_table
    x = tab["estimate"].to_numpy()
    # the dense deviance is minimal at our estimate (sd/cor scale): gradient ~ 0
    H = numerical_hessian(lambda v: dense_deviance(v, fit), x, 1e-3 * np.maximum(np.abs(x), 0.1))
    se_dense = np.sqrt(np.diag(2 * np.linalg.inv(H)))
    np.testing.assert_allclose(tab["std_error"], se_dense, rtol=2e-3)
    vc = fit.varcorr
    assert "se" in vc.columns
    # varcorr rows carry the same SEs (sigma last)
    assert vc["se"].iloc[-1] == pytest.approx(tab["std_error"].iloc[-1])
    assert sorted(vc["se"]) == pytest.approx(sorted(tab["std_error"]))


def test_vcov_varpar_is_twice_inverse_hessian(sleepstudy):
    fit = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", sleepstudy)
    A = fit.vcov_varpar
    assert list(A.index) == list(fit.theta_names) + ["sigma"]
    np.testing.assert_allclose(A.to_numpy() @ fit._varpar_hessian, 2 * np.eye(4), atol=1e-8)


def test_wald_intervals(sleepstudy):
    fit = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", sleepstudy)
    ci = fit.confint("wald", level=0.9)
    z = stats.norm.ppf(0.95)
    assert list(ci.index) == ["sd_(Intercept)|Subject", "cor_Days.(Intercept)|Subject",
                              "sd_Days|Subject", "sigma", "(Intercept)", "Days"]
    np.testing.assert_allclose(ci.loc["Days"], fit.fixef["Days"] + np.array([-z, z]) * fit.se["Days"])
    s = fit._sdcor_table.loc["sigma"]
    np.testing.assert_allclose(ci.loc["sigma"], s["estimate"] + np.array([-z, z]) * s["std_error"])
    assert fit.confint(parm="Days").shape == (1, 2)


def test_wald_boundary_estimates_are_not_given():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jaxlmm.FitWarning)
        fit = jaxlmm.lmer("Yield ~ 1 + (1 | Batch)", load_data("Dyestuff2"))
    assert fit.singular
    with pytest.warns(jaxlmm.InferenceWarning, match="boundary"):
        ci = fit.confint("wald")
    assert ci.loc["sd_(Intercept)|Batch"].isna().all()
    assert ci.loc["sigma"].notna().all() and ci.loc["(Intercept)"].notna().all()
    assert np.isnan(fit.varcorr["se"].iloc[0])


@pytest.mark.parametrize("bad", ["satterwaite", "KR2", 3])
def test_bad_ddf(sleepstudy, bad):
    fit = jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", sleepstudy)
    with pytest.raises(jaxlmm.ArgumentError, match="ddf"):
        fit.coef_table(bad)
    with pytest.raises(jaxlmm.ArgumentError, match="ddf"):
        fit.test([0, 1], ddf=bad)


def test_bad_hypothesis_matrix(sleepstudy):
    fit = jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", sleepstudy)
    with pytest.raises(jaxlmm.ArgumentError, match="2 columns"):
        fit.test(np.eye(3))
    with pytest.raises(jaxlmm.ArgumentError, match="linearly dependent"):
        fit.test([[0, 1], [0, 2]])
    with pytest.raises(jaxlmm.ArgumentError, match="not a fixed effect"):
        fit.test({"Dayz": 1})
    with pytest.raises(jaxlmm.ArgumentError, match="rhs"):
        fit.test([0, 1], rhs=[1, 2])


def test_bad_confint_arguments(sleepstudy):
    fit = jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", sleepstudy)
    with pytest.raises(jaxlmm.ArgumentError, match="method"):
        fit.confint("exact")
    with pytest.raises(jaxlmm.ArgumentError, match="level"):
        fit.confint(level=95)
    with pytest.raises(jaxlmm.ArgumentError, match="parm"):
        fit.confint(parm="Dayz")


def test_kenward_roger_through_the_result(sleepstudy):
    # pbkrtest 0.5.2: KRmodcomp(lmer(Reaction ~ Days + (Days|Subject), sleepstudy), diag(2))
    #   stat 705.835721317, ndf 2, ddf 16, F.scaling 0.941176470588
    fit = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", sleepstudy)
    res = fit.test(np.eye(2), ddf="kenward-roger")
    assert res["den_df"] == pytest.approx(16.0, rel=1e-6)
    assert res["F"] == pytest.approx(705.835721317, rel=1e-4)
    ct = fit.coef_table("kenward-roger")
    np.testing.assert_allclose(ct["df"], [17.0, 17.0], rtol=1e-6)
    # an ML fit is refitted by REML first, as pbkrtest does
    ml = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", sleepstudy, reml=False)
    np.testing.assert_allclose(ml.coef_table("kenward-roger")["std_error"], ct["std_error"], rtol=1e-8)
