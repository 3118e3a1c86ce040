"""The variance parameters on the scales users and algorithms need.

- ``theta``: lme4's relative covariance factors (the optimiser's scale);
- ``varpar = (theta, sigma)``: lmerTest's scale for the asymptotic covariance;
- ``sdcor``: standard deviations and correlations of each term in theta order (a diagonal
  template entry ``(r, r)`` becomes the SD of column ``r``, an entry ``(r, c)`` the correlation
  of columns ``r`` and ``c``), then the residual sigma: lme4's ``Cv_to_Sv`` order, the order of
  ``confint`` rows.

``Var(b_i) = sigma^2 T_i T_i'``; ``sd_r = sqrt(S_rr)``, ``cor_rc = S_rc / (sd_r sd_c)``.
All maps work term by term, in JAX (differentiable); ``sdcor_from_varpar`` and ``sd_cor`` also in
NumPy for host arrays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..precision import float64
from .templates import TemplateSpec, templates, templates_np


def sd_cor(S, undefined: float = np.nan):
    """SDs ``sqrt(diag S)`` ``(p,)`` and correlations ``S_rc / (sd_r sd_c)`` ``(p, p)`` of one
    covariance matrix ``S``, the one rule behind every sd/cor jaxlmm reports.

    A NumPy ``S`` gives ``undefined`` (NaN, as lme4 prints; the profile traces pass 0) for a
    correlation of a column whose SD is zero; a JAX ``S`` (traced, differentiable) is divided
    as it stands (``0 / 0`` is NaN there too)."""
    if isinstance(S, np.ndarray):
        sd = np.sqrt(np.diagonal(S))
        den = np.outer(sd, sd)
        with np.errstate(divide="ignore", invalid="ignore"):
            cor = np.where(den > 0, S / np.where(den > 0, den, 1.0), undefined)
        return sd, cor
    sd = jnp.sqrt(jnp.diagonal(S))
    return sd, S / (sd[:, None] * sd[None, :])


def sdcor_from_varpar(varpar, specs: tuple[TemplateSpec, ...], undefined: float = np.nan):
    """``(theta, sigma) -> (sd/cor in theta order, sigma)`` (same length): a JAX function of a
    JAX ``varpar``, a NumPy one of a NumPy ``varpar`` (``undefined``: see :func:`sd_cor`)."""
    host = isinstance(varpar, np.ndarray)
    theta, sigma = varpar[:-1], varpar[-1]
    out = []
    for s, T in zip(specs, (templates_np if host else templates)(theta, specs)):
        sd, cor = sd_cor(sigma**2 * (T @ T.T), undefined)
        for r, c in zip(s.rows, s.cols):
            out.append(sd[r] if r == c else cor[r, c])
    out.append(sigma)
    return np.array(out, dtype=float) if host else jnp.stack(out)


def varpar_from_sdcor(sdcor, specs: tuple[TemplateSpec, ...]):
    """Inverse of :func:`sdcor_from_varpar` (correlations inside (-1, 1), SDs >= 0).

    Rebuilds each ``S = D C D`` and takes ``T = chol(S) / sigma``; a zero SD gives a zero column.
    """
    sdcor = jnp.asarray(sdcor)
    sigma = sdcor[-1]
    out, k = [], 0
    for s in specs:
        vals = sdcor[k : k + s.size]
        sd = [None] * s.p
        for a, (r, c) in enumerate(zip(s.rows, s.cols)):
            if r == c:
                sd[r] = vals[a]
        sd = jnp.stack(sd)
        C = jnp.eye(s.p, dtype=sdcor.dtype)
        for a, (r, c) in enumerate(zip(s.rows, s.cols)):
            if r != c:
                C = C.at[r, c].set(vals[a]).at[c, r].set(vals[a])
        L = _chol_psd(C) * sd[:, None] / sigma
        out.append(jnp.stack([L[r, c] for r, c in zip(s.rows, s.cols)]))
        k += s.size
    return jnp.concatenate(out + [sigma[None]])


def _chol_psd(C):
    """Cholesky factor of a correlation matrix (exact for p = 1, 2; LAPACK otherwise)."""
    p = C.shape[0]
    if p == 1:
        return jnp.ones((1, 1), C.dtype)
    if p == 2:
        r = C[1, 0]
        return jnp.array([[1.0, 0.0], [r, jnp.sqrt(jnp.maximum(1.0 - r * r, 0.0))]], dtype=C.dtype)
    return jnp.linalg.cholesky(C)


def sdcor_names(design, specs: tuple[TemplateSpec, ...]) -> list[str]:
    """lme4-style names: ``sd_(Intercept)|Subject``, ``cor_Days.(Intercept)|Subject``, ``sigma``."""
    names = []
    for t, s in zip(design.terms, specs):
        cn = t.column_names
        for r, c in zip(s.rows, s.cols):
            names.append(f"sd_{cn[r]}|{t.name}" if r == c else f"cor_{cn[r]}.{cn[c]}|{t.name}")
    names.append("sigma")
    return names


def is_sd(specs: tuple[TemplateSpec, ...]) -> np.ndarray:
    """Mask over sdcor (theta order, then sigma): True for standard deviations (and sigma)."""
    return np.concatenate([np.array(s.diagonal) for s in specs] + [np.array([True])])


def sdcor_rows(theta: np.ndarray, specs: tuple[TemplateSpec, ...]) -> np.ndarray:
    """sd/cor of the random effects in theta order (scale 1, no sigma) for each row of
    ``theta (B, k)``: ``(B, k)`` (many fits of one design, as host arrays)."""
    with float64():
        f = jax.vmap(lambda t: sdcor_from_varpar(jnp.concatenate([t, jnp.ones(1)]), specs)[:-1])
        return np.asarray(f(jnp.asarray(theta)))
