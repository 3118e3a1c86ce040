"""Simulation from a fitted model, refits to new responses, and the parametric bootstrap.

``y* = X beta + offset + sum_i Z_i b_i* + sigma e / sqrt(w)`` with ``b_i* = sigma u T_i'``,
``u, e ~ N(0, I)`` (new random effects, lme4's default) or ``b_i* = b_i`` (conditional modes).

The bootstrap refits every replicate with one compiled, vmapped program (:mod:`jaxlmm.batch`).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd

from .batch import check_count, fit_many
from .covariance import templates_np
from .errors import ArgumentError, DataError, InferenceWarning
from .model import model_with_response


def simulate_matrix(fit, n: int, seed=None, re: bool = True) -> np.ndarray:
    """``(nobs, n)`` simulated responses (see module docstring)."""
    n = check_count(n, "n")
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


def response_vector(fit, y) -> np.ndarray:
    """A new response for ``fit.refit``: one finite value per row used, as float64 ``(nobs,)``."""
    y = np.asarray(y.to_numpy() if isinstance(y, (pd.Series, pd.DataFrame)) else y, dtype=np.float64)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape != (fit.nobs,):
        raise ArgumentError(f"y must have one value per row used in the fit ({fit.nobs}), got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise DataError("y has missing or infinite values; refit needs a complete response")
    return y


def refit(fit, y):
    from .lmer import fit_model

    model = model_with_response(fit._model, response_vector(fit, y))
    return fit_model(model, reml=fit.reml, stacklevel=4)


def refit_many(fit, Y: np.ndarray, batch_size: int | None = None, max_iter: int = 1000) -> dict:
    """Refit responses ``Y (nobs, B)`` with one vmapped program (see :mod:`jaxlmm.batch`)."""
    return fit_many(fit._model, Y, fit.theta, fit.reml, batch_size=batch_size, max_iter=max_iter)


def bootstrap(fit, n: int = 1000, seed=None, batch_size: int | None = None) -> pd.DataFrame:
    n = check_count(n, "n")
    t0 = time.perf_counter()
    Y = simulate_matrix(fit, n, seed, re=True)
    r = refit_many(fit, Y, batch_size=batch_size)
    conv = r["converged"]
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
