"""The fitted generalized linear mixed model users hold: :class:`GlmerResult`, the
:class:`GlmmFit` record with predictions on either scale, simulation, refits, the parametric
bootstrap (:mod:`jaxlmm.glmm.simulate`) and the reports (:mod:`jaxlmm.report`) as methods."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pandas as pd

from ..errors import ArgumentError
from ..inference.predict import predict
from ..precision import float64
from ..report.summary import Summary, format_summary
from ..report.tidy import NotebookView, glance, summary_markdown, tidy
from .record import GlmmFit
from .simulate import bootstrap, refit, simulate


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class GlmerResult(GlmmFit, NotebookView):
    """A generalized linear mixed model fitted by maximum likelihood (Laplace or adaptive
    Gauss-Hermite approximation).

    ``objective`` is ``-2 log L`` (the approximation, all constants included: lme4's
    ``-2 * logLik(fit)`` for ``nagq = 1``); ``theta`` the relative covariance parameters in
    lme4's order (for binomial and Poisson the random-effect SDs themselves); ``fitted`` the
    conditional means on the response scale. Immutable: pandas objects are returned as copies.
    """

    def predict(self, newdata=None, type: str = "link", re: bool = True,
                new_levels: str = "population") -> pd.Series:
        """Predictions on the ``"link"`` scale (``eta``) or the ``"response"`` scale
        (``g^{-1}(eta)``); ``re`` and ``new_levels`` as :meth:`jaxlmm.LmerResult.predict`."""
        if type not in ("link", "response"):
            raise ArgumentError(f"type must be 'link' or 'response', got {type!r}")
        eta = predict(self, newdata=newdata, re=re, new_levels=new_levels)
        if type == "link":
            return eta
        with float64():
            mu = np.asarray(self.family.link.inverse(eta.to_numpy()))
        return pd.Series(mu, index=eta.index, name="predicted")

    def simulate(self, n: int = 1, seed=None, re: bool = True) -> pd.DataFrame:
        """``n`` responses drawn from the fitted model (new random effects with ``re=True``,
        lme4's default; the conditional modes otherwise), one column each."""
        return simulate(self, n=n, seed=seed, re=re)

    def refit(self, y) -> "GlmerResult":
        """The same model fitted to a new response (one value per row used)."""
        return refit(self, y)

    def bootstrap(self, n: int = 200, seed=None, *, batch_size: int | None = None) -> pd.DataFrame:
        """Parametric bootstrap: ``n`` responses simulated from the fit and refitted by one
        compiled, vmapped program. One row per replicate: fixed effects, theta, objective,
        converged."""
        return bootstrap(self, n=n, seed=seed, batch_size=batch_size)

    def tidy(self, effects=("fixed", "ran_pars"), conf_int: bool = False, conf_level: float = 0.95) -> pd.DataFrame:
        """broom.mixed's ``tidy``: fixed effects with Wald z tests (``df`` infinite) and the
        random-effect SDs and correlations (``ran_pars``, without standard errors)."""
        return tidy(self, effects=effects, ddf=None, conf_int=conf_int, conf_level=conf_level)

    def glance(self) -> pd.DataFrame:
        """broom's ``glance``: one row with ``nobs, sigma, logLik, AIC, BIC, deviance, df.residual``."""
        return glance(self)

    def summary(self) -> Summary:
        """What lme4's ``summary()`` prints for a glmer fit (``str``); ``.markdown`` the same
        content as Markdown tables."""
        return Summary(format_summary(self), markdown=functools.partial(summary_markdown, self))
