"""The LMM engine: optimise theta for a built :class:`~jaxlmm.lmm.model.LmerModel` and assemble
the record (lme4's ``optimizeLmer`` + ``mkMerMod``).

``fit_model`` runs :func:`jaxlmm.lmm.fit.fit_theta` (BFGS over the profiled criterion, and the
residual structure's parameters when there is one), the conditional estimates
``beta, sigma, b`` at the optimum, and builds the record: an :class:`~jaxlmm.lmm.record.LmmFit`,
or the ``result_type`` asked for (:class:`jaxlmm.LmerResult` from the front door and from refits
of a user's fit). Refits in inference (anova's ML refits, Kenward–Roger's REML refit, ``refit``)
come here, never to the front door. ``fit_gram`` fits from Gram blocks accumulated out of core.
"""

from __future__ import annotations

import dataclasses
import time
import warnings

import numpy as np
import pandas as pd

import jax.numpy as jnp

from ..covariance.start import moment_start
from ..covariance.tables import varcorr_table
from ..covariance.templates import theta_names, theta_start
from ..errors import DataError, FitError, FitWarning
from ..gram.outofcore import AccumulatedGram
from ..precision import float64
from ..progress import logger
from ..records import make_mapping, read_only
from ..rside import residual
from .fit import OPTIMIZERS, check_optimizer, conditional_estimates, fit_theta
from .model import LmerModel
from .record import LmmFit, RanefSource


def fit_model(model: LmerModel, *, reml: bool, start: np.ndarray | None = None, max_iter: int = 1000,
              t0: float | None = None, stacklevel: int = 2, info: dict | None = None,
              result_type: type = LmmFit, optimizer: str = "bfgs", rside_start: np.ndarray | None = None) -> LmmFit:
    """Optimise theta for a built model and assemble the record (lme4's optimizeLmer + mkMerMod),
    an instance of ``result_type`` (:class:`LmmFit` or a subclass).

    A model accumulated out of core (``not model.has_rows``) starts from lme4's identity
    templates and gets no per-row outputs. ``info`` is added to ``optinfo``. ``optimizer``:
    ``"bfgs"`` or ``"newton"`` (:func:`jaxlmm.lmm.fit.fit_theta`). ``rside_start``: unconstrained
    starting values of the residual structure's parameters (default: its own start)."""
    t0 = time.perf_counter() if t0 is None else t0
    optimizer = check_optimizer(optimizer, model.specs, model.rside is not None)
    design = model.design
    specs = model.specs
    check_residual_left(model)
    k = sum(s.size for s in specs)
    rfit = None
    with float64():
        M = model.arrays(reml)
        scale = model.theta_scale()
        if start is None and model.has_rows:
            start = moment_start(design, specs, scale)
        theta0 = theta_start(specs) * scale if start is None else start
        if model.rside is None:
            tf = fit_theta(M, theta0, max_iter=max_iter, scale=scale, optimizer=optimizer)
            Mc = M
        else:
            R = model.rside_arrays()
            u0 = residual.start(R.meta) if rside_start is None else np.asarray(rside_start, np.float64)
            tf = fit_theta(M, np.r_[theta0, u0], max_iter=max_iter, rside=R, scale=scale)
            u = tf.theta[k:]
            nat = np.asarray(residual.natural(jnp.asarray(u), R.meta))
            rfit = residual.RSideFit(meta=R.meta, u=read_only(u), natural=read_only(nat))
            Mc = residual.arrays_at_jit(jnp.asarray(nat), M, R)
        theta = tf.theta[:k]
        cond = conditional_estimates(theta, Mc, model.pad_layout if model.rside is None else None)
    singular = tf.singular
    if not (np.all(np.isfinite(cond.beta)) and np.isfinite(cond.sigma) and np.all(np.isfinite(cond.vcov))):
        raise FitError("the estimates are not finite at the optimum (the fixed-effects system is numerically "
                       "singular there); check the model matrix for extreme or collinear columns")

    x_names = list(design.x_names)
    n = model.n
    V = cond.vcov
    if not reml and not design.terms and n > design.p:
        # nlme's gls by ML reports Var(beta) with the unbiased sigma^2 r^2 / (n - p)
        V = V * n / (n - design.p)
    fixef = pd.Series(cond.beta, index=x_names, name="estimate")
    se = pd.Series(np.sqrt(np.diag(V)), index=x_names, name="std_error")
    vcov = pd.DataFrame(V, index=x_names, columns=x_names)
    if model.has_rows:
        eta = design.X @ cond.beta + design.offset
        for t, bi in zip(design.terms, cond.b):
            eta = eta + np.einsum("np,np->n", t.columns, bi[t.codes])
        fitted = pd.Series(eta, index=design.row_index, name="fitted")
        residuals = pd.Series(design.y - eta, index=design.row_index, name="residuals")
    else:
        fitted = pd.Series([], dtype=float, name="fitted")
        residuals = pd.Series([], dtype=float, name="residuals")

    warn_msgs = []
    if not tf.converged:
        warn_msgs.append(
            f"the optimiser did not converge ({tf.message}; max |gradient| "
            f"{np.max(np.abs(tf.grad)):.3g})"
        )
    if singular and design.terms:
        warn_msgs.append("boundary (singular) fit: a variance component is zero or a correlation is +-1")
    optinfo = {
        "optimizer": OPTIMIZERS[optimizer],
        "converged": tf.converged,
        "status": tf.status,
        "message": tf.message,
        "n_iter": tf.n_iter,
        "n_evals": tf.n_evals,
        "grad": read_only(tf.grad),
        "grad_norm": float(np.max(np.abs(tf.grad))) if tf.grad.size else 0.0,
        "hessian_min_eig": tf.hessian_min_eig,
        "restarts": tf.restarts,
        "warnings": tuple(warn_msgs),
        "time_s": time.perf_counter() - t0,
        **(info or {}),
    }
    result = result_type(
        formula=design.formula.formula,
        reml=bool(reml),
        objective=tf.objective,
        nobs=n,
        n_dropped=design.n_dropped,
        _fixef=fixef,
        _se=se,
        _vcov=vcov,
        sigma=cond.sigma,
        theta=read_only(theta),
        theta_names=tuple(theta_names(design.terms)),
        _varcorr=varcorr_table(design.terms, cond.templates, cond.sigma),
        _ranef_source=RanefSource(design, cond),  # picklable: ranef_table(design.terms, cond.b, cond.cond_cov())
        singular=singular,
        _fitted=fitted,
        _residuals=residuals,
        optinfo=make_mapping(optinfo),
        ngroups=make_mapping({t.name: t.n_levels for t in design.terms}),
        dropped_columns=design.dropped_columns,
        weights=read_only(design.weights) if model.has_rows else None,
        data_name=None,
        _model=model,
        _b=tuple(read_only(bi) for bi in cond.b),
        _rside=rfit,
    )
    logger.info("fitted %s by %s: %d evaluations, %.2f s, objective %.6f%s", design.formula.formula,
                "REML" if reml else "ML", tf.n_evals, optinfo["time_s"], tf.objective,
                "" if not warn_msgs else " (" + "; ".join(warn_msgs) + ")")
    if warn_msgs:
        warnings.warn("; ".join(warn_msgs) + " (details in fit.diagnostics)", FitWarning, stacklevel=stacklevel)
    return result


def check_residual_left(model: LmerModel) -> None:
    """Refuse a response that the fixed effects fit exactly (a constant one with an intercept,
    also out of core where no rows are kept): ``y'Wy - (X'Wy)' (X'WX)^+ X'Wy = 0`` leaves nothing
    for random effects or a residual variance (lme4 refuses a constant response)."""
    D = np.asarray(model.gram.diag[-1])[0]
    p = model.p
    yty = float(D[p, p])
    rss = yty
    if p:
        coef, *_ = np.linalg.lstsq(D[:p, :p], D[:p, p], rcond=None)
        rss = yty - float(D[:p, p] @ coef)
    if not rss > 1e-12 * max(yty, 1e-300):
        raise DataError(f"the response {model.design.response!r} is fitted exactly by the fixed effects (residual sum "
                        "of squares 0; e.g. a constant response): nothing is left for random effects or a residual "
                        "variance")


def fit_gram(acc: AccumulatedGram, *, reml: bool, max_iter: int, t0: float, result_type: type = LmmFit,
             optimizer: str = "bfgs") -> LmmFit:
    """Fit from Gram blocks accumulated out of core (:func:`jaxlmm.gram.outofcore.accumulate_dataset`):
    ``acc.design0`` is one chunk's design (names and encodings), ``acc.terms`` its terms in the
    model's order, ``acc.labels`` their global level labels. The record has no per-row outputs."""
    terms = tuple(dataclasses.replace(t, levels=tuple(lab)) for t, lab in zip(acc.terms, acc.labels))
    design = dataclasses.replace(acc.design0, terms=terms, n_dropped=acc.n_dropped)
    model = LmerModel(design=design, specs=acc.specs, gram=acc.gram, totals=(int(acc.n), float(acc.log_w)))
    return fit_model(model, reml=reml, max_iter=max_iter, t0=t0, stacklevel=4, info=acc.info,
                     result_type=result_type, optimizer=optimizer)
