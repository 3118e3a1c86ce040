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
less than ``1e-7`` relative (nlme stops at about ``1e-5`` from its fixed point).
"""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import FitWarning
from ..lmm.engine import fit_model
from ..lmm.model import LmerModel
from ..lmm.record import LmmFit
from ..precision import float64
from . import pnls
from .design import NlmmDesign
from .system import NlmmArrays, beta_jacobian, fixed_phi, gn_columns, mean_jacobian, random_phi

LB_MAX_ITER = 200
LB_RTOL = 1e-7


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
def _linearise(theta, beta, u, G: NlmmArrays):
    """``X~ (n, p)``, ``Z~_i (n, w_i)`` and the pseudo-response ``w (n,)`` at the modes."""
    phi_r = random_phi(u, theta, G)
    f, J = mean_jacobian(fixed_phi(beta, G) + phi_r, G)
    Xt = beta_jacobian(J, G)
    return Xt, gn_columns(J, G), G.y - f + Xt @ beta + jnp.sum(J * phi_r, axis=1)


def _linear_design(design: NlmmDesign, Xt, Zt, w):
    base = design.lmm
    names = design.x_names
    terms = tuple(dataclasses.replace(t, columns=np.asarray(z)) for t, z in zip(base.terms, Zt))
    return dataclasses.replace(base, y=np.asarray(w), X=np.asarray(Xt), x_names=names, x_all_names=names,
                               dropped_columns=(), terms=terms, x_spec=None, offset=np.zeros(base.n))


def lindstrom_bates(design: NlmmDesign, G: NlmmArrays, beta0: np.ndarray, theta0: np.ndarray, reml: bool,
                    max_iter: int = LB_MAX_ITER) -> LbEnd:
    """Alternate PNLS and LME steps from ``(theta0, beta0)`` to the fixed point (module docstring)."""
    theta, beta = np.asarray(theta0, np.float64), np.asarray(beta0, np.float64)
    u = None
    prev_obj = None
    lme = None
    converged = False
    msgs: list[str] = []
    it = 0
    for it in range(1, max_iter + 1):
        with float64():
            u0 = pnls.zero_modes(G) if u is None else [jnp.asarray(v) for v in u]
            uj, bj, ok = _pnls_program(jnp.asarray(theta), jnp.asarray(beta), u0, G)
            Xt, Zt, w = _linearise(jnp.asarray(theta), bj, uj, G)
        u, beta_p, pnls_ok = [np.asarray(v) for v in uj], np.asarray(bj), bool(ok)
        model = LmerModel.from_design(_linear_design(design, Xt, Zt, w))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FitWarning)
            lme = fit_model(model, reml=reml, start=theta if it > 1 else None)
        msgs = [str(c.message) for c in caught if issubclass(c.category, FitWarning)]
        theta_new = np.asarray(lme.theta)
        beta_new = np.asarray(lme._fixef)
        d_theta = np.max(np.abs(theta_new - theta) / (1.0 + np.abs(theta)), initial=0.0)
        d_beta = np.max(np.abs(beta_new - beta_p) / (1.0 + np.abs(beta_p)), initial=0.0)
        d_obj = np.inf if prev_obj is None else abs(lme.objective - prev_obj) / (1.0 + abs(lme.objective))
        theta, beta, prev_obj = theta_new, beta_p, lme.objective
        if it > 1 and d_theta <= LB_RTOL and d_beta <= LB_RTOL and d_obj <= LB_RTOL * 1e-2:
            converged = True
            break
    return LbEnd(lme=lme, u=u, beta=beta, theta=theta, iterations=it, converged=converged,
                 pnls_converged=pnls_ok, lme_warnings=tuple(msgs))
