"""The Laplace / adaptive Gauss-Hermite NLMM engine (lme4's ``nlmer`` second stage): BFGS over
``x = (theta, beta, log sigma)`` with exact gradients of ``-2 log L`` (:mod:`jaxlmm.nlmm.pnls`),
the conditional modes from PNLS at every evaluation (warm-started from the previous one), the
Hessian by central differences of the exact gradient in the same compiled loop, and the end
checks every family shares (:mod:`jaxlmm.optim.finish`).

The optimiser works on ``x / d``: ``d`` is 1 for theta and ``log sigma`` and ``max(|beta_0|, 1e-3)``
for each fixed effect, so that a parameter's units (a circumference of 700 days) do not set
the search's step lengths.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ..covariance.templates import diagonal_mask, rectify
from ..errors import FitError
from ..optim import finish
from ..optim.bfgs import bfgs_init, bfgs_result, bfgs_run, minimize_bfgs, run_in_chunks
from ..optim.finish import SINGULAR_TOL, central_hessian, central_points, fd_step
from ..precision import float64
from . import pnls
from .system import NlmmArrays


@dataclasses.dataclass(frozen=True)
class NlmmOptimum:
    """The end of a Laplace/AGQ optimisation: ``x = (theta, beta, log sigma)`` rectified,
    ``x_raw`` before rectification (the modes ``u`` belong to it), ``H`` the Hessian of
    ``objective = -2 log L`` in ``x``, ``boundary`` the theta entries snapped to 0, diagnostics."""

    x: np.ndarray
    x_raw: np.ndarray
    objective: float
    grad: np.ndarray
    H: np.ndarray
    n_iter: int
    n_evals: int
    status: int
    converged: bool
    message: str
    singular: bool
    boundary: np.ndarray
    u: list
    pnls_iterations: int
    pnls_converged: bool
    hessian_min_eig: float
    restarts: int
    gmax: float


def _internal(x, prev, d, G):
    """:func:`jaxlmm.nlmm.pnls.objective_aux` at ``x * d`` (the optimiser's coordinates)."""
    return pnls.objective_aux(x * d, prev, G)


@jax.jit
def _fit_program(carry, budget, d, diag_mask, G: NlmmArrays, max_iter, snap_tol):
    return bfgs_run(_internal, carry, d, G, budget=budget, gtol=1e-6, max_iter=max_iter,
                    extra_points=lambda x: central_points(x, diag_mask, snap_tol), has_aux=True, feed_aux=True)


def fit_core(xi0, d, diag_mask, G: NlmmArrays, max_iter):
    """BFGS from ``xi0`` (the optimiser's coordinates ``x / d``) then the gradients at the
    ``2 len(x) + 1`` points of :func:`central_points` (no snapping), in one traceable loop (for
    ``vmap`` over responses)."""
    return minimize_bfgs(_internal, xi0, d, G, gtol=1e-6, max_iter=max_iter,
                         extra_points=lambda x: central_points(x, diag_mask, 0.0), n_extra=2 * xi0.shape[0] + 1,
                         has_aux=True, feed_aux=True)


def _run(x0, d, diag, G, mi, snap_tol):
    carry = bfgs_init(_internal, np.asarray(x0, np.float64), d, G, n_extra=2 * x0.shape[0] + 1, has_aux=True,
                      feed_aux=True, aux0=pnls.aux_zeros(G))
    return bfgs_result(run_in_chunks(_fit_program, carry, d, diag, G, mi, np.asarray(snap_tol)))


@jax.jit
def _value_program(x, G):
    return pnls.objective(x, G)


def x_scale(beta0: np.ndarray, k: int) -> np.ndarray:
    return np.concatenate([np.ones(k), np.maximum(np.abs(beta0), 1e-3), [1.0]])


def optimise(G: NlmmArrays, x0: np.ndarray, max_iter: int = 1000) -> NlmmOptimum:
    """Minimise ``-2 log L`` from ``x0`` (module docstring); snap boundary theta to zero when no
    worse, probe a saddle or stationary start and restart from a lower point found, rectify the
    template signs (call under ``float64()``)."""
    k, p = G.n_theta, G.p
    dv = x_scale(x0[k : k + p], k)
    diag = np.concatenate([diagonal_mask(G.specs), np.zeros(p + 1, bool)])
    mi = np.asarray(int(max_iter))
    xi0 = np.asarray(x0, np.float64) / dv
    n_evals = n_iter = restarts = 0
    while True:
        r = _run(xi0, dv, diag, G, mi, SINGULAR_TOL)
        status = int(r.status)
        n_evals += int(r.nfev) + 2 * len(xi0) + 1
        n_iter += int(r.n_iter)
        if status == 4:
            raise FitError("the NLMM objective is not finite at the starting values: PNLS found no conditional "
                           "modes there; check the start values and the model")
        x, f, g = np.asarray(r.x), float(r.fun), np.asarray(r.grad)
        small = diag & (np.abs(x) < SINGULAR_TOL)
        if small.any():
            if finish.snap_ok(float(r.extra_f[0]), f):
                x, f, g = np.where(small, 0.0, x), float(r.extra_f[0]), np.asarray(r.extra_g[0])
            else:
                r = _run(x, dv, diag, G, mi, 0.0)
                x, f, g = np.asarray(r.x), float(r.fun), np.asarray(r.grad)
                n_evals += int(r.nfev) + 2 * len(x) + 1
                small = np.zeros_like(small)
        H = central_hessian(np.asarray(r.extra_g[1:]), fd_step(x))
        free = ~small
        lam, _ = finish.min_eigen(H, free)
        if restarts < finish.MAX_RESTARTS and np.isfinite(f) and status != 2:
            lower, n = finish.lower_start(x, xi0, g, H, free, f,
                                          lambda q: float(_value_program(jnp.asarray(q * dv), G)))
            n_evals += n
            if lower is not None:
                xi0, restarts = lower, restarts + 1
                continue
        break
    u, it, ok = r.aux
    u, it, ok = [np.asarray(v) for v in u], int(it), bool(ok)
    if not (np.isfinite(f) and np.all(np.isfinite(x))):
        raise FitError("the NLMM fit ended where -2 log L is not finite; check the data and start values")
    minimum = bool(np.isfinite(lam) and lam > 0.0)
    singular = bool(np.any(np.abs(x[diag]) < SINGULAR_TOL))
    x, g, H = x * dv, g / dv, H / np.outer(dv, dv)
    x_raw = x.copy()
    theta, sign = rectify(x[:k], G.specs)
    x[:k] = theta
    sign = np.concatenate([sign, np.ones(len(x) - k)])
    g, H = g * sign, H * np.outer(sign, sign)
    gi = (g * dv)[~small]
    gmax = float(np.max(np.abs(gi))) if gi.size else 0.0
    converged = bool(finish.converged(status, gmax, f)) and minimum
    msg = finish.message(status)
    if not minimum:
        msg += ("; the Hessian of -2 log L is not positive definite there (a flat direction or a saddle, not a "
                "minimum): try other start values")
    return NlmmOptimum(x=x, x_raw=x_raw, objective=f, grad=g, H=H, n_iter=n_iter, n_evals=n_evals, status=status,
                       converged=converged, message=msg, singular=singular, boundary=small, u=u,
                       pnls_iterations=it, pnls_converged=ok, hessian_min_eig=lam, restarts=restarts, gmax=gmax)


@jax.jit
def _nls_program(beta0, G: NlmmArrays):
    theta0 = jnp.zeros(G.n_theta, beta0.dtype)
    u, beta, g, it, ok = pnls.pnls(theta0, beta0, G, joint=True)
    return beta, g, ok


def nls_start(G: NlmmArrays, beta0: np.ndarray) -> tuple[np.ndarray, float, bool]:
    """Nonlinear least squares without random effects from ``beta0`` (Gauss-Newton, the joint
    PNLS at ``theta = 0``): ``(beta, residual sum of squares, converged)``."""
    with float64():
        beta, g, ok = _nls_program(jnp.asarray(beta0, jnp.float64), G)
        return np.asarray(beta), float(g), bool(ok)


def hessian_value(x: np.ndarray, G: NlmmArrays) -> float:
    """``-2 log L`` at ``x`` (tests and tools; call under ``float64()``)."""
    return float(_value_program(jnp.asarray(x), G))
