"""``lmer``: the user-facing pipeline (formula -> design -> Gram -> objective -> optimiser -> result):
arguments checked, the design built (or the Gram blocks accumulated from Parquet), the model
fitted by :mod:`jaxlmm.lmm.engine` into an :class:`jaxlmm.LmerResult`."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..arguments import positive_int
from ..covariance.templates import check_theta, template_spec, theta_names
from ..errors import ArgumentError
from ..gram.outofcore import DEFAULT_BATCH_ROWS, accumulate_dataset, is_dataset
from ..gram.shards import use_shards
from ..rside.correlation import CorrelationStructure
from ..rside.residual import structure_columns
from ..rside.variance import VarianceFunction
from ..terms.design import build_design
from .engine import fit_gram, fit_model
from .fit import check_optimizer
from .model import LmerModel
from .result import LmerResult


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
    optimizer: str = "bfgs",
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
    optimizer : ``"bfgs"`` (default; BFGS with exact gradients, in interruptible chunks) or
        ``"newton"`` (Newton with the exact Hessian in a trust region: fewer iterations of about
        ``len(theta)`` gradients each; not with ``correlation``/``variance`` or terms of more
        than 6 columns). Both end with the same checks (boundary snap, saddle restarts).

    Rows with missing values in any used column are dropped (``n_dropped``). Computation is in
    float64 without changing JAX's global configuration.
    """
    if not isinstance(reml, (bool, np.bool_)):
        raise ArgumentError(f"reml must be True or False, got {reml!r}")
    max_iter = positive_int(max_iter, "max_iter")
    if shard is not None and not isinstance(shard, (bool, np.bool_)):
        raise ArgumentError(f"shard must be True, False or None, got {shard!r}")
    check_optimizer(optimizer)
    t0 = time.perf_counter()
    if is_dataset(data):
        if correlation is not None or variance is not None or start is not None or shard:
            raise ArgumentError("fits from a Parquet dataset take no correlation, variance, start or shard")
        return lmer_dataset(formula, data, reml=reml, weights=weights, offset=offset, max_iter=max_iter,
                            optimizer=optimizer)
    extra = structure_columns(correlation, variance)
    design = build_design(formula, data, weights=weights, offset=offset, extra_columns=extra)
    specs = tuple(template_spec(t.width, t.uncorrelated) for t in design.terms)
    if start is not None:
        if isinstance(start, dict):
            if set(start) != {"theta"}:
                raise ArgumentError(f"start must be theta values or a dict with the key 'theta', got keys {sorted(start)}")
            start = start["theta"]
        start = check_theta(start, specs, theta_names(design.terms))
    if reml and design.n <= design.p:
        raise ArgumentError(f"REML needs more observations ({design.n}) than fixed effects ({design.p})")
    check_optimizer(optimizer, specs, correlation is not None or variance is not None)
    model = LmerModel.from_design(design, correlation, variance, shard=use_shards(shard, design.n))
    return fit_model(model, reml=bool(reml), start=start, max_iter=max_iter, t0=t0, stacklevel=3,
                     result_type=LmerResult, optimizer=optimizer)


def lmer_dataset(formula: str, source: Any, *, reml: bool = True, weights: str | None = None,
                 offset: str | None = None, batch_rows: int = DEFAULT_BATCH_ROWS, max_iter: int = 1000,
                 optimizer: str = "bfgs") -> LmerResult:
    """Fit ``formula`` to a Parquet dataset without loading it: the Gram blocks accumulated batch
    by batch (:mod:`jaxlmm.gram.outofcore`), then the fit from them (no per-row outputs)."""
    t0 = time.perf_counter()
    max_iter = positive_int(max_iter, "max_iter")
    check_optimizer(optimizer)
    acc = accumulate_dataset(formula, source, weights=weights, offset=offset, batch_rows=batch_rows)
    return fit_gram(acc, reml=bool(reml), max_iter=max_iter, t0=t0, result_type=LmerResult, optimizer=optimizer)
