"""lme4-style text summary of a fitted model."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import ArgumentError
from .protocol import Fit



def _table(rows: list[list[str]], header: list[str], align_left: int = 1) -> list[str]:
    cols = list(zip(*([header] + rows))) if rows else [[h] for h in header]
    widths = [max(len(c) for c in col) for col in cols]
    out = []
    for r in [header] + rows:
        cells = [
            (r[k].ljust(widths[k]) if k < align_left else r[k].rjust(widths[k]))
            for k in range(len(r))
        ]
        out.append(" " + " ".join(cells))
    return out


def _abbrev(name: str, n: int = 6) -> str:
    """R's ``abbreviate(name, minlength = 6)`` in outline: drop lower-case vowels from the right,
    then lower-case letters from the right, then truncate (``(Intercept)`` -> ``(Intr)``)."""
    chars = list(name)
    for pool in ("aeiou", "abcdefghijklmnopqrstuvwxyz"):
        k = len(chars) - 1
        while len(chars) > n and k > 0:
            if chars[k] in pool:
                del chars[k]
            k -= 1
    return "".join(chars[:n]) if len(chars) > n else "".join(chars)


def _residual_structure(fit: Fit) -> list[str]:
    """nlme's lines for the correlation structure and variance function (estimates only)."""
    r = getattr(fit, "_rside", None)
    if r is None:
        return []
    out = []
    for label, obj, params in (("Correlation structure", r.meta.correlation, fit.correlation_params),
                               ("Variance function", r.meta.variance, fit.variance_params)):
        if obj is None:
            continue
        out.append(f"{label}: {obj!r}")
        out.extend(_table([[f"{v:.4g}" for v in params]], [str(k) for k in params.index], align_left=0))
    out.append("")
    return out


def format_summary(fit: Fit) -> str:
    lines = []
    kind = "Linear mixed model" if fit.ngroups else "Generalized least squares"
    glmm = hasattr(fit, "family")  # a GlmerResult
    if glmm:
        how = ("Laplace Approximation" if fit.nagq == 1
               else f"Adaptive Gauss-Hermite Quadrature, nAGQ = {fit.nagq}")
        lines.append(f"Generalized linear mixed model fit by maximum likelihood ({how}) ['GlmerResult']")
        lines.append(f" Family: {fit.family.name}  ( {fit.family.link.name} )")
    elif fit.reml:
        lines.append(f"{kind} fit by REML ['LmerResult']")
    else:
        lines.append(f"{kind} fit by maximum likelihood  ['LmerResult']")
    lines.append(f"Formula: {fit.formula}")
    if fit.data_name:
        lines.append(f"   Data: {fit.data_name}")
    lines.append("")
    if fit.reml:
        lines.append(f"REML criterion at convergence: {fit.objective:.1f}")
    else:
        vals = [fit.aic, fit.bic, fit.loglik, fit.objective, float(fit.nobs - fit.df)]
        lines.extend(_table([[f"{v:.1f}" for v in vals[:4]] + [f"{int(vals[4])}"]],
                            ["AIC", "BIC", "logLik", "deviance", "df.resid"], align_left=0))
    lines.append("")
    if fit.has_rows:
        q = np.quantile(fit.scaled_residuals(), [0, 0.25, 0.5, 0.75, 1])
        lines.append("Scaled residuals: ")
        lines.extend(_table([[f"{v:.4f}" for v in q]], ["Min", "1Q", "Median", "3Q", "Max"], align_left=0))
        lines.append("")
    lines.extend(_residual_structure(fit))
    lines.append("Random effects:" if fit.ngroups else "Residual:")
    vc = fit._varcorr
    rows = []
    groups = []
    for grp, block in vc.groupby("grp", sort=False):
        groups.append(grp)
        var = block[block["var2"].isna()]
        cov = block[block["var2"].notna()]
        names = ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in var["var1"]]
        corr = {(r.var1, r.var2): r.sdcor for r in cov.itertuples()}
        for k, (name, v, sd) in enumerate(zip(names, var["vcov"], var["sdcor"])):
            cells = [grp if k == 0 else "", name, f"{v:.4g}", f"{sd:.4g}"]
            cs = [corr.get((names[j], name), corr.get((name, names[j]))) for j in range(k)]
            cells.append(" ".join(f"{c:.2f}" for c in cs if c is not None))
            rows.append(cells)
    lines.extend(_table(rows, ["Groups", "Name", "Variance", "Std.Dev.", "Corr"], align_left=2))
    grp_txt = "; ".join(f"{g}, {n}" for g, n in fit.ngroups.items())
    lines.append(f"Number of obs: {fit.nobs}, groups:  {grp_txt}" if grp_txt else f"Number of obs: {fit.nobs}")
    if fit.n_dropped:
        lines.append(f"({fit.n_dropped} rows with missing values dropped)")
    lines.append("")
    lines.append("Fixed effects:")
    est, se = fit.fixef.to_numpy(), fit.se.to_numpy()
    names = list(fit.fixef.index)
    rows = [[n, f"{e:.4g}", f"{s:.4g}", f"{e / s:.3f}" if s > 0 else "NA"] for n, e, s in zip(names, est, se)]
    if glmm:  # Wald z tests
        ct = fit.coef_table()
        for r, pv in zip(rows, ct["p"]):
            r.append(f"{pv:.3g}" if np.isfinite(pv) else "NA")
        lines.extend(_table(rows, ["", "Estimate", "Std. Error", "z value", "Pr(>|z|)"], align_left=1))
    else:
        lines.extend(_table(rows, ["", "Estimate", "Std. Error", "t value"], align_left=1))
    if len(names) > 1:
        lines.append("")
        lines.append("Correlation of Fixed Effects:")
        V = fit.vcov.to_numpy()
        d = np.sqrt(np.diag(V))
        C = V / np.outer(d, d)
        ab = [_abbrev(n) for n in names]
        rows = []
        for i in range(1, len(names)):
            rows.append([names[i]] + [f"{C[i, j]:.3f}" for j in range(i)] + [""] * (len(names) - 1 - i))
        lines.extend(_table(rows, [""] + ab[:-1], align_left=1))
    if fit.dropped_columns:
        lines.append(f"fixed-effect model matrix is rank deficient so dropping {len(fit.dropped_columns)} "
                     f"columns / coefficients: {', '.join(fit.dropped_columns)}")
    info = fit.optinfo
    if not info["converged"]:
        lines.append(f"convergence failure: {info['message']} (max |gradient| {info['grad_norm']:.3g})")
    if fit.singular:
        lines.append("boundary (singular) fit: some variance components are zero or correlations +-1")
    return "\n".join(lines)


class Summary:
    """Printable summary: ``str`` gives lme4's layout (``text``); ``markdown`` the same content as
    Markdown tables, computed on first use (notebooks show it)."""

    def __init__(self, text: str, markdown: Callable[[], str] | None = None) -> None:
        self.text = text
        self._markdown = markdown

    @property
    def markdown(self) -> str:
        """The summary as Markdown tables (:func:`jaxlmm.report.tidy.summary_markdown`)."""
        if self._markdown is None:
            raise ArgumentError("this summary has no Markdown form")
        return self._markdown()

    def _repr_markdown_(self) -> str:
        """Jupyter's view: the Markdown tables, or the text layout in a code block should they
        fail (a notebook view never raises)."""
        try:
            return self.markdown
        except Exception:  # noqa: BLE001 - a notebook view never raises
            return "```text\n" + self.text + "\n```\n"

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text
