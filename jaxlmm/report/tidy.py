"""broom / broom.mixed tables of a fit: ``tidy`` (one row per parameter), ``glance`` (one row per
model), ``augment`` (the data with fitted values and residuals).

Column names follow broom.mixed so that code written against R's tidyverse reads the same:
``effect, group, term, estimate, std.error, statistic, df, p.value``. Variance parameters are
named ``sd__(Intercept)``, ``cor__(Intercept).Days`` and, for the residual, ``sd__Observation``;
unlike broom.mixed their ``std.error`` is filled in (Wald, from the exact Hessian).
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd

from .. import distributions
from ..errors import ArgumentError
from .protocol import Fit
from ..terms.frames import as_frame


TIDY_COLUMNS = ["effect", "group", "term", "estimate", "std.error", "statistic", "df", "p.value"]
EFFECTS = ("fixed", "ran_pars")


def _fixed(fit: Fit, ddf: str | None) -> pd.DataFrame:
    t = fit.coef_table(ddf)
    stat = t["t"] if "t" in t.columns else t["z"]  # z tests (glmer) have no df
    df = t["df"].to_numpy() if "df" in t.columns else np.full(len(t), np.inf)
    return pd.DataFrame({
        "effect": "fixed", "group": None, "term": list(t.index), "estimate": t["estimate"].to_numpy(),
        "std.error": t["std_error"].to_numpy(), "statistic": stat.to_numpy(), "df": df,
        "p.value": t["p"].to_numpy(),
    })


def _ran_pars(fit: Fit) -> pd.DataFrame:
    vc = fit.varcorr
    rows = []
    for _, r in vc.iterrows():
        if r["grp"] == "Residual":
            term = "sd__Observation"
        elif pd.isna(r["var2"]):
            term = f"sd__{r['var1']}"
        else:
            term = f"cor__{r['var1']}.{r['var2']}"
        rows.append({"effect": "ran_pars", "group": r["grp"], "term": term, "estimate": float(r["sdcor"]),
                     "std.error": float(r["se"]) if "se" in vc.columns else np.nan})
    out = pd.DataFrame(rows, columns=["effect", "group", "term", "estimate", "std.error"])
    for c in ("statistic", "df", "p.value"):
        out[c] = np.nan
    return out


def tidy(fit: Fit, effects=EFFECTS, ddf: str | None = "satterthwaite", conf_int: bool = False,
         conf_level: float = 0.95) -> pd.DataFrame:
    """One row per parameter: fixed effects (t tests with ``ddf`` degrees of freedom, as
    lmerTest; ``None`` for z tests) and variance parameters (``ran_pars``: standard deviations and
    correlations by group, then the residual SD). ``conf_int`` adds Wald ``conf.low`` /
    ``conf.high`` at ``conf_level`` (t quantiles for fixed effects)."""
    if isinstance(effects, str):
        effects = (effects,)
    bad = [e for e in effects if e not in EFFECTS]
    if bad or not effects:
        raise ArgumentError(f"effects must be among {list(EFFECTS)}, got {list(effects)!r}")
    if not 0 < conf_level < 1:
        raise ArgumentError(f"conf_level must be between 0 and 1, got {conf_level!r}")
    if getattr(fit, "_rside", None) is not None and ddf not in ("residual", None):
        ddf = "residual"  # Satterthwaite is not yet available with a residual structure
    if hasattr(fit, "family"):
        ddf = None  # glmer: Wald z tests
    parts = []
    if "fixed" in effects:
        parts.append(_fixed(fit, ddf))
    if "ran_pars" in effects and fit.ngroups:
        parts.append(_ran_pars(fit))
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=TIDY_COLUMNS)
    out = out[TIDY_COLUMNS]
    if conf_int:
        a = 0.5 + conf_level / 2
        df = out["df"].to_numpy(dtype=float)
        q = np.where(np.isfinite(df), distributions.t_ppf(a, np.where(np.isfinite(df), df, 1.0)), distributions.norm_ppf(a))
        half = q * out["std.error"].to_numpy(dtype=float)
        out["conf.low"] = out["estimate"] - half
        out["conf.high"] = out["estimate"] + half
    return out


def glance(fit: Fit) -> pd.DataFrame:
    """One row: ``nobs, sigma, logLik, AIC, BIC, deviance, df.residual`` (and ``REMLcrit`` for a
    REML fit, as broom.mixed). ``deviance`` is ``-2 log L``: the REML criterion for REML fits."""
    row: dict[str, Any] = {"nobs": fit.nobs, "sigma": fit.sigma, "logLik": fit.loglik, "AIC": fit.aic,
                           "BIC": fit.bic, "deviance": fit.deviance, "df.residual": fit.nobs - fit.df}
    if fit.reml:
        row["REMLcrit"] = fit.objective
    return pd.DataFrame([row])


def augment(fit: Fit, data: Any = None) -> pd.DataFrame:
    """The rows used by the fit with ``.fitted`` (``X beta + Z b + offset``), ``.resid``
    (``y - .fitted``) and ``.fixed`` (``X beta + offset``). ``data``: the table given to ``lmer``
    (any supported kind), whose rows used are kept with all their columns; without it, only the
    three columns, indexed like the rows used."""
    fit._rows_only("augment")
    design = fit._model.design
    fixed = design.X @ fit._fixef.to_numpy() + design.offset
    cols = {".fitted": fit._fitted.to_numpy(), ".resid": fit._residuals.to_numpy(), ".fixed": fixed}
    if data is None:
        return pd.DataFrame(cols, index=design.row_index)
    df = as_frame(data)
    if len(df) != design.n + design.n_dropped:
        raise ArgumentError(
            f"data has {len(df)} rows; the fit used {design.n} of {design.n + design.n_dropped}: "
            "pass the same table that was fitted"
        )
    if not df.index.is_unique:
        raise ArgumentError("data's index has repeated labels: reset_index() it before fitting and augmenting")
    try:
        out = df.loc[design.row_index].copy()
    except KeyError:
        raise ArgumentError("data's row labels differ from the fitted table's: pass the same table") from None
    clash = [c for c in cols if c in out.columns]
    if clash:
        raise ArgumentError(f"data already has column(s) {clash}")
    for k, v in cols.items():
        out[k] = v
    return out


def _md_table(frame: pd.DataFrame, index: bool = True, digits: int = 4) -> list[str]:
    def cell(v):
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else f"{v:.{digits}g}"
        return "" if v is None else str(v)

    cols = ([frame.index.name or ""] if index else []) + [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for k, row in frame.iterrows():
        cells = ([str(k)] if index else []) + [cell(v) for v in row.tolist()]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _heading(fit) -> str:
    """The model line of a notebook view: what was fitted and how (as the text summary's)."""
    if hasattr(fit, "family"):  # a GlmerResult
        how = ("Laplace approximation" if fit.nagq == 1
               else f"adaptive Gauss-Hermite quadrature, nAGQ = {fit.nagq}")
        return (f"Generalized linear mixed model fit by maximum likelihood ({how}), "
                f"family {fit.family.name} ({fit.family.link.name} link)")
    kind = "Linear mixed model" if fit.ngroups else "Generalized least squares"
    return f"{kind} fit by {'REML' if fit.reml else 'ML'}"


def _residual_structure(fit) -> pd.DataFrame:
    """Estimates of a residual correlation structure and variance function (none: no rows)."""
    if getattr(fit, "_rside", None) is None:
        return pd.DataFrame({"kind": [], "parameter": [], "estimate": []})
    parts = [pd.DataFrame({"kind": kind, "parameter": list(v.index), "estimate": v.to_numpy(dtype=float)})
             for kind, v in (("correlation", fit.correlation_params), ("variance", fit.variance_params))]
    return pd.concat(parts, ignore_index=True)


def _notes(fit) -> list[str]:
    notes = []
    if fit.singular:
        notes.append("boundary (singular) fit")
    if not fit.converged:
        notes.append("the optimiser did not converge")
    if not fit.has_rows:
        notes.append("fitted out of core from a Parquet dataset: no per-row outputs")
    return notes


def summary_markdown(fit: Fit, ddf: str | None = "satterthwaite") -> str:
    """The summary as Markdown: model line, fit statistics, variance parameters (for a glmer fit
    without standard errors), the residual structure's parameters if any, fixed effects (t tests
    with ``ddf`` degrees of freedom; z tests for glmer)."""
    L = [f"**{_heading(fit)}**: `{fit.formula}`", ""]
    L += _md_table(glance(fit), index=False) + [""]
    t = tidy(fit, ddf=ddf)
    rp = t[t["effect"] == "ran_pars"]
    if len(rp):
        L += ["Random effects (standard deviations and correlations):", ""]
        cols = ["group", "term", "estimate"] + (["std.error"] if rp["std.error"].notna().any() else [])
        L += _md_table(rp[cols], index=False) + [""]
    rs = _residual_structure(fit)
    if len(rs):
        L += ["Residual correlation structure and variance function:", ""]
        L += _md_table(rs, index=False) + [""]
    L += ["Fixed effects:", ""]
    fx = t[t["effect"] == "fixed"].drop(columns=["effect", "group"])
    if len(fx) and np.isinf(fx["df"].to_numpy(dtype=float)).all():
        fx = fx.drop(columns=["df"])  # z tests
    L += _md_table(fx, index=False)
    notes = _notes(fit)
    if notes:
        L += ["", "*" + "; ".join(notes) + "*"]
    return "\n".join(L) + "\n"


def summary_html(fit: Fit) -> str:
    """A compact HTML view for notebooks: the model line, glance and tidy tables (and the
    residual structure's parameters, if any)."""

    def table(frame: pd.DataFrame) -> str:
        return frame.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.6g}")

    rs = _residual_structure(fit)
    notes = _notes(fit)
    return (f"<div><p><b>{html.escape(_heading(fit))}</b>: <code>{html.escape(fit.formula)}</code></p>"
            + table(glance(fit)) + table(tidy(fit)) + (table(rs) if len(rs) else "")
            + (f"<p><i>{html.escape('; '.join(notes))}</i></p>" if notes else "") + "</div>")


class NotebookView:
    """Mixin of the user-facing fits: the notebook view (model line, glance and tidy tables,
    :func:`summary_html`); a notebook view never raises, the text repr is the fallback."""

    def _repr_html_(self) -> str:
        try:
            return summary_html(self)
        except Exception:  # noqa: BLE001 - a notebook view never raises
            return f"<pre>{html.escape(repr(self))}</pre>"
