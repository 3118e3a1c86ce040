"""The GLMM engine: BFGS over ``(theta, beta[, log phi])`` and the record (lme4's
``optimizeGlmer`` + ``mkMerMod``).

The optimiser works on ``(theta, beta)`` together (lme4's second stage, ``nAGQ > 0``), and on
``log phi`` too for the Gamma family, with exact JAX gradients of the Laplace or adaptive
Gauss-Hermite ``-2 log L`` (:mod:`jaxlmm.glmm.pirls`). It starts from the GLM fit without random
effects and identity templates. ``Var(beta)`` is the ``beta`` block of ``2 H^{-1}``, ``H`` the
Hessian of ``-2 log L`` in ``(theta, beta)`` (lme4's default). ``H`` is the central difference of
the exact gradient (error about 1e-8 relative; lme4 differences the objective itself), one
vmapped program of ``2d + 1`` gradients that compiles in a third of the time of
``jax.hessian`` through the Newton steps, which it matches (tests).
"""

from __future__ import annotations

import functools
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from . import pirls, start
from ..covariance.templates import check_theta, diagonal_mask, rectify, templates_np, theta_names, theta_start
from ..errors import ArgumentError, FitError, FitWarning
from ..optim import finish
from ..optim.finish import SINGULAR_TOL, beta_covariance, central_hessian, central_points, fd_step
from ..optim.bfgs import bfgs_init, bfgs_result, bfgs_run, minimize_bfgs, run_in_chunks
from ..precision import float64
from ..progress import logger
from .model import GlmmModel
from .record import GlmmFit, GlmmOptimum, make_record


def fit_core(x0, G, nagq: int, max_iter, glm_beta, snap_tol):
    """BFGS over ``x = (theta, beta[, log phi])`` from ``x0`` (its ``beta`` and ``log phi``
    replaced by the GLM fit's when ``glm_beta``), then the value and gradient at the ``2d + 1``
    points of :func:`central_points` in the same loop, with the modes and linear predictor at
    the first (see :func:`jaxlmm.optimize.minimize_bfgs`). PIRLS starts from the modes of the
    previous evaluation. ``max_iter``, ``glm_beta`` and
    ``snap_tol`` are traced."""
    k, p = G.n_theta, G.p
    beta0, phi0 = start.glm_coefficients(G)
    xs = x0.at[k : k + p].set(beta0)
    if not G.scale_free:
        xs = xs.at[k + p].set(jnp.log(phi0))
    x0 = jnp.where(glm_beta, xs, x0)
    d = x0.shape[0]
    diag_mask = np.concatenate([diagonal_mask(G.specs), np.zeros(d - k, bool)])
    return minimize_bfgs(pirls.objective_aux, x0, G, nagq, gtol=1e-6, max_iter=max_iter,
                         extra_points=lambda x: central_points(x, diag_mask, snap_tol),
                         n_extra=2 * d + 1, has_aux=True, feed_aux=True)


def _internal_objective(nagq: int):
    """``-2 log L`` and the PIRLS aux at ``x = x_internal * d`` (see :meth:`GlmmModel.x_scale`)."""
    def fun(x, prev, d, G):
        return pirls.objective_aux(x * d, prev, G, nagq)
    return fun


@functools.partial(jax.jit, static_argnames=("nagq",))
def _fit_program(carry, budget, d, diag_mask, G, max_iter, glm_beta, snap_tol, nagq: int):
    """One chunk of the resumable BFGS over the internal parameters of ``(theta, beta[, log phi])``
    (:func:`jaxlmm.optimize.run_in_chunks`): before the first evaluation, ``beta`` and ``log phi``
    are replaced by the GLM fit's when ``glm_beta``; after the search, the ``2d + 1`` points of
    :func:`central_points` (the modes and linear predictor kept at the first). PIRLS starts
    from the modes of the previous evaluation."""
    k, p = G.n_theta, G.p

    def with_glm(c):
        beta0, phi0 = start.glm_coefficients(G)
        x = c.s.x.at[k : k + p].set(beta0 / d[k : k + p])
        if not G.scale_free:
            x = x.at[k + p].set(jnp.log(phi0))
        return c._replace(s=c.s._replace(x=x))

    carry = jax.lax.cond(glm_beta & carry.s.first, with_glm, lambda c: c, carry)
    return bfgs_run(_internal_objective(nagq), carry, d, G, budget=budget, gtol=1e-6, max_iter=max_iter,
                    extra_points=lambda x: central_points(x, diag_mask, snap_tol), has_aux=True, feed_aux=True)


@functools.partial(jax.jit, static_argnames=("nagq",))
def values_grads(X, G, nagq: int):
    """``-2 log L`` and its exact gradient at each row of ``X (m, d)`` (tests and tools)."""
    return jax.vmap(jax.value_and_grad(pirls.objective), in_axes=(0, None, None, None))(X, G, nagq, 1)


def hessian(model: "GlmmModel", x: np.ndarray) -> np.ndarray:
    """Hessian of ``-2 log L`` at ``x = (theta, beta[, log phi])`` by central differences of the
    exact gradient, with the steps a fit uses (``fd_step`` of the internal parameters
    :meth:`GlmmModel.x_scale`, on the user's scale; a separate program: fits get theirs from
    the optimiser's loop)."""
    with float64():
        x = np.asarray(x, dtype=np.float64)
        dv = model.x_scale()
        h = fd_step(x / dv) * dv
        E = np.diag(h)
        _, g = values_grads(jnp.asarray(np.vstack([x + E, x - E])), model.arrays(), model.nagq)
        return central_hessian(np.asarray(g), h)


def start_values(model: GlmmModel, start: dict | None) -> tuple[np.ndarray, bool]:
    """``x0`` and whether its ``beta`` (and ``log phi``) come from the GLM fit on the device.
    ``start``'s values are validated first (numbers, one per parameter, finite, theta's diagonal
    entries >= 0). Without a theta, the templates start at the identity of the internal scale."""
    dv = model.x_scale()
    theta = theta_start(model.specs) * dv[: model.n_theta]
    beta = np.zeros(model.p)
    glm_beta = True
    if start is not None:
        if not isinstance(start, dict) or not start or set(start) - {"theta", "beta"}:
            raise ArgumentError("start must be a dict with keys 'theta' and/or 'beta'")
        if "theta" in start:
            theta = check_theta(start["theta"], model.specs, theta_names(model.design.terms), "start['theta']")
        if "beta" in start:
            try:
                beta = np.asarray(start["beta"], dtype=np.float64).ravel()
            except (TypeError, ValueError):
                raise ArgumentError(f"start['beta'] must be numbers, got {start['beta']!r}") from None
            if beta.shape[0] != model.p:
                raise ArgumentError(f"start['beta'] has {beta.shape[0]} values; this model has {model.p} "
                                    f"({', '.join(model.design.x_names)})")
            if not np.all(np.isfinite(beta)):
                j = int(np.nonzero(~np.isfinite(beta))[0][0])
                raise ArgumentError(f"start['beta'][{j}] ({model.design.x_names[j]}) is {beta[j]}: start values "
                                    "must be finite")
            glm_beta = False
    x0 = np.concatenate([theta, beta])
    if not model.family.scale_free:
        x0 = np.append(x0, 0.0)
    return x0, glm_beta


def _init(model: GlmmModel, x: np.ndarray, d, G):
    """The optimiser's start at internal ``x``."""
    return bfgs_init(_internal_objective(model.nagq), np.asarray(x, np.float64), d, G, n_extra=2 * x.shape[0] + 1,
                     has_aux=True, feed_aux=True, aux0=pirls.aux_zeros(G))


def _run(model: GlmmModel, x0: np.ndarray, d, diag, G, mi, glm_beta: bool, snap_tol: float):
    carry = _init(model, x0, d, G)
    carry = run_in_chunks(_fit_program, carry, d, diag, G, mi, np.asarray(glm_beta), np.asarray(snap_tol),
                          model.nagq)
    return carry


def _value(model, x: np.ndarray, d, diag, G, mi) -> float:
    """``-2 log L`` at internal ``x`` through the same compiled program (one evaluation)."""
    carry = _init(model, x, d, G)
    carry = _fit_program(carry, np.asarray(1), d, diag, G, mi, np.asarray(False), np.asarray(0.0), model.nagq)
    return float(carry.s.f)


def optimise(model: GlmmModel, x0: np.ndarray, glm_beta: bool = False, max_iter: int = 1000) -> GlmmOptimum:
    """Minimise ``-2 log L`` from ``x0 = (theta, beta[, log phi])`` on the internal scale
    (:meth:`GlmmModel.x_scale`) in interruptible chunks; snap boundary theta to zero when that is
    no worse (else run again from the optimum without snapping); probe a stationary start or a
    saddle and restart from a lower point found (:mod:`jaxlmm.finish`); rectify the template
    signs. Returns the estimates ``x``, ``objective``, ``grad``, the Hessian ``H`` (user scale),
    the modes ``u`` (for the unrectified ``x_raw``), ``eta``, the PIRLS diagnostics and the
    Hessian's smallest eigenvalue off the boundary (internal scale)."""
    k = model.n_theta
    dv = model.x_scale()
    diag = np.concatenate([diagonal_mask(model.specs), np.zeros(len(x0) - k, bool)])
    with float64():
        G = model.arrays()
        d, dmask, mi = dv, diag, np.asarray(int(max_iter))
        xi0 = np.asarray(x0, dtype=np.float64) / dv
        n_evals = n_iter = restarts = 0
        while True:
            r = bfgs_result(_run(model, xi0, d, dmask, G, mi, glm_beta, SINGULAR_TOL))
            status = int(r.status)
            n_evals += int(r.nfev) + 2 * len(xi0) + 1
            n_iter += int(r.n_iter)
            if status == 4:
                raise FitError("the GLMM objective is not finite at the starting values: PIRLS found no "
                               "conditional modes there; check the response, offset and start values")
            x, f, g = np.asarray(r.x), float(r.fun), np.asarray(r.grad)
            small = diag & (np.abs(x) < SINGULAR_TOL)
            if small.any():
                if finish.snap_ok(float(r.extra_f[0]), f):
                    x, f, g = np.where(small, 0.0, x), float(r.extra_f[0]), np.asarray(r.extra_g[0])
                else:  # the boundary is worse: derivatives at the optimum itself
                    r = bfgs_result(_run(model, x, d, dmask, G, mi, False, 0.0))
                    x, f, g = np.asarray(r.x), float(r.fun), np.asarray(r.grad)
                    n_evals += int(r.nfev) + 2 * len(x) + 1
                    small = np.zeros_like(small)
            h = fd_step(x)
            H = central_hessian(np.asarray(r.extra_g[1:]), h)
            free = ~small
            lam, _ = finish.min_eigen(H, free)
            if restarts < finish.MAX_RESTARTS and np.isfinite(f) and status != 2:  # (not at the iteration limit)
                lower, n = finish.lower_start(x, xi0, g, H, free, f, lambda p_: _value(model, p_, d, dmask, G, mi))
                n_evals += n
                if lower is not None:
                    xi0, glm_beta, restarts = lower, False, restarts + 1
                    continue
            break
        u, eta, it, ok = r.aux
        u, eta, it, ok = [np.asarray(v) for v in u], np.asarray(eta)[: model.n], int(it), bool(ok)
    if not (np.isfinite(f) and np.all(np.isfinite(x))):
        raise FitError("the GLMM fit ended at a point where -2 log L is not finite; check the data and start values")
    minimum = bool(np.isfinite(lam) and lam > 0.0)  # positive definite off the boundary
    singular = bool(np.any(np.abs(x[diag]) < SINGULAR_TOL))
    x = x * dv
    g = g / dv
    H = H / np.outer(dv, dv)
    x_raw = x.copy()
    theta, sign = rectify(x[:k], model.specs)
    x[:k] = theta
    sign = np.concatenate([sign, np.ones(len(x) - k)])
    g = g * sign
    H = H * np.outer(sign, sign)
    gi = (g * dv)[~small]  # the convergence rule on the internal (scale-free) gradient
    gmax = float(np.max(np.abs(gi))) if gi.size else 0.0
    converged = bool(finish.converged(status, gmax, f)) and minimum
    msg = finish.message(status)
    if not minimum:
        msg += ("; the Hessian of -2 log L is not positive definite there (a flat direction or a saddle, "
                "not a minimum): try other start values")
    return GlmmOptimum(x=x, x_raw=x_raw, objective=f, grad=g, H=H, n_iter=n_iter, n_evals=n_evals, status=status,
                converged=converged, message=msg, singular=singular,
                boundary=small, u=u, eta=eta, pirls_iterations=it, pirls_converged=ok and bool(np.isfinite(f)),
                hessian_min_eig=lam, restarts=restarts, gmax=gmax)


def separation(model: GlmmModel, eta: np.ndarray) -> str | None:
    """R's ``glm`` warning for fitted means at the edge of the support (complete or quasi-complete
    separation: some fixed effects tend to infinity): probabilities within ``10 eps`` of 0 or 1,
    Poisson means within ``10 eps`` of 0. None otherwise."""
    fam = model.family
    if fam.name not in ("binomial", "poisson"):
        return None
    eps = 10 * np.finfo(np.float64).eps
    mu = model.mean(eta)
    if fam.name == "binomial" and np.any((mu < eps) | (mu > 1.0 - eps)):
        return ("fitted probabilities numerically 0 or 1 occurred (complete or quasi-complete separation: "
                "the fixed effects that separate the outcomes tend to infinity; their estimates and SEs are not "
                "meaningful)")
    if fam.name == "poisson" and np.any(mu < eps):
        return "fitted rates numerically 0 occurred (some fixed effects tend to minus infinity)"
    return None


def fit_glmm(model: GlmmModel, x0: np.ndarray, *, glm_beta: bool = False, max_iter: int = 1000,
             t0: float | None = None, stacklevel: int = 3, result_type: type = GlmmFit) -> GlmmFit:
    """Optimise and assemble the record, a ``result_type`` (:class:`GlmmFit` or the user-facing
    :class:`jaxlmm.GlmerResult`) (lme4's ``optimizeGlmer`` + ``mkMerMod``)."""
    t0 = time.perf_counter() if t0 is None else t0
    o = optimise(model, x0, glm_beta=glm_beta, max_iter=max_iter)
    if not np.isfinite(o.objective):
        raise FitError("the GLMM objective is not finite at the starting values: PIRLS found no "
                       "conditional modes there; check the response, offset and start values")
    k, p = model.n_theta, model.p
    V, vcov_ok = beta_covariance(o.H, k, p, o.boundary)
    pirls_ok = o.pirls_converged
    warn = []
    if not pirls_ok:
        warn.append(f"PIRLS did not converge to the conditional modes at the estimates "
                    f"({o.pirls_iterations} iterations)")
    if not o.converged:
        warn.append(f"the optimiser did not converge ({o.message}; max |gradient| {o.gmax:.3g})")
    sep = separation(model, o.eta)
    if sep:
        warn.append(sep)
    if o.singular and model.design.terms:
        warn.append("boundary (singular) fit: a variance component is zero or a correlation is +-1")
    if not vcov_ok:
        warn.append("the Hessian of -2 log L is not positive definite: standard errors are NaN")
    info = dict(optimizer="bfgs (jax)", converged=bool(o.converged and pirls_ok), status=o.status,
                message=o.message, n_iter=o.n_iter, n_evals=o.n_evals, grad=o.grad,
                grad_norm=float(np.max(np.abs(o.grad))) if o.grad.size else 0.0,
                pirls_converged=pirls_ok, pirls_iterations=o.pirls_iterations, hessian_ok=vcov_ok,
                hessian_min_eig=o.hessian_min_eig, restarts=o.restarts,
                warnings=tuple(warn), time_s=time.perf_counter() - t0)
    # b = Lambda u with the templates the modes were computed with (sign flips leave b unchanged)
    b = [ui @ T.T for ui, T in zip(o.u, templates_np(o.x_raw[:k], model.specs))]
    result = make_record(model, o, V, b, info, result_type)
    logger.info("fitted glmer %s (%s, nagq=%d): %d evaluations, %.2f s, -2 log L %.6f%s",
                model.design.formula.formula, model.family, model.nagq, o.n_evals, info["time_s"],
                o.objective, "" if not warn else " (" + "; ".join(warn) + ")")
    if warn:
        warnings.warn("; ".join(warn) + " (details in fit.diagnostics)", FitWarning, stacklevel=stacklevel)
    return result
