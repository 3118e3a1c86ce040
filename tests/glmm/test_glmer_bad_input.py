"""glmer's inputs (issue 14): cbind() counts, missing counts, a formula without random effects,
complete separation, and messages that show the user's names, never internal placeholders."""

import warnings

import numpy as np
import pandas as pd
import pytest

import jaxlmm
from jaxlmm.errors import DataError, FitWarning, FormulaError

from conftest import load_data

CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"


@pytest.fixture(scope="module")
def cbpp():
    return load_data("cbpp").astype({"period": str, "herd": str})


def test_cbind_with_text_counts_names_the_column(cbpp):
    # before: numpy's raw "could not convert string to float"
    with pytest.raises(DataError, match="cbind.*'incidence' must be numeric; column 'incidence' has dtype"):
        jaxlmm.glmer(CBPP, cbpp.astype({"incidence": str}), "binomial")


def test_cbind_with_a_missing_count_drops_the_row(cbpp):
    # before: the NaN count was blamed on "weights"
    df = cbpp.astype({"incidence": float})
    df.loc[3, "incidence"] = np.nan
    f = jaxlmm.glmer(CBPP, df, "binomial")
    ref = jaxlmm.glmer(CBPP, cbpp.drop(index=3), "binomial")
    assert f.nobs == 55 and f.n_dropped == 1
    assert f.objective == pytest.approx(ref.objective, rel=1e-10)


@pytest.mark.parametrize("formula, match", [
    ("cbind(incidence, size - incidence) ~ period", "glmer needs at least one"),
    ("cbind(incidence) ~ period + (1 | herd)", "needs two arguments"),
    ("cbind(incidence, nope) ~ period + (1 | herd)", "unknown column 'nope'"),
    ("cbind(incidence, size - incidence - 100) ~ period + (1 | herd)", "non-negative whole numbers"),
])
def test_cbind_formula_errors(cbpp, formula, match):
    with pytest.raises((DataError, FormulaError), match=match):
        jaxlmm.glmer(formula, cbpp, "binomial")


def test_cbind_is_for_the_binomial_family(cbpp):
    with pytest.raises(FormulaError, match="binomial family, not poisson"):
        jaxlmm.glmer(CBPP, cbpp, "poisson")
    with pytest.raises(FormulaError, match="binomial family, not lmer"):
        jaxlmm.lmer(CBPP, cbpp)


def test_cbind_with_unusual_names(cbpp):
    df = cbpp.rename(columns={"incidence": "cases seen", "size": "herd.size"})
    f = jaxlmm.glmer("cbind(`cases seen`, herd.size - `cases seen`) ~ period + (1 | herd)", df, "binomial")
    ref = jaxlmm.glmer(CBPP, cbpp, "binomial")
    assert f.objective == pytest.approx(ref.objective, rel=1e-12)
    assert f._model.design.response == "cbind(`cases seen`, herd.size - `cases seen`)"


def test_no_placeholder_names_in_messages(cbpp):
    sleep = load_data("sleepstudy")
    for call in (lambda: jaxlmm.lmer_many("~ Dayz + (1 | Subject)", sleep, ["Reaction"]),
                 lambda: jaxlmm.lmer_many("~ Days + (1 | Subject)", sleep, np.zeros((180, 1)) + np.inf),
                 lambda: jaxlmm.glmer("cbind(incidence, size) ~ perod + (1 | herd)", cbpp, "binomial"),
                 lambda: jaxlmm.glmer_many("~ period + (1 | herd)", cbpp, ["nope"], "poisson")):
        with pytest.raises(jaxlmm.JaxlmmError) as e:
            call()
        assert "__jaxlmm" not in str(e.value) and "jxv" not in str(e.value) and len(str(e.value)) < 400


def test_complete_separation_warns():
    rng = np.random.default_rng(2)
    g = np.repeat(np.arange(20), 10)
    x = rng.normal(size=200)
    df = pd.DataFrame({"y": (x > 0).astype(float), "x": x, "g": g.astype(str)})
    with pytest.warns(FitWarning, match="fitted probabilities numerically 0 or 1"):
        jaxlmm.glmer("y ~ x + (1 | g)", df, "binomial")
    # without separation: no such warning
    df2 = df.assign(y=(x + rng.normal(size=200) + rng.normal(size=20)[g] > 0).astype(float))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f = jaxlmm.glmer("y ~ x + (1 | g)", df2, "binomial")
    assert not any("fitted probabilities" in str(w.message) for w in caught) and f.converged
