"""Predictions against lme4's predict() for new data (reference), and their edge cases."""

import numpy as np
import pandas as pd
import pytest

import jaxlmm
from conftest import load_data, load_reference


@pytest.fixture(scope="module")
def slope():
    ref = load_reference("sleepstudy_slope_reml")
    return ref, jaxlmm.lmer(ref["formula"], load_data("sleepstudy"))


def test_matches_lme4_predict(slope):
    ref, fit = slope
    nd = pd.DataFrame(ref["newdata"])
    np.testing.assert_allclose(fit.predict(nd), ref["predict_conditional"], rtol=1e-6)
    np.testing.assert_allclose(fit.predict(nd, re=False), ref["predict_population"], rtol=1e-6)
    # categorical and numeric grouping columns in newdata are matched by label
    nd2 = nd.assign(Subject=pd.Categorical(nd.Subject))
    np.testing.assert_allclose(fit.predict(nd2), ref["predict_conditional"], rtol=1e-6)
    nd3 = nd.iloc[:3].assign(Subject=nd.Subject.iloc[:3].astype(int))
    np.testing.assert_allclose(fit.predict(nd3), ref["predict_conditional"][:3], rtol=1e-6)


def test_without_newdata_equals_fitted(slope):
    _, fit = slope
    np.testing.assert_allclose(fit.predict(), fit.fitted, rtol=1e-12)
    d = fit._model.design
    np.testing.assert_allclose(fit.predict(re=False), d.X @ fit.fixef.to_numpy())
    # newdata = the training data reproduces the fitted values
    np.testing.assert_allclose(fit.predict(load_data("sleepstudy")), fit.fitted, rtol=1e-10)


def test_new_levels(slope):
    ref, fit = slope
    nd = pd.DataFrame(ref["newdata"])
    with pytest.raises(jaxlmm.DataError, match="'new'.*Subject"):
        fit.predict(nd, new_levels="error")
    got = fit.predict(nd, new_levels="nan").to_numpy()
    assert np.isnan(got[3:]).all() and np.isfinite(got[:3]).all()
    with pytest.raises(jaxlmm.ArgumentError, match="new_levels"):
        fit.predict(nd, new_levels="zero")


def test_missing_values_and_columns(slope):
    _, fit = slope
    nd = pd.DataFrame({"Days": [1.0, np.nan], "Subject": ["308", "309"]})
    got = fit.predict(nd)
    assert np.isnan(got.iloc[1]) and np.isfinite(got.iloc[0])
    with pytest.raises(jaxlmm.DataError, match="Days"):
        fit.predict(pd.DataFrame({"Subject": ["308"]}))


def test_factors_offset_and_nested_terms():
    df = load_data("Orthodont")
    fit = jaxlmm.lmer("distance ~ age + Sex + (age | Subject)", df)
    np.testing.assert_allclose(fit.predict(df.iloc[::7]), fit.fitted.iloc[::7], rtol=1e-10)
    past = load_data("Pastes")
    fp = jaxlmm.lmer("strength ~ 1 + (1 | batch/cask)", past)
    np.testing.assert_allclose(fp.predict(past.iloc[::5]), fp.fitted.iloc[::5], rtol=1e-10)
    ss = load_data("sleepstudy").assign(o=lambda d: 0.5 * d.Days)
    fo = jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", ss, offset="o")
    np.testing.assert_allclose(fo.predict(ss), fo.fitted, rtol=1e-10)
    fa = jaxlmm.lmer("Reaction ~ Days + (1 | Subject)", ss, offset=ss.o.to_numpy())
    with pytest.raises(jaxlmm.ArgumentError, match="offset"):
        fa.predict(ss)
