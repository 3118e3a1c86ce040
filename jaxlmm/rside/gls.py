"""``gls``: fixed effects with structured residuals and no random effects (nlme's ``gls``)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..arguments import positive_int
from .correlation import CorrelationStructure
from ..terms.design import build_design
from ..errors import ArgumentError, FormulaError
from ..terms.formula import parse_formula
from ..lmm.engine import fit_model
from ..lmm.model import LmerModel
from .residual import structure_columns
from ..lmm.result import LmerResult
from .variance import VarianceFunction


def gls(
    formula: str,
    data: Any,
    *,
    correlation: CorrelationStructure | None = None,
    variance: VarianceFunction | None = None,
    reml: bool = True,
    weights: str | np.ndarray | None = None,
    max_iter: int = 1000,
) -> LmerResult:
    """Generalised least squares: ``y = X beta + e``, ``e ~ N(0, sigma^2 Lambda_R)``.

    ``Lambda_R`` is block diagonal by the correlation structure's groups:
    ``Lambda_g = W_g^{-1/2} S_g C_g S_g W_g^{-1/2}`` with ``C_g`` the within-group correlation
    (``correlation``: :class:`~jaxlmm.AR1`, :class:`~jaxlmm.Exponential`,
    :class:`~jaxlmm.CompoundSymmetry`, :class:`~jaxlmm.Unstructured`, :class:`~jaxlmm.Toeplitz`)
    and ``S_g`` the diagonal of relative SDs from ``variance`` (:class:`~jaxlmm.VarIdent`,
    :class:`~jaxlmm.VarPower`, :class:`~jaxlmm.VarExp`). REML (default) or ML over the
    structures' parameters with beta and sigma profiled out; nlme's definitions of the
    likelihood, so ``loglik``, ``aic`` and ``bic`` match ``gls`` (BIC of a REML fit uses
    ``n - p`` observations, as nlme).

    The result is an :class:`~jaxlmm.LmerResult` without random effects, with
    ``correlation_params`` / ``variance_params`` (natural scale) and ``residual_params``
    (estimates with standard errors from the exact Hessian), and ``resid(type="normalized")``.
    """
    if not isinstance(reml, (bool, np.bool_)):
        raise ArgumentError(f"reml must be True or False, got {reml!r}")
    max_iter = positive_int(max_iter, "max_iter")
    t0 = time.perf_counter()
    pf = parse_formula(formula)
    if pf.random:
        raise FormulaError(
            f"gls fits no random effects, but formula {pf.formula!r} has "
            f"{', '.join(str(t) for t in pf.random)}; use jaxlmm.lmer(..., correlation=...) for both"
        )
    extra = structure_columns(correlation, variance)
    design = build_design(pf, data, weights=weights, extra_columns=extra, require_random=False)
    if reml and design.n <= design.p:
        raise ArgumentError(f"REML needs more observations ({design.n}) than fixed effects ({design.p})")
    model = LmerModel.from_design(design, correlation, variance)
    return fit_model(model, reml=bool(reml), max_iter=max_iter, t0=t0, stacklevel=3, result_type=LmerResult)
