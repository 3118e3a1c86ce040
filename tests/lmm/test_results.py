"""LmerResult: summary layout, repr, immutability, one consolidated warning per fit."""

import warnings

import numpy as np
import pandas as pd
import pytest

import jaxlmm
from conftest import load_data
from jaxlmm import datasets


@pytest.fixture(scope="module")
def sleep_fit():
    return jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", datasets.load("sleepstudy"))


def test_summary_has_lme4_sections(sleep_fit):
    text = str(sleep_fit.summary())
    for part in ["Linear mixed model fit by REML", "Formula: Reaction ~ Days + (Days | Subject)",
                 "REML criterion at convergence: 1743.6", "Scaled residuals:", "Random effects:",
                 "Groups", "Std.Dev.", "Residual", "Number of obs: 180, groups:  Subject, 18",
                 "Fixed effects:", "Std. Error", "t value", "Correlation of Fixed Effects:"]:
        assert part in text, part
    # scaled residual quantiles as lme4 prints them
    assert "-3.9536" in text and "5.1793" in text
    assert "0.07" in text  # intercept-slope correlation, 2 decimals


def test_ml_summary_shows_information_criteria():
    fit = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", datasets.load("sleepstudy"), reml=False)
    text = str(fit.summary())
    assert "maximum likelihood" in text
    assert "AIC" in text and "BIC" in text and "logLik" in text and "df.resid" in text
    assert "1763.9" in text and "-876.0" in text
    assert fit.aic == pytest.approx(fit.objective + 2 * 6)


def test_repr_is_short(sleep_fit):
    r = repr(sleep_fit)
    assert r.startswith("<LmerResult") and "\n" not in r and "REML criterion 1743.6283" in r


def test_result_is_immutable(sleep_fit):
    with pytest.raises(AttributeError):
        sleep_fit.sigma = 1.0
    fe = sleep_fit.fixef
    fe.iloc[0] = 0.0
    assert sleep_fit.fixef.iloc[0] == pytest.approx(251.405, rel=1e-5)
    with pytest.raises(ValueError):
        sleep_fit.theta[0] = 2.0
    re = sleep_fit.ranef
    re.loc[0, "condval"] = 1e9
    assert sleep_fit.ranef.loc[0, "condval"] != 1e9
    with pytest.raises(TypeError):
        sleep_fit.optinfo["converged"] = False


def test_optinfo_records_the_optimisation(sleep_fit):
    info = sleep_fit.optinfo
    assert info["converged"] and info["n_evals"] >= info["n_iter"] >= 1
    assert info["grad_norm"] == pytest.approx(np.max(np.abs(info["grad"])))
    assert info["grad_norm"] < 1e-2


def test_singular_fit_gives_one_warning_and_exact_zero():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        fit = jaxlmm.lmer("Yield ~ 1 + (1 | Batch)", datasets.load("dyestuff2"))
    fit_warnings = [x for x in w if issubclass(x.category, jaxlmm.FitWarning)]
    assert len(fit_warnings) == 1 and "singular" in str(fit_warnings[0].message)
    assert fit.singular and fit.theta[0] == 0.0
    assert "boundary (singular) fit" in str(fit.summary())
    assert np.all(fit.ranef["condval"] == 0.0)


def test_non_convergence_is_reported_once():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        fit = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", datasets.load("sleepstudy"), max_iter=1)
    fit_warnings = [x for x in w if issubclass(x.category, jaxlmm.FitWarning)]
    assert len(fit_warnings) == 1 and "did not converge" in str(fit_warnings[0].message)
    assert not fit.converged and fit.optinfo["status"] == 2
    assert fit.optinfo["warnings"]


def test_dict_input_and_dropped_rows_counted():
    df = datasets.load("sleepstudy")
    df.loc[[3, 50, 51], "Reaction"] = np.nan
    data = {c: df[c].to_numpy() for c in df.columns}
    fit = jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", data)
    assert fit.n_dropped == 3 and fit.nobs == 177
    assert len(fit.fitted) == len(fit.residuals) == 177
    np.testing.assert_allclose(fit.fitted + fit.residuals, df["Reaction"].dropna().to_numpy())


def test_user_global_x64_setting_untouched():
    import jax

    before = jax.config.jax_enable_x64
    jaxlmm.lmer("Yield ~ 1 + (1 | Batch)", datasets.load("dyestuff"))
    assert jax.config.jax_enable_x64 == before


def lme4_cbpp():
    """cbpp as lme4 has it: herd and period are factors (levels 1..15 and 1..4)."""
    d = load_data("cbpp")
    d["herd"] = pd.Categorical(d["herd"])
    d["period"] = d["period"].astype(str)
    return d


def test_every_result_type_displays_in_a_notebook(sleep_fit, tmp_path):
    """Jupyter calls _repr_html_ / _repr_markdown_ (and repr): each returns a string, never
    raises, and is the real view (not the fallback), for every kind of fit and its summary."""
    orth = load_data("Orthodont")
    sleep = datasets.load("sleepstudy")
    sleep.to_parquet(tmp_path / "s.parquet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jaxlmm.FitWarning)
        fits = {
            "lmer": sleep_fit,
            "gls": jaxlmm.gls("distance ~ age * Sex", orth, correlation=jaxlmm.AR1("Subject", "occasion")),
            "rside": jaxlmm.lmer("distance ~ age + Sex + (1 | Subject)", orth,
                                 correlation=jaxlmm.AR1("Subject", "occasion"), variance=jaxlmm.VarIdent("Sex")),
            "outofcore": jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", str(tmp_path / "s.parquet")),
            "glmer": jaxlmm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", lme4_cbpp(),
                                  "binomial"),
        }
    hooks = ("_repr_html_", "_repr_markdown_", "__repr__", "__str__")
    for name, fit in fits.items():
        s = fit.summary()
        for obj in (fit, s):
            for hook in hooks:
                if hasattr(obj, hook):
                    assert isinstance(getattr(obj, hook)(), str), (name, type(obj).__name__, hook)
        html = fit._repr_html_()
        assert html.startswith("<div><p><b>") and html.count("<table") >= 2, name  # not the <pre> fallback
        md = s._repr_markdown_()
        assert md == s.markdown and md.startswith("**") and "Fixed effects:" in md, name
        assert str(s) == s.text and "Fixed effects:" in s.text
    g = fits["glmer"]
    md = g.summary().markdown
    assert md.startswith("**Generalized linear mixed model fit by maximum likelihood (Laplace approximation), "
                         "family binomial (logit link)**")
    assert "| herd | sd__(Intercept) | 0.642" in md and "| period2 | -0.9923 | 0.3066 | -3.236 |" in md  # lme4's
    assert "inf" not in md and "| term | estimate | std.error | statistic | p.value |" in md  # z tests: no df
    assert "Generalized linear mixed model" in g._repr_html_() and "sd__(Intercept)" in g._repr_html_()
    assert fits["gls"].summary().markdown.startswith("**Generalized least squares fit by REML**")
    rs = fits["rside"].summary().markdown
    assert "| correlation | phi |" in rs and "| variance | Female |" in rs
    assert "no per-row outputs" in fits["outofcore"].summary().markdown


def test_summary_markdown_view_never_raises():
    from jaxlmm.report.summary import Summary

    def broken():
        raise RuntimeError("no tables")

    for s in (Summary("text layout"), Summary("text layout", markdown=broken)):
        assert s._repr_markdown_() == "```text\ntext layout\n```\n"
    with pytest.raises(jaxlmm.ArgumentError, match="no Markdown form"):
        Summary("text").markdown
