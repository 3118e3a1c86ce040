"""Confidence intervals of all parameters, lme4's row order: sd/cor per term in theta order,
sigma, then the fixed effects.

- ``wald``: ``estimate +- z_{(1+level)/2} se``; fixed-effect SEs from ``vcov``, variance
  parameters by the delta method (``jaxlmm.inference``), NaN at the boundary.
- ``profile``: profile likelihood (``jaxlmm.profile``).
- ``boot``: percentiles ``(1-level)/2, (1+level)/2`` of parametric bootstrap replicates.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .. import distributions
from ..arguments import check_level, check_seed, positive_int
from ..errors import ArgumentError, InferenceWarning
from .profile import confint_profile

METHODS = ("wald", "profile", "boot")


def parameter_names(fit) -> list[str]:
    return list(fit._sdcor_names) + list(fit._fixef.index)


def _select(frame: pd.DataFrame, parm) -> pd.DataFrame:
    if parm is None:
        return frame
    if isinstance(parm, str):
        parm = [parm]
    parm = list(parm)
    unknown = [p for p in parm if p not in frame.index]
    if unknown:
        raise ArgumentError(f"parm {unknown[0]!r} is not a parameter of this model (have {list(frame.index)})")
    return frame.loc[parm]


def confint(fit, method: str = "wald", level: float = 0.95, parm=None, **kwargs) -> pd.DataFrame:
    key = method.lower() if isinstance(method, str) else method
    if key not in METHODS:
        raise ArgumentError(f"method={method!r} is not one of {METHODS}")
    level = check_level(level)
    if key == "wald":
        if kwargs:
            raise ArgumentError(f"unexpected arguments for Wald intervals: {sorted(kwargs)}")
        out = wald(fit, level)
    elif key == "profile":
        unknown = sorted(set(kwargs) - {"which"})
        if unknown:
            raise ArgumentError(f"unexpected arguments for profile intervals: {unknown} (profile takes 'which')")
        out = confint_profile(fit, level=level, **kwargs)
    else:
        unknown = sorted(set(kwargs) - {"replicates", "n", "seed", "batch_size"})
        if unknown:
            raise ArgumentError(f"unexpected arguments for bootstrap intervals: {unknown} (boot takes 'replicates', "
                                "'n', 'seed' and 'batch_size')")
        out = boot_intervals(fit, level, **kwargs)
    return _select(out, parm)


def wald(fit, level: float) -> pd.DataFrame:
    z = distributions.norm_ppf(0.5 + level / 2.0)
    tab = fit._sdcor_table
    fe = pd.DataFrame({"estimate": fit._fixef.to_numpy(), "std_error": fit._se.to_numpy()},
                      index=fit._fixef.index)
    both = pd.concat([tab[["estimate", "std_error"]], fe])
    lower = both["estimate"] - z * both["std_error"]
    upper = both["estimate"] + z * both["std_error"]
    bnd = list(tab.index[tab["boundary"].to_numpy()])
    if bnd:
        warnings.warn(
            f"no Wald interval for boundary estimates ({', '.join(bnd)}): the normal approximation "
            "does not hold at the edge of the parameter space; use method='profile' or 'boot'",
            InferenceWarning, stacklevel=4,
        )
    return pd.DataFrame({"lower": lower, "upper": upper})


def boot_intervals(fit, level: float, replicates: pd.DataFrame | None = None, n: int = 1000,
                   seed=None, **kwargs) -> pd.DataFrame:
    """Percentile intervals from ``replicates`` (a :meth:`bootstrap` frame) or a new bootstrap."""
    check_seed(seed)
    if replicates is None:
        replicates = fit.bootstrap(n=positive_int(n, "n"), seed=seed, **kwargs)
    elif not isinstance(replicates, pd.DataFrame):
        raise ArgumentError(f"replicates must be a DataFrame from fit.bootstrap(), got {type(replicates).__name__}")
    names = parameter_names(fit)
    missing = [c for c in names if c not in replicates.columns]
    if missing:
        raise ArgumentError(f"replicates lack column {missing[0]!r}: pass a frame from fit.bootstrap()")
    ok = replicates["converged"].to_numpy(bool) if "converged" in replicates else np.ones(len(replicates), bool)
    if not ok.any():
        raise ArgumentError("replicates has no converged replicate (column 'converged'): no bootstrap interval")
    vals = replicates.loc[ok, names].to_numpy(float)
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(vals, [a, 1.0 - a], axis=0)
    return pd.DataFrame({"lower": lo, "upper": hi}, index=pd.Index(names))
