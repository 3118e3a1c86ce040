"""Every bad input gets a jaxlmm error naming the culprit, raised before any computation."""

import sys
import warnings

import numpy as np
import pandas as pd
import pytest

import jaxlmm
from jaxlmm import ArgumentError, DataError, FormulaError, RankDeficiencyWarning
from jaxlmm.errors import JaxlmmError

F = "Reaction ~ Days + (Days | Subject)"
F1 = "Reaction ~ Days + (1 | Subject)"


def test_error_classes_are_value_errors():
    for cls in (FormulaError, DataError, ArgumentError):
        assert issubclass(cls, JaxlmmError) and issubclass(cls, ValueError)


_GRAM_CALLS: list = []


@pytest.fixture(autouse=True)
def _no_jax_compute(monkeypatch):
    """Bad input must be rejected before the Gram matrix (the first computation) is formed."""
    lmer_module = sys.modules["jaxlmm.lmm.model"]  # where the Gram blocks are first computed
    real = lmer_module.gram_blocks

    def spy(*a, **k):
        _GRAM_CALLS.append(1)
        return real(*a, **k)

    _GRAM_CALLS.clear()
    monkeypatch.setattr(lmer_module, "gram_blocks", spy)
    yield _GRAM_CALLS


def rejects(cls, match, formula, data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankDeficiencyWarning)
        with pytest.raises(cls, match=match):
            jaxlmm.lmer(formula, data, **kw)
    assert not _GRAM_CALLS, "the error came after computation had started"


# ---------------------------------------------------------------- formula


@pytest.mark.parametrize(
    "formula, culprit",
    [
        ("Reaction ~ Dayz + (Days | Subject)", "'Dayz'"),            # fixed part
        ("Reaction ~ Days + (Dayz | Subject)", "'Dayz'"),            # inside a bar
        ("Reaction ~ Days + (Days | Subj)", "'Subj'"),               # grouping factor
        ("Reaction ~ Days + (1 | Subject:Night)", "'Night'"),        # interaction grouping
        ("Reaction ~ Days + (1 | Night/Subject)", "'Night'"),        # nested grouping
        ("Reactionn ~ Days + (Days | Subject)", "'Reactionn'"),      # response
        ("np.log(Reactionn) ~ Days + (1 | Subject)", "'Reactionn'"),  # transformed response
        ("Reaction ~ np.log(Dayz + 1) + (1 | Subject)", "'Dayz'"),   # inside a transform
    ],
)
def test_unknown_column(sleepstudy, formula, culprit):
    rejects(FormulaError, f"unknown column {culprit}", formula, sleepstudy)


def test_unknown_column_lists_available_columns(sleepstudy):
    rejects(FormulaError, r"data has columns \['Days', 'Reaction', 'Subject'\]",
            "Reaction ~ Dayz + (1 | Subject)", sleepstudy)


@pytest.mark.parametrize(
    "formula, match",
    [
        ("Reaction Days + (Days | Subject)", "'~'"),
        ("Reaction ~ Days ~ (Days | Subject)", "'~'"),
        ("Reaction ~ Days + (Days | Subject", r"unbalanced parentheses.*missing '\)'"),
        ("Reaction ~ Days + Days | Subject)", r"unbalanced parentheses.*unexpected '\)'"),
        ("Reaction ~ Days + ( | Subject)", r"empty bar in '\( \| Subject\)'"),
        ("Reaction ~ Days + (Days | )", "empty grouping factor"),
        ("Reaction ~ Days + Days | Subject", r"misplaced '\|' in 'Days \| Subject'"),
        ("Reaction ~ Days + (Days + (1 | Subject))", r"misplaced '\|'"),
        ("~ Days + (1 | Subject)", "no response"),
        ("Reaction ~ ", "no predictors"),
    ],
)
def test_malformed_formula(sleepstudy, formula, match):
    rejects(FormulaError, match, formula, sleepstudy)


def test_formula_not_a_string(sleepstudy):
    rejects(FormulaError, "formula must be a string", None, sleepstudy)


def test_no_random_effects_term(sleepstudy):
    rejects(FormulaError, r"no random-effects term.*\(1 \| group\)", "Reaction ~ Days", sleepstudy)


def test_unparseable_fixed_part(sleepstudy):
    rejects(FormulaError, "empty term", "Reaction ~ Days + + (1 | Subject)", sleepstudy)


# ---------------------------------------------------------------- data


@pytest.mark.parametrize(
    "values",
    [
        lambda s: np.where(s.Days > 4, "slow", "fast"),        # strings
        lambda s: s.Reaction.astype(str),                      # numbers stored as text
        lambda s: pd.Categorical(s.Reaction.round()),          # categorical
        lambda s: s.Reaction > 300,                            # logical (lme4 rejects it too)
    ],
)
def test_non_numeric_response(sleepstudy, values):
    df = sleepstudy.assign(Reaction=values(sleepstudy))
    rejects(DataError, "response column 'Reaction' must be numeric", F, df)


def test_non_numeric_transformed_response(sleepstudy):
    df = sleepstudy.assign(speed=np.where(sleepstudy.Days > 4, "slow", "fast"))
    rejects(DataError, "response 'np.log\\(speed\\)' must be numeric; column 'speed' has dtype",
            "np.log(speed) ~ Days + (1 | Subject)", df)


def test_infinite_response(sleepstudy):
    df = sleepstudy.copy()
    df.loc[5, "Reaction"] = np.inf
    rejects(DataError, "response column 'Reaction' has infinite values", F, df)


def test_infinite_covariate(sleepstudy):
    df = sleepstudy.astype({"Days": float})
    df.loc[5, "Days"] = -np.inf
    rejects(DataError, "column 'Days' has non-finite values", F1, df)


def test_non_finite_transform(sleepstudy):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's own log(0) warning
        rejects(DataError, r"'np.log\(Days\)' has non-finite values",
                "Reaction ~ np.log(Days) + (1 | Subject)", sleepstudy)


def test_grouping_factor_with_single_level(sleepstudy):
    df = sleepstudy.assign(Lab="lab1")
    rejects(DataError, "grouping factor 'Lab'.*single level",
            "Reaction ~ Days + (1 | Subject) + (1 | Lab)", df)


def test_grouping_factor_with_single_level_after_dropping_missing(sleepstudy):
    df = sleepstudy.copy()
    df.loc[df.Subject != 308, "Reaction"] = np.nan
    rejects(DataError, "grouping factor 'Subject'.*single level", F1, df)


def test_as_many_levels_as_observations(sleepstudy):
    # lme4's check.nobs.vs.nlev: one observation per subject
    df = sleepstudy.groupby("Subject").head(1).assign(Days=np.arange(18.0))
    rejects(DataError, "grouping factor 'Subject' has 18 levels for 18 observations", F1, df)


def test_as_many_random_effects_as_observations(sleepstudy):
    # lme4's check.nobs.vs.nRE: 18 subjects x (intercept, slope) = 36 effects for 36 rows
    df = sleepstudy.groupby("Subject").head(2)
    rejects(DataError, r"term \(Days \| Subject\) has 36 random effects for 36 observations", F, df)


def test_more_random_effects_than_observations(sleepstudy):
    df = sleepstudy.groupby("Subject").head(2).assign(D2=lambda d: d.Days ** 2 + 1)
    rejects(DataError, r"term \(1 \+ Days \+ D2 \| Subject\) has 54 random effects",
            "Reaction ~ Days + (1 + Days + D2 | Subject)", df)


def test_no_rows_left_after_dropping_missing(sleepstudy):
    df = sleepstudy.assign(Days=np.where(sleepstudy.Days > 4, np.nan, sleepstudy.Days),
                           Reaction=np.where(sleepstudy.Days <= 4, np.nan, sleepstudy.Reaction))
    rejects(DataError, r"no rows left after dropping rows with missing values in "
            r"\['Days', 'Reaction', 'Subject'\]", F, df)


def test_empty_data(sleepstudy):
    rejects(DataError, "no rows left", F, sleepstudy.iloc[:0])


def test_data_of_wrong_type():
    rejects(DataError, "data must be a pandas DataFrame, a dict of columns, or a polars .* table; got list", F, [1, 2])


def test_dict_with_ragged_columns():
    rejects(DataError, "cannot make a table from the dict",
            F, {"Reaction": [1.0, 2.0], "Days": [1.0], "Subject": [1, 2]})


def test_duplicated_column(sleepstudy):
    df = pd.concat([sleepstudy, sleepstudy[["Days"]]], axis=1)
    rejects(DataError, "more than one column named 'Days'", F, df)


def test_grouping_column_mixing_types(sleepstudy):
    df = sleepstudy.assign(Subject=sleepstudy.Subject.astype(object))
    df.loc[df.Subject == 308, "Subject"] = "s308"
    rejects(DataError, "grouping column 'Subject' mixes values of different types", F1, df)


# ---------------------------------------------------------------- weights and offset


@pytest.mark.parametrize("bad, shown", [(-1.0, "-1.0"), (np.nan, "nan"), (np.inf, "inf")])
def test_bad_weights_array(sleepstudy, bad, shown):
    w = np.ones(180)
    w[7] = bad
    rejects(ArgumentError, f"weights must be finite and non-negative; row 7 has {shown}",
            F, sleepstudy, weights=w)


@pytest.mark.parametrize("bad", [-2.0, np.nan, -np.inf])
def test_bad_weights_column(sleepstudy, bad):
    df = sleepstudy.assign(w=1.0)
    df.loc[11, "w"] = bad
    rejects(ArgumentError, "weights must be finite and non-negative; row 11", F, df, weights="w")


def test_zero_weight(sleepstudy):
    w = np.ones(180)
    w[0] = 0.0
    rejects(ArgumentError, "weights must be positive", F, sleepstudy, weights=w)


def test_weights_column_missing(sleepstudy):
    rejects(ArgumentError, "weights='wt': no column 'wt' in data", F, sleepstudy, weights="wt")


def test_weights_column_not_numeric(sleepstudy):
    rejects(ArgumentError, "weights column 'w' must be numeric", F,
            sleepstudy.assign(w="heavy"), weights="w")


@pytest.mark.parametrize("name", ["weights", "offset"])
def test_wrong_length(sleepstudy, name):
    rejects(ArgumentError, f"{name} has length 179 but data has 180 rows", F, sleepstudy,
            **{name: np.ones(179)})


@pytest.mark.parametrize("name", ["weights", "offset"])
@pytest.mark.parametrize("value, shape", [(2.0, r"\(\)"), (np.ones((180, 2)), r"\(180, 2\)")])
def test_wrong_shape(sleepstudy, name, value, shape):
    rejects(ArgumentError, f"{name} must be a column name or a 1-D array.*shape {shape}",
            F, sleepstudy, **{name: value})


def test_non_numeric_offset_array(sleepstudy):
    rejects(ArgumentError, "offset must be a column name or a numeric array", F, sleepstudy,
            offset=["x"] * 180)


def test_infinite_offset(sleepstudy):
    off = np.zeros(180)
    off[9] = np.inf
    rejects(ArgumentError, "offset must be finite; row 9 has inf", F, sleepstudy, offset=off)


def test_offset_column_missing(sleepstudy):
    rejects(ArgumentError, "offset='off': no column 'off' in data", F, sleepstudy, offset="off")


# ---------------------------------------------------------------- other arguments


def test_reml_not_boolean(sleepstudy):
    rejects(ArgumentError, "reml must be True or False", F, sleepstudy, reml="yes")


def test_start_of_wrong_length(sleepstudy):
    rejects(ArgumentError, "start has 2 values; this model has 3 theta parameters", F, sleepstudy,
            start=[1.0, 1.0])


# ---------------------------------------------------------------- aliased fixed effects


def _fit(formula, df, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jaxlmm.FitWarning)
        return jaxlmm.lmer(formula, df, **kw)


def test_aliased_column_dropped_and_fit_unchanged(sleepstudy, _no_jax_compute):
    df = sleepstudy.assign(Hours=24.0 * sleepstudy.Days)
    with pytest.warns(RankDeficiencyWarning, match="Hours"):
        fit = _fit("Reaction ~ Days + Hours + (Days | Subject)", df)
    ref = _fit(F, sleepstudy)
    assert _no_jax_compute  # the fit did run
    assert fit.dropped_columns == ("Hours",)
    assert list(fit.fixef.index) == ["(Intercept)", "Days"]
    assert np.isfinite(fit.fixef).all() and np.isfinite(fit.se).all()
    np.testing.assert_allclose(fit.fixef, ref.fixef, rtol=1e-6)
    np.testing.assert_allclose(fit.se, ref.se, rtol=1e-5)
    assert fit.objective == pytest.approx(ref.objective, rel=1e-8)


def test_aliased_factor_levels_dropped(sleepstudy):
    # 'week' is a function of the 'phase' dummies: the second factor's columns are aliased
    phase = np.where(sleepstudy.Days < 5, "early", "late")
    df = sleepstudy.assign(phase=phase, week=np.where(phase == "early", "w1", "w2"))
    with pytest.warns(RankDeficiencyWarning, match="weekw2"):
        fit = _fit("Reaction ~ phase + week + (1 | Subject)", df)
    ref = _fit("Reaction ~ phase + (1 | Subject)", df)
    assert fit.dropped_columns == ("weekw2",)
    assert list(fit.fixef.index) == ["(Intercept)", "phaselate"]
    np.testing.assert_allclose(fit.fixef, ref.fixef, rtol=1e-6)


def test_constant_column_dropped(sleepstudy):
    df = sleepstudy.assign(zero=0.0)
    with pytest.warns(RankDeficiencyWarning, match="zero"):
        fit = _fit("Reaction ~ Days + zero + (1 | Subject)", df)
    assert fit.dropped_columns == ("zero",)
    np.testing.assert_allclose(fit.fixef, _fit(F1, sleepstudy).fixef, rtol=1e-6)


# ---------------------------------------------------------------- counts and iteration limits
# one validator (jaxlmm.arguments.positive_int) behind every entry point's max_iter and counts

BAD_COUNTS = [(-5, "got -5"), (0, "got 0"), ("10", r"got '10' \(str\)"), (2.5, r"got 2.5 \(float\)"),
              (True, r"got True \(bool\)"), (None, "got None")]


def _rejects_call(call, name, match):
    with pytest.raises(ArgumentError, match=rf"{name} must be a positive integer, {match}"):
        call()
    assert not _GRAM_CALLS, "the error came after computation had started"


@pytest.mark.parametrize("bad, match", BAD_COUNTS)
def test_lmer_many_max_iter_and_batch_size(sleepstudy, bad, match):
    _rejects_call(lambda: jaxlmm.lmer_many(F1, sleepstudy, max_iter=bad), "max_iter", match)
    if bad is not None:  # batch_size=None is the default
        _rejects_call(lambda: jaxlmm.lmer_many(F1, sleepstudy, batch_size=bad), "batch_size", match)


@pytest.mark.parametrize("bad, match", BAD_COUNTS)
def test_glmer_many_max_iter_and_batch_size(bad, match):
    from conftest import load_data

    cbpp = load_data("cbpp").assign(any=lambda d: (d.incidence > 0).astype(float))
    f = "any ~ period + (1 | herd)"
    _rejects_call(lambda: jaxlmm.glmer_many(f, cbpp, family="binomial", max_iter=bad), "max_iter", match)
    if bad is not None:
        _rejects_call(lambda: jaxlmm.glmer_many(f, cbpp, family="binomial", batch_size=bad), "batch_size", match)


@pytest.mark.parametrize("bad, match", BAD_COUNTS)
def test_gls_max_iter(sleepstudy, bad, match):
    _rejects_call(lambda: jaxlmm.gls("Reaction ~ Days", sleepstudy, max_iter=bad), "max_iter", match)


def test_numpy_integers_are_counts():
    from jaxlmm.arguments import optional_positive_int, positive_int

    assert positive_int(np.int32(7), "n") == 7 and type(positive_int(np.int64(7), "n")) is int
    assert optional_positive_int(None, "batch_size") is None
    with pytest.raises(ArgumentError, match="n must be a positive integer"):
        positive_int(np.float64(3.0), "n")
