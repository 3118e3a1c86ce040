"""nlmer_many: each row is the single nlmer fit of that response (estimates, SEs, variance
components, objective), rescaling a response rescales its fit exactly, rows missing in any
response are dropped for all, and bad responses are refused before any computation."""

import warnings

import numpy as np
import pytest

import jaxlmm
from conftest import load_data

LOGIS = "circumference ~ Asym / (1 + exp((xmid - age) / scal))"
START = {"Asym": 192, "xmid": 727, "scal": 348}


@pytest.fixture(scope="module")
def orange():
    o = load_data("Orange")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jaxlmm.FitWarning)
        base = jaxlmm.nlmer(LOGIS, o, START, "(Asym | Tree)")
    return o.join(base.simulate(2, seed=3)).assign(big=o["circumference"] * 1.1)


def _single(data, column, method):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jaxlmm.FitWarning)
        return jaxlmm.nlmer(LOGIS, data.assign(circumference=data[column]), START, "(Asym | Tree)", method=method)


@pytest.mark.parametrize("method", ["laplace", "lb"])
def test_rows_equal_single_fits(orange, method):
    cols = ["circumference", "sim_1", "sim_2", "big"]
    m = jaxlmm.nlmer_many(LOGIS, orange, START, "(Asym | Tree)", responses=cols, method=method)
    assert list(m.index) == cols and m.index.name == "response"
    assert list(m.columns) == ["Asym", "xmid", "scal", "se_Asym", "se_xmid", "se_scal", "sd_Asym|Tree", "sigma",
                               "objective", "converged", "singular", "n_evals"]
    assert m["converged"].all() and not m["singular"].any()
    for c in ["circumference", "sim_2"]:
        f = _single(orange, c, method)
        row = m.loc[c]
        assert row["objective"] == pytest.approx(f.objective, rel=1e-8)
        assert np.allclose(row[["Asym", "xmid", "scal"]].to_numpy(float), f.fixef, rtol=1e-5)
        assert np.allclose(row[["se_Asym", "se_xmid", "se_scal"]].to_numpy(float), f.se, rtol=1e-3)
        assert row["sd_Asym|Tree"] == pytest.approx(f.varcorr["sdcor"].iloc[0], rel=1e-4)
        assert row["sigma"] == pytest.approx(f.sigma, rel=1e-5)
    # y -> 1.1 y: Asym, its SE, the tree SD and sigma scale by 1.1; xmid and scal stay
    a, b = m.loc["circumference"], m.loc["big"]
    for name in ["Asym", "se_Asym", "sd_Asym|Tree", "sigma"]:
        assert b[name] == pytest.approx(1.1 * a[name], rel=1e-5)
    for name in ["xmid", "scal"]:
        assert b[name] == pytest.approx(a[name], rel=1e-5)
    assert m.attrs["method"] == method and m.attrs["nobs"] == 35


def test_missing_rows_dropped_for_all_and_arrays(orange):
    data = orange.assign(holey=np.where(np.arange(len(orange)) == 4, np.nan, orange["sim_1"]))
    m = jaxlmm.nlmer_many(LOGIS, data, START, "(Asym | Tree)", responses=["circumference", "holey"], method="lb")
    assert m.attrs["nobs"] == 34 and m.attrs["n_dropped"] == 1
    f = _single(data.drop(index=data.index[4]), "circumference", "lb")
    assert m.loc["circumference", "objective"] == pytest.approx(f.objective, rel=1e-8)
    # an array of responses; the model's left side then need not be a column
    arr = jaxlmm.nlmer_many(LOGIS.replace("circumference", "height"), orange, START, "(Asym | Tree)",
                            responses=orange[["sim_1"]].to_numpy(), method="lb")
    assert list(arr.index) == ["y1"]
    single = jaxlmm.nlmer_many(LOGIS, orange, START, "(Asym | Tree)", responses="sim_1", method="lb")
    assert arr["objective"].iloc[0] == pytest.approx(single["objective"].iloc[0], rel=1e-10)


def test_self_start_many(orange):
    m = jaxlmm.nlmer_many(jaxlmm.nonlinear.logistic("circumference", "age"), orange, random="(Asym | Tree)",
                          responses=["circumference", "big"], method="lb")
    assert m.loc["big", "Asym"] == pytest.approx(1.1 * m.loc["circumference", "Asym"], rel=1e-5)


@pytest.mark.parametrize("responses, error, match", [
    ([], jaxlmm.ArgumentError, "empty"),
    (["nope"], jaxlmm.DataError, "unknown response column 'nope'"),
    (["txt"], jaxlmm.DataError, "'txt' must be numeric"),
    (["sim_1", "sim_1"], jaxlmm.ArgumentError, "more than once"),
    (["const"], jaxlmm.DataError, "'const' is constant"),
    (np.ones((10, 2)), jaxlmm.ArgumentError, "10 rows"),
    (np.ones((35, 2, 2)), jaxlmm.ArgumentError, "shape"),
])
def test_bad_responses(orange, responses, error, match):
    with pytest.raises(error, match=match):
        jaxlmm.nlmer_many(LOGIS, orange.assign(const=3.0, txt="a"), START, "(Asym | Tree)", responses=responses)


def test_bad_arguments(orange):
    with pytest.raises(jaxlmm.ArgumentError, match="batch_size"):
        jaxlmm.nlmer_many(LOGIS, orange, START, "(Asym | Tree)", batch_size=0)
    with pytest.raises(jaxlmm.ArgumentError, match="reml=True is for method='lb'"):
        jaxlmm.nlmer_many(LOGIS, orange, START, "(Asym | Tree)", reml=True)
    with pytest.raises(jaxlmm.FormulaError, match="unknown name 'scal'"):
        jaxlmm.nlmer_many(LOGIS, orange, {"Asym": 192, "xmid": 727}, "(Asym | Tree)")
    with pytest.raises(jaxlmm.DataError, match="infinite"):
        jaxlmm.nlmer_many(LOGIS, orange, START, "(Asym | Tree)",
                          responses=np.where(np.arange(35)[:, None] == 2, np.inf, 1.0) + orange[["sim_1"]].to_numpy())
