"""Every lmer fit in the reference folder (lme4 1.1-31) reproduced."""

import warnings

import numpy as np
import pandas as pd
import pytest

import jaxlmm
from conftest import lmer_reference_ids, load_data, load_reference

IDS = lmer_reference_ids()


def close(got, want, rtol, atol):
    got, want = np.asarray(got, float), np.asarray(want, float)
    bad = np.abs(got - want) > rtol * np.abs(want) + np.asarray(atol)
    assert not bad.any(), f"mismatch at {np.nonzero(bad)[0]}: got {got[bad]}, want {want[bad]}"


def as_list(x):
    return x if isinstance(x, list) else [x]


_FITS: dict = {}


def fit_reference(fid):
    if fid not in _FITS:
        ref = load_reference(fid)
        df = load_data(ref["data"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", jaxlmm.FitWarning)
            _FITS[fid] = (ref, jaxlmm.lmer(ref["formula"], df, reml=ref["REML"],
                                             weights=ref["weights"], offset=ref["offset"]))
    return _FITS[fid]


def test_all_fourteen_present():
    assert len(IDS) == 14


@pytest.mark.parametrize("fid", IDS)
def test_objective_and_fixed_effects(fid):
    ref, fit = fit_reference(fid)
    assert fit.nobs == ref["nobs"]
    # lower than R's is allowed (a better optimum), higher only within 1e-6 relative
    assert fit.objective <= ref["objective"] * (1 + 1e-6) + 1e-9
    assert fit.objective == pytest.approx(ref["objective"], rel=1e-6)
    assert fit.loglik == pytest.approx(ref["logLik"], rel=1e-6)
    assert fit.aic == pytest.approx(ref["AIC"], rel=1e-6)
    assert fit.bic == pytest.approx(ref["BIC"], rel=1e-6)
    names = as_list(ref["beta_names"])
    assert sorted(fit.fixef.index) == sorted(names)
    beta = pd.Series(as_list(ref["beta"]), index=names)
    se = pd.Series(as_list(ref["se"]), index=names)
    close(fit.fixef[names], beta, rtol=1e-5, atol=1e-5 * se.to_numpy())
    np.testing.assert_allclose(fit.se[names], se, rtol=1e-4)
    V = np.array(ref["vcov"], dtype=float).reshape(len(names), len(names))
    close(fit.vcov.loc[names, names].to_numpy().ravel(), V.ravel(), rtol=1e-4,
          atol=1e-4 * np.sqrt(np.outer(np.diag(V), np.diag(V))).ravel())
    assert fit.sigma == pytest.approx(ref["sigma"], rel=1e-4)


@pytest.mark.parametrize("fid", IDS)
def test_variance_components(fid):
    ref, fit = fit_reference(fid)
    assert list(fit.theta_names) == as_list(ref["theta_names"])
    vc = ref["varcorr"]
    got = fit.varcorr
    assert list(got["grp"]) == as_list(vc["grp"])
    assert [None if pd.isna(v) else v for v in got["var1"]] == as_list(vc["var1"])
    assert [None if pd.isna(v) else v for v in got["var2"]] == as_list(vc["var2"])
    np.testing.assert_allclose(got["sdcor"], as_list(vc["sdcor"]), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["vcov"], as_list(vc["vcov"]), rtol=2e-4, atol=1e-6)
    assert fit.singular == ref["singular"]
    if ref["singular"]:
        assert np.all(fit.theta == 0.0)
    else:
        np.testing.assert_allclose(np.abs(fit.theta), np.abs(as_list(ref["theta"])), rtol=2e-4)


@pytest.mark.parametrize("fid", IDS)
def test_conditional_modes(fid):
    ref, fit = fit_reference(fid)
    re = pd.DataFrame(ref["ranef"])
    key = ["grpvar", "term", "grp"]
    merged = re.merge(fit.ranef, on=key, suffixes=("_r", ""), how="left", validate="one_to_one")
    assert len(fit.ranef) == len(re)
    assert not merged["condval"].isna().any()
    for _, block in merged.groupby(["grpvar", "term"]):
        scale = max(np.abs(block["condval_r"]).max(), 1e-12)
        np.testing.assert_allclose(block["condval"], block["condval_r"], rtol=1e-4, atol=1e-4 * scale)
        sd_scale = max(block["condsd_r"].max(), 1e-12)
        np.testing.assert_allclose(block["condsd"], block["condsd_r"], rtol=1e-4, atol=1e-6 * sd_scale)


@pytest.mark.parametrize("fid", IDS)
def test_fitted_and_residuals(fid):
    ref, fit = fit_reference(fid)
    k = len(ref["fitted_head"])
    np.testing.assert_allclose(fit.fitted.to_numpy()[:k], ref["fitted_head"], rtol=1e-6)
    scale = np.abs(ref["resid_head"]).max()
    np.testing.assert_allclose(fit.residuals.to_numpy()[:k], ref["resid_head"], rtol=1e-4, atol=1e-5 * scale)
