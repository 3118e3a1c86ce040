"""Starting values for theta.

lme4 starts from identity templates. For a scalar random intercept we start instead from the
one-way ANOVA (method of moments) estimate on the OLS residuals, ``theta = sigma_b / sigma_w``
with ``sigma_b^2 = (MSB - MSW) / n0``, kept inside ``[0.05, 20]`` (zero is a stationary point of
the even objective, so the start must not be exactly zero). Other terms start from identity.
This costs one pass over the rows and typically saves a third of the objective evaluations.
With ``scale`` (the optimiser's internal scale, :meth:`jaxlmm.model.LmerModel.theta_scale`) the
identity templates are those of the internal parameters, ``theta = scale`` on the diagonal, so
that the start does not depend on the units of the covariates.
"""

from __future__ import annotations

import numpy as np

from .templates import TemplateSpec, theta_start
from ..terms.design import Design


def ols_residuals(design: Design) -> np.ndarray:
    """``y - offset - X beta (n,)`` at the weighted least-squares ``beta`` (no random effects)."""
    sw = np.sqrt(design.weights)
    beta, *_ = np.linalg.lstsq(design.X * sw[:, None], (design.y - design.offset) * sw, rcond=None)
    return design.y - design.offset - design.X @ beta


def moment_start(design: Design, specs: tuple[TemplateSpec, ...], scale: np.ndarray | None = None) -> np.ndarray:
    theta = theta_start(specs) if scale is None else theta_start(specs) * scale
    r = ols_residuals(design)
    n = r.shape[0]
    k = 0
    for t, s in zip(design.terms, specs):
        col = t.columns[:, 0]
        if s.p == 1 and np.ptp(col) == 0 and col[0] != 0:
            cnt = np.bincount(t.codes, minlength=t.n_levels).astype(float)
            means = np.bincount(t.codes, weights=r, minlength=t.n_levels) / np.maximum(cnt, 1)
            dfw = n - t.n_levels
            msw = np.sum((r - means[t.codes]) ** 2) / dfw if dfw > 0 else np.nan
            msb = np.sum(cnt * (means - r.mean()) ** 2) / (t.n_levels - 1)
            n0 = (n - np.sum(cnt**2) / n) / (t.n_levels - 1)
            if np.isfinite(msw) and msw > 0 and n0 > 0:
                sb2 = max((msb - msw) / n0, 0.0)
                theta[k] = float(np.clip(np.sqrt(sb2 / msw) / abs(col[0]), 0.05, 20.0))
        k += s.size
    return theta
