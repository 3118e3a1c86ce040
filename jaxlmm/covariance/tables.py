"""The random-effects tables users read: lme4's ``as.data.frame(VarCorr(fit))`` and
``as.data.frame(ranef(fit, condVar = TRUE))``.

``VarCorr``: per term ``Var(b_i) = sigma^2 T_i T_i'`` (``T_i`` the ``p_i x p_i`` template of
theta), one row per variance (``vcov`` the variance, ``sdcor`` its SD) and, for a correlated
term, per pair of columns (``vcov`` the covariance, ``sdcor`` the correlation; NaN where an SD
is zero, :func:`jaxlmm.covariance.sdcor.sd_cor`), then the residual row ``sigma^2, sigma``.
Repeated grouping names get lme4's suffixes ``.1``, ``.2``.

``ranef``: one row per term column and level: the conditional mode ``b`` (``levels_i x p_i``)
and its conditional SD ``sqrt(diag)`` of the conditional covariance blocks
(``levels_i x p_i x p_i``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .sdcor import sd_cor


def varcorr_table(terms, Ts: list[np.ndarray], sigma: float) -> pd.DataFrame:
    """``terms``: the design's terms (name, column names, width, uncorrelated); ``Ts`` their
    templates ``(p_i, p_i)`` at the optimum; ``sigma`` the residual SD."""
    rows = []
    seen: dict[str, int] = {}

    def unique(name: str) -> str:
        k = seen.get(name, 0)
        seen[name] = k + 1
        return name if k == 0 else f"{name}.{k}"

    for t, T in zip(terms, Ts):
        S = sigma**2 * (T @ T.T)
        sd, cor = sd_cor(S)
        cn = t.column_names
        if t.uncorrelated:
            for k in range(t.width):
                rows.append((unique(t.name), cn[k], None, S[k, k], sd[k]))
            continue
        g = unique(t.name)
        for k in range(t.width):
            rows.append((g, cn[k], None, S[k, k], sd[k]))
        for a in range(t.width):
            for b in range(a + 1, t.width):
                rows.append((g, cn[a], cn[b], S[b, a], cor[b, a]))
    rows.append(("Residual", None, None, sigma**2, sigma))
    return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])


def ranef_table(terms, b: list, cond_cov: list) -> pd.DataFrame:
    """``b[i]`` the modes ``(levels_i, p_i)``, ``cond_cov[i]`` their conditional covariance
    blocks ``(levels_i, p_i, p_i)`` (columns grpvar, term, grp, condval, condsd)."""
    if not terms:
        return pd.DataFrame({"grpvar": [], "term": [], "grp": [], "condval": [], "condsd": []})
    parts = []
    for t, bi, ci in zip(terms, b, cond_cov):
        for k, cname in enumerate(t.column_names):
            parts.append(pd.DataFrame({
                "grpvar": t.name,
                "term": cname,
                "grp": list(t.levels),
                "condval": bi[:, k],
                "condsd": np.sqrt(np.maximum(ci[:, k, k], 0.0)),
            }))
    return pd.concat(parts, ignore_index=True)
