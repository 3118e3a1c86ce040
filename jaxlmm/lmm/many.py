"""``lmer_many``: one model structure fitted to many responses by one compiled program."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from ..arguments import optional_positive_int, positive_int
from .batch import fit_many
from ..covariance.templates import diagonal_mask
from ..terms.design import build_design, check_varies
from ..terms.formula import ParsedFormula, parse_formula
from ..terms.frames import as_frame
from ..terms.rlang import closest
from ..errors import ArgumentError, DataError, FitWarning, warn_unconverged
from ..optim.finish import SINGULAR_TOL
from .model import LmerModel
from ..covariance.sdcor import sdcor_names
from ..covariance.start import moment_start


def responses_matrix(df: pd.DataFrame, responses, pf: ParsedFormula) -> tuple[np.ndarray, list[str]]:
    """The responses as an ``(len(df), B)`` float array and their display names: column names of
    ``df`` (default: the formula's response), or an ``(n, B)`` array / DataFrame."""
    if responses is None:
        if pf.response is None or pf.cbind is not None:
            raise ArgumentError("give responses= (column names or an (n, B) array) or a response column left of '~'")
        if pf.response not in df.columns:
            raise DataError(f"the response {pf.response!r} left of '~' must be a column; {closest(pf.response, df.columns)}")
        responses = [pf.response]
    if isinstance(responses, str):
        responses = [responses]
    if isinstance(responses, (list, tuple, pd.Index)):
        names = [str(r) for r in responses]
        if not names:
            raise ArgumentError("responses is empty")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ArgumentError(f"responses lists {dup[0]!r} more than once")
        missing = [n for n in names if n not in df.columns]
        if missing:
            raise DataError(f"unknown response column {missing[0]!r}; {closest(missing[0], df.columns)}")
        for n in names:
            if not pd.api.types.is_numeric_dtype(df[n]) or pd.api.types.is_bool_dtype(df[n]):
                raise DataError(f"response column {n!r} must be numeric, it has dtype {df[n].dtype}")
            if isinstance(df[n], pd.DataFrame):
                raise DataError(f"data has more than one column named {n!r}")
        Y = np.column_stack([df[n].to_numpy(dtype=np.float64, na_value=np.nan) for n in names])
        return Y, names
    if isinstance(responses, pd.DataFrame):
        display = [str(c) for c in responses.columns]
        Y = responses.to_numpy()
    else:
        Y = np.asarray(responses)
        if Y.ndim == 1:
            Y = Y[:, None]
        display = [f"y{k + 1}" for k in range(Y.shape[1])] if Y.ndim == 2 else []
    if Y.ndim != 2 or Y.shape[1] == 0:
        raise ArgumentError(f"responses must be column names or an (n, B) array, got shape {Y.shape}")
    if Y.shape[0] != len(df):
        raise ArgumentError(f"responses has {Y.shape[0]} rows but data has {len(df)}")
    try:
        Y = Y.astype(np.float64)
    except (TypeError, ValueError):
        raise DataError("responses must be numeric") from None
    return Y, display


def check_responses(Y: np.ndarray, names: list[str]) -> None:
    """Finite values, and no constant response (lme4 refuses one)."""
    bad = ~np.isfinite(Y).all(axis=0)
    if bad.any():
        raise DataError(f"response {names[int(np.nonzero(bad)[0][0])]!r} has infinite values")
    for b, name in enumerate(names):
        check_varies(Y[:, b], repr(name))


def lmer_many(
    formula: str,
    data: Any,
    responses=None,
    *,
    reml: bool = True,
    weights: str | np.ndarray | None = None,
    offset: str | np.ndarray | None = None,
    batch_size: int | None = None,
    max_iter: int = 1000,
    shard: bool | None = None,
) -> pd.DataFrame:
    """Fit ``y_b = X beta_b + Z b_b + e_b`` for many responses ``y_b`` sharing one design.

    ``formula``: ``"~ x + (1 | g)"`` (or with a response, which ``responses`` replaces).
    ``responses``: column names of ``data``, or an ``(n, B)`` array / DataFrame aligned with
    ``data``'s rows. Rows with a missing value in any used column, any response included, are
    dropped for every response (count in ``attrs["n_dropped"]``).

    One compiled program fits all responses: BFGS is ``vmap``-ped over them in batches
    (``batch_size``, default a power of two up to 64 on CPU, 1,024 on accelerators), sharded over the devices when there are
    several (``shard``; see ``jaxlmm.batch``). Each response starts from the moment estimate of
    the first. Returns one row per response (index: the response names) with the fixed effects,
    their standard errors (``se_<name>``), the sd/cor parameters and ``sigma`` (lme4's names, as
    :meth:`LmerResult.bootstrap`), ``objective`` (REML criterion or deviance), ``converged``,
    ``n_evals`` and ``singular`` (a template diagonal below lme4's tolerance; estimates there
    are not snapped to the boundary). Non-converged responses are flagged there and counted in one ``FitWarning``.
    """
    if not isinstance(reml, (bool, np.bool_)):
        raise ArgumentError(f"reml must be True or False, got {reml!r}")
    max_iter = positive_int(max_iter, "max_iter")
    if shard is not None and not isinstance(shard, (bool, np.bool_)):
        raise ArgumentError(f"shard must be True, False or None, got {shard!r}")
    batch_size = optional_positive_int(batch_size, "batch_size")
    t0 = time.perf_counter()
    pf = parse_formula(formula, response_required=False)
    df = as_frame(data)
    Y_all, display = responses_matrix(df, responses, pf)
    design = build_design(pf, df, weights=weights, offset=offset, responses=Y_all, caller="lmer_many")
    Y = design.responses
    check_responses(Y, display)
    if reml and design.n <= design.p:
        raise ArgumentError(f"REML needs more observations ({design.n}) than fixed effects ({design.p})")
    model = LmerModel.from_design(design)
    r = fit_many(model, Y, moment_start(design, model.specs), bool(reml), batch_size=batch_size,
                 max_iter=max_iter, shard=shard)
    x_names = list(design.x_names)
    frame = pd.DataFrame(r["beta"], columns=x_names, index=pd.Index(display, name="response"))
    for k, name in enumerate(x_names):
        frame[f"se_{name}"] = r["se"][:, k]
    for k, name in enumerate(sdcor_names(design, model.specs)):
        v = r["sdcor"][:, k]
        frame[name] = np.abs(v) if name.startswith("sd_") or name == "sigma" else v
    frame["objective"] = r["objective"]
    frame["converged"] = r["converged"]
    frame["singular"] = np.any(np.abs(r["theta"][:, diagonal_mask(model.specs)]) < SINGULAR_TOL, axis=1)
    frame["n_evals"] = r["n_evals"]
    frame.attrs.update(formula=f"~ {pf.rhs}", reml=bool(reml), nobs=design.n, n_dropped=design.n_dropped,
                       seconds=time.perf_counter() - t0)
    warn_unconverged(r["converged"], "fits", FitWarning, stacklevel=2)
    return frame
