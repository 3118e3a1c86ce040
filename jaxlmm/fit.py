"""Optimise theta and compute everything a fitted model reports (lme4's optimizeLmer + mkMerMod).

``fit_theta``: jitted BFGS on the profiled objective, sign rectification of the templates,
snapping of boundary values to exactly zero. ``conditional_estimates``: at the optimum, one
factorization and one back-solve ``L' [u; beta; -1] = -r e_last`` give the fixed effects and
the spherical random effects ``u`` (``b = Lambda u``); ``sigma^2 = r^2 / nu``;
``Var(beta) = sigma^2 (L_X L_X')^{-1}``; on demand, ``Var(b | y) = sigma^2 Lambda S Lambda'`` with
``S`` the level-diagonal blocks of ``(Lambda' Z' W Z Lambda + I)^{-1}`` (selected inverse).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from .covariance import diagonal_mask, rectify, templates_np, theta_start
from .kernels import diagonal_blocks_of_inverse, solve_lower_transpose
from .objective import ModelArrays, factor, objective
from .optimize import minimize_bfgs

SINGULAR_TOL = 1e-4  # lme4's isSingular tolerance on the diagonal of the templates
GTOL = 1e-6
# a search stopped by the objective-change or rounding rule counts as converged when
# max |gradient| <= CONVERGED_GRAD * sqrt(max(1, |objective|)) (the gradient's rounding noise
# grows with the objective's size: about 3e-3 for InstEval's 2.4e5)
CONVERGED_GRAD = 1e-3


@functools.partial(jax.jit, static_argnames=("gtol", "max_iter"))
def _bfgs(theta0, M: ModelArrays, gtol: float = GTOL, max_iter: int = 1000):
    return minimize_bfgs(objective, theta0, M, gtol=gtol, max_iter=max_iter)


_value_and_grad = jax.jit(jax.value_and_grad(objective))


def _rside_objective(x, M, R):
    from .residual import rside_objective

    return rside_objective(x, M, R)


@functools.partial(jax.jit, static_argnames=("gtol", "max_iter"))
def _bfgs_rside(x0, M: ModelArrays, R, gtol: float = GTOL, max_iter: int = 1000):
    return minimize_bfgs(_rside_objective, x0, M, R, gtol=gtol, max_iter=max_iter)


_value_and_grad_rside = jax.jit(jax.value_and_grad(_rside_objective))


@dataclasses.dataclass(frozen=True)
class ThetaFit:
    theta: np.ndarray
    objective: float
    grad: np.ndarray
    n_iter: int
    n_evals: int
    status: int
    converged: bool
    message: str
    singular: bool  # lme4's isSingular: a diagonal template entry below SINGULAR_TOL


_MESSAGES = {
    0: "gradient tolerance reached",
    1: "no further decrease possible (rounding level)",
    2: "iteration limit reached",
    3: "relative change of the objective below tolerance",
}


def fit_theta(M: ModelArrays, theta0: np.ndarray | None = None, max_iter: int = 1000,
              rside=None) -> ThetaFit:
    """Minimise the profiled objective over theta from ``theta0`` (call under float64).

    With ``rside`` (:class:`jaxlmm.residual.RSideArrays`) the vector also holds the residual
    structure's unconstrained parameters after theta (``theta0`` then includes them), and the
    returned ``theta`` does too."""
    x0 = theta_start(M.specs) if theta0 is None else np.asarray(theta0, dtype=np.float64)
    if x0.shape[0] == 0:  # nothing to optimise (gls with iid errors)
        f = float(objective(jnp.zeros(0), M))
        return ThetaFit(theta=x0, objective=f, grad=x0, n_iter=0, n_evals=1, status=0,
                        converged=True, message=_MESSAGES[0], singular=False)
    if rside is None:
        r = _bfgs(jnp.asarray(x0), M, max_iter=max_iter)
        args, vg = (M,), _value_and_grad
    else:
        r = _bfgs_rside(jnp.asarray(x0), M, rside, max_iter=max_iter)
        args, vg = (M, rside), _value_and_grad_rside
    x = np.asarray(r.x)
    k = sum(s.size for s in M.specs)
    theta, sign = rectify(x[:k], M.specs)
    theta = np.concatenate([theta, x[k:]])
    sign = np.concatenate([sign, np.ones(len(x) - k)])
    f = float(r.fun)
    # the objective is even in the sign of each template column: flip the gradient with it
    g = np.asarray(r.grad) * sign
    n_evals = int(r.nfev)
    # snap boundary values (tiny diagonal template entries) to exactly zero when that is no worse
    diag = np.concatenate([diagonal_mask(M.specs), np.zeros(len(x) - k, bool)])
    small = diag & (np.abs(theta) < SINGULAR_TOL)
    if small.any():
        t2 = theta.copy()
        t2[small] = 0.0
        f2, g2 = vg(jnp.asarray(t2), *args)
        n_evals += 1
        if float(f2) <= f + 1e-9 * (1.0 + abs(f)):
            theta, f, g = t2, float(f2), np.asarray(g2)
    status = int(r.status)
    gmax = float(np.max(np.abs(g[~small]))) if (~small).any() else 0.0
    converged = status == 0 or (status in (1, 3) and gmax <= CONVERGED_GRAD * max(1.0, abs(f)) ** 0.5)
    return ThetaFit(
        theta=theta, objective=f, grad=g, n_iter=int(r.n_iter), n_evals=n_evals,
        status=status, converged=converged, message=_MESSAGES.get(status, "unknown"),
        singular=bool(np.any(theta[diag] < SINGULAR_TOL)),
    )


@jax.jit
def _solve_at(theta, M: ModelArrays):
    f = factor(theta, M)
    s = M.structure
    b_bd = [jnp.zeros((s.nlevels[j], s.widths[j]), theta.dtype) for j in range(s.n_bd)]
    r = f.tail[-1, -1]
    b_tail = jnp.zeros((s.m,), theta.dtype).at[-1].set(-r)
    x_bd, x_tail = solve_lower_transpose(s, f, b_bd, b_tail)
    return f, x_bd, x_tail


@dataclasses.dataclass(frozen=True)
class Conditional:
    beta: np.ndarray  # (p,)
    vcov: np.ndarray  # (p, p)
    sigma: float
    b: list  # per term (levels, p_i)
    templates: list  # per term (p_i, p_i)
    structure: object
    factor: tuple  # (diag, off, tail) of the blocked factor, numpy

    def cond_cov(self) -> list:
        """Per term ``(levels, p_i, p_i)``: ``sigma^2 T S T'`` with ``S`` the level-diagonal blocks
        of ``(Lambda' Z' W Z Lambda + I)^{-1}`` (selected inverse; computed on demand)."""
        diag, off, tail = self.factor
        k = len(self.templates)
        S = diagonal_blocks_of_inverse(self.structure, diag, off, tail, n_keep=k)
        s2 = self.sigma**2
        Ts = self.templates
        return [s2 * np.einsum("ab,lbc,dc->lad", Ts[i], S[i], Ts[i]) for i in range(k)]


def conditional_estimates(theta: np.ndarray, M: ModelArrays) -> Conditional:
    """Fixed effects, sigma, Var(beta), conditional modes and variances at ``theta``."""
    f, x_bd, x_tail = _solve_at(jnp.asarray(theta), M)
    s = M.structure
    tail = np.asarray(f.tail)
    x_tail = np.asarray(x_tail)
    mz, p = M.m_z_tail, M.p
    k = M.n_terms
    u = []
    for i in range(k):
        if i < s.n_bd:
            u.append(np.asarray(x_bd[i]))
        else:
            o = s.tail_offset(i)
            u.append(x_tail[o : o + s.nlevels[i] * s.widths[i]].reshape(s.nlevels[i], s.widths[i]))
    beta = x_tail[mz : mz + p].copy()
    r2 = tail[-1, -1] ** 2
    nu = M.n - p if M.reml else M.n
    sigma2 = r2 / nu
    if p:
        LXinv = np.linalg.inv(np.tril(tail[mz : mz + p, mz : mz + p]))
        vcov = sigma2 * (LXinv.T @ LXinv)
    else:
        vcov = np.zeros((0, 0))
    Ts = templates_np(theta, M.specs)
    b = [u[i] @ Ts[i].T for i in range(k)]
    factor_np = ([np.asarray(d) for d in f.diag], {n: np.asarray(v) for n, v in f.off.items()}, tail)
    host_structure = jax.tree_util.tree_map(np.asarray, s)
    return Conditional(beta=beta, vcov=vcov, sigma=float(np.sqrt(sigma2)), b=b, templates=Ts,
                       structure=host_structure, factor=factor_np)
