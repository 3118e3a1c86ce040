"""``nlmer_many``: one nonlinear mixed-model structure fitted to many responses by one compiled
program (:mod:`jaxlmm.nlmm.batch`)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from ..arguments import optional_positive_int
from ..errors import ArgumentError, FitWarning, warn_unconverged
from ..lmm.many import check_responses, responses_matrix
from ..terms.formula import ParsedFormula
from ..terms.frames import as_frame
from .batch import fit_responses
from .design import build_nlmm_design
from .nlmer import check_max_iter, fixed_start, model_and_start
from .simulate import estimates_frame


def nlmer_many(model: Any, data: Any, start: dict | None = None, random: str | None = None, *, responses=None,
               fixed: dict | None = None, method: str = "laplace", nagq: int = 1, reml: bool = False,
               correlation=None, variance=None, weights=None, batch_size: int | None = None,
               max_iter: int = 1000) -> pd.DataFrame:
    """Fit ``y_b = f(A beta_b + B b_b) + e_b`` for many responses ``y_b`` sharing one design: the
    model, ``start``, ``random``, ``fixed``, ``method``, ``nagq``, ``reml`` and ``weights`` as
    :func:`jaxlmm.nlmer`.

    ``responses``: column names of ``data``, or an ``(n, B)`` array / DataFrame aligned with its
    rows (default: the model's response). Rows with a missing value in any used column, any
    response included, are dropped for all. Each response starts from its own nonlinear
    least-squares fit from ``start`` (a self-starting model's start comes from the first
    response), and all are fitted by one vmapped program in batches of ``batch_size`` (default:
    sized to memory). Returns one row per response: the fixed effects in nlme's names, their
    standard errors (``se_<name>``), the random effects' SDs and correlations
    (``sd_Asym|Tree``), ``sigma``, ``objective`` (``-2 log L``, or the REML criterion),
    ``converged``, ``singular`` and ``n_evals``. Non-converged responses are counted in one
    ``FitWarning``; boundary estimates are not snapped to zero.
    """
    t0 = time.perf_counter()
    max_iter = check_max_iter(max_iter)
    if correlation is not None or variance is not None:
        raise ArgumentError("nlmer_many fits independent residuals; fit a model with a residual correlation or "
                            "variance structure response by response with nlmer(..., method='lb')")
    batch_size = optional_positive_int(batch_size, "batch_size")
    mean, names, self_start, start = model_and_start(model, start)
    df = as_frame(data)
    pf = ParsedFormula(formula=str(model), response=mean.response, fixed="1", random=())
    Y_all, display = responses_matrix(df, responses, pf)
    df = df.assign(**{mean.response: Y_all[:, 0]})  # the model's response column is the first response
    design = build_nlmm_design(mean, df, names, random, fixed, weights, responses=Y_all, caller="nlmer_many")
    Y = design.lmm.responses
    check_responses(Y, display)
    method, nagq, beta0, G = fixed_start(design, self_start, start, method, nagq, reml)
    r = fit_responses(G, Y, beta0, method, reml, batch_size=batch_size, max_iter=max_iter, label="nlmer_many fits")
    est = estimates_frame(r["x"], design, pd.Index(display, name="response"))
    x_names = list(design.x_names)
    se = np.sqrt(np.maximum(np.diagonal(r["vcov_beta"], axis1=1, axis2=2), 0.0))
    frame = pd.concat([est[x_names], pd.DataFrame(se, columns=[f"se_{n}" for n in x_names], index=est.index),
                       est.drop(columns=x_names)], axis=1)
    frame["objective"] = r["objective"]
    frame["converged"] = r["converged"]
    frame["singular"] = r["singular"]
    frame["n_evals"] = r["n_evals"]
    frame.attrs.update(model=design.mean.text, method=method, nagq=nagq, reml=bool(reml), nobs=design.n, n_dropped=design.lmm.n_dropped,
                       seconds=time.perf_counter() - t0)
    warn_unconverged(r["converged"], "fits", FitWarning, stacklevel=2)
    return frame
