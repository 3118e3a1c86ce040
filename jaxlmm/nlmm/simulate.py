"""Simulation from a fitted NLMM, refits to new responses and the parametric bootstrap.

``y* = f(A beta + Z b*) + sigma e / sqrt(w)``, ``e ~ N(0, I)``, with new random effects
``b_i* = sigma u T_i'``, ``u ~ N(0, I)`` (lme4's default, ``re=True``) or the conditional modes
(``re=False``: ``f`` is the fitted values). The bootstrap refits every replicate by one
vmapped program (:mod:`jaxlmm.nlmm.batch`) from the fit's estimates, by the fit's method.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..arguments import check_memory, check_seed, optional_positive_int, positive_int, random_generator
from ..covariance.sdcor import sdcor_names, sdcor_rows
from ..covariance.templates import templates_np
from ..errors import ArgumentError, InferenceWarning, warn_unconverged
from ..inference.simulate import response_vector
from ..precision import float64
from .batch import fit_responses
from .build import arrays_of, fit_arrays, specs_of
from .system import NlmmArrays, fixed_phi, mean_at

CHUNK = 64  # replicates per evaluation of the mean


def check_simulation(fit, n, seed, re) -> int:
    """``n`` a positive integer whose ``(nobs, n)`` responses (with the random effects and the
    per-chunk parameters) fit in memory, ``seed`` accepted by numpy, ``re`` a bool."""
    n = positive_int(n, "n")
    check_seed(seed)
    if fit._rside is not None:
        raise ArgumentError("simulation and the parametric bootstrap are not available yet for nlmer fits with a "
                            "residual correlation or variance structure")
    if not isinstance(re, (bool, np.bool_)):
        raise ArgumentError(f"re must be True or False, got {re!r}")
    d = fit._design
    levels = sum(t.n_levels * t.width for t in d.lmm.terms)
    check_memory(8.0 * (d.n * n * 3 + levels * n), "n",
                 f"{n} simulated responses of {d.n} rows (float64, with working arrays)")
    return n


@jax.jit
def _means(beta, bs, G: NlmmArrays):
    """``f`` per replicate ``(c, n)`` at random effects ``bs[i] (c, levels_i, w_i)``."""

    def one(b):
        phi = fixed_phi(beta, G)
        for i in range(G.n_terms):
            phi = phi.at[:, list(G.term_params[i])].add(b[i][G.codes[i]] * G.cols[i])
        return mean_at(phi, G)

    return jax.vmap(one)(bs)


def simulate_matrix(fit, n: int, seed=None, re: bool = True) -> np.ndarray:
    """``(nobs, n)`` simulated responses (module docstring)."""
    n = check_simulation(fit, n, seed, re)
    rng = random_generator(seed)
    d = fit._design
    w = np.asarray(d.lmm.weights, np.float64)
    if not re:
        F = np.repeat(np.asarray(fit._fitted)[:, None], n, axis=1)
    else:
        G = arrays_of(d, fit.method, fit.nagq)
        Ts = templates_np(fit.theta, specs_of(d))
        beta = fit._fixef.to_numpy()
        F = np.empty((d.n, n))
        with float64():
            for s in range(0, n, CHUNK):
                c = min(CHUNK, n - s)
                bs = [jnp.asarray(fit.sigma * rng.standard_normal((c, t.n_levels, t.width)) @ T.T)
                      for t, T in zip(d.lmm.terms, Ts)]
                F[:, s : s + c] = np.asarray(_means(jnp.asarray(beta), bs, G)).T
    return F + fit.sigma * rng.standard_normal(F.shape) / np.sqrt(w)[:, None]


def simulate(fit, n: int = 1, seed=None, re: bool = True) -> pd.DataFrame:
    Y = simulate_matrix(fit, n, seed, re)
    return pd.DataFrame(Y, index=fit._design.lmm.row_index, columns=[f"sim_{k + 1}" for k in range(n)])


def _x(fit) -> np.ndarray:
    return np.concatenate([fit.theta, fit._fixef.to_numpy(), [np.log(fit.sigma)]])


def _refit_design(fit, design, reml: bool, stacklevel: int):
    G = arrays_of(design, fit.method, fit.nagq)
    return fit_arrays(design, G, fit.method, fit.nagq, reml, _x(fit), 1000, type(fit), stacklevel=stacklevel + 1)


def refit(fit, y):
    """The fit's model fitted to the response ``y`` (one value per row used) from its estimates."""
    y = response_vector(fit, y, rows=fit._design.lmm.row_index)
    d = fit._design
    return _refit_design(fit, dataclasses.replace(d, lmm=dataclasses.replace(d.lmm, y=y)), fit.reml, 4)


def refit_ml(fit):
    """The fit itself when it maximised the likelihood; a Lindstrom-Bates REML fit refitted by ML
    (for likelihood-ratio tests)."""
    if not fit.reml:
        return fit
    return _refit_design(fit, fit._design, False, 4)


def estimates_frame(x: np.ndarray, design, index: pd.Index) -> pd.DataFrame:
    """One row per fit from ``x (B, k + p + 1) = (theta, beta, log sigma)``: the fixed effects in
    nlme's names, the random effects' SDs and correlations (``sd_Asym|Tree``), ``sigma``."""
    specs = specs_of(design)
    k, p = sum(s.size for s in specs), design.p
    frame = pd.DataFrame(x[:, k : k + p], columns=list(design.x_names), index=index)
    sigma = np.exp(x[:, k + p])
    sc = sdcor_rows(x[:, :k], specs)
    is_sd = np.concatenate([s.diagonal for s in specs]).astype(bool) if specs else np.zeros(0, bool)
    for j, name in enumerate(sdcor_names(design.lmm, specs)[:-1]):
        frame[name] = sc[:, j] * sigma if is_sd[j] else sc[:, j]
    frame["sigma"] = sigma
    return frame


def bootstrap(fit, n: int = 200, seed=None, batch_size: int | None = None) -> pd.DataFrame:
    t0 = time.perf_counter()
    n = check_simulation(fit, n, seed, True)
    batch_size = optional_positive_int(batch_size, "batch_size")
    Y = simulate_matrix(fit, n, seed, re=True)
    G = arrays_of(fit._design, fit.method, fit.nagq)
    r = fit_responses(G, Y, fit._fixef.to_numpy(), fit.method, fit.reml, start=_x(fit), batch_size=batch_size,
                      label="bootstrap refits")
    frame = estimates_frame(r["x"], fit._design, pd.RangeIndex(n, name="replicate"))
    frame["objective"] = r["objective"]
    frame["converged"] = r["converged"]
    frame.attrs.update(seed=seed, seconds=time.perf_counter() - t0)
    warn_unconverged(r["converged"], "bootstrap refits", InferenceWarning, stacklevel=3)
    return frame
