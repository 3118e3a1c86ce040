"""Denominator degrees of freedom for tests of fixed effects: Satterthwaite (lmerTest's
definitions, exact derivatives), Kenward–Roger (pbkrtest), residual, or none (z tests).

Satterthwaite, for one contrast ``l``: ``v(varpar) = l' Var(beta_hat) l``, ``g = dv/dvarpar``,
``A = 2 H^{-1}`` the asymptotic covariance of ``varpar = (theta, sigma)``:
``df = 2 v^2 / (g' A g)``. For ``L`` with ``q`` rows (lmerTest's ``contestMD``): with
``L V L' = P diag(d) P'``, the ``q`` rotated contrasts ``P' L`` give ``t_m`` and ``nu_m``;
``F = sum t_m^2 / q`` and ``df = 2 E / (E - q)``, ``E = sum nu_m / (nu_m - 2)`` (``nu`` itself when
all are equal; 2 when some ``nu_m <= 2``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from .. import distributions
from ..errors import ArgumentError
from ..lmm.engine import fit_model
from ..lmm.fit import optimizer_of
from .hessian import covariance_from_hessian, vcov_beta_jacobian
from .kenward_roger import kenward_roger, kr_ddf


def check_ddf(ddf) -> str | None:
    if isinstance(ddf, str):
        key = ddf.lower().replace("_", "-")
        if key in ("kenward-roger", "kr", "kenwardroger"):
            return "kenward-roger"
        if key in ("satterthwaite", "residual"):
            return key
    elif ddf is None:
        return None
    raise ArgumentError(
        f"ddf={ddf!r} is not one of 'satterthwaite', 'kenward-roger', 'residual' or None (z tests)"
    )


@dataclasses.dataclass(frozen=True)
class SatterthwaiteParts:
    """What every Satterthwaite test of one fit shares: ``V = Var(beta_hat) (p, p)``, its
    derivatives ``J (p, p, k+1)`` and ``A (k+1, k+1)``."""

    vcov: np.ndarray
    jac: np.ndarray
    A: np.ndarray

    def df(self, l: np.ndarray) -> float:
        v = float(l @ self.vcov @ l)
        g = np.einsum("i,ijk,j->k", l, self.jac, l)
        denom = float(g @ self.A @ g)
        return 2.0 * v * v / denom if denom > 0 else np.inf


def contrast_test(est: np.ndarray, L: np.ndarray, vcov: np.ndarray, df_of) -> dict:
    """F test of ``L beta = 0`` with Satterthwaite's rotated contrasts (see module docstring).

    ``df_of(l)`` gives the df of one contrast row."""
    Lb = L @ est
    q = L.shape[0]
    C = L @ vcov @ L.T
    d, P = np.linalg.eigh(0.5 * (C + C.T))
    tol = 1e-8 * max(d.max(), 1e-300)
    pos = d > tol
    P, d = P[:, pos], d[pos]
    q = int(pos.sum())
    t = (P.T @ Lb) / np.sqrt(d)
    nu = np.array([df_of(P[:, m] @ L) for m in range(q)])
    F = float(np.sum(t**2) / q)
    if q == 1 or np.all(np.abs(nu - nu[0]) < 1e-8):
        ddf = float(nu[0])
    elif np.any(nu <= 2):
        ddf = 2.0
    else:
        E = float(np.sum(nu / (nu - 2.0)))
        ddf = 2.0 * E / (E - q)
    return {"F": F, "num_df": q, "den_df": ddf, "p": float(distributions.f_sf(F, q, ddf))}


def coefficient_frame(names, est, se, df) -> pd.DataFrame:
    """``estimate, std_error, df, t, p`` (two-sided; normal when ``df`` is infinite)."""
    est = np.asarray(est, float)
    se = np.asarray(se, float)
    df = np.broadcast_to(np.asarray(df, float), est.shape)
    t = est / se
    p = np.where(np.isinf(df), 2.0 * distributions.norm_sf(np.abs(t)), 2.0 * distributions.t_sf(np.abs(t), np.where(np.isinf(df), 1.0, df)))
    return pd.DataFrame({"estimate": est, "std_error": se, "df": df, "t": t, "p": p},
                        index=pd.Index(list(names), name="term"))


def as_hypothesis(L, names: list[str]) -> np.ndarray:
    """A hypothesis matrix ``(q, p)`` from an array, a DataFrame with coefficient columns, or a
    dict ``{coefficient: weight}`` / list of such (one row each)."""
    p = len(names)
    if isinstance(L, pd.DataFrame):
        unknown = [c for c in L.columns if c not in names]
        if unknown:
            raise ArgumentError(f"L has column {unknown[0]!r}, not a fixed effect (have {names})")
        L = L.reindex(columns=names, fill_value=0.0).to_numpy(dtype=float)
    elif isinstance(L, dict) or (isinstance(L, (list, tuple)) and L and isinstance(L[0], dict)):
        rows = [L] if isinstance(L, dict) else list(L)
        out = np.zeros((len(rows), p))
        for r, row in enumerate(rows):
            for k, v in row.items():
                if k not in names:
                    raise ArgumentError(f"L names {k!r}, not a fixed effect (have {names})")
                out[r, names.index(k)] = float(v)
        L = out
    else:
        try:
            L = np.asarray(L, dtype=float)
        except (TypeError, ValueError):
            raise ArgumentError("L must be a numeric matrix, a DataFrame or a dict of weights") from None
        if L.ndim == 1:
            L = L[None, :]
    if L.ndim != 2 or L.shape[1] != p:
        raise ArgumentError(
            f"L must have {p} columns (one per fixed effect: {names}), got shape {L.shape}"
        )
    if L.shape[0] == 0 or not np.all(np.isfinite(L)):
        raise ArgumentError("L must have at least one row and finite entries")
    if np.linalg.matrix_rank(L) < L.shape[0]:
        raise ArgumentError("the rows of L are linearly dependent: drop the redundant ones")
    return L


def satterthwaite_parts(fit) -> SatterthwaiteParts:
    """``Var(beta_hat)``, its exact Jacobian in ``(theta, sigma)`` and ``A = 2 H^{-1}``."""
    def compute() -> SatterthwaiteParts:
        A, _ = covariance_from_hessian(fit._varpar_hessian)
        J = vcov_beta_jacobian(fit._model, fit.theta, fit.sigma, fit.reml)
        return SatterthwaiteParts(vcov=fit._vcov.to_numpy(), jac=J, A=A)

    return fit._cache.get_or_compute("satterthwaite", compute)


def kenward_roger_adjustment(fit):
    """pbkrtest's adjustment at the REML estimates (an ML fit is refitted by REML first, as
    pbkrtest does; its estimates and adjusted covariance are then the REML ones)."""
    def compute():
        src = fit if fit.reml else fit_model(fit._model, reml=True, stacklevel=7, optimizer=optimizer_of(fit))
        return src, kenward_roger(src._model, src.theta, src.sigma, src._vcov.to_numpy())

    return fit._cache.get_or_compute("kenward_roger", compute)


def coef_table(fit, ddf) -> pd.DataFrame:
    method = check_ddf(ddf)
    names = list(fit._fixef.index)
    est = fit._fixef.to_numpy()
    se = fit._se.to_numpy()
    p = len(names)
    if method == "satterthwaite":
        sp = satterthwaite_parts(fit)
        df = [sp.df(e) for e in np.eye(p)]
    elif method == "kenward-roger":
        src, adj = kenward_roger_adjustment(fit)
        est = src._fixef.to_numpy()
        se = np.sqrt(np.diag(adj.vcov_adj))
        df = [kr_ddf(adj, e[None, :])[0] for e in np.eye(p)]
    elif method == "residual":
        df = float(fit.nobs - p)
    else:
        df = np.inf
    return coefficient_frame(names, est, se, df)


def hypothesis_test(fit, L, ddf, rhs=None) -> pd.Series:
    method = check_ddf(ddf)
    names = list(fit._fixef.index)
    L = as_hypothesis(L, names)
    q = L.shape[0]
    if rhs is None:
        rhs = np.zeros(q)
    rhs = np.atleast_1d(np.asarray(rhs, dtype=float))
    if rhs.shape != (q,):
        raise ArgumentError(f"rhs must have one value per row of L ({q}), got shape {rhs.shape}")
    est = fit._fixef.to_numpy()
    V = fit._vcov.to_numpy()
    # L beta - rhs = L (beta - beta0) for any beta0 with L beta0 = rhs
    beta0 = np.linalg.lstsq(L, rhs, rcond=None)[0]
    if method == "satterthwaite":
        sp = satterthwaite_parts(fit)
        res = contrast_test(est - beta0, L, V, sp.df)
    elif method == "kenward-roger":
        src, adj = kenward_roger_adjustment(fit)
        d = L @ (src._fixef.to_numpy() - beta0)
        W = float(d @ np.linalg.solve(L @ adj.vcov_adj @ L.T, d))
        den, scale = kr_ddf(adj, L)
        F = scale * W / q
        res = {"F": F, "num_df": q, "den_df": den, "p": float(distributions.f_sf(F, q, den))}
    elif method == "residual":
        d = L @ (est - beta0)
        F = float(d @ np.linalg.solve(L @ V @ L.T, d)) / q
        den = float(fit.nobs - len(names))
        res = {"F": F, "num_df": q, "den_df": den, "p": float(distributions.f_sf(F, q, den))}
    else:
        d = L @ (est - beta0)
        chi = float(d @ np.linalg.solve(L @ V @ L.T, d))
        res = {"F": chi / q, "num_df": q, "den_df": np.inf, "p": float(distributions.chi2_sf(chi, q))}
    return pd.Series(res, name=method or "asymptotic")
