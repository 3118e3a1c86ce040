"""Diagnostic pictures of a fit (optional extra ``jaxlmm[plot]``: matplotlib).

Each function draws on the given ``ax`` (or a new figure) and returns the matplotlib
``Figure``; nothing is shown or saved here (``fig.savefig("x.png")``). Headless use works with
any backend (Agg included).

- :func:`caterpillar`: conditional modes ``b_j`` with ``b_j +- z condsd_j`` intervals, sorted,
  one panel per grouping factor and term (lme4's ``dotplot(ranef(fit, condVar = TRUE))``);
- :func:`residuals_vs_fitted`: residuals against conditional fitted values (response residuals
  for lmer, deviance residuals for glmer);
- :func:`qq`: normal quantile-quantile plot of the Pearson residuals (``fit.resid("pearson")``)
  or of the conditional modes of one term;
- :func:`profile_traces`: ``zeta`` against each parameter's value from :meth:`LmerResult.profile`
  (straight lines mean Wald intervals are accurate);
- :func:`fitted_lines`: observed points and conditional fitted values against a covariate,
  one panel per group.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from .. import distributions
from ..errors import ArgumentError
from .protocol import Fit



def _plt():
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("jaxlmm's plots need matplotlib: pip install matplotlib (or jaxlmm's [plot] extra)") from None
    return plt


def _grid(n: int, ncols: int | None = None, size: float = 3.2):
    plt = _plt()
    ncols = ncols or min(n, 3)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()[:n]


def _one_ax(ax, figsize=(5.0, 4.0)):
    if ax is not None:
        return ax.figure, ax
    fig, ax = _plt().subplots(figsize=figsize)
    return fig, ax


def caterpillar(fit: Fit, level: float = 0.95, ncols: int | None = None):
    """Conditional modes with ``level`` intervals (``condval +- z condsd``), sorted within each
    grouping factor and term."""
    if not 0 < level < 1:
        raise ArgumentError(f"level must be between 0 and 1, got {level!r}")
    if not fit.ngroups:
        raise ArgumentError("caterpillar: the fit has no random effects")
    re = fit.ranef
    z = distributions.norm_ppf(0.5 + level / 2)
    panels = list(re.groupby(["grpvar", "term"], sort=False))
    fig, axes = _grid(len(panels), ncols, size=3.6)
    for ax, ((grpvar, term), d) in zip(axes, panels):
        d = d.sort_values("condval")
        y = np.arange(len(d))
        ax.errorbar(d["condval"].to_numpy(dtype=float), y, xerr=z * d["condsd"].to_numpy(dtype=float),
                    fmt="o", ms=3, lw=0.8, capsize=0)
        ax.axvline(0.0, color="grey", lw=0.8, ls="--")
        if len(d) <= 40:
            ax.set_yticks(y, d["grp"].astype(str), fontsize=7)
        else:
            ax.set_yticks([])
        ax.set_title(f"{grpvar}: {term}", fontsize=9)
        ax.set_xlabel(f"conditional mode, {level:.0%} interval", fontsize=8)
    fig.tight_layout()
    return fig


def residuals_vs_fitted(fit: Fit, ax=None):
    """``fit.residuals`` against ``fit.fitted``, with a zero line: response residuals ``y - fitted``
    for lmer; for glmer deviance residuals against the conditional means (response scale)."""
    fit._rows_only("residuals_vs_fitted")
    fig, ax = _one_ax(ax)
    ax.scatter(fit.fitted.to_numpy(), fit.residuals.to_numpy(), s=8, alpha=0.6)
    ax.axhline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("fitted values")
    ax.set_ylabel("deviance residuals" if hasattr(fit, "family") else "residuals")
    ax.set_title(fit.formula, fontsize=8)
    return fig


def _qq_points(v: np.ndarray):
    v = np.sort(np.asarray(v, dtype=float))
    n = v.size
    q = distributions.norm_ppf((np.arange(1, n + 1) - 0.5) / n)
    return q, v


def qq(fit: Fit, which: str = "residuals", term: str | None = None, ax=None):
    """Normal QQ plot of the Pearson residuals (``which="residuals"``: ``fit.resid("pearson")``,
    the residuals divided by their modelled SD, prior weights and variance function included;
    for glmer ``(y - mu) sqrt(w / (phi V(mu)))``) or of the conditional modes of one term
    (``which="ranef"``, ``term`` like ``"Subject: Days"``; default the first, divided by their
    SD), with the line ``y = x``."""
    if which == "residuals":
        fit._rows_only("qq")
        v = fit.resid("pearson").to_numpy()
        title = "Pearson residuals"
    elif which == "ranef":
        if not fit.ngroups:
            raise ArgumentError("qq(which='ranef'): the fit has no random effects")
        re = fit.ranef
        keys = [f"{g}: {t}" for g, t in re[["grpvar", "term"]].drop_duplicates().itertuples(index=False)]
        term = keys[0] if term is None else term
        if term not in keys:
            raise ArgumentError(f"qq: unknown term {term!r}; choose from {keys}")
        g, t = term.split(": ", 1)
        v = re.loc[(re["grpvar"] == g) & (re["term"] == t), "condval"].to_numpy()
        sd = v.std(ddof=1) if v.size > 1 else 1.0
        v = v / (sd if sd > 0 else 1.0)
        title = f"conditional modes, {term}"
    else:
        raise ArgumentError(f"qq: which must be 'residuals' or 'ranef', got {which!r}")
    fig, ax = _one_ax(ax)
    x, y = _qq_points(v)
    ax.scatter(x, y, s=8, alpha=0.7)
    lim = [min(x.min(), y.min()), max(x.max(), y.max())]
    ax.plot(lim, lim, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("normal quantiles")
    ax.set_ylabel("standardised sample quantiles")
    ax.set_title(title, fontsize=9)
    return fig


def profile_traces(fit: Fit, profile: pd.DataFrame | None = None, ncols: int | None = None,
                   level: float = 0.95):
    """``zeta`` (signed square root of the change in deviance) against each parameter from a
    likelihood profile (``profile``, default ``fit.profile()``), with the ``+-z`` lines of a
    ``level`` interval."""
    prof = fit.profile() if profile is None else profile
    if not {"parameter", "value", "zeta"} <= set(prof.columns):
        raise ArgumentError("profile_traces: profile must have columns parameter, value, zeta (fit.profile())")
    z = distributions.norm_ppf(0.5 + level / 2)
    names = list(dict.fromkeys(prof["parameter"]))
    fig, axes = _grid(len(names), ncols)
    for ax, name in zip(axes, names):
        d = prof[prof["parameter"] == name].sort_values("value")
        ax.plot(d["value"], d["zeta"], "-o", ms=2.5, lw=1)
        for h in (-z, 0.0, z):
            ax.axhline(h, color="grey", lw=0.7, ls="--" if h else ":")
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("zeta", fontsize=8)
    fig.tight_layout()
    return fig


def fitted_lines(fit: Fit, data: Any, x: str, group: str | None = None, max_groups: int = 12,
                 ncols: int | None = None):
    """Observed responses (points) and conditional fitted values (line) against the covariate
    ``x``, one panel per level of ``group`` (default: the first grouping factor), at most
    ``max_groups`` panels; the population line ``X beta`` is dashed."""
    aug = fit.augment(data)
    group = group or next(iter(fit.ngroups), None)
    if group is None:
        raise ArgumentError("fitted_lines: give group= (the fit has no random effects)")
    for col in (x, group):
        if col not in aug.columns:
            raise ArgumentError(f"fitted_lines: unknown column {col!r}")
    y = aug[".fitted"] + aug[".resid"]
    levels = list(dict.fromkeys(aug[group]))[:max_groups]
    fig, axes = _grid(len(levels), ncols or min(len(levels), 4), size=2.6)
    for ax, lev in zip(axes, levels):
        d = aug[aug[group] == lev].sort_values(x)
        ax.scatter(d[x], y.loc[d.index], s=8)
        ax.plot(d[x], d[".fitted"], lw=1.2)
        ax.plot(d[x], d[".fixed"], lw=0.8, ls="--", color="grey")
        ax.set_title(f"{group} = {lev}", fontsize=8)
    fig.tight_layout()
    return fig
