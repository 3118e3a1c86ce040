"""From a design and its arrays to the fitted record: run the method's optimiser (the Laplace /
AGQ BFGS of :mod:`jaxlmm.nlmm.fit` or the Lindstrom-Bates iterations of :mod:`jaxlmm.nlmm.lb`)
from given starting values and assemble the immutable result (estimates, standard errors,
variance components, modes with their conditional SDs, fitted values, the one warning). Used by
:func:`jaxlmm.nlmer` and by refits (:mod:`jaxlmm.nlmm.simulate`)."""

from __future__ import annotations

import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..covariance.tables import ranef_table, varcorr_table
from ..covariance.templates import template_spec, templates_np, theta_names, theta_start
from ..errors import FitWarning
from ..lmm.fit import Conditional
from ..optim.finish import beta_covariance
from ..precision import float64
from ..progress import logger
from ..records import make_mapping, read_only
from . import fit as nfit
from .design import NlmmDesign
from .lb import lindstrom_bates
from .pnls import fitted_at
from .system import NlmmArrays, fixed_phi, gn_solve, nlmm_arrays, random_phi


def specs_of(design: NlmmDesign) -> tuple:
    """The covariance templates of the design's random-effect terms."""
    return tuple(template_spec(t.width, t.uncorrelated) for t in design.lmm.terms)


def arrays_of(design: NlmmDesign, method: str, nagq: int) -> NlmmArrays:
    """The device arrays of ``design`` for ``method`` (the AGQ nodes only for ``"agq"``)."""
    with float64():
        return nlmm_arrays(design, specs_of(design), nagq=nagq if method == "agq" else 1)


def fit_arrays(design: NlmmDesign, G: NlmmArrays, method: str, nagq: int, reml: bool, x0: np.ndarray,
               max_iter: int, result_type, t0: float | None = None, stacklevel: int = 2):
    """Fit from ``x0 = (theta, beta, log sigma)`` by ``method`` and return a ``result_type``
    (Lindstrom-Bates uses ``theta`` and ``beta`` of ``x0``); the fit's one warning at
    ``stacklevel`` counted from this function (2: its caller)."""
    t0 = time.perf_counter() if t0 is None else t0
    specs = specs_of(design)
    k, p = G.n_theta, G.p
    if method == "lb":
        return _lb_result(design, G, specs, x0[k : k + p], x0[:k], reml, t0, max_iter, result_type, stacklevel + 1)
    with float64():
        o = nfit.optimise(G, x0, max_iter=max_iter)
    return _laplace_result(design, G, specs, o, method, nagq, t0, result_type, stacklevel + 1)


def start_x(design: NlmmDesign, beta: np.ndarray, rss: float) -> np.ndarray:
    """``(theta, beta, log sigma)`` from ``beta`` and a residual sum of squares: theta at the
    templates' start (identity), sigma from ``rss / n``."""
    return np.concatenate([theta_start(specs_of(design)), beta, [0.5 * np.log(max(rss, 1e-300) / design.n)]])


def _finish(design, info, warn, kwargs, result_type, stacklevel):
    info["warnings"] = tuple(warn)
    result = result_type(model=design.mean.text, nobs=design.n, n_dropped=design.lmm.n_dropped,
                         theta_names=tuple(theta_names(design.lmm.terms)), optinfo=make_mapping(info),
                         ngroups=make_mapping({t.name: t.n_levels for t in design.lmm.terms}), _design=design, **kwargs)
    logger.info("fitted nlmer %s (%s): %.2f s, -2 log L %.6f", design.mean.text, result.method, info["time_s"],
                result.objective)
    if warn:
        warnings.warn("; ".join(warn) + " (details in fit.diagnostics)", FitWarning, stacklevel=stacklevel)
    return result


def _series(v, names, label) -> pd.Series:
    return pd.Series(np.asarray(v, dtype=np.float64), index=list(names), name=label)


def _frame(V, names) -> pd.DataFrame:
    return pd.DataFrame(np.asarray(V, dtype=np.float64), index=list(names), columns=list(names))


@jax.jit
def _at_modes(theta, beta, u, G: NlmmArrays):
    phi_r = random_phi(u, theta, G)
    _, _, fac = gn_solve(theta, fixed_phi(beta, G) + phi_r, phi_r, beta, G, False)
    f, f0, _ = fitted_at(u, theta, beta, G)
    return f, f0, fac


_fitted_program = jax.jit(fitted_at)


class NlmmRanefSource:
    """The conditional modes with SDs from the Gauss-Newton factor at the modes (picklable)."""

    def __init__(self, terms, b, templates, sigma, structure, factor) -> None:
        self.terms, self.b, self.templates, self.sigma = terms, b, templates, sigma
        self.structure, self.factor = structure, factor

    def __call__(self):
        cond = Conditional(beta=np.zeros(0), vcov=np.zeros((0, 0)), sigma=self.sigma, b=self.b,
                           templates=self.templates, structure=self.structure, factor=self.factor)
        return ranef_table(self.terms, self.b, cond.cond_cov())


def _laplace_result(design, G, specs, o, method, nagq, t0, result_type, stacklevel):
    k, p = G.n_theta, G.p
    theta, beta, sigma = o.x[:k], o.x[k : k + p], float(np.exp(o.x[k + p]))
    V, ok = beta_covariance(o.H, k, p, o.boundary)
    raw = templates_np(o.x_raw[:k], specs)
    b = [ui @ T.T for ui, T in zip(o.u, raw)]
    with float64():
        f, f0, fac = _at_modes(jnp.asarray(o.x_raw[:k]), jnp.asarray(beta), [jnp.asarray(v) for v in o.u], G)
        f, f0 = np.asarray(f), np.asarray(f0)
        factor = ([np.asarray(d) for d in fac.diag], {n: np.asarray(v) for n, v in fac.off.items()},
                  np.asarray(fac.tail))
        structure = jax.tree_util.tree_map(np.asarray, G.structure)
    Ts = templates_np(theta, specs)
    warn = []
    if not o.pnls_converged:
        warn.append(f"PNLS did not converge to the conditional modes at the estimates ({o.pnls_iterations} iterations)")
    if not o.converged:
        warn.append(f"the optimiser did not converge ({o.message}; max |gradient| {o.gmax:.3g})")
    if o.singular:
        warn.append("boundary (singular) fit: a variance component is zero or a correlation is +-1")
    if not ok:
        warn.append("the Hessian of -2 log L is not positive definite: standard errors are NaN")
    info = dict(method=method, converged=bool(o.converged and o.pnls_converged), status=o.status, message=o.message,
                n_iter=o.n_iter, n_evals=o.n_evals, grad=read_only(o.grad), pnls_converged=o.pnls_converged,
                pnls_iterations=o.pnls_iterations, hessian_ok=ok, hessian_min_eig=o.hessian_min_eig,
                restarts=o.restarts, time_s=time.perf_counter() - t0)
    names = list(design.x_names)
    return _finish(design, info, warn, dict(
        method=method, nagq=nagq, reml=False, objective=float(o.objective),
        _fixef=_series(beta, names, "estimate"), _se=_series(np.sqrt(np.diag(V)), names, "std_error"),
        _vcov=_frame(V, names), sigma=sigma, theta=read_only(theta), _varcorr=varcorr_table(design.lmm.terms, Ts, sigma),
        _ranef_source=NlmmRanefSource(design.lmm.terms, b, [T.copy() for T in raw], sigma, structure, factor),
        singular=bool(o.singular), _fitted=read_only(f), _fitted_population=read_only(f0), hessian=read_only(o.H),
        _b=tuple(read_only(v) for v in b), _templates=tuple(Ts)), result_type, stacklevel + 1)


def _lb_result(design, G, specs, beta0, theta0, reml, t0, max_iter, result_type, stacklevel):
    e = lindstrom_bates(design, G, beta0, theta0, reml, max_iter=min(max_iter, 200), correlation=design.correlation,
                        variance=design.variance)
    lme = e.lme
    theta = np.asarray(lme.theta)
    with float64():
        f, f0, _ = _fitted_program([jnp.asarray(v) for v in e.u], jnp.asarray(theta), jnp.asarray(e.beta), G)
        f, f0 = np.asarray(f), np.asarray(f0)
    warn = []
    if not e.converged:
        warn.append(f"the Lindstrom-Bates iterations did not reach their fixed point in {e.iterations} iterations")
    if not e.pnls_converged:
        warn.append("PNLS did not converge to the conditional modes at the estimates")
    warn += [m for m in e.lme_warnings if "details in fit.diagnostics" not in m]
    warn += [m.replace(" (details in fit.diagnostics)", "") for m in e.lme_warnings if "details in fit.diagnostics" in m]
    info = dict(method="lb", converged=bool(e.converged and e.pnls_converged and lme.converged),
                message=lme.optinfo["message"], n_iter=e.iterations, n_evals=lme.optinfo["n_evals"],
                pnls_converged=e.pnls_converged, lme_converged=lme.converged, time_s=time.perf_counter() - t0)
    return _finish(design, info, warn, dict(
        method="lb", nagq=1, reml=bool(reml), objective=float(lme.objective), _fixef=lme._fixef.copy(),
        _se=lme._se.copy(), _vcov=lme._vcov.copy(), sigma=float(lme.sigma), theta=read_only(theta),
        _varcorr=lme._varcorr.copy(), _ranef_source=lme._ranef_source, singular=bool(lme.singular),
        _fitted=read_only(f), _fitted_population=read_only(f0), hessian=None,
        _b=tuple(read_only(np.asarray(v)) for v in lme._b), _templates=tuple(templates_np(theta, specs)),
        _rside=lme._rside), result_type, stacklevel + 1)
