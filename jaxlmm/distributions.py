"""Tail probabilities and quantiles of the normal, t, F and chi-square distributions.

The handful of distribution functions inference and reports need, from ``scipy.special``'s
cephes routines (the ones ``scipy.stats`` itself calls) instead of ``scipy.stats``, whose import
costs about 0.35 s of every fresh process. Same conventions as ``scipy.stats``: arrays
broadcast, out-of-range probabilities and non-positive degrees of freedom give NaN, a
statistic below the support's start has upper tail 1.

    norm_sf(x) = P(Z > x)                norm_ppf(p) = z with P(Z <= z) = p
    t_sf(x, df) = P(T_df > x)            t_ppf(p, df) = t with P(T_df <= t) = p
    f_sf(x, d1, d2) = P(F_{d1,d2} > x)   chi2_sf(x, k) = P(X_k > x)
    chi2_ppf(p, k) = x with P(X_k <= x) = p
"""

from __future__ import annotations

import numpy as np
from scipy import special


def _positive(*dfs):
    """NaN where any degrees of freedom is not positive (or is NaN)."""
    ok = np.ones(np.broadcast(*dfs).shape, dtype=bool)
    for d in dfs:
        ok &= np.asarray(d, dtype=np.float64) > 0
    return ok


def _result(x):
    x = np.asarray(x, dtype=np.float64)
    return x[()] if x.ndim == 0 else x


def norm_sf(x):
    return _result(special.ndtr(-np.asarray(x, dtype=np.float64)))


def norm_ppf(p):
    return _result(special.ndtri(np.asarray(p, dtype=np.float64)))


def t_sf(x, df):
    """Upper tail of Student's t; ``df = inf`` is the normal."""
    x, df = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(df, dtype=np.float64))
    finite = np.isfinite(df)
    out = np.where(finite, special.stdtr(np.where(finite, df, 1.0), -x), special.ndtr(-x))
    return _result(np.where(_positive(df), out, np.nan))


def t_ppf(p, df):
    """Quantile of Student's t; ``df = inf`` is the normal."""
    p, df = np.broadcast_arrays(np.asarray(p, dtype=np.float64), np.asarray(df, dtype=np.float64))
    finite = np.isfinite(df)
    out = np.where(finite, special.stdtrit(np.where(finite, df, 1.0), p), special.ndtri(p))
    out = np.where(p == 0.0, -np.inf, np.where(p == 1.0, np.inf, out))
    return _result(np.where(_positive(df), out, np.nan))


def f_sf(x, d1, d2):
    """Upper tail of the F distribution; ``d2 = inf`` is chi-square(d1) / d1."""
    x, d1, d2 = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (x, d1, d2)))
    finite = np.isfinite(d2)
    xs = np.maximum(x, 0.0)
    out = np.where(finite, special.fdtrc(d1, np.where(finite, d2, 1.0), xs), special.chdtrc(d1, d1 * xs))
    out = np.where(np.isnan(x), np.nan, out)
    return _result(np.where(_positive(d1, d2), out, np.nan))


def chi2_sf(x, k):
    x, k = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(k, dtype=np.float64))
    out = np.where(np.isnan(x), np.nan, special.chdtrc(k, np.maximum(x, 0.0)))
    return _result(np.where(_positive(k), out, np.nan))


def chi2_ppf(p, k):
    p, k = np.broadcast_arrays(np.asarray(p, dtype=np.float64), np.asarray(k, dtype=np.float64))
    inside = (p >= 0) & (p <= 1)
    out = 2.0 * special.gammaincinv(0.5 * k, np.where(inside, p, 0.5))
    return _result(np.where(_positive(k) & inside, out, np.nan))
