"""Profile-likelihood confidence intervals and profiles (lme4 1.1-31's ``confint(fit)`` and
``profile(fit)``)."""

import warnings

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from conftest import load_data, load_reference

import jaxlmm
from jaxlmm.covariance.sdcor import sdcor_from_varpar
from jaxlmm.precision import float64
from jaxlmm.inference.profile import confint_profile, profile
from jaxlmm.inference.profile_layout import profile_point

REFERENCES = ["sleepstudy_slope_reml", "dyestuff_reml", "penicillin_crossed_reml"]

_FITS: dict = {}


def fitted(formula, data, reml=True, **kw):
    key = (formula, data, reml, tuple(sorted(kw.items())))
    if key not in _FITS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", jaxlmm.FitWarning)
            _FITS[key] = jaxlmm.lmer(formula, load_data(data), reml=reml, **kw)
    return _FITS[key]


def reference_fit(fid):
    ref = load_reference(fid)
    return ref, fitted(ref["formula"], ref["data"], ref["REML"], weights=ref["weights"], offset=ref["offset"])


def assert_rel(got, want, rtol):
    got, want = np.asarray(got, float), np.asarray(want, float)
    bad = ~(np.abs(got - want) <= rtol * np.abs(want))
    assert not bad.any(), f"got {got[bad]}, want {want[bad]}"


@pytest.mark.parametrize("fid", REFERENCES)
def test_confint_matches_lme4(fid):
    # lme4 reads its interval ends off an interpolating spline through ~15 profile points; the
    # exact roots here differ from it by at most 1.7e-4 relative on these references
    ref, fit = reference_fit(fid)
    want = ref["confint_profile"]
    ci = confint_profile(fit)
    assert list(ci.columns) == ["lower", "upper"]
    assert list(ci.index) == want["names"]
    assert_rel(ci["lower"], want["lower"], 1e-3)
    assert_rel(ci["upper"], want["upper"], 1e-3)


# lme4 1.1-31, confint(fit, oldNames = FALSE) on boundary cases: a singular fit (sd 0) and a
# fit whose sd profiles reach 0 and whose correlation profile reaches both -1 and 1
BOUNDARY = {
    ("Yield ~ 1 + (1 | Batch)", "Dyestuff2"): {
        "sd_(Intercept)|Batch": (0.0, 2.08404348901),
        "sigma": (2.89283102010, 4.81583255245),
        "(Intercept)": (4.31210021674, 7.01909234684),
    },
    ("distance ~ age + Sex + (age | Subject)", "Orthodont"): {
        "sd_(Intercept)|Subject": (0.0, 4.691522836399),
        "cor_age.(Intercept)|Subject": (-1.0, 1.0),
        "sd_age|Subject": (0.0, 0.392861497943),
        "sigma": (1.097031936015, 1.602348858909),
        "(Intercept)": (15.903852310877, 19.439969901634),
        "age": (0.518120092279, 0.802250280342),
        "SexFemale": (-3.770923025494, -0.520054155621),
    },
}


@pytest.mark.parametrize("case", list(BOUNDARY), ids=lambda c: c[1])
def test_confint_at_boundaries_matches_lme4(case):
    fit = fitted(*case)
    want = BOUNDARY[case]
    ci = confint_profile(fit)
    assert list(ci.index) == list(want)
    lo, up = np.array(list(want.values())).T
    assert_rel(ci["lower"], lo, 1e-3)
    assert_rel(ci["upper"], up, 1e-3)
    # bounds are reported exactly, as lme4 does
    bounded = (lo == 0.0) | (np.abs(lo) == 1.0)
    np.testing.assert_array_equal(ci["lower"].to_numpy()[bounded], lo[bounded])


def test_profile_shape_and_minimum_ml():
    fit = fitted("Reaction ~ Days + (Days | Subject)", "sleepstudy", reml=False)
    pr = profile(fit, n_points=4)
    names = ["sd_(Intercept)|Subject", "cor_Days.(Intercept)|Subject", "sd_Days|Subject", "sigma",
             "(Intercept)", "Days"]
    assert list(pr.columns) == ["parameter", "value", "zeta", "deviance"] + names
    assert list(dict.fromkeys(pr["parameter"])) == names
    cutoff = np.sqrt(scipy.stats.chi2.ppf(0.99, len(names)))
    with float64():
        sdcor = np.asarray(sdcor_from_varpar(jnp.asarray(np.r_[fit.theta, fit.sigma]), fit._model.specs))
    estimates = dict(zip(names, np.r_[sdcor, fit.fixef.to_numpy()]))
    for name, g in pr.groupby("parameter", sort=False):
        g = g.sort_values("value")
        # the held parameter's column is the value itself
        np.testing.assert_allclose(g[name], g["value"], rtol=1e-10, atol=1e-12)
        # zeta is 0 at the estimate, where the re-minimised deviance is the fit's objective
        at = g.loc[np.argmin(np.abs(g["zeta"].to_numpy())) + g.index[0]]
        assert at["zeta"] == 0.0
        assert at["value"] == pytest.approx(estimates[name], rel=1e-4, abs=1e-6)
        assert at["deviance"] == pytest.approx(fit.objective, rel=1e-9)
        assert g["deviance"].min() >= fit.objective - 1e-7
        # monotone; zeta^2 is the deviance above the minimum
        assert np.all(np.diff(g["zeta"].to_numpy()) > 0)
        np.testing.assert_allclose(g["zeta"] ** 2, g["deviance"] - fit.objective, rtol=1e-9, atol=1e-9)
        # out to the cutoff or to the parameter's bound (the correlation reaches 1 first)
        z = g["zeta"].to_numpy()
        assert z[0] == pytest.approx(-cutoff, rel=1e-6)
        if name.startswith("cor_"):
            assert g["value"].iloc[-1] == 1.0 and z[-1] < cutoff
        else:
            assert z[-1] == pytest.approx(cutoff, rel=1e-6)


def test_fixed_effect_profiles_are_locally_wald():
    # d zeta / d beta_j = 1 / se_j at the ML estimate (the ML covariance), and zeta(beta +- se)
    # is close to +-1 for a well-behaved model: an independent check of the curvature
    fit = fitted("Reaction ~ Days + (Days | Subject)", "sleepstudy", reml=False)
    b, se = fit.fixef, fit.se
    tiny = 2 * scipy.stats.norm.cdf(0.01) - 1  # the interval where |zeta| <= 0.01
    ci = confint_profile(fit, level=tiny, which="beta_")
    np.testing.assert_allclose((ci["upper"] - b) / se, 0.01, rtol=1e-3)
    np.testing.assert_allclose((b - ci["lower"]) / se, 0.01, rtol=1e-3)
    one = 2 * scipy.stats.norm.cdf(1.0) - 1
    ci = confint_profile(fit, level=one, which="beta_")
    np.testing.assert_allclose((ci["upper"] - b) / se, 1.0, rtol=0.03)
    np.testing.assert_allclose((b - ci["lower"]) / se, 1.0, rtol=0.03)


def test_reml_fit_is_profiled_on_the_ml_deviance():
    reml = fitted("Yield ~ 1 + (1 | Batch)", "Dyestuff")
    ml = fitted("Yield ~ 1 + (1 | Batch)", "Dyestuff", reml=False)
    pr = profile(reml, which="sigma", n_points=2)
    assert pr["deviance"].min() == pytest.approx(ml.objective, rel=1e-9)
    at = pr.loc[pr["zeta"] == 0.0].iloc[0]
    assert at["sigma"] == pytest.approx(ml.sigma, rel=1e-5)
    assert at["sd_(Intercept)|Batch"] == pytest.approx(ml.varcorr["sdcor"].iloc[0], rel=1e-4)


def test_which_selects_rows():
    fit = fitted("Yield ~ 1 + (1 | Batch)", "Dyestuff")
    confint_profile(fit, which="sigma")
    compiled = profile_point._cache_size()
    full = confint_profile(fit)
    # one compiled program serves the ML refit, every variance parameter and every fixed effect
    assert profile_point._cache_size() == compiled
    assert list(confint_profile(fit, which="theta_").index) == ["sd_(Intercept)|Batch", "sigma"]
    assert list(confint_profile(fit, which="beta_").index) == ["(Intercept)"]
    sub = confint_profile(fit, which=["(Intercept)", "sigma"])
    assert list(sub.index) == ["sigma", "(Intercept)"]  # lme4's order
    np.testing.assert_allclose(sub.to_numpy(), full.loc[sub.index].to_numpy(), rtol=1e-9)
    assert list(profile(fit, which="sigma", n_points=2)["parameter"].unique()) == ["sigma"]


@pytest.mark.parametrize("kw", [{"which": "sd_Days|Subject"}, {"which": ["sigma", "nope"]},
                                {"which": []}, {"which": [1]}, {"level": 0.0}, {"level": 1.0},
                                {"level": 1.5}, {"level": "high"}])
def test_bad_arguments(kw):
    fit = fitted("Yield ~ 1 + (1 | Batch)", "Dyestuff")
    with pytest.raises(jaxlmm.ArgumentError):
        confint_profile(fit, **kw)


@pytest.mark.parametrize("kw", [{"which": "beta"}, {"level_max": 1.0}, {"level_max": -0.1},
                                {"n_points": 0}, {"n_points": 2.5}])
def test_bad_profile_arguments(kw):
    fit = fitted("Yield ~ 1 + (1 | Batch)", "Dyestuff")
    with pytest.raises(jaxlmm.ArgumentError):
        profile(fit, **kw)
