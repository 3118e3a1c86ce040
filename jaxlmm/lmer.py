"""``lmer``: the user-facing pipeline (formula -> design -> Gram -> objective -> optimiser -> result)."""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any

import numpy as np
import pandas as pd

import jax.numpy as jnp

from . import residual
from .correlation import CorrelationStructure
from .arguments import positive_int
from .covariance import check_theta, template_spec, theta_names, theta_start
from .design import Design, build_design
from .errors import ArgumentError, DataError, FitError, FitWarning
from .fit import conditional_estimates, fit_theta
from .gram_shards import use_shards
from .model import LmerModel
from .precision import float64
from .progress import logger
from .records import read_only
from .results import LmerResult, RanefSource, make_mapping
from .residual import structure_columns
from .start import moment_start
from .variance import VarianceFunction


def _theta_names(design: Design) -> list[str]:
    return theta_names(design.terms)


def _varcorr(design: Design, Ts: list[np.ndarray], sigma: float) -> pd.DataFrame:
    rows = []
    seen: dict[str, int] = {}

    def unique(name: str) -> str:
        k = seen.get(name, 0)
        seen[name] = k + 1
        return name if k == 0 else f"{name}.{k}"

    for t, T in zip(design.terms, Ts):
        S = sigma**2 * (T @ T.T)
        cn = t.column_names
        if t.uncorrelated:
            for k in range(t.width):
                rows.append((unique(t.name), cn[k], None, S[k, k], np.sqrt(S[k, k])))
            continue
        g = unique(t.name)
        sd = np.sqrt(np.diag(S))
        for k in range(t.width):
            rows.append((g, cn[k], None, S[k, k], sd[k]))
        for a in range(t.width):
            for b in range(a + 1, t.width):
                corr = S[b, a] / (sd[a] * sd[b]) if sd[a] > 0 and sd[b] > 0 else np.nan
                rows.append((g, cn[a], cn[b], S[b, a], corr))
    rows.append(("Residual", None, None, sigma**2, sigma))
    return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])


def _ranef(design: Design, b: list, cond_cov: list) -> pd.DataFrame:
    """as.data.frame(ranef(fit, condVar = TRUE)): one row per term column and level."""
    if not design.terms:
        return pd.DataFrame({"grpvar": [], "term": [], "grp": [], "condval": [], "condsd": []})
    parts = []
    for t, bi, ci in zip(design.terms, b, cond_cov):
        for k, cname in enumerate(t.column_names):
            parts.append(pd.DataFrame({
                "grpvar": t.name,
                "term": cname,
                "grp": list(t.levels),
                "condval": bi[:, k],
                "condsd": np.sqrt(np.maximum(ci[:, k, k], 0.0)),
            }))
    return pd.concat(parts, ignore_index=True)


def lmer(
    formula: str,
    data: Any,
    *,
    reml: bool = True,
    weights: str | np.ndarray | None = None,
    offset: str | np.ndarray | None = None,
    correlation: CorrelationStructure | None = None,
    variance: VarianceFunction | None = None,
    start: np.ndarray | None = None,
    max_iter: int = 1000,
    shard: bool | None = None,
) -> LmerResult:
    """Fit a linear mixed model ``y = X beta + Z b + e`` in lme4 syntax.

    ``b ~ N(0, sigma^2 Lambda Lambda')``, ``e ~ N(0, sigma^2 W^{-1})``. Maximises the (restricted)
    likelihood over the relative covariance parameters ``theta`` with exact JAX gradients; the
    fixed effects and sigma are profiled out.

    Parameters
    ----------
    formula : ``"y ~ x + (1 + x | g) + (1 | h)"``; ``(e || g)`` uncorrelated; ``(1 | a/b)`` nested;
        ``(1 | a:b)`` interaction of grouping columns.
    data : pandas DataFrame or dict of columns; or Parquet data larger than memory (a path, a
        glob such as ``"data/*.parquet"``, or a ``pyarrow.dataset.Dataset``), whose Gram blocks
        are accumulated batch by batch (``jaxlmm.outofcore``; no per-row outputs).
    reml : REML (default) or maximum likelihood.
    weights : prior weights (column name or array of ``len(data)``), residual variance sigma^2 / w.
    offset : known term added to the linear predictor (column name or array).
    correlation : a residual correlation structure within groups nested in the random-effects
        factors (``jaxlmm.AR1("Subject", "occasion")``, ...; nlme's ``lme(correlation=)``):
        ``e ~ N(0, sigma^2 S C S)`` block diagonal by group. See :func:`jaxlmm.gls`.
    variance : a residual variance function (``jaxlmm.VarIdent("Sex")``, ``VarPower``, ``VarExp``).
    start : starting theta (lme4 order); default: moment estimates for scalar intercept terms,
        identity templates otherwise (see ``jaxlmm.start``).
    shard : sum the Gram blocks over row shards on this process's devices with ``jax.shard_map``
        (``jaxlmm.gram_shards``). Default: when there are several devices and at least 100,000
        rows. The estimates do not depend on it.

    Rows with missing values in any used column are dropped (``n_dropped``). Computation is in
    float64 without changing JAX's global configuration.
    """
    if not isinstance(reml, (bool, np.bool_)):
        raise ArgumentError(f"reml must be True or False, got {reml!r}")
    max_iter = positive_int(max_iter, "max_iter")
    if shard is not None and not isinstance(shard, (bool, np.bool_)):
        raise ArgumentError(f"shard must be True, False or None, got {shard!r}")
    t0 = time.perf_counter()
    from .outofcore import is_dataset, lmer_dataset

    if is_dataset(data):
        if correlation is not None or variance is not None or start is not None or shard:
            raise ArgumentError("fits from a Parquet dataset take no correlation, variance, start or shard")
        return lmer_dataset(formula, data, reml=reml, weights=weights, offset=offset, max_iter=max_iter)
    extra = structure_columns(correlation, variance)
    design = build_design(formula, data, weights=weights, offset=offset, extra_columns=extra)
    specs = tuple(template_spec(t.width, t.uncorrelated) for t in design.terms)
    if start is not None:
        if isinstance(start, dict):
            if set(start) != {"theta"}:
                raise ArgumentError(f"start must be theta values or a dict with the key 'theta', got keys {sorted(start)}")
            start = start["theta"]
        start = check_theta(start, specs, _theta_names(design))
    if reml and design.n <= design.p:
        raise ArgumentError(f"REML needs more observations ({design.n}) than fixed effects ({design.p})")
    model = LmerModel.from_design(design, correlation, variance, shard=use_shards(shard, design.n))
    return fit_model(model, reml=bool(reml), start=start, max_iter=max_iter, t0=t0, stacklevel=3)


def fit_model(model: LmerModel, *, reml: bool, start: np.ndarray | None = None, max_iter: int = 1000,
              t0: float | None = None, stacklevel: int = 2, info: dict | None = None) -> LmerResult:
    """Optimise theta for a built model and assemble the result (lme4's optimizeLmer + mkMerMod).

    A model accumulated out of core (``not model.has_rows``) starts from lme4's identity
    templates and gets no per-row outputs. ``info`` is added to ``optinfo``."""
    t0 = time.perf_counter() if t0 is None else t0
    design = model.design
    specs = model.specs
    _check_residual_left(model)
    k = sum(s.size for s in specs)
    rfit = None
    with float64():
        M = model.arrays(reml)
        scale = model.theta_scale()
        if start is None and model.has_rows:
            start = moment_start(design, specs, scale)
        theta0 = theta_start(specs) * scale if start is None else start
        if model.rside is None:
            tf = fit_theta(M, theta0, max_iter=max_iter, scale=scale)
            Mc = M
        else:
            R = model.rside_arrays()
            tf = fit_theta(M, np.r_[theta0, residual.start(R.meta)], max_iter=max_iter, rside=R, scale=scale)
            u = tf.theta[k:]
            nat = np.asarray(residual.natural(jnp.asarray(u), R.meta))
            rfit = residual.RSideFit(meta=R.meta, u=read_only(u), natural=read_only(nat))
            Mc = residual.arrays_at_jit(jnp.asarray(nat), M, R)
        theta = tf.theta[:k]
        cond = conditional_estimates(theta, Mc)
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
        "optimizer": "bfgs (jax)",
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
    result = LmerResult(
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
        theta_names=tuple(_theta_names(design)),
        _varcorr=_varcorr(design, cond.templates, cond.sigma),
        _ranef_source=RanefSource(design, cond),  # picklable: _ranef(design, cond.b, cond.cond_cov())
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


def _check_residual_left(model: LmerModel) -> None:
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


def fit_gram(gram, specs, design0, terms, labels, *, n: int, n_dropped: int, log_w: float, reml: bool,
             max_iter: int, t0: float, info: dict) -> LmerResult:
    """Fit from accumulated Gram blocks (``jaxlmm.outofcore``): ``design0`` is one chunk's design
    (names and encodings), ``terms`` its terms in the model's order, ``labels`` their global
    level labels. The result has no per-row outputs."""
    terms = tuple(dataclasses.replace(t, levels=tuple(lab)) for t, lab in zip(terms, labels))
    design = dataclasses.replace(design0, terms=terms, n_dropped=n_dropped)
    model = LmerModel(design=design, specs=specs, gram=gram, totals=(int(n), float(log_w)))
    return fit_model(model, reml=reml, max_iter=max_iter, t0=t0, stacklevel=4, info=info)
