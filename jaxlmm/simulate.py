"""Simulation from a fitted model, refits to new responses, and the parametric bootstrap.

``y* = X beta + offset + sum_i Z_i b_i* + sigma e / sqrt(w)`` with ``b_i* = sigma u T_i'``,
``u, e ~ N(0, I)`` (new random effects, lme4's default) or ``b_i* = b_i`` (conditional modes).

The bootstrap refits every replicate with one compiled program: the response enters the Gram
matrix only through ``XY' W [Z X y]`` (``LmerModel.response_blocks``, one sparse product for all
replicates), and BFGS, the fixed effects and sigma are ``vmap``-ped over replicates in batches.
"""

from __future__ import annotations

import functools
import numbers
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .covariance import diagonal_mask, templates_np
from .errors import ArgumentError, DataError, InferenceWarning
from .fit import CONVERGED_GRAD, GTOL
from .model import model_with_response, with_response
from .objective import ModelArrays, factor, objective
from .optimize import minimize_bfgs
from .parameters import sdcor_from_varpar
from .precision import float64


def _check_count(n, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n <= 0:
        raise ArgumentError(f"{what} must be a positive integer, got {n!r}")
    return int(n)


def simulate_matrix(fit, n: int, seed=None, re: bool = True) -> np.ndarray:
    """``(nobs, n)`` simulated responses (see module docstring)."""
    n = _check_count(n, "n")
    if not isinstance(re, (bool, np.bool_)):
        raise ArgumentError(f"re must be True or False, got {re!r}")
    design = fit._model.design
    rng = np.random.default_rng(seed)
    sigma = fit.sigma
    eta = design.X @ fit._fixef.to_numpy() + design.offset
    Y = np.repeat(eta[:, None], n, axis=1)
    Ts = templates_np(fit.theta, fit._model.specs)
    for t, T, b in zip(design.terms, Ts, fit._b):
        if re:
            u = rng.standard_normal((n, t.n_levels, t.width))
            bs = sigma * u @ T.T  # (n, levels, p)
            Y += np.einsum("ik,sik->is", t.columns, bs[:, t.codes, :])
        else:
            Y += np.einsum("ik,ik->i", t.columns, b[t.codes])[:, None]
    Y += sigma * rng.standard_normal(Y.shape) / np.sqrt(design.weights)[:, None]
    return Y


def simulate(fit, n: int = 1, seed=None, re: bool = True) -> pd.DataFrame:
    Y = simulate_matrix(fit, n, seed, re)
    cols = [f"sim_{k + 1}" for k in range(Y.shape[1])]
    return pd.DataFrame(Y, index=fit._model.design.row_index, columns=cols)


def refit(fit, y):
    from .lmer import fit_model

    y = np.asarray(y.to_numpy() if isinstance(y, (pd.Series, pd.DataFrame)) else y, dtype=np.float64)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape != (fit.nobs,):
        raise ArgumentError(f"y must have one value per row used in the fit ({fit.nobs}), got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise DataError("y has missing or infinite values; refit needs a complete response")
    model = model_with_response(fit._model, y)
    return fit_model(model, reml=fit.reml, stacklevel=4)


def _beta_sigma(theta, M: ModelArrays):
    """Fixed effects and sigma at ``theta`` from the trailing ``(p+1)^2`` block of the factor:
    ``beta = L_X^{-T} l``, ``sigma^2 = r^2 / nu``."""
    f = factor(theta, M)
    p = M.p
    Lt = f.tail[M.m_z_tail :, M.m_z_tail :]
    LX, l, r = Lt[:p, :p], Lt[p, :p], Lt[p, p]
    beta = jax.scipy.linalg.solve_triangular(LX, l, lower=True, trans="T")
    nu = M.n - p if M.reml else M.n
    return beta, jnp.abs(r) / jnp.sqrt(nu)


@functools.partial(jax.jit, static_argnames=("max_iter",))
def _fit_batch(theta0, M: ModelArrays, D, offs, max_iter: int = 1000):
    def one(D1, offs1):
        M1 = with_response(M, D1, offs1)
        r = minimize_bfgs(objective, theta0, M1, gtol=GTOL, max_iter=max_iter)
        beta, sigma = _beta_sigma(r.x, M1)
        sdcor = sdcor_from_varpar(jnp.concatenate([r.x, sigma[None]]), M.specs)
        return r.fun, r.grad, r.status, beta, sdcor

    return jax.vmap(one)(D, offs)


def refit_many(fit, Y: np.ndarray, batch_size: int | None = None, max_iter: int = 1000) -> dict:
    """Refit responses ``Y (nobs, B)`` with one vmapped program (batches of ``batch_size``)."""
    model = fit._model
    B = Y.shape[1]
    theta0 = np.array(fit.theta, dtype=np.float64)
    diag = diagonal_mask(model.specs)
    theta0[diag] = np.maximum(np.abs(theta0[diag]), 0.1)  # zero is a stationary point: start inside
    out = {"objective": [], "grad": [], "status": [], "beta": [], "sdcor": []}
    with float64():
        M = model.arrays(fit.reml, host_lapack=False)
        if batch_size is None:  # about 2e7 doubles of batched Gram and factor arrays per batch
            per = sum(int(np.size(d)) for d in M.diag) + sum(int(np.size(o)) for o in M.off.values())
            per += int(M.structure.m) ** 2
            # a power of two: bootstraps of different sizes share compiled programs
            batch_size = int(max(1, min(1 << max(B - 1, 0).bit_length(), 2e7 // per, 1024)))
        batch_size = _check_count(batch_size, "batch_size")
        t0 = jnp.asarray(theta0)
        for s in range(0, B, batch_size):
            Yb = Y[:, s : s + batch_size]
            nb = Yb.shape[1]
            if nb < batch_size and s > 0:  # pad the last batch: one compiled shape
                Yb = np.concatenate([Yb, np.repeat(Yb[:, -1:], batch_size - nb, axis=1)], axis=1)
            D, offs = model.response_blocks(Yb - model.design.offset[:, None])
            res = _fit_batch(t0, M, jnp.asarray(D), [jnp.asarray(o) for o in offs], max_iter=max_iter)
            for key, v in zip(out, res):
                out[key].append(np.asarray(v)[:nb])
    return {k: np.concatenate(v) for k, v in out.items()}


def bootstrap(fit, n: int = 1000, seed=None, batch_size: int | None = None) -> pd.DataFrame:
    n = _check_count(n, "n")
    t0 = time.perf_counter()
    Y = simulate_matrix(fit, n, seed, re=True)
    r = refit_many(fit, Y, batch_size=batch_size)
    fmax = np.maximum(1.0, np.abs(r["objective"]))
    gmax = np.max(np.abs(r["grad"]), axis=1) if r["grad"].shape[1] else np.zeros(n)
    conv = (r["status"] == 0) | (np.isin(r["status"], (1, 3)) & (gmax <= CONVERGED_GRAD * np.sqrt(fmax)))
    sd = r["sdcor"]
    frame = pd.DataFrame(r["beta"], columns=list(fit._fixef.index))
    for k, name in enumerate(fit._sdcor_names):
        frame[name] = np.abs(sd[:, k]) if name.startswith("sd_") or name == "sigma" else sd[:, k]
    frame["objective"] = r["objective"]
    frame["converged"] = conv
    frame.index.name = "replicate"
    frame.attrs["seconds"] = time.perf_counter() - t0
    bad = int((~conv).sum())
    if bad:
        warnings.warn(f"{bad} of {n} bootstrap replicates did not converge (column 'converged')",
                      InferenceWarning, stacklevel=3)
    return frame
