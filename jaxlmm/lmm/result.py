"""The fitted linear mixed model users hold: :class:`LmerResult`, the :class:`LmmFit` record with
lme4's inference and reports as methods (methods outside the engine, as lme4's ``merMod``).

Every method is a thin call into the rooms below: exact Hessians and delta-method SEs
(:mod:`jaxlmm.inference.hessian`), intervals and profiles, Satterthwaite and Kenward–Roger
tests (:mod:`jaxlmm.inference.ddf`), predictions, simulation, refits and the bootstrap
(:mod:`jaxlmm.inference.simulate`), and the printed and tidy reports (:mod:`jaxlmm.report`).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pandas as pd

from ..inference.ddf import coef_table, hypothesis_test
from ..inference.hessian import (
    covariance_from_hessian,
    sdcor_table,
    theta_hessian,
    varcorr_with_se,
    varpar_hessian,
)
from ..inference.intervals import confint
from ..inference.predict import predict
from ..inference.profile import profile
from ..inference.simulate import bootstrap, refit, simulate
from ..covariance.sdcor import sdcor_names
from ..records import read_only
from ..report import tidy
from ..report.tidy import NotebookView
from ..report.summary import Summary, format_summary
from ..rside.residual import natural_hessian
from .record import LmmFit


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class LmerResult(LmmFit, NotebookView):
    """A linear mixed model fitted by REML or ML.

    ``objective`` is lme4's REML criterion or deviance (``-2 log L`` at the optimum);
    ``theta`` the relative covariance factor parameters in lme4's order; ``fixef``/``se``/``vcov``
    the fixed effects; ``varcorr`` and ``ranef`` as R's ``as.data.frame(VarCorr(fit))`` and
    ``as.data.frame(ranef(fit, condVar = TRUE))``.

    Immutable: the pandas objects are returned as fresh copies, arrays are read-only.
    """

    @property
    def varcorr(self) -> pd.DataFrame:
        """As R's ``as.data.frame(VarCorr(fit))``: grp, var1, var2, vcov, sdcor; plus ``se``, the
        Wald standard error of ``sdcor`` (delta method from the exact Hessian of the deviance in
        ``(theta, sigma)``; NaN for a term at the boundary). The first access computes the
        Hessian (without ``se`` for fits with a residual structure: see ``residual_params``)."""
        if self._rside is not None:
            return self._varcorr.copy()
        return self._varcorr_se.copy()

    @functools.cached_property
    def _residual_params(self) -> pd.DataFrame:
        r = self._rside
        H = natural_hessian(self._model, self.theta, r.natural, self.sigma, self.reml)
        A, _ = covariance_from_hessian(H)
        k = len(self.theta)
        se = np.sqrt(np.maximum(np.diag(A)[k : k + r.meta.n_params], 0.0))
        kind = ["correlation"] * r.meta.n_cor + ["variance"] * r.meta.n_var
        return pd.DataFrame({"kind": kind, "estimate": r.natural, "std_error": se}, index=list(r.meta.names))

    @property
    def residual_params(self) -> pd.DataFrame:
        """Correlation and variance parameters (natural scale) with Wald standard errors from
        the exact Hessian of ``-2 log L`` in ``(theta, parameters, sigma)``: columns ``kind``,
        ``estimate``, ``std_error``."""
        if self._rside is None:
            return pd.DataFrame({"kind": [], "estimate": [], "std_error": []})
        return self._residual_params.copy()

    @functools.cached_property
    def hessian(self) -> np.ndarray:
        """Exact Hessian of ``objective`` with respect to ``theta`` at the optimum ``(k, k)``
        (lme4's parametrisation; compare ``fit@optinfo$derivs$Hessian``)."""
        self._iid_only("hessian")
        return read_only(theta_hessian(self._model, self.theta, self.reml), None)

    @functools.cached_property
    def _varpar_hessian(self) -> np.ndarray:
        self._iid_only("the variance-parameter Hessian")
        return varpar_hessian(self._model, self.theta, self.sigma, self.reml)

    @functools.cached_property
    def _vcov_varpar(self) -> pd.DataFrame:
        A, _ = covariance_from_hessian(self._varpar_hessian)
        names = list(self.theta_names) + ["sigma"]
        return pd.DataFrame(A, index=names, columns=names)

    @property
    def vcov_varpar(self) -> pd.DataFrame:
        """Asymptotic covariance of ``(theta, sigma)``: ``2 H^{-1}`` with ``H`` the exact Hessian
        of ``-2 log L`` (restricted for REML) at the optimum (lmerTest's ``vcov_varpar``)."""
        return self._vcov_varpar.copy()

    @functools.cached_property
    def _sdcor_names(self) -> tuple[str, ...]:
        return tuple(sdcor_names(self._model.design, self._model.specs))

    @functools.cached_property
    def _sdcor_table(self) -> pd.DataFrame:
        return sdcor_table(self)

    @functools.cached_property
    def _varcorr_se(self) -> pd.DataFrame:
        return varcorr_with_se(self)

    def confint(self, method: str = "wald", level: float = 0.95, parm=None, **kwargs) -> pd.DataFrame:
        """Confidence intervals in lme4's row order (sd/cor per term in theta order, sigma,
        then fixed effects), columns ``lower``, ``upper``.

        ``method``: ``"wald"`` (fixed effects ``beta +- z se``; variance parameters by the delta
        method from the exact Hessian, NaN for boundary estimates), ``"profile"``
        (profile likelihood, as lme4's default; ML refit for REML fits, as lme4), ``"boot"``
        (percentile intervals of a parametric bootstrap: ``n``, ``seed`` or ``replicates=``
        a frame from :meth:`bootstrap`). ``parm``: names to keep.
        """
        self._iid_only("confint")
        if method != "wald":
            self._rows_only(f"confint(method={method!r})")
        return confint(self, method=method, level=level, parm=parm, **kwargs)

    def coef_table(self, ddf: str | None = "satterthwaite") -> pd.DataFrame:
        """Fixed effects with tests: columns ``estimate, std_error, df, t, p``.

        ``ddf``: ``"satterthwaite"`` (lmerTest), ``"kenward-roger"`` (pbkrtest: adjusted
        standard errors too), ``"residual"`` (n - p), ``None`` (z tests, infinite df).
        """
        if ddf not in ("residual", None):
            self._iid_only(f"coef_table(ddf={ddf!r})")
        if ddf == "kenward-roger":
            self._rows_only("Kenward-Roger")
        return coef_table(self, ddf)

    def test(self, L, ddf: str = "satterthwaite", rhs=None) -> pd.Series:
        """F test of ``L beta = rhs`` (``L``: q x p array, a DataFrame with coefficient columns or
        a dict of weights): ``F, num_df, den_df, p`` with a Satterthwaite or Kenward–Roger
        denominator df."""
        self._iid_only("test")
        return hypothesis_test(self, L, ddf, rhs)

    def predict(self, newdata=None, re: bool = True, new_levels: str = "population") -> pd.Series:
        """Predictions ``X beta + offset (+ Z b if re)``. ``newdata``: a frame with the model's
        columns (default: the rows used in the fit). ``new_levels`` for unseen grouping levels:
        ``"population"`` (random effect 0), ``"error"`` or ``"nan"``."""
        if newdata is None:
            self._rows_only("predict() without newdata")
        return predict(self, newdata=newdata, re=re, new_levels=new_levels)

    def simulate(self, n: int = 1, seed=None, re: bool = True) -> pd.DataFrame:
        """``n`` responses simulated from the fitted model (one column each, rows as the fit).
        ``re=True`` draws new random effects ``b ~ N(0, sigma^2 Lambda Lambda')`` (lme4's
        default); ``re=False`` keeps the conditional modes. Residuals ``N(0, sigma^2 / w)``."""
        self._iid_only("simulate")
        self._rows_only("simulate")
        return simulate(self, n=n, seed=seed, re=re)

    def refit(self, y) -> "LmerResult":
        """The same model refitted to a new response ``y`` (length ``nobs``), reusing the design,
        the Gram blocks of Z and X, and the compiled program."""
        self._iid_only("refit")
        self._rows_only("refit")
        return refit(self, y)

    def bootstrap(self, n: int = 1000, seed=None, *, batch_size: int | None = None) -> pd.DataFrame:
        """Parametric bootstrap: ``n`` responses simulated from the fit, all refitted by one
        compiled, vmapped program. One row per replicate: fixed effects, sd/cor parameters,
        sigma, objective, converged."""
        self._iid_only("bootstrap")
        self._rows_only("bootstrap")
        return bootstrap(self, n=n, seed=seed, batch_size=batch_size)

    def profile(self, which=None, **kwargs) -> pd.DataFrame:
        """Profile likelihood traces (``parameter, value, zeta``); see ``jaxlmm.profile``."""
        self._iid_only("profile")
        self._rows_only("profile")
        return profile(self, which=which, **kwargs)

    def summary(self) -> "Summary":
        """What lme4's ``summary()`` prints: criterion, residuals, random and fixed effects
        (``str``); ``.markdown`` the same content as Markdown tables."""
        return Summary(format_summary(self), markdown=functools.partial(tidy.summary_markdown, self))

    def tidy(self, effects=("fixed", "ran_pars"), ddf: str | None = "satterthwaite", conf_int: bool = False,
             conf_level: float = 0.95) -> pd.DataFrame:
        """broom.mixed's ``tidy``: one row per parameter, columns ``effect, group, term, estimate,
        std.error, statistic, df, p.value`` (see :func:`jaxlmm.tidy.tidy`)."""
        return tidy.tidy(self, effects=effects, ddf=ddf, conf_int=conf_int, conf_level=conf_level)

    def glance(self) -> pd.DataFrame:
        """broom's ``glance``: one row with ``nobs, sigma, logLik, AIC, BIC, deviance, df.residual``."""
        return tidy.glance(self)

    def augment(self, data=None) -> pd.DataFrame:
        """broom's ``augment``: the rows used with ``.fitted``, ``.resid`` and ``.fixed``."""
        return tidy.augment(self, data)
