"""Simulation from a fitted GLMM, refits to new responses and the parametric bootstrap.

``eta* = X beta + offset + sum_i Z_i b_i*`` with new random effects ``b_i* = T_i u``,
``u ~ N(0, I)`` (lme4's default) or the conditional modes; ``y* ~ family(g^{-1}(eta*))``:
binomial proportions ``Binomial(w, mu) / w``, Poisson counts, Gamma with shape ``w / phi`` and
mean ``mu``. The bootstrap refits every replicate by one vmapped program
(:mod:`jaxlmm.glmer_batch`).
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np
import pandas as pd

from ..arguments import optional_positive_int, random_generator
from ..covariance.templates import templates_np
from ..errors import ArgumentError, InferenceWarning, warn_unconverged
from ..covariance.sdcor import sdcor_names
from ..inference.simulate import check_simulation, response_vector
from ..precision import float64
from .batch import fit_responses
from ..covariance.sdcor import sdcor_rows
from .fit import fit_glmm
from .model import GlmmModel


def _draw(fam, mu: np.ndarray, w: np.ndarray, phi: float, rng) -> np.ndarray:
    if fam.name == "binomial":
        trials = np.round(w).astype(np.int64)
        return rng.binomial(trials[:, None], mu) / trials[:, None]
    if fam.name == "poisson":
        return rng.poisson(mu).astype(np.float64)
    shape = (w / phi)[:, None]
    return rng.gamma(shape, mu / shape)


def simulate_matrix(fit, n: int, seed=None, re: bool = True) -> np.ndarray:
    """``(nobs, n)`` simulated responses (see module docstring)."""
    n = check_simulation(fit, n, seed, re)  # the same checks (and memory bound) as lmer's
    try:
        return _simulate_matrix(fit, n, random_generator(seed), re)
    except MemoryError:  # less free memory than the machine has
        raise ArgumentError(f"n is too large: {n} simulated responses of {fit._model.design.n} rows do not fit in "
                            "the memory free now; use a smaller n") from None


def _host_device():
    """JAX's CPU device, or None (the default device) where JAX was started without one."""
    try:
        return jax.devices("cpu")[0]
    except RuntimeError:
        return None


def _simulate_matrix(fit, n: int, rng: np.random.Generator, re: bool) -> np.ndarray:
    model = fit._model
    d = model.design
    eta = d.X @ fit._fixef.to_numpy() + d.offset
    E = np.repeat(eta[:, None], n, axis=1)
    for t, T, b in zip(d.terms, templates_np(fit.theta, model.specs), fit._b):
        if re:
            u = rng.standard_normal((n, t.n_levels, t.width))
            E += np.einsum("ik,sik->is", t.columns, (u @ T.T)[:, t.codes, :])
        else:
            E += np.einsum("ik,ik->i", t.columns, b[t.codes])[:, None]
    with float64(), jax.default_device(_host_device()):  # (nobs, n) arrays stay in host memory
        mu = np.asarray(fit.family.link.inverse(E))
    return _draw(fit.family, mu, d.weights, fit.dispersion, rng)


def simulate(fit, n: int = 1, seed=None, re: bool = True) -> pd.DataFrame:
    Y = simulate_matrix(fit, n, seed, re)
    return pd.DataFrame(Y, index=fit._model.design.row_index, columns=[f"sim_{k + 1}" for k in range(n)])


def _x(fit) -> np.ndarray:
    x = np.concatenate([fit.theta, fit._fixef.to_numpy()])
    return x if fit.family.scale_free else np.append(x, np.log(fit.dispersion))


def refit(fit, y):
    y = response_vector(fit, y, booleans=fit.family.name == "binomial")
    m = fit._model
    fit.family.check_response(y, m.design.weights, "y")
    model = GlmmModel(design=dataclasses.replace(m.design, y=y), family=m.family, specs=m.specs, nagq=m.nagq)
    return fit_glmm(model, _x(fit), stacklevel=4, result_type=type(fit))


def bootstrap(fit, n: int = 200, seed=None, batch_size: int | None = None) -> pd.DataFrame:
    t0 = time.perf_counter()
    n = check_simulation(fit, n, seed, True)
    batch_size = optional_positive_int(batch_size, "batch_size")
    model = fit._model
    Y = simulate_matrix(fit, n, seed, re=True)
    r = fit_responses(model, Y, _x(fit), batch_size=batch_size)
    k, p = model.n_theta, model.p
    frame = pd.DataFrame(r["x"][:, k : k + p], columns=list(fit._fixef.index))
    names = sdcor_names(model.design, model.specs)[:-1]
    sc = sdcor_rows(r["x"][:, :k], model.specs)
    for j, name in enumerate(names):
        frame[name] = sc[:, j]
    if not fit.family.scale_free:
        frame["dispersion"] = np.exp(r["x"][:, k + p])
    frame["objective"] = r["objective"]
    frame["converged"] = r["converged"]
    frame.index.name = "replicate"
    frame.attrs.update(seed=seed, seconds=time.perf_counter() - t0)
    warn_unconverged(r["converged"], "bootstrap refits", InferenceWarning, stacklevel=3)
    return frame
