"""Exact second-order quantities at the optimum, by automatic differentiation.

- ``theta_hessian``: ``d^2 objective / d theta^2`` (lme4's parametrisation, profiled criterion).
- ``varpar_hessian``: ``H = d^2 D / d varpar^2`` of the unprofiled deviance at ``(theta, sigma)``;
  the asymptotic covariance of ``varpar`` is ``A = 2 H^{-1}`` (lmerTest's ``vcov_varpar``; a
  pseudo-inverse over the positive eigenvalues when ``H`` is not positive definite).
- ``sdcor_covariance``: the delta method ``J A J'`` with ``J = d sdcor / d varpar``.
- ``vcov_beta_jacobian``: ``d Var(beta_hat) / d varpar``, ``(p, p, n_varpar)``, for Satterthwaite.

Forward-over-reverse differentiation runs on the pure-XLA path (``host_lapack=False``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..lmm.model import LmerModel
from ..lmm.objective import deviance_varpar, objective, unscaled_vcov
from ..covariance.sdcor import sdcor_from_varpar, sdcor_names
from ..precision import float64

EIGEN_TOL = 1e-8  # relative to the largest eigenvalue of H


@jax.jit
def _hess_theta(theta, M):
    return jax.hessian(objective)(theta, M)


@jax.jit
def _hess_varpar(varpar, M):
    return jax.hessian(deviance_varpar)(varpar, M)


@jax.jit
def _vcov_jac(varpar, M):
    def vcov(vp):
        return vp[-1] ** 2 * unscaled_vcov(vp[:-1], M)

    return jax.jacfwd(vcov)(varpar)


def theta_hessian(model: LmerModel, theta: np.ndarray, reml: bool) -> np.ndarray:
    """Hessian of the profiled REML criterion / deviance with respect to theta ``(k, k)``."""
    with float64():
        M = model.arrays(reml, host_lapack=False)
        return np.asarray(_hess_theta(jnp.asarray(theta, dtype=jnp.float64), M))


def varpar_hessian(model: LmerModel, theta: np.ndarray, sigma: float, reml: bool) -> np.ndarray:
    """Hessian of ``-2 log L(theta, sigma)`` (restricted for REML) ``(k+1, k+1)``."""
    with float64():
        M = model.arrays(reml, host_lapack=False)
        vp = jnp.asarray(np.r_[theta, sigma], dtype=jnp.float64)
        return np.asarray(_hess_varpar(vp, M))


def covariance_from_hessian(H: np.ndarray) -> tuple[np.ndarray, bool]:
    """``2 H^{-1}`` by eigen-decomposition over the eigenvalues above ``EIGEN_TOL * max``;
    returns the matrix and whether ``H`` was positive definite."""
    H = 0.5 * (H + H.T)
    w, V = np.linalg.eigh(H)
    tol = EIGEN_TOL * max(np.max(np.abs(w)), 1e-300)
    pos = w > tol
    Hinv = (V[:, pos] / w[pos]) @ V[:, pos].T
    return 2.0 * Hinv, bool(pos.all())


def vcov_beta_jacobian(model: LmerModel, theta: np.ndarray, sigma: float, reml: bool) -> np.ndarray:
    """``d (sigma^2 (L_X L_X')^{-1}) / d varpar``: ``(p, p, k+1)``."""
    with float64():
        M = model.arrays(reml, host_lapack=False)
        vp = jnp.asarray(np.r_[theta, sigma], dtype=jnp.float64)
        return np.asarray(_vcov_jac(vp, M))


# one compiled program (not one small program per operation, as outside jit)
_sdcor_jac = jax.jit(jax.jacfwd(sdcor_from_varpar), static_argnums=1)


def sdcor_jacobian(model: LmerModel, theta: np.ndarray, sigma: float) -> np.ndarray:
    """``d sdcor / d varpar`` ``(k+1, k+1)`` (see ``jaxlmm.parameters``)."""
    with float64():
        vp = jnp.asarray(np.r_[theta, sigma], dtype=jnp.float64)
        return np.asarray(_sdcor_jac(vp, model.specs))


def boundary_mask(model: LmerModel, theta: np.ndarray, tol: float = 1e-4) -> np.ndarray:
    """Over varpar: True for every theta entry of a term whose template has a (near-)zero
    diagonal entry (a boundary estimate: SD zero or correlation +-1). sigma is never on it."""
    out, k = [], 0
    for s in model.specs:
        vals = np.asarray(theta[k : k + s.size])
        d = np.array(s.diagonal)
        on = bool(np.any(np.abs(vals[d]) < tol))
        out.append(np.full(s.size, on))
        k += s.size
    return np.concatenate(out + [np.array([False])])


def sdcor_covariance(model: LmerModel, theta: np.ndarray, sigma: float, reml: bool,
                     H: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Delta-method covariance of the sd/cor parameters ``(k+1, k+1)``, NaN on rows and
    columns of boundary terms (the Wald approximation does not hold there); the interior
    parameters use the Hessian with the boundary ones held fixed. Also returns the mask."""
    if H is None:
        H = varpar_hessian(model, theta, sigma, reml)
    on = boundary_mask(model, theta)
    keep = ~on
    Ak, _ = covariance_from_hessian(H[np.ix_(keep, keep)])
    J = sdcor_jacobian(model, theta, sigma)
    Jk = J[np.ix_(keep, keep)]
    A_sd = np.full(H.shape, np.nan)
    A_sd[np.ix_(keep, keep)] = Jk @ Ak @ Jk.T
    return A_sd, on


def sdcor_table(fit) -> pd.DataFrame:
    """sd/cor parameters and sigma (lme4's names and order) with delta-method SEs:
    columns ``estimate, std_error, boundary``."""
    model = fit._model
    est = sdcor_from_varpar(np.r_[fit.theta, fit.sigma].astype(np.float64), model.specs)  # NumPy
    A, on = sdcor_covariance(model, fit.theta, fit.sigma, fit.reml, fit._varpar_hessian)
    names = sdcor_names(model.design, model.specs)
    return pd.DataFrame({"estimate": est, "std_error": np.sqrt(np.diag(A)), "boundary": on},
                        index=pd.Index(names, name="parameter"))


def varcorr_with_se(fit) -> pd.DataFrame:
    """``fit._varcorr`` with an ``se`` column (the SE of ``sdcor``), rows matched by term and
    column names."""
    vc = fit._varcorr.copy()
    tab = fit._sdcor_table
    se = tab["std_error"].to_numpy()
    model = fit._model
    out = []
    k = 0
    for t, s in zip(model.design.terms, model.specs):
        pos = {(r, c): k + a for a, (r, c) in enumerate(zip(s.rows, s.cols))}
        for c in range(s.p):
            out.append(se[pos[(c, c)]])
        if not t.uncorrelated:
            for a in range(s.p):
                for b in range(a + 1, s.p):
                    out.append(se[pos[(b, a)]])
        k += s.size
    out.append(se[-1])
    vc["se"] = out
    return vc
