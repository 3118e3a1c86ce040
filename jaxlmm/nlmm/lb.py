"""nlme's Lindstrom-Bates algorithm (``method="lb"``), run to its fixed point.

Each outer iteration alternates

1. **PNLS**: at fixed ``theta``, minimise ``g(u, beta)`` over ``(u, beta)`` together
   (:func:`jaxlmm.nlmm.pnls.pnls` with ``joint=True``: Gauss-Newton on the blocked Cholesky);
2. **LME**: linearise ``f`` there, ``f(beta', b') ~ f + X~ (beta' - beta) + sum_i Z~_i (b_i' - b_i)``
   with ``X~ = df/dbeta`` and the Gauss-Newton columns ``Z~_i[r, c] = Z_i[r, c] J_r[param(i, c)]``,
   and fit the linear mixed model ``w = X~ beta' + Z~ b' + e`` to the pseudo-response
   ``w = y - f + X~ beta + Z~ b`` by ML or REML with the LMM engine (:func:`jaxlmm.lmm.engine.fit_model`),
   which gives the new ``theta``.

At the fixed point the LME's fixed effects equal PNLS's (the normal equations of the
linearised model at ``(beta, b)`` are PNLS's stationarity conditions), and the fit's
log-likelihood, fixed effects, standard errors and variance components are those of the last
LME, as nlme reports them. Iterations stop when theta, beta and the LME objective change by
less than ``1e-7`` relative in the compiled loop (nlme stops at about ``1e-5`` from its fixed
point).
"""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from ..covariance.templates import rectify
from ..errors import FitWarning
from ..kernels import blocked_cholesky
from ..kernels.cholesky import blocked_log_diagonal
from ..lmm.engine import fit_model
from ..lmm.model import LmerModel
from ..lmm.objective import criterion_from_log_diagonal, scale_blocks
from ..lmm.record import LmmFit
from ..optim.bfgs import minimize_bfgs
from ..precision import float64
from ..rside.residual import RSideArrays, whiten_rows
from . import pnls
from .design import NlmmDesign
from .system import NlmmArrays, beta_jacobian, fixed_phi, gn_columns, gn_weights, gram_blocks, mean_jacobian, random_phi

LB_MAX_ITER = 200
LB_RTOL = 1e-7
# the host confirmation: the LMM engine's theta carries its optimiser's tolerance (about 1e-7
# relative), so a fixed point is confirmed when theta moves by less than 1e-5, beta by less than
# 1e-6 and the criterion by less than 1e-9 relative
HOST_RTOL = (1e-5, 1e-6, 1e-9)


@dataclasses.dataclass(frozen=True)
class LbEnd:
    """The fixed point: the last LME fit (``lme``), the PNLS modes ``u`` and ``beta`` there, the
    outer iterations and whether they (and the last PNLS) converged."""

    lme: LmmFit
    u: list
    beta: np.ndarray
    theta: np.ndarray
    iterations: int
    converged: bool
    pnls_converged: bool
    lme_warnings: tuple


@jax.jit
def _pnls_program(theta, beta, u0, G: NlmmArrays):
    u, beta, g, it, ok = pnls.pnls(theta, beta, G, u0=u0, joint=True)
    return u, beta, ok


@jax.jit
def _pnls_white_program(theta, beta, u0, G: NlmmArrays, nat, R: RSideArrays):
    """PNLS with the residual structure's whitening at its natural parameters ``nat``."""
    u, beta, g, it, ok = pnls.pnls(theta, beta, G, u0=u0, joint=True, white=lambda V: whiten_rows(nat, R, V))
    return u, beta, ok


@jax.jit
def _linearise(theta, beta, u, G: NlmmArrays):
    """``X~ (n, p)``, ``Z~_i (n, w_i)`` and the pseudo-response ``w (n,)`` at the modes."""
    phi_r = random_phi(u, theta, G)
    f, J = mean_jacobian(fixed_phi(beta, G) + phi_r, G)
    Xt = beta_jacobian(J, G)
    return Xt, gn_columns(J, G), G.y - f + Xt @ beta + jnp.sum(J * phi_r, axis=1)


def _lme_criterion(theta, diag0, off0, G: NlmmArrays, reml: bool):
    """The linearised LMM's ML deviance or REML criterion at ``theta`` from its Gram blocks."""
    d, o = scale_blocks(theta, G.specs, diag0, off0)
    bd, lead, trail = blocked_log_diagonal(G.joint, d, o, G.p + 1, False)
    return criterion_from_log_diagonal(bd, lead, trail, G.y.shape[0], G.p, reml, jnp.sum(jnp.log(G.w)))


def _linear_gram(theta, beta, u, G: NlmmArrays):
    """The linearised LMM's unscaled Gram blocks of ``[Z~ X~ w]`` at PNLS's ``(u, beta)`` under
    ``theta`` (the LME step's data)."""
    phi_r = random_phi(u, theta, G)
    f, J = mean_jacobian(fixed_phi(beta, G) + phi_r, G)
    Xt = beta_jacobian(J, G)
    w = G.y - f + Xt @ beta + jnp.sum(J * phi_r, axis=1)
    return gram_blocks(gn_weights(J, G), J, jnp.concatenate([Xt, w[:, None]], axis=1), G, 0.0)


def lb_iterations(theta0, beta0, G: NlmmArrays, reml: bool, max_outer):
    """The Lindstrom-Bates iterations (module docstring), traceable: the last ``theta`` (the
    LME step's), ``beta`` and modes ``u`` (PNLS's before it), the LME criterion, the number of
    iterations, whether they met the tolerance, and the ``theta`` PNLS used last."""

    def body(c):
        theta, beta, u, it, _, prev, _ = c
        u, beta, _, _, _ = pnls.pnls(theta, beta, G, u0=u, joint=True)
        diag0, off0 = _linear_gram(theta, beta, u, G)
        r = minimize_bfgs(lambda t: _lme_criterion(t, diag0, off0, G, reml), theta, gtol=1e-9, max_iter=500)
        d_theta = jnp.max(jnp.abs(r.x - theta) / (1.0 + jnp.abs(theta)), initial=0.0)
        done = (it > 0) & (d_theta <= LB_RTOL) & (jnp.abs(r.fun - prev) <= 1e-2 * LB_RTOL * (1.0 + jnp.abs(r.fun)))
        return r.x, beta, u, it + 1, done, r.fun, theta

    def cond(c):
        return (~c[4]) & (c[3] < max_outer)

    init = (theta0, beta0, pnls.zero_modes(G, beta0.dtype), jnp.asarray(0), jnp.asarray(False),
            jnp.asarray(jnp.inf, beta0.dtype), theta0)
    return jax.lax.while_loop(cond, body, init)


_lb_program = jax.jit(lb_iterations, static_argnames=("reml",))


def lme_beta_covariance(theta_pnls, theta, beta, u, G: NlmmArrays, reml: bool):
    """``Var(beta)`` and ``sigma`` of the LME step at ``theta`` on the data linearised at PNLS's
    ``(u, beta)`` under ``theta_pnls``: with ``[R_X r]`` the last stage of the Cholesky factor of
    the scaled ``[Z~ Lambda, X~, w]`` system, ``sigma^2 = r^2 / nu`` (``nu = n - p`` for REML,
    ``n`` for ML) and ``Var(beta) = sigma^2 (R_X R_X')^{-1}`` (traceable)."""
    d, o = scale_blocks(theta, G.specs, *_linear_gram(theta_pnls, beta, u, G))
    tail = blocked_cholesky(G.joint, d, o).tail
    m, p = tail.shape[0], G.p
    R = tail[m - 1 - p : m - 1, m - 1 - p : m - 1]
    nu = G.y.shape[0] - (p if reml else 0)
    s2 = tail[m - 1, m - 1] ** 2 / nu
    Ri = jax.scipy.linalg.solve_triangular(R, jnp.eye(p, dtype=R.dtype), lower=True)
    return s2 * Ri.T @ Ri, jnp.sqrt(s2)


def _linear_design(design: NlmmDesign, Xt, Zt, w):
    base = design.lmm
    names = design.x_names
    terms = tuple(dataclasses.replace(t, columns=np.asarray(z)) for t, z in zip(base.terms, Zt))
    return dataclasses.replace(base, y=np.asarray(w), X=np.asarray(Xt), x_names=names, x_all_names=names,
                               dropped_columns=(), terms=terms, x_spec=None, offset=np.zeros(base.n))


def lindstrom_bates(design: NlmmDesign, G: NlmmArrays, beta0: np.ndarray, theta0: np.ndarray, reml: bool,
                    max_iter: int = LB_MAX_ITER, correlation=None, variance=None) -> LbEnd:
    """Alternate PNLS and LME steps from ``(theta0, beta0)`` to the fixed point: the compiled
    iterations, then host ones with the LMM engine until theta, beta and the criterion settle
    (module docstring). With a residual ``correlation`` or ``variance`` structure every
    iteration runs on the host: PNLS whitened by the structure at its last estimate (none at
    the first), the LME step fitted with it."""
    if correlation is not None or variance is not None:
        return _host_iterations(design, G, np.asarray(beta0, np.float64), np.asarray(theta0, np.float64), None, None,
                                reml, max_iter, 0, (correlation, variance))
    with float64():
        th, be, uj, n_jit, _, obj, _ = _lb_program(jnp.asarray(theta0, jnp.float64), jnp.asarray(beta0, jnp.float64),
                                                G, bool(reml), jnp.asarray(int(max_iter)))
        theta, beta = rectify(np.asarray(th), G.specs)[0], np.asarray(be)
        u, prev_obj = [np.asarray(v) for v in uj], float(obj)
    if not (np.all(np.isfinite(theta)) and np.all(np.isfinite(beta)) and np.isfinite(prev_obj)):
        theta, beta = np.asarray(theta0, np.float64), np.asarray(beta0, np.float64)
        u, prev_obj = None, None
    return _host_iterations(design, G, beta, theta, u, prev_obj, reml, max_iter, int(n_jit))


def _host_iterations(design, G, beta, theta, u, prev_obj, reml, max_iter, n_before, structures=(None, None)) -> LbEnd:
    lme = None
    converged = False
    msgs: list[str] = []
    it = 0
    R, nat, u_r = None, None, None  # the residual structure's device arrays and estimates
    for it in range(1, max_iter + 1):
        with float64():
            u0 = pnls.zero_modes(G) if u is None else [jnp.asarray(v) for v in u]
            if R is None:
                uj, bj, ok = _pnls_program(jnp.asarray(theta), jnp.asarray(beta), u0, G)
            else:
                uj, bj, ok = _pnls_white_program(jnp.asarray(theta), jnp.asarray(beta), u0, G, jnp.asarray(nat), R)
            Xt, Zt, w = _linearise(jnp.asarray(theta), bj, uj, G)
        u, beta_p, pnls_ok = [np.asarray(v) for v in uj], np.asarray(bj), bool(ok)
        model = LmerModel.from_design(_linear_design(design, Xt, Zt, w), *structures, moment_start=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FitWarning)
            lme = fit_model(model, reml=reml, start=theta if (it > 1 or prev_obj is not None) else None,
                            rside_start=u_r)
        msgs = [str(c.message) for c in caught if issubclass(c.category, FitWarning)]
        d_r = 0.0
        if model.rside is not None:
            with float64():
                R = model.rside_arrays()
            nat = np.asarray(lme._rside.natural)
            d_r = np.inf if u_r is None else np.max(np.abs(lme._rside.u - u_r) / (1.0 + np.abs(u_r)), initial=0.0)
            u_r = np.asarray(lme._rside.u)
        theta_new = np.asarray(lme.theta)
        beta_new = np.asarray(lme._fixef)
        d_theta = max(np.max(np.abs(theta_new - theta) / (1.0 + np.abs(theta)), initial=0.0), d_r)
        d_beta = np.max(np.abs(beta_new - beta_p) / (1.0 + np.abs(beta_p)), initial=0.0)
        d_obj = np.inf if prev_obj is None else abs(lme.objective - prev_obj) / (1.0 + abs(lme.objective))
        theta, beta, prev_obj = theta_new, beta_p, lme.objective
        if d_theta <= HOST_RTOL[0] and d_beta <= HOST_RTOL[1] and d_obj <= HOST_RTOL[2]:
            converged = True
            break
    return LbEnd(lme=lme, u=u, beta=beta, theta=theta, iterations=n_before + it, converged=converged,
                 pnls_converged=pnls_ok, lme_warnings=tuple(msgs))
