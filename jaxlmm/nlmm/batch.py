"""Many responses of one NLMM design fitted by one compiled, vmapped program.

The response enters :class:`jaxlmm.nlmm.system.NlmmArrays` only through ``y``, so the whole fit
of one response (the Laplace / AGQ BFGS with PNLS inside every evaluation and the Hessian's
gradient differences, or the Lindstrom-Bates iterations and the last LME's ``Var(beta)``) is
``vmap``-ped over responses, in batches of a power of two (calls of different sizes share
compiled programs). Each response starts from its own nonlinear least-squares fit (the joint
PNLS at ``theta = 0``, vmapped too). Used by :func:`jaxlmm.nlmer_many` and
:meth:`NlmerResult.bootstrap`.

No host confirmation runs per response: the compiled Lindstrom-Bates loop stops at ``1e-7``
relative change (:mod:`jaxlmm.nlmm.lb`), and boundary estimates are not snapped to zero.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..arguments import optional_positive_int, positive_int
from ..covariance.templates import diagonal_mask, rectify, theta_start
from ..lmm.batch import MAX_BATCH, MAX_BATCH_ACCELERATOR
from ..optim import finish
from ..optim.finish import SINGULAR_TOL, beta_covariance, central_hessian, fd_step
from ..precision import float64
from ..progress import progress
from . import pnls
from .fit import fit_core, x_scale
from .lb import lb_iterations, lme_beta_covariance
from .system import NlmmArrays, fixed_phi, mean_at


@jax.jit
def _nls_batch(beta0, Y, G: NlmmArrays):
    """Per response of ``Y (B, n)``: nonlinear least squares without random effects from
    ``beta0`` (the joint PNLS at ``theta = 0``), ``(beta, rss)`` (``rss`` from ``beta0`` when
    Gauss-Newton failed)."""

    def one(y):
        Gy = dataclasses.replace(G, y=y)
        _, beta, g, _, ok = pnls.pnls(jnp.zeros(G.n_theta, y.dtype), beta0, Gy, joint=True)
        good = ok & jnp.all(jnp.isfinite(beta)) & jnp.isfinite(g) & (g > 0)
        r = y - mean_at(fixed_phi(beta0, G), G)
        return jnp.where(good, beta, beta0), jnp.where(good, g, jnp.sum(G.w * r * r))

    return jax.vmap(one)(Y)


@jax.jit
def _laplace_batch(XI0, D, Y, diag_mask, G: NlmmArrays, max_iter):
    def one(xi0, d, y):
        r = fit_core(xi0, d, diag_mask, dataclasses.replace(G, y=y), max_iter)
        return r.x, r.fun, r.grad, r.status, r.nfev, r.extra_g, r.aux[2]

    return jax.vmap(one)(XI0, D, Y)


@functools.partial(jax.jit, static_argnames=("reml",))
def _lb_batch(Theta0, Beta0, Y, G: NlmmArrays, reml: bool, max_outer):
    def one(theta0, beta0, y):
        Gy = dataclasses.replace(G, y=y)
        theta, beta, u, it, done, obj, theta_pnls = lb_iterations(theta0, beta0, Gy, reml, max_outer)
        V, sigma = lme_beta_covariance(theta_pnls, theta, beta, u, Gy, reml)
        return theta, beta, sigma, obj, it, done, V

    return jax.vmap(one)(Theta0, Beta0, Y)


def _batch_size(G: NlmmArrays, B: int, batch_size: int | None) -> int:
    if batch_size is not None:
        return positive_int(batch_size, "batch_size")
    cap = MAX_BATCH.get(jax.default_backend(), MAX_BATCH_ACCELERATOR)
    n = int(G.y.shape[0])
    per = max(1, n * (1 + G.n_params) ** 2 + sum(s.p * s.p for s in G.specs) * n)
    return int(max(1, min(1 << max(B - 1, 0).bit_length(), 2e7 // per, cap)))


def _laplace_rows(res, D, G: NlmmArrays, diag: np.ndarray, nb: int) -> dict:
    """Host end of :func:`_laplace_batch`: the Hessian from the gradient differences, the
    original coordinates, rectified theta, ``Var(beta)``, convergence."""
    k, p = G.n_theta, G.p
    xi, fun, gi, status, nfev, eg, ok = (np.asarray(v)[:nb] for v in res)
    out = {key: [] for key in ("x", "grad", "vcov_beta")}
    for r in range(nb):
        d = D[r]
        H = central_hessian(eg[r, 1:], fd_step(xi[r])) / np.outer(d, d)
        x, g = xi[r] * d, gi[r] / d
        theta, sign = rectify(x[:k], G.specs)
        x[:k] = theta
        sign = np.concatenate([sign, np.ones(len(x) - k)])
        boundary = diag & (np.abs(x) < SINGULAR_TOL)
        out["x"].append(x)
        out["grad"].append(g * sign)
        out["vcov_beta"].append(beta_covariance(H * np.outer(sign, sign), k, p, boundary)[0])
    out = {key: np.stack(v) for key, v in out.items()}
    gmax = np.max(np.abs(out["grad"] * D[:nb]), axis=1)
    out.update(objective=fun, status=status, n_evals=nfev,
               converged=np.asarray(finish.converged(status, gmax, fun)) & ok)
    return out


def fit_responses(G: NlmmArrays, Y: np.ndarray, beta0: np.ndarray, method: str, reml: bool = False, *,
                  start: np.ndarray | None = None, batch_size: int | None = None, max_iter: int = 1000, label: str = "batched nlmer fits") -> dict:
    """Fit the responses ``Y (n, B)`` of the design of ``G`` by ``method`` (``"laplace"``/``"agq"``
    as ``G`` was built, or ``"lb"`` with ``reml``), each from its own nonlinear least-squares
    start from ``beta0``, or all from ``start = (theta, beta, log sigma)`` (a bootstrap's). Returns arrays with leading axis ``B``: ``x = (theta, beta, log
    sigma)`` (theta rectified), ``objective`` (``-2 log L``, or the REML criterion),
    ``converged``, ``singular``, ``n_evals`` (Lindstrom-Bates: outer iterations) and
    ``vcov_beta (B, p, p)``."""
    max_iter = positive_int(max_iter, "max_iter")
    batch_size = optional_positive_int(batch_size, "batch_size")
    B = Y.shape[1]
    k, p = G.n_theta, G.p
    size = _batch_size(G, B, batch_size)
    diag = np.concatenate([diagonal_mask(G.specs), np.zeros(p + 1, bool)])
    th0 = theta_start(G.specs)
    parts = []
    with float64():
        with progress(B, label, unit="fit") as bar:
            for s in range(0, B, size):
                Yb = np.asarray(Y[:, s : s + size].T, dtype=np.float64)
                nb = Yb.shape[0]
                if nb < size and s > 0:  # pad to one compiled shape
                    Yb = np.concatenate([Yb, np.repeat(Yb[-1:], size - nb, axis=0)])
                if start is None:
                    beta, rss = (np.asarray(v) for v in _nls_batch(jnp.asarray(beta0, jnp.float64), jnp.asarray(Yb), G))
                    Th0 = np.repeat(th0[None], len(Yb), axis=0)
                    ls0 = 0.5 * np.log(np.maximum(rss, 1e-300) / Yb.shape[1])
                else:
                    beta = np.repeat(start[None, k : k + p], len(Yb), axis=0)
                    Th0 = np.repeat(start[None, :k], len(Yb), axis=0)
                    ls0 = np.full(len(Yb), start[k + p])
                if method == "lb":
                    res = [np.asarray(v)[:nb] for v in _lb_batch(jnp.asarray(Th0), jnp.asarray(beta), jnp.asarray(Yb), G,
                                                                 bool(reml), jnp.asarray(min(max_iter, 200)))]
                    theta, be, sigma, obj, it, done, V = res
                    theta = np.stack([rectify(t, G.specs)[0] for t in theta])
                    x = np.concatenate([theta, be, np.log(sigma)[:, None]], axis=1)
                    ok = done & np.isfinite(obj) & np.all(np.isfinite(x), axis=1)
                    parts.append(dict(x=x, objective=obj, converged=ok, n_evals=it, vcov_beta=V))
                else:
                    X0 = np.concatenate([Th0, beta, ls0[:, None]], axis=1)
                    D = np.stack([x_scale(b, k) for b in beta])
                    res = _laplace_batch(jnp.asarray(X0 / D), jnp.asarray(D), jnp.asarray(Yb), diag, G,
                                         jnp.asarray(max_iter))
                    part = _laplace_rows(res, D, G, diag, nb)
                    parts.append({key: part[key] for key in ("x", "objective", "converged", "n_evals", "vcov_beta")})
                bar.update(nb)
    r = {key: np.concatenate([q[key] for q in parts]) for key in parts[0]}
    r["singular"] = np.any(np.abs(r["x"][:, diag]) < SINGULAR_TOL, axis=1)
    return r
