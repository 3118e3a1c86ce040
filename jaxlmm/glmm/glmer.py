"""``glmer``: generalized linear mixed models (formula -> design -> GLMM arrays -> Laplace / AGQ
objective -> BFGS over ``(theta, beta)`` -> :class:`GlmerResult`), lme4's ``glmer``: the front
door (arguments, family, design); the engine is :mod:`jaxlmm.glmm.fit`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..arguments import positive_int
from ..covariance.templates import template_spec
from ..errors import ArgumentError, FormulaError
from ..terms.design import build_design
from ..terms.formula import parse_formula
from .family import Family, family as make_family
from .fit import fit_glmm, start_values
from .model import GlmmModel, check_nagq
from .result import GlmerResult

def glmer(
    formula: str,
    data: Any,
    family: "str | Family" = "binomial",
    *,
    link: str | None = None,
    weights: str | np.ndarray | None = None,
    offset: str | np.ndarray | None = None,
    nagq: int = 1,
    start: dict | None = None,
    max_iter: int = 1000,
):
    """Fit a generalized linear mixed model ``g(E[y | b]) = X beta + Z b + offset`` in lme4 syntax.

    ``b ~ N(0, Lambda Lambda')``; ``y | b`` from ``family``: ``"binomial"`` (0/1, a proportion
    with ``weights`` = number of trials, or ``cbind(successes, failures) ~ ...``), ``"poisson"``,
    ``"gamma"``, or a :class:`jaxlmm.family.Family` (``jaxlmm.binomial("probit")``); ``link``
    overrides the family's link.

    Maximises the Laplace approximation (``nagq = 1``) or the adaptive Gauss-Hermite
    approximation with ``nagq`` nodes (one scalar random-effects term only) of the likelihood over
    ``(theta, beta)`` (and the dispersion for Gamma) with exact JAX gradients; the conditional
    modes come from PIRLS on the blocked sparse Cholesky at every evaluation.

    ``start``: ``{"theta": ..., "beta": ...}`` (either may be left out). Rows with missing values
    in any used column are dropped. Computation is in float64 without changing JAX's global
    configuration.
    """
    t0 = time.perf_counter()
    max_iter = positive_int(max_iter, "max_iter")
    fam = make_family(family, link)
    if not isinstance(formula, str):
        raise ArgumentError(f"formula must be a string, got {type(formula).__name__}")
    pf = parse_formula(formula)
    if pf.cbind is not None and fam.name != "binomial":
        raise FormulaError(f"a cbind() response is for the binomial family, not {fam.name}")
    design = build_design(pf, data, weights=weights, offset=offset, residual=False, caller="glmer")
    fam.check_response(design.y, design.weights, f"response {design.response!r}")
    nagq = check_nagq(nagq, design)
    specs = tuple(template_spec(t.width, t.uncorrelated) for t in design.terms)
    model = GlmmModel(design=design, family=fam, specs=specs, nagq=nagq)
    x0, glm_beta = start_values(model, start)
    return fit_glmm(model, x0, glm_beta=glm_beta, max_iter=max_iter, t0=t0, result_type=GlmerResult)
