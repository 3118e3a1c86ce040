"""Formulas mean what they mean in R (issue 14): ``^`` inside calls is a power, integer columns
do not wrap around in transforms, backtick-quoted and dotted names are columns, a column shadows
a function of its name, transforms find their variables (and keep their state for new data),
``offset()`` terms, and new levels of fixed-effect factors in ``predict``.

Numbers are compared with lme4 (``data/sleepstudy_formula_semantics.json``, made by
``data/formula_semantics.R``) or with an exact invariance (the same model written another way).
"""

import warnings

import numpy as np
import pandas as pd
import pytest

import jaxlmm
from jaxlmm.terms.design import build_design
from jaxlmm.errors import DataError, FormulaError, JaxlmmError, RankDeficiencyWarning

from conftest import load_data, load_reference

REF = load_reference("sleepstudy_formula_semantics")


@pytest.fixture(scope="module")
def sleep():
    return load_data("sleepstudy")


def fit(formula, data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankDeficiencyWarning)
        return jaxlmm.lmer(formula, data, **kw)


def agrees(f, ref, names=None, rtol=1e-6):
    assert f.objective == pytest.approx(ref["REML"], rel=1e-8)
    est = f.fixef.to_numpy()
    np.testing.assert_allclose(est, list(ref["fixef"].values()), rtol=rtol, atol=1e-6 * np.abs(est).max())
    np.testing.assert_allclose(f.se.to_numpy(), list(ref["se"].values()), rtol=1e-5)
    assert f.sigma == pytest.approx(ref["sigma"], rel=1e-6)
    if names is not None:
        assert list(f.fixef.index) == names


def same_fit(a, b, rel=1e-10):
    assert a.objective == pytest.approx(b.objective, rel=rel)
    np.testing.assert_allclose(a.fixef.to_numpy(), b.fixef.to_numpy(), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------- ^ is a power inside calls


def test_power_inside_I_is_a_power_as_in_lme4(sleep):
    # before: Python's XOR (Days ^ 2), fixef 1.536 and REML 1782.598
    f = fit("Reaction ~ Days + I(Days^2) + (1 | Subject)", sleep)
    agrees(f, REF["power"], ["(Intercept)", "Days", "I(Days^2)"])


def test_caret_outside_calls_is_crossing(sleep):
    df = sleep.assign(half=np.where(sleep.Days < 5, "early", "late"), odd=(sleep.Days % 2).astype(str))
    f = fit("Reaction ~ (half + odd)^2 + (1 | Subject)", df)
    agrees(f, REF["crossing"], ["(Intercept)", "halflate", "odd1", "halflate:odd1"])


def test_power_in_the_response_and_in_any_call(sleep):
    a = fit("I(Reaction^0.5) ~ Days + (1 | Subject)", sleep)
    b = fit("y ~ Days + (1 | Subject)", sleep.assign(y=np.sqrt(sleep.Reaction)))
    same_fit(a, b)
    c = fit("Reaction ~ log(Days^2 + 1) + (1 | Subject)", sleep)
    d = fit("Reaction ~ z + (1 | Subject)", sleep.assign(z=np.log(sleep.Days.astype(float) ** 2 + 1)))
    same_fit(c, d)


# ---------------------------------------------------------------- integer and boolean columns


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "uint64", "Int64", "UInt16"])
def test_integer_columns_do_not_wrap_around_in_transforms(sleep, dtype):
    ref = fit("Reaction ~ I(Days * 100) + I(Days - 5) + (1 | Subject)", sleep.assign(Days=sleep.Days.astype(float)))
    f = fit("Reaction ~ I(Days * 100) + I(Days - 5) + (1 | Subject)", sleep.assign(Days=sleep.Days.astype(dtype)))
    same_fit(f, ref)
    # I(Days * 100) alone: slope exactly lme4's Days slope / 100
    g = fit("Reaction ~ I(Days * 100) + (1 | Subject)", sleep.assign(Days=sleep.Days.astype(dtype)))
    assert g.fixef["I(Days * 100)"] == pytest.approx(REF["offset"]["fixef"]["Days"] / 100, rel=1e-8)


def test_boolean_columns_are_numbers_in_arithmetic(sleep):
    late = sleep.Days >= 5
    a = fit("Reaction ~ I(late + late) + (1 | Subject)", sleep.assign(late=late))  # numpy bool + bool is OR
    b = fit("Reaction ~ z + (1 | Subject)", sleep.assign(z=2.0 * late))
    same_fit(a, b)


# ---------------------------------------------------------------- names


def test_backticked_name_is_the_column_not_the_intercept(sleep):
    # before: `1` was read as the intercept and the model became intercept-only
    a = fit("Reaction ~ `1` + (1 | Subject)", sleep.assign(**{"1": sleep.Days}))
    b = fit("Reaction ~ Days + (1 | Subject)", sleep)
    same_fit(a, b)
    assert list(a.fixef.index) == ["(Intercept)", "`1`"]


@pytest.mark.parametrize("name, written", [("site:id", "`site:id`"), ("Sujét", "Sujét"), ("my group", "`my group`"),
                                           ("a+b", "`a+b`"), ("g(1)", "`g(1)`"), ("x|y", "`x|y`")])
def test_unusual_grouping_names(sleep, name, written):
    a = fit(f"Reaction ~ Days + (Days | {written})", sleep.assign(**{name: sleep.Subject}))
    b = fit("Reaction ~ Days + (Days | Subject)", sleep)
    same_fit(a, b)
    assert list(a.ngroups) == [name]


def test_backticks_and_dots_everywhere(sleep):
    df = sleep.assign(**{"days.x": sleep.Days, "the reaction": sleep.Reaction, "sub ject": sleep.Subject})
    a = fit("`the reaction` ~ days.x + I(days.x^2) + (days.x | `sub ject`)", df)
    b = fit("Reaction ~ Days + I(Days^2) + (Days | Subject)", sleep)
    same_fit(a, b)
    assert list(a.fixef.index) == ["(Intercept)", "days.x", "I(days.x^2)"]
    assert a.varcorr.var1.tolist()[:2] == ["(Intercept)", "days.x"]


@pytest.mark.parametrize("name", ["C", "I", "Q", "poly", "log", "center", "scale"])
def test_a_column_named_like_a_function_is_the_column(sleep, name):
    rng = np.random.default_rng(1)
    df = sleep.assign(A=rng.choice(["a", "b"], 180), B=rng.choice(["u", "v"], 180))
    df[name] = rng.choice(["p", "q"], 180)
    a = fit(f"Reaction ~ A * B * {name} + (1 | Subject)", df)
    b = fit("Reaction ~ A * B * K + (1 | Subject)", df.assign(K=df[name]))
    same_fit(a, b)
    assert a.fixef.index[-1] == f"Ab:Bv:{name}q"


def test_shadowing_column_and_the_function_in_one_formula(sleep):
    # a column C and C(...) the function (as R: a call means the function)
    df = sleep.assign(C=sleep.Days * 2.0, f=(sleep.Days % 3).astype(str))
    a = fit("Reaction ~ C + C(f) + (1 | Subject)", df)
    b = fit("Reaction ~ z + C(f) + (1 | Subject)", df.assign(z=df.C))
    same_fit(a, b)


def test_maximal_crossed_design_with_a_factor_named_C():
    # the example: columns A, B, C (formulaic's C()) in fixed part and both bars
    rng = np.random.default_rng(7)
    subj, item = np.repeat(np.arange(12), 16), np.tile(np.arange(16), 12)
    df = pd.DataFrame({"subj": subj.astype(str), "item": item.astype(str),
                       "A": rng.choice(["a1", "a2"], 192), "B": rng.choice(["b1", "b2"], 192),
                       "C": rng.choice(["c1", "c2"], 192)})
    df["y"] = rng.normal(size=192) + (df.A == "a2") + rng.normal(size=12)[subj]
    design = build_design("y ~ A*B*C + (1 + A*B*C | subj) + (1 + A*B*C | item)", df)
    assert design.x_names[-1] == "Aa2:Bb2:Cc2" and design.p == 8
    assert [t.width for t in design.terms] == [8, 8]


# ---------------------------------------------------------------- transforms


def test_poly_matches_r(sleep):
    f = fit("Reaction ~ poly(Days, 2) + (1 | Subject)", sleep)
    agrees(f, REF["poly"], ["(Intercept)", "poly(Days, 2)1", "poly(Days, 2)2"])


def test_scale_matches_r(sleep):
    agrees(fit("Reaction ~ scale(Days) + (1 | Subject)", sleep), REF["scale"])


def test_bs_matches_r(sleep):
    f = fit("Reaction ~ bs(Days, df=4) + (1 | Subject)", sleep)
    agrees(f, REF["bs"], rtol=1e-5)


def test_center_is_the_centred_covariate(sleep):
    a = fit("Reaction ~ center(Days) + (center(Days) | Subject)", sleep)
    b = fit("Reaction ~ z + (z | Subject)", sleep.assign(z=sleep.Days - sleep.Days.mean()))
    same_fit(a, b, rel=1e-9)


@pytest.mark.parametrize("formula, key, rows", [
    ("Reaction ~ poly(Days, 2) + (1 | Subject)", "predict_poly", 4),
    ("Reaction ~ scale(Days) + (1 | Subject)", "predict_scale", 4),
    ("Reaction ~ bs(Days, df=4) + (1 | Subject)", "predict_bs", 3),
    ("Reaction ~ Days + offset(log(t)) + (1 | Subject)", "predict_offset", 4),
])
def test_predict_reuses_the_transform_state(sleep, formula, key, rows):
    df = sleep.assign(t=2.0 + (np.arange(180) % 3))
    f = fit(formula, df)
    nd = pd.DataFrame(REF["newdata"])[:rows].assign(Subject="308")
    np.testing.assert_allclose(f.predict(nd, re=False).to_numpy(), REF[key], rtol=1e-6)
    # the fitted rows themselves: predict(data) is the fitted values
    np.testing.assert_allclose(f.predict(df).to_numpy(), f.fitted.to_numpy(), rtol=1e-10)


def test_cr_spline_fits_and_predicts_its_own_rows(sleep):
    f = fit("Reaction ~ cr(Days, df=4) + (1 | Subject)", sleep)
    assert np.isfinite(f.objective) and f.converged
    np.testing.assert_allclose(f.predict(sleep).to_numpy(), f.fitted.to_numpy(), rtol=1e-10)


def test_r_functions(sleep):
    df = sleep.assign(d1=sleep.Days + 1.0)
    a = fit("Reaction ~ log(d1, 2) + sqrt(d1) + factor(Days > 4) + (1 | Subject)", df)
    b = fit("Reaction ~ l2 + s + late + (1 | Subject)", df.assign(l2=np.log2(df.d1), s=np.sqrt(df.d1),
                                                                   late=(df.Days > 4).astype(str)))
    same_fit(a, b)
    assert list(a.fixef.index)[1:] == ["log(d1, 2)", "sqrt(d1)", "factor(Days > 4)True"]


# ---------------------------------------------------------------- offset() terms


def test_offset_term_matches_lme4_and_the_offset_argument(sleep):
    df = sleep.assign(t=2.0 + (np.arange(180) % 3))
    a = fit("Reaction ~ Days + offset(log(t)) + (1 | Subject)", df)
    agrees(a, REF["offset"])
    b = fit("Reaction ~ Days + (1 | Subject)", df, offset=np.log(df.t.to_numpy()))
    same_fit(a, b, rel=1e-12)
    # both together add up, as in lme4
    c = fit("Reaction ~ Days + offset(log(t)) + (1 | Subject)", df, offset=np.log(df.t.to_numpy()))
    d = fit("Reaction ~ Days + (1 | Subject)", df, offset=2 * np.log(df.t.to_numpy()))
    same_fit(c, d, rel=1e-12)


def test_offset_term_rows_with_missing_values_are_dropped(sleep):
    df = sleep.assign(t=2.0 + (np.arange(180) % 3))
    df.loc[5, "t"] = np.nan
    f = fit("Reaction ~ Days + offset(log(t)) + (1 | Subject)", df)
    assert f.nobs == 179 and f.n_dropped == 1


@pytest.mark.parametrize("formula, match", [
    ("Reaction ~ Days - offset(t) + (1 | Subject)", "write an offset as"),
    ("Reaction ~ Days + offset(log(nope)) + (1 | Subject)", "unknown column 'nope'"),
    ("Reaction ~ Days + offset(log(t - 10)) + (1 | Subject)", "non-finite"),
])
def test_bad_offset_terms(sleep, formula, match):
    with pytest.raises(JaxlmmError, match=match):
        fit(formula, sleep.assign(t=2.0 + (np.arange(180) % 3)))


def test_glmer_offset_term_equals_the_offset_argument():
    cb = load_data("cbpp").astype({"period": str, "herd": str})
    a = jaxlmm.glmer("incidence ~ period + offset(log(size)) + (1 | herd)", cb, "poisson")
    b = jaxlmm.glmer("incidence ~ period + (1 | herd)", cb, "poisson", offset=np.log(cb["size"].to_numpy()))
    same_fit(a, b, rel=1e-9)
    nd = cb.iloc[:5]
    np.testing.assert_allclose(a.predict(nd).to_numpy(), a.linear_predictor.to_numpy()[:5], rtol=1e-10)


# ---------------------------------------------------------------- predict: new fixed-effect levels


def test_predict_with_a_new_fixed_effect_level_is_an_error(sleep):
    df = sleep.assign(g=np.where(sleep.Days < 5, "lo", "hi"))
    f = fit("Reaction ~ g + (1 | Subject)", df)
    with pytest.raises(DataError, match="newdata has level 'zz' of 'g'.*not seen in the fit"):
        f.predict(df.assign(g="zz"))
    # a known level still predicts
    assert np.isfinite(f.predict(df.iloc[:3]).to_numpy()).all()


def test_predict_new_level_inside_factor_call_is_an_error(sleep):
    df = sleep.assign(g=np.where(sleep.Days < 5, "lo", "hi"))
    f = fit("Reaction ~ factor(g) + (1 | Subject)", df)
    with pytest.raises(DataError, match="not seen in the fit"):
        f.predict(df.assign(g="zz"))


def test_glmer_predict_with_a_new_fixed_effect_level_is_an_error():
    cb = load_data("cbpp").astype({"period": str, "herd": str})
    f = jaxlmm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cb, "binomial")
    with pytest.raises(DataError, match="newdata has level '5' of 'period'"):
        f.predict(cb.assign(period="5"), type="response")


# ---------------------------------------------------------------- unknown names


def test_unknown_column_inside_a_transform_is_named(sleep):
    with pytest.raises(FormulaError, match="unknown column 'Dayz'.*did you mean 'Days'"):
        fit("Reaction ~ poly(Dayz, 2) + (1 | Subject)", sleep)


def test_long_column_lists_are_cut(sleep):
    wide = pd.concat([sleep, pd.DataFrame({f"column_{k}": np.zeros(180) for k in range(300)})], axis=1)
    with pytest.raises(FormulaError) as e:
        fit("Reaction ~ nope + (1 | Subject)", wide)
    assert len(str(e.value)) < 400 and "(303 in all)" in str(e.value)


def test_dates_and_times_are_refused_with_a_way_out(sleep):
    df = sleep.assign(when=pd.Timestamp("2020-01-01") + pd.to_timedelta(sleep.Days, unit="D"),
                      gap=pd.to_timedelta(sleep.Days, unit="D"))
    for col in ("when", "gap"):
        with pytest.raises(DataError, match=f"column '{col}' holds dates or times.*convert it first"):
            fit(f"Reaction ~ {col} + (1 | Subject)", df)
    # as a grouping factor a date is a label like any other
    f = fit("Reaction ~ Days + (1 | when)", df)
    assert f.ngroups["when"] == 10


def test_mixed_type_object_column_is_refused(sleep):
    df = sleep.assign(x=[1.0, "a"] * 90)
    with pytest.raises(DataError, match="column 'x' mixes values of different types"):
        fit("Reaction ~ x + (1 | Subject)", df)


def test_unused_categories_are_dropped_as_in_lme4(sleep):
    df = sleep.assign(g=pd.Categorical(np.where(sleep.Days < 5, "lo", "hi"), categories=["lo", "hi", "never"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RankDeficiencyWarning)
        f = jaxlmm.lmer("Reaction ~ g + (1 | Subject)", df)
    assert list(f.fixef.index) == ["(Intercept)", "ghi"]


def test_duplicated_weights_column_is_named(sleep):
    df = pd.concat([sleep.assign(w=1.0), pd.DataFrame({"w": np.ones(180)})], axis=1)
    with pytest.raises(DataError, match="more than one column named 'w'"):
        fit("Reaction ~ Days + (1 | Subject)", df, weights="w")
