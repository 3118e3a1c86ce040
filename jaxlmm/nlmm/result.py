"""The fitted nonlinear mixed model users hold: :class:`NlmerResult`, the :class:`NlmmFit`
record with simulation, refits and the parametric bootstrap (:mod:`jaxlmm.nlmm.simulate`) as
methods."""

from __future__ import annotations

import dataclasses

import pandas as pd

from .record import NlmmFit
from .simulate import bootstrap, refit, simulate


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class NlmerResult(NlmmFit):
    """A nonlinear mixed model fitted by ML (or REML for ``method="lb"``); see :class:`NlmmFit`
    for the estimates and accessors."""

    def simulate(self, n: int = 1, seed=None, re: bool = True) -> pd.DataFrame:
        """``n`` responses drawn from the fitted model, one column each: ``f`` at new random
        effects (``re=True``, lme4's default) or at the conditional modes, plus new residuals."""
        return simulate(self, n=n, seed=seed, re=re)

    def refit(self, y) -> "NlmerResult":
        """The same model fitted by the same method to a new response (one value per row used;
        a Series is matched by index label), from this fit's estimates."""
        return refit(self, y)

    def bootstrap(self, n: int = 200, seed=None, *, batch_size: int | None = None) -> pd.DataFrame:
        """Parametric bootstrap: ``n`` responses simulated from the fit and refitted by the fit's
        method in one compiled, vmapped program. One row per replicate: fixed effects, the
        random effects' SDs and correlations, ``sigma``, ``objective``, ``converged``."""
        return bootstrap(self, n=n, seed=seed, batch_size=batch_size)
