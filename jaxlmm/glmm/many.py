"""``glmer_many``: one GLMM structure fitted to many responses by one compiled program."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from ..arguments import optional_positive_int, positive_int
from ..terms.design import build_design
from ..errors import FitWarning, warn_unconverged
from .family import Family, family as make_family
from ..terms.frames import as_frame
from .fit import start_values
from .model import GlmmModel, check_nagq
from .batch import fit_responses
from ..covariance.sdcor import sdcor_rows
from ..covariance.templates import template_spec
from ..lmm.many import check_responses, responses_matrix
from ..terms.formula import parse_formula
from ..covariance.sdcor import sdcor_names


def glmer_many(
    formula: str,
    data: Any,
    responses=None,
    family: "str | Family" = "binomial",
    *,
    link: str | None = None,
    weights: str | np.ndarray | None = None,
    offset: str | np.ndarray | None = None,
    nagq: int = 1,
    batch_size: int | None = None,
    max_iter: int = 1000,
) -> pd.DataFrame:
    """Fit ``g(E[y_b | b]) = X beta_b + Z b`` for many responses ``y_b`` sharing one design
    (as :func:`jaxlmm.lmer_many`; the family, weights and offset are shared).

    ``responses``: column names of ``data`` or an ``(n, B)`` array. Rows with a missing value in
    any used column, any response included, are dropped for all. One compiled program fits all
    responses (BFGS with PIRLS inside, ``vmap``-ped in batches of ``batch_size``). Each starts
    from its own GLM fit and identity templates. Returns one row per response: the fixed effects, their
    standard errors (``se_<name>``), the random-effect sd/cor (``sd_(Intercept)|g``, ...),
    ``objective`` (``-2 log L``), ``converged``, ``singular`` and ``n_evals``.
    """
    max_iter = positive_int(max_iter, "max_iter")
    batch_size = optional_positive_int(batch_size, "batch_size")
    t0 = time.perf_counter()
    fam = make_family(family, link)
    pf = parse_formula(formula, response_required=False)
    df = as_frame(data)
    Y_all, display = responses_matrix(df, responses, pf)
    design = build_design(pf, df, weights=weights, offset=offset, responses=Y_all, residual=False,
                          caller="glmer_many")
    Y = design.responses
    check_responses(Y, display)
    for b, name in enumerate(display):
        fam.check_response(Y[:, b], design.weights, f"response {name!r}")
    nagq = check_nagq(nagq, design)
    specs = tuple(template_spec(t.width, t.uncorrelated) for t in design.terms)
    model = GlmmModel(design=design, family=fam, specs=specs, nagq=nagq)
    x0, _ = start_values(model, None)
    r = fit_responses(model, Y, x0, glm_beta=True, batch_size=batch_size, max_iter=max_iter)
    k, p = model.n_theta, model.p
    x_names = list(design.x_names)
    frame = pd.DataFrame(r["x"][:, k : k + p], columns=x_names, index=pd.Index(display, name="response"))
    se = np.sqrt(np.maximum(np.diagonal(r["vcov_beta"], axis1=1, axis2=2), 0.0))
    for j, name in enumerate(x_names):
        frame[f"se_{name}"] = se[:, j]
    sc = sdcor_rows(r["x"][:, :k], specs)
    for j, name in enumerate(sdcor_names(design, specs)[:-1]):
        frame[name] = sc[:, j]
    if not fam.scale_free:
        frame["dispersion"] = np.exp(r["x"][:, k + p])
    frame["objective"] = r["objective"]
    frame["converged"] = r["converged"]
    frame["singular"] = r["singular"]
    frame["n_evals"] = r["n_evals"]
    frame.attrs.update(formula=f"~ {pf.rhs}", family=repr(fam), nagq=nagq, nobs=design.n,
                       n_dropped=design.n_dropped, seconds=time.perf_counter() - t0)
    warn_unconverged(r["converged"], "fits", FitWarning, stacklevel=2)
    return frame
