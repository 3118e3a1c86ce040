"""broom.mixed tables (tidy, glance, augment) and the Markdown/HTML summaries, against lme4's
reference fit of sleepstudy (lme4 1.1.31, lmerTest) and the fit's own accessors."""

import numpy as np
import pytest

import jaxlmm
from jaxlmm.errors import ArgumentError

from conftest import load_reference

FORMULA = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def ref():
    return load_reference("sleepstudy_slope_reml")


@pytest.fixture(scope="module")
def fit(sleep_data):
    return jaxlmm.lmer(FORMULA, sleep_data)


@pytest.fixture(scope="module")
def sleep_data():
    from jaxlmm import datasets

    return datasets.load("sleepstudy")


def test_tidy_against_lme4_and_lmertest(fit, ref):
    t = fit.tidy()
    assert list(t.columns) == ["effect", "group", "term", "estimate", "std.error", "statistic", "df", "p.value"]
    fx = t[t["effect"] == "fixed"]
    assert list(fx["term"]) == ref["beta_names"]
    np.testing.assert_allclose(fx["estimate"], ref["beta"], rtol=1e-5)
    np.testing.assert_allclose(fx["std.error"], ref["se"], rtol=1e-4)
    np.testing.assert_allclose(fx["df"], ref["satterthwaite"]["df"], rtol=1e-3)
    np.testing.assert_allclose(fx["statistic"], ref["satterthwaite"]["t"], rtol=1e-4)
    np.testing.assert_allclose(fx["p.value"], ref["satterthwaite"]["p"], rtol=1e-3)
    rp = t[t["effect"] == "ran_pars"]
    assert list(rp["term"]) == ["sd__(Intercept)", "sd__Days", "cor__(Intercept).Days", "sd__Observation"]
    assert list(rp["group"]) == ["Subject", "Subject", "Subject", "Residual"]
    np.testing.assert_allclose(rp["estimate"], ref["varcorr"]["sdcor"], rtol=1e-4)
    np.testing.assert_allclose(rp["std.error"], fit.varcorr["se"], rtol=1e-12)
    assert rp[["statistic", "df", "p.value"]].isna().all().all()


def test_tidy_options(fit):
    fixed = fit.tidy(effects="fixed", ddf=None, conf_int=True, conf_level=0.9)
    assert set(fixed["effect"]) == {"fixed"} and np.isinf(fixed["df"]).all()
    z = 1.6448536269514722
    np.testing.assert_allclose(fixed["conf.high"] - fixed["estimate"], z * fixed["std.error"], rtol=1e-10)
    with pytest.raises(ArgumentError, match="effects"):
        fit.tidy(effects="ran_vals")
    with pytest.raises(ArgumentError, match="conf_level"):
        fit.tidy(conf_int=True, conf_level=95)


def test_glance_against_lme4(fit, ref):
    g = fit.glance()
    assert len(g) == 1
    assert list(g.columns) == ["nobs", "sigma", "logLik", "AIC", "BIC", "deviance", "df.residual", "REMLcrit"]
    row = g.iloc[0]
    assert row["nobs"] == ref["nobs"]
    assert row["df.residual"] == ref["nobs"] - ref["df"]
    assert row["sigma"] == pytest.approx(ref["sigma"], rel=1e-5)
    for k in ("logLik", "AIC", "BIC"):
        assert row[k] == pytest.approx(ref[k], rel=1e-8)
    assert row["REMLcrit"] == pytest.approx(ref["objective"], rel=1e-8)


def test_augment(fit, ref, sleep_data):
    a = fit.augment(sleep_data)
    assert list(a.columns) == list(sleep_data.columns) + [".fitted", ".resid", ".fixed"]
    k = len(ref["fitted_head"])
    np.testing.assert_allclose(a[".fitted"].to_numpy()[:k], ref["fitted_head"], rtol=1e-6)
    np.testing.assert_allclose(a[".resid"].to_numpy()[:k], ref["resid_head"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a[".fixed"], ref["beta"][0] + ref["beta"][1] * sleep_data["Days"], rtol=1e-6)
    np.testing.assert_allclose(a["Reaction"], a[".fitted"] + a[".resid"], rtol=1e-12)
    bare = fit.augment()
    assert list(bare.columns) == [".fitted", ".resid", ".fixed"] and len(bare) == len(sleep_data)
    with pytest.raises(ArgumentError, match="rows"):
        fit.augment(sleep_data.iloc[:10])


def test_augment_keeps_rows_used_with_missing_values(sleep_data):
    d = sleep_data.copy()
    d.loc[[3, 50], "Reaction"] = np.nan
    f = jaxlmm.lmer(FORMULA, d)
    a = f.augment(d)
    assert len(a) == len(d) - 2 and 3 not in a.index and 50 not in a.index
    np.testing.assert_allclose(a[".fitted"], f.fitted, rtol=1e-12)


def test_summary_markdown_and_html(fit):
    md = fit.summary().markdown
    assert md.startswith("**Linear mixed model fit by REML**")
    assert "| (Intercept) | 251.4 |" in md and "| Subject | sd__Days | 5.922 |" in md
    html = fit._repr_html_()
    assert html.startswith("<div>") and "sd__Observation" in html and html.count("<table") == 2
    assert html.count("<tr") == 1 + 1 + 1 + 6  # glance header and row, tidy header and 6 rows


def test_gls_tables():
    from jaxlmm import datasets

    g = jaxlmm.gls("distance ~ age", datasets.load("orthodont"),
                   correlation=jaxlmm.AR1("Subject", "occasion"))
    t = g.tidy()
    assert set(t["effect"]) == {"fixed"}  # no random effects; residual-structure parameters in residual_params
    assert np.isfinite(t["df"]).all()  # residual df: Satterthwaite is not available with a structure
    assert g.glance().iloc[0]["nobs"] == 108
