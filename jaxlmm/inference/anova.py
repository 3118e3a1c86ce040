"""Likelihood-ratio tests between nested fits of the same data (lme4's ``anova.merMod``).

REML criteria of models with different fixed effects are not comparable, so REML fits are
refitted by maximum likelihood first (as lme4 does, and said so in ``attrs["refitted"]``).
lmer fits compare with lmer fits, glmer with glmer (one family and ``nagq``), nlmer with nlmer
(one method: Laplace, AGQ with one ``nagq``, or Lindstrom-Bates, whose REML fits are refitted by
ML).
Models are ordered by their number of parameters; each row is tested against the previous:
``Chisq = deviance_prev - deviance``, ``Df = npar - npar_prev``, ``p = P(chi2_Df > Chisq)``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import distributions
from ..errors import ArgumentError
from ..glmm.record import GlmmFit
from ..lmm.engine import fit_model
from ..lmm.fit import optimizer_of
from ..lmm.record import LmmFit
from ..nlmm.record import NlmmFit
from ..nlmm.simulate import refit_ml

KINDS = ((LmmFit, "lmer"), (GlmmFit, "glmer"), (NlmmFit, "nlmer"))


def _ml(fit):
    if not fit.reml:
        return fit
    if isinstance(fit, NlmmFit):
        return refit_ml(fit)
    return fit_model(fit._model, reml=False, start=None, stacklevel=4, optimizer=optimizer_of(fit))


def _data(fit):
    """The design holding the fit's response, rows and weights."""
    return fit._design.lmm if isinstance(fit, NlmmFit) else fit._model.design


def anova(*fits, names: list[str] | None = None, refit: bool = True) -> pd.DataFrame:
    """Compare nested models: columns ``npar, AIC, BIC, logLik, deviance, Chisq, Df, p``.

    ``names``: row labels (default ``model1``, ``model2``, ... in the order given, or the
    formulas). ``refit=False`` keeps REML fits as they are (only valid when all share the
    fixed effects).
    """
    if len(fits) < 2:
        raise ArgumentError("anova needs at least two fitted models")
    kinds = []
    for k, f in enumerate(fits):
        kind = next((name for cls, name in KINDS if isinstance(f, cls)), None)
        if kind is None:
            raise ArgumentError(f"argument {k + 1} is a {type(f).__name__}, not a fitted model (LmerResult, "
                                "GlmerResult or NlmerResult)")
        f._rows_only("anova")
        kinds.append(kind)
    if len(set(kinds)) > 1:
        raise ArgumentError(f"anova compares fits of one kind (lmer with lmer, glmer with glmer, nlmer with nlmer); "
                            f"these are {', '.join(kinds)}")
    if kinds[0] == "nlmer":
        how = {(f.method, f.nagq) for f in fits}
        if len(how) > 1:
            raise ArgumentError("nlmer fits by different methods (or nagq) have likelihood approximations that do "
                                f"not compare: {sorted(how)}; refit them by one method")
    if kinds[0] == "glmer":
        fams = {(f.family.name, f.family.link.name) for f in fits}
        if len(fams) > 1:
            raise ArgumentError(f"glmer fits with different families or links are not nested: {sorted(fams)}")
        if len({f.nagq for f in fits}) > 1:
            raise ArgumentError("glmer fits with different nagq have likelihood approximations that do not compare")
    if names is None:
        names = [f"model{k + 1}" for k in range(len(fits))]
    names = [str(n) for n in names]
    if len(names) != len(fits) or len(set(names)) != len(names):
        raise ArgumentError(f"names must give one distinct label per model ({len(fits)})")
    base = _data(fits[0])
    for k, f in enumerate(fits[1:], start=2):
        d = _data(f)
        if d.response != base.response:
            raise ArgumentError(
                f"model {k} has response {d.response!r}, model 1 {base.response!r}: "
                "likelihood-ratio tests need the same response"
            )
        if d.n != base.n or not np.array_equal(d.y, base.y) or not np.array_equal(d.weights, base.weights):
            raise ArgumentError(
                f"model {k} was fitted to different data than model 1 ({d.n} vs {base.n} rows used, "
                "or different response values or weights): refit both to the same rows"
            )
    refitted = []
    if refit:
        ml = []
        for name, f in zip(names, fits):
            if f.reml:
                refitted.append(name)
            ml.append(_ml(f))
    else:
        if len({f.reml for f in fits}) > 1:
            raise ArgumentError("refit=False needs all models fitted by the same method (REML or ML)")
        ml = list(fits)
    npar = np.array([f.df for f in ml])
    order = np.argsort(npar, kind="stable")
    rows = []
    prev = None
    for k in order:
        f = ml[k]
        dev = f.objective
        row = {"npar": int(npar[k]), "AIC": f.aic, "BIC": f.bic, "logLik": f.loglik, "deviance": dev,
               "Chisq": np.nan, "Df": np.nan, "p": np.nan}
        if prev is not None:
            chisq = prev.objective - dev
            df = int(npar[k]) - prev.df
            row["Chisq"] = max(chisq, 0.0)
            row["Df"] = df
            row["p"] = float(distributions.chi2_sf(max(chisq, 0.0), df)) if df > 0 else np.nan
        rows.append(row)
        prev = f
    out = pd.DataFrame(rows, index=pd.Index([names[k] for k in order], name="model"))
    out["Df"] = out["Df"].astype("Int64")
    out.attrs["refitted"] = tuple(refitted)
    if refitted:
        out.attrs["note"] = f"refitted with ML (not REML): {', '.join(refitted)}"
    return out
