"""jaxlmm.distributions (scipy.special's cephes routines) against scipy.stats, on grids that
cover both tails, infinite and fractional degrees of freedom and out-of-range arguments; and a
fresh ``import jaxlmm`` that does not import scipy.stats."""

import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from jaxlmm import distributions as D

X = np.array([-40.0, -3.5, -1.0, -1e-9, 0.0, 1e-9, 0.3, 1.0, 2.5, 7.0, 40.0, np.inf, -np.inf, np.nan])
P = np.array([0.0, 1e-300, 1e-12, 0.025, 0.3, 0.5, 0.8, 0.975, 1 - 1e-12, 1.0, -0.1, 1.1, np.nan])
DF = np.array([0.5, 1.0, 2.7, 10.0, 347.25, 1e6, np.inf])


def _same(got, want):
    got, want = np.broadcast_arrays(np.asarray(got, float), np.asarray(want, float))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-12, atol=1e-300)


def test_normal():
    _same(D.norm_sf(X), stats.norm.sf(X))
    _same(D.norm_ppf(P), stats.norm.ppf(P))
    assert isinstance(D.norm_ppf(0.975), float) and abs(D.norm_ppf(0.975) - 1.959963984540054) < 1e-14


@pytest.mark.parametrize("df", DF)
def test_t(df):
    want_sf = stats.t.sf(X, df) if np.isfinite(df) else stats.norm.sf(X)
    want_ppf = stats.t.ppf(P, df) if np.isfinite(df) else stats.norm.ppf(P)
    _same(D.t_sf(X, df), want_sf)
    _same(D.t_ppf(P, df), want_ppf)


@pytest.mark.parametrize("d1", [1.0, 2.0, 3.5, 40.0])
@pytest.mark.parametrize("d2", [0.7, 4.0, 55.3, 1e5, np.inf])
def test_f(d1, d2):
    xs = X[np.isfinite(X) | np.isnan(X)]
    want = stats.f.sf(xs, d1, d2) if np.isfinite(d2) else stats.chi2.sf(d1 * xs, d1)
    _same(D.f_sf(xs, d1, d2), want)


@pytest.mark.parametrize("k", [0.5, 1.0, 2.0, 7.0, 120.0])
def test_chi2(k):
    _same(D.chi2_sf(X, k), stats.chi2.sf(X, k))
    _same(D.chi2_ppf(P, k), stats.chi2.ppf(P, k))


def test_invalid_degrees_of_freedom_give_nan():
    for df in (0.0, -1.0, np.nan):
        assert np.isnan(D.t_sf(1.0, df)) and np.isnan(D.t_ppf(0.3, df))
        assert np.isnan(D.f_sf(1.0, df, 3.0)) and np.isnan(D.f_sf(1.0, 3.0, df))
        assert np.isnan(D.chi2_sf(1.0, df)) and np.isnan(D.chi2_ppf(0.3, df))
    # broadcasting as scipy.stats does
    np.testing.assert_allclose(D.t_sf(np.array([[1.0], [2.0]]), np.array([3.0, 9.0])),
                               stats.t.sf(np.array([[1.0], [2.0]]), np.array([3.0, 9.0])), rtol=1e-12)


def test_import_does_not_load_scipy_stats():
    code = "import sys, jaxlmm; print('scipy.stats' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
