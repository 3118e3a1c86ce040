"""Penalised nonlinear least squares (PNLS) for the conditional modes, and the Laplace and
adaptive Gauss-Hermite ``-2 log L`` of a nonlinear mixed model (lme4's ``nlmer``), with exact
gradients.

PNLS minimises ``g(u, beta) = sum_r w_r (y_r - f_r)^2 + |u|^2`` (:mod:`jaxlmm.nlmm.system`) in
``u`` at fixed ``(theta, beta)`` (Laplace, AGQ), or in ``(u, beta)`` together (nlme's PNLS step,
Lindstrom-Bates), by Gauss-Newton steps on the blocked Cholesky, halved while ``g`` increases.

Laplace (lme4's nlmer), with the Gauss-Newton curvature at the mode ``u*``:

    -2 log L = n log(2 pi sigma^2) - sum log w + g(u*) / sigma^2 + log det(I + Lambda' Z' W J J' Z Lambda).

With a linear ``f`` it is the LMM's ML deviance exactly. Adaptive Gauss-Hermite (one scalar term):
per level ``j`` the integral over ``u_j`` of ``exp(-g_j / (2 sigma^2))`` at nodes
``u*_j + sigma sqrt(2 / h_j) z_k``, ``h_j`` the level's Gauss-Newton curvature (one node: Laplace).

Gradients: ``u*`` depends on ``x = (theta, beta)`` through ``grad_u g(u*, x) = 0``; by the implicit
function theorem ``du*/dx = -H^{-1} d(grad_u g / 2)/dx`` with ``H`` the exact Hessian of ``g / 2``
in ``u`` (:func:`jaxlmm.nlmm.system.exact_factor`). :func:`at_mode` returns ``u*`` with that
derivative (reverse mode): the backward pass factors ``H`` once, solves ``H lambda = u_bar`` and
pulls ``lambda`` back through the mixed second derivative, a few passes over the rows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..kernels import solve_leading
from ..precision import zero_cotangent
from .system import NlmmArrays, exact_factor, fixed_phi, gn_log_det, gn_solve, mean_at, mean_jacobian, random_phi

PNLS_MAX_ITER = 100
PNLS_MAX_HALVINGS = 30


def zero_modes(G: NlmmArrays, dtype=jnp.float64) -> list:
    return [jnp.zeros((G.nlevels[i], G.specs[i].p), dtype) for i in range(G.n_terms)]


def penalised(u, theta, beta, G: NlmmArrays, white=None):
    """``g(u, beta)`` (a scalar); with ``white``, the residual structure's whitened residuals."""
    phi = fixed_phi(beta, G) + random_phi(u, theta, G)
    r = G.y - mean_at(phi, G)
    if white is None:
        rss = jnp.sum(G.w * r * r)
    else:
        rss = jnp.sum(white((jnp.sqrt(G.w) * r)[:, None]) ** 2)
    return rss + sum(jnp.sum(v * v) for v in u)


def pnls(theta, beta, G: NlmmArrays, u0=None, joint: bool = False, max_iter: int | None = None, white=None):
    """Gauss-Newton with step halving from ``(u0, beta)``: returns ``(u, beta, g, iterations,
    converged)``. ``white``: the residual structure's whitening (nlme's PNLS with ``correlation``
    or ``weights``), a traceable map of ``(n, c)`` columns. Converged: the step's largest change is below ``1e-10 (1 + max |x|)``, or ``g``
    stops decreasing beyond rounding; a non-finite or increasing ``g`` after all halvings stops
    it unconverged."""
    max_iter = PNLS_MAX_ITER if max_iter is None else max_iter
    u0 = zero_modes(G, beta.dtype) if u0 is None else u0
    g0 = penalised(u0, theta, beta, G, white)

    def cond(c):
        return (~c[3]) & (c[2] < max_iter)

    def body(c):
        (u, b), g, it, _, _ = c
        phi_r = random_phi(u, theta, G)
        tu, tb, _ = gn_solve(theta, fixed_phi(b, G) + phi_r, phi_r, b, G, joint, white)
        du = [t - v for t, v in zip(tu, u)]
        db = tb - b

        def at(t):
            return [v + t * d for v, d in zip(u, du)], b + t * db

        def h_cond(h):
            t, gn, j = h
            return (~(gn <= g + 1e-15 * jnp.abs(g))) & (j < PNLS_MAX_HALVINGS)

        def h_body(h):
            t, _, j = h
            t = 0.5 * t
            un, bn = at(t)
            return t, penalised(un, theta, bn, G, white), j + 1

        g_full = penalised(tu, theta, tb, G, white)
        t, gn, _ = lax.while_loop(h_cond, h_body, (jnp.asarray(1.0, g.dtype), g_full, jnp.asarray(0)))
        ok = jnp.isfinite(gn) & (gn <= g + 1e-15 * jnp.abs(g))
        un, bn = at(t)
        un = [jnp.where(ok, a, v) for a, v in zip(un, u)]
        bn = jnp.where(ok, bn, b)
        gn = jnp.where(ok, gn, g)
        step = jnp.max(jnp.stack([jnp.max(jnp.abs(t * d)) for d in du] + [jnp.max(jnp.abs(t * db), initial=0.0)]))
        size = jnp.max(jnp.stack([jnp.max(jnp.abs(v)) for v in un] + [jnp.max(jnp.abs(bn), initial=0.0)]))
        small = step <= 1e-10 * (1.0 + size)
        stalled = (g - gn) <= 1e-15 * jnp.abs(g)
        return (un, bn), gn, it + 1, small | stalled | ~ok, ok

    init = ((u0, beta), g0, jnp.asarray(0), jnp.asarray(False), jnp.isfinite(g0))
    (u, b), g, it, done, ok = lax.while_loop(cond, body, init)
    return u, b, g, it, done & ok & jnp.isfinite(g)


def _half_gradient(u, theta, beta, G):
    return jax.grad(lambda v: 0.5 * penalised(v, theta, beta, G))(u)


@jax.custom_vjp
def at_mode(u_star, theta, beta, G: NlmmArrays) -> list:
    """The mode ``u*`` itself, with the implicit derivative (module docstring; reverse mode)."""
    return u_star


def _at_mode_fwd(u_star, theta, beta, G):
    return u_star, (u_star, theta, beta, G)


def _at_mode_bwd(res, u_bar):
    u_star, theta, beta, G = res
    phi = fixed_phi(beta, G) + random_phi(u_star, theta, G)
    lam = solve_leading(G.structure, exact_factor(theta, phi, G), list(u_bar))
    _, vjp = jax.vjp(lambda t, b: _half_gradient(u_star, t, b, G), theta, beta)
    t_bar, b_bar = vjp(lam)
    return ([jnp.zeros_like(v) for v in u_star], -t_bar, -b_bar, zero_cotangent(G))


at_mode.defvjp(_at_mode_fwd, _at_mode_bwd)


def unpack(x, G: NlmmArrays):
    """``x = (theta, beta, log sigma)`` -> ``(theta, beta, sigma)``."""
    k, p = G.n_theta, G.p
    return x[:k], x[k : k + p], jnp.exp(x[k + p])


def laplace_at(u, theta, beta, sigma, G: NlmmArrays):
    """The Laplace ``-2 log L`` at the modes ``u`` (module docstring)."""
    phi = fixed_phi(beta, G) + random_phi(u, theta, G)
    r = G.y - mean_at(phi, G)
    g = jnp.sum(G.w * r * r) + sum(jnp.sum(v * v) for v in u)
    n = G.y.shape[0]
    s2 = sigma * sigma
    return n * jnp.log(2.0 * jnp.pi * s2) - jnp.sum(jnp.log(G.w)) + g / s2 + gn_log_det(theta, phi, G)


def agq_at(u, theta, beta, sigma, G: NlmmArrays, nodes, weights):
    """Adaptive Gauss-Hermite ``-2 log L`` for one scalar term (module docstring)."""
    codes, L = G.codes[0], G.nlevels[0]
    k = G.term_params[0][0]
    c = G.cols[0][:, 0]
    th = theta[0]
    base = fixed_phi(beta, G)
    u0 = u[0][:, 0]
    phi = base.at[:, k].add(th * c * u0[codes])
    _, J = mean_jacobian(phi, G)
    h = 1.0 + th * th * jax.ops.segment_sum(G.w * (J[:, k] * c) ** 2, codes, num_segments=L)
    s2 = sigma * sigma
    spread = sigma * jnp.sqrt(2.0 / h)

    def node(zk):
        v = u0 + spread * zk
        r = G.y - mean_at(base.at[:, k].add(th * c * v[codes]), G)
        gj = jax.ops.segment_sum(G.w * r * r, codes, num_segments=L) + v * v
        return -0.5 * gj / s2 + zk * zk

    terms = jax.vmap(node)(nodes) + jnp.log(weights)[:, None]  # (nodes, L)
    log_int = jax.scipy.special.logsumexp(terms, axis=0) + jnp.log(spread)
    n = G.y.shape[0]
    const = (n + L) * jnp.log(2.0 * jnp.pi * s2) - jnp.sum(jnp.log(G.w))
    return const - 2.0 * jnp.sum(log_int)


def objective_aux(x, prev, G: NlmmArrays):
    """``-2 log L`` (Laplace, or AGQ with ``G.nagq`` nodes) at ``x = (theta, beta, log sigma)``,
    ``inf`` where PNLS fails (a line search then steps back), with ``(u, PNLS iterations,
    converged)`` as aux. ``prev``: an earlier aux; PNLS starts from its modes when they
    converged and are finite, else from zero."""
    theta, beta, sigma = unpack(x, G)
    sg = lax.stop_gradient
    u0 = None
    if prev is not None:
        pu, _, pok = prev
        good = pok & jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in pu]))
        u0 = [jnp.where(good, sg(v), 0.0) for v in pu]
    u, _, _, it, ok = pnls(sg(theta), sg(beta), G, u0=u0)
    u = at_mode([sg(v) for v in u], theta, beta, G)
    if G.nagq == 1:
        f = laplace_at(u, theta, beta, sigma, G)
    else:
        z, wz = np.polynomial.hermite.hermgauss(G.nagq)
        f = agq_at(u, theta, beta, sigma, G, jnp.asarray(z), jnp.asarray(wz))
    f = jnp.where(ok & jnp.isfinite(f), f, jnp.inf)
    return f, (u, it, ok)


def aux_zeros(G: NlmmArrays):
    it = np.int64 if jax.config.jax_enable_x64 else np.int32
    u = [np.zeros((G.nlevels[i], G.specs[i].p)) for i in range(G.n_terms)]
    return u, np.asarray(0, it), np.asarray(False)


def objective(x, G: NlmmArrays):
    """:func:`objective_aux` from zero modes, the value only."""
    return objective_aux(x, None, G)[0]


def fitted_at(u, theta, beta, G: NlmmArrays):
    """``f`` at the modes and ``f`` at ``u = 0`` (population), both ``(n,)``, and the Jacobian
    ``J (n, P)`` at the modes."""
    base = fixed_phi(beta, G)
    f, J = mean_jacobian(base + random_phi(u, theta, G), G)
    return f, mean_at(base, G), J
