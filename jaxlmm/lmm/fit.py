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
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..optim import finish
from ..covariance.templates import diagonal_mask, rectify, templates_np, theta_start
from ..errors import ArgumentError, FitError
from ..optim.finish import GTOL, SINGULAR_TOL
from ..kernels import diagonal_blocks_of_inverse, solve_lower_transpose
from ..kernels.buckets import PadLayout, unpad_factor, unpad_solution
from .objective import ModelArrays, factor, objective
from ..optim.bfgs import bfgs_init, bfgs_result, bfgs_run, run_in_chunks
from ..optim.trust_region import minimize_trust_region
from ..rside.residual import rside_objective


def _internal_objective(x, d, M: ModelArrays, R):
    """The criterion at ``theta = x * d`` (``d``: :func:`theta_scale`; ones for residual-structure
    parameters, which follow theta when ``R`` is given)."""
    if R is None:
        return objective(x * d, M)
    return rside_objective(x * d, M, R)


def _extra_points(x, diag):
    """``x + h_i e_i`` for the one-sided Hessian (:mod:`jaxlmm.finish`), then the snapped optimum
    (evaluated only when a diagonal entry is small enough to snap: :func:`_n_needed`)."""
    return jnp.concatenate([x[None] + jnp.diag(finish.fd_step(x)), finish.snap_points(x, diag)[None]])


def _n_needed(x, diag):
    return x.shape[0] + jnp.any(diag & (jnp.abs(x) < SINGULAR_TOL)).astype(jnp.int32)


@jax.jit
def _theta_program(carry, budget, d, diag, M: ModelArrays, R, max_iter):
    """One chunk of the BFGS loop over the internal parameters (resumable: see
    :func:`jaxlmm.optimize.run_in_chunks`); after the search, the :func:`_extra_points`."""
    return bfgs_run(_internal_objective, carry, d, M, R, budget=budget, gtol=GTOL, max_iter=max_iter,
                    extra_points=lambda x: _extra_points(x, diag), n_needed=lambda x: _n_needed(x, diag))


@dataclasses.dataclass(frozen=True)
class ThetaFit:
    theta: np.ndarray
    objective: float
    grad: np.ndarray  # the gradient in the internal parameters x = theta / d (scale-free)
    n_iter: int
    n_evals: int
    status: int
    converged: bool
    message: str
    singular: bool  # lme4's isSingular: a diagonal template entry below SINGULAR_TOL (internal scale)
    hessian_min_eig: float = float("nan")  # smallest curvature at the optimum off the boundary
    restarts: int = 0  # restarts from a lower point found near a stationary start or a saddle


OPTIMIZERS = {"bfgs": "bfgs (jax)", "newton": "newton trust region (jax)"}  # name -> optinfo["optimizer"]
NEWTON_MAX_WIDTH = 6  # wider templates: the blocked kernels' forward-mode path is not exact yet


def check_optimizer(optimizer, specs=None, rside: bool = False) -> str:
    """The optimiser's name, refused (:class:`ArgumentError`) unless ``"bfgs"`` or ``"newton"``;
    ``"newton"`` only without a residual structure and with templates of at most
    ``NEWTON_MAX_WIDTH`` columns (its Hessian is forward over reverse through the kernels)."""
    if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
        raise ArgumentError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
    if optimizer == "newton":
        if rside:
            raise ArgumentError("optimizer='newton' is not available with a residual correlation or variance "
                                "structure; use optimizer='bfgs'")
        wide = [s.p for s in (specs or ()) if s.p > NEWTON_MAX_WIDTH]
        if wide:
            raise ArgumentError(f"optimizer='newton' handles random-effect terms of at most {NEWTON_MAX_WIDTH} "
                                f"columns (this model has one of {max(wide)}); use optimizer='bfgs'")
    return optimizer


def optimizer_of(fit) -> str:
    """The name of the optimiser a fit ran (refits use the same one)."""
    label = fit.optinfo.get("optimizer")
    return next((k for k, v in OPTIMIZERS.items() if v == label), "bfgs")


class _NewtonEnd(NamedTuple):
    """The end of a trust-region run in the fields the post-processing reads (as BFGS's)."""

    x: jnp.ndarray
    fun: jnp.ndarray
    grad: jnp.ndarray
    status: jnp.ndarray
    nfev: jnp.ndarray  # value evaluations + gradient-and-Hessian evaluations
    n_iter: jnp.ndarray
    extra_f: jnp.ndarray
    extra_g: jnp.ndarray


@jax.jit
def _newton_program(x0, d, diag, M: ModelArrays, max_iter):
    """Newton with the exact Hessian in a trust region (:mod:`jaxlmm.optim.trust_region`) over the
    internal parameters, then the :func:`_extra_points` (value and gradient each), in one program."""
    r = minimize_trust_region(_internal_objective, x0, d, M, None, gtol=GTOL, max_iter=max_iter)
    f_e, g_e = jax.vmap(jax.value_and_grad(_internal_objective), in_axes=(0, None, None, None))(
        _extra_points(r.x, diag), d, M, None)
    return _NewtonEnd(r.x, r.fun, r.grad, r.status, r.nfev + r.nhev, r.n_iter, f_e, g_e)


def _run(x0: np.ndarray, d, diag, M, R, max_iter, optimizer: str = "bfgs"):
    if optimizer == "newton":  # forward over reverse needs the kernels' JAX path (no host LAPACK)
        return _newton_program(jnp.asarray(x0, jnp.float64), d, diag, dataclasses.replace(M, host_lapack=False),
                               max_iter)
    m = 1 + x0.shape[0]
    carry = bfgs_init(_internal_objective, np.asarray(x0, np.float64), d, M, R, n_extra=m)
    carry = run_in_chunks(_theta_program, carry, d, diag, M, R, max_iter)
    return bfgs_result(carry)


def _value(x: np.ndarray, d, diag, M, R, max_iter) -> float:
    """The criterion at ``x`` through the same compiled program (one evaluation, nothing new to
    compile)."""
    carry = bfgs_init(_internal_objective, np.asarray(x, np.float64), d, M, R, n_extra=1 + x.shape[0])
    carry = _theta_program(carry, np.asarray(1), d, diag, M, R, max_iter)
    return float(carry.s.f)


def fit_theta(M: ModelArrays, theta0: np.ndarray | None = None, max_iter: int = 1000,
              rside=None, scale: np.ndarray | None = None, optimizer: str = "bfgs") -> ThetaFit:
    """Minimise the profiled objective over theta from ``theta0`` (call under float64).

    The optimiser works on ``x = theta / d`` with ``d = scale`` (per theta entry: one over the
    root mean square of its term column, :meth:`jaxlmm.model.LmerModel.theta_scale`), so that
    rescaling a covariate leaves its path unchanged; theta is reported on the user's scale.

    With ``rside`` (:class:`jaxlmm.residual.RSideArrays`) the vector also holds the residual
    structure's unconstrained parameters after theta (``theta0`` then includes them), and the
    returned ``theta`` does too. The end is checked by :mod:`jaxlmm.optim.finish`: snapped to the
    boundary where no worse, probed for a stationary start or a saddle (and restarted from a
    lower point found), refused when not finite.

    ``optimizer``: ``"bfgs"`` (default: BFGS in interruptible chunks) or ``"newton"`` (Newton with
    the exact Hessian in a trust region, one compiled loop: fewer iterations, each costing about
    ``k`` gradients; moves along negative curvature; no residual structure). The same end checks
    follow either."""
    t0 = theta_start(M.specs) if theta0 is None else np.asarray(theta0, dtype=np.float64)
    k = sum(s.size for s in M.specs)
    if t0.shape[0] == 0:  # nothing to optimise (gls with iid errors)
        f = float(objective(jnp.zeros(0), M))
        if not np.isfinite(f):
            raise FitError("the objective is not finite: check the response and weights for extreme values")
        return ThetaFit(theta=t0, objective=f, grad=t0, n_iter=0, n_evals=1, status=0,
                        converged=True, message=finish.message(0), singular=False)
    dv = np.ones(t0.shape[0])
    if scale is not None:
        dv[:k] = scale
    diag_np = np.concatenate([diagonal_mask(M.specs), np.zeros(t0.shape[0] - k, bool)])
    d, diag, mi = dv, diag_np, np.asarray(int(max_iter))
    x0 = t0 / dv
    n_evals, n_iter, restarts = 0, 0, 0
    while True:
        r = _run(x0, d, diag, M, rside, mi, optimizer)
        x = np.asarray(r.x)
        small = diag_np & (np.abs(x) < SINGULAR_TOL)
        n_evals += int(r.nfev) + x0.shape[0] + int(small.any())
        n_iter += int(r.n_iter)
        status = int(r.status)
        if status == 4:
            if restarts:  # pragma: no cover - restarts begin at finite points
                raise FitError("the objective is not finite at a restart point")
            raise FitError(f"the objective is not finite at the starting values (theta = {np.round(t0, 6).tolist()}): "
                           "give finite, moderate start values")
        f, g = float(r.fun), np.asarray(r.grad)
        k_snap = x.shape[0]  # the snapped point comes after the d Hessian points
        h = finish.fd_step(x)
        H = finish.forward_hessian(np.asarray(r.extra_g[:k_snap]), g, h)
        snapped = small.any() and finish.snap_ok(float(r.extra_f[k_snap]), f)
        free = ~small if snapped else np.ones_like(small)
        lam, _ = finish.min_eigen(H, free)
        saddle = finish.negative_curvature(lam, H, free)
        if restarts < finish.MAX_RESTARTS and np.isfinite(f) and status != 2:  # (not at the iteration limit)
            lower, n = finish.lower_start(x, x0, g, H, free, f, lambda p: _value(p, d, diag, M, rside, mi))
            n_evals += n
            if lower is not None:
                x0, restarts = lower, restarts + 1
                continue
            saddle = False  # no lower point along the suspect directions: curvature noise
        break
    if snapped:
        x, f, g = np.where(small, 0.0, x), float(r.extra_f[k_snap]), np.asarray(r.extra_g[k_snap])
    else:
        small = np.zeros_like(small)
    if not (np.isfinite(f) and np.all(np.isfinite(x))):
        raise FitError("the fit ended at a point where the objective is not finite; check the data for extreme "
                       "values or give other start values")
    singular = bool(np.any(np.abs(x[diag_np]) < SINGULAR_TOL))
    theta, sign = rectify((x * dv)[:k], M.specs)
    theta = np.concatenate([theta, x[k:]])
    sign = np.concatenate([sign, np.ones(len(x) - k)])
    # the objective is even in the sign of each template column: flip the gradient with it
    g = g * sign
    gmax = float(np.max(np.abs(g[~small]))) if (~small).any() else 0.0
    ok = bool(finish.converged(status, gmax, f)) and not saddle
    msg = finish.message(status)
    if saddle:
        msg += "; the Hessian has a negative eigenvalue there (a saddle point, not a minimum)"
    return ThetaFit(
        theta=theta, objective=f, grad=g, n_iter=n_iter, n_evals=n_evals, status=status, converged=ok,
        message=msg, singular=singular, hessian_min_eig=lam, restarts=restarts,
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


def conditional_estimates(theta: np.ndarray, M: ModelArrays, layout: PadLayout | None = None) -> Conditional:
    """Fixed effects, sigma, Var(beta), conditional modes and variances at ``theta``.
    ``layout``: the padding of ``M`` (:meth:`jaxlmm.lmm.model.LmerModel.analysis`), if any; the
    factor and the solution are cut back to the unpadded structure."""
    f, x_bd, x_tail = _solve_at(jnp.asarray(theta), M)
    if layout is None:
        s = jax.tree_util.tree_map(np.asarray, M.structure)
        f_diag, f_off = [np.asarray(d) for d in f.diag], {n: np.asarray(v) for n, v in f.off.items()}
        tail, x_tail = np.asarray(f.tail), np.asarray(x_tail)
    else:
        s = layout.structure
        f_diag, f_off, tail = unpad_factor(layout, f.diag, f.off, f.tail)
        x_bd, x_tail = unpad_solution(layout, x_bd, x_tail)
    mz, p = s.m - (M.p + 1), M.p
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
    n = float(M.n)
    nu = n - p if M.reml else n
    sigma2 = r2 / nu
    if p:
        LXinv = np.linalg.inv(np.tril(tail[mz : mz + p, mz : mz + p]))
        vcov = sigma2 * (LXinv.T @ LXinv)
    else:
        vcov = np.zeros((0, 0))
    Ts = templates_np(theta, M.specs)
    b = [u[i] @ Ts[i].T for i in range(k)]
    return Conditional(beta=beta, vcov=vcov, sigma=float(np.sqrt(sigma2)), b=b, templates=Ts,
                       structure=s, factor=(f_diag, f_off, tail))
