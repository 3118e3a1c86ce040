"""The fitted model: :class:`LmerResult`, an immutable record with lme4's accessors."""

from __future__ import annotations

import dataclasses
import functools
import types
from typing import Any, Callable

import numpy as np
import pandas as pd

from .errors import ArgumentError
from .records import read_only
from .saving import PicklableRecord
from .summary import format_summary


class RanefSource:
    """The conditional-modes table of an lmer fit, computed on first use: the modes ``b`` with
    their conditional SDs from a selected inverse of the blocked factor kept in ``cond``
    (a :class:`jaxlmm.fit.Conditional`). A module-level callable, so that fits pickle."""

    def __init__(self, design, cond) -> None:
        self.design = design
        self.cond = cond

    def __call__(self) -> pd.DataFrame:
        from .lmer import _ranef

        return _ranef(self.design, self.cond.b, self.cond.cond_cov())


class FitAccessors(PicklableRecord):
    """Accessors shared by :class:`LmerResult` and :class:`jaxlmm.GlmerResult` (fields ``_fixef``,
    ``_se``, ``_vcov``, ``_ranef_source``, ``objective``, ``optinfo``).

    Fits pickle and deep-copy (:mod:`jaxlmm.saving`: caches of device arrays are left out and
    rebuilt on first use); :meth:`save` writes one to a file that :func:`jaxlmm.load` reads."""

    def save(self, path) -> None:
        """Write the fit to ``path``: a header (jaxlmm's magic string, the jaxlmm version and the
        save format version) followed by a pickle of the fit. :func:`jaxlmm.load` reads it back
        with the same estimates, summary, predictions and inference. The data a fit keeps are
        saved with it (the rows used, the Gram blocks), not the table it was fitted to."""
        from .saving import save

        save(self, path)

    @property
    def fixef(self) -> pd.Series:
        """Fixed-effect estimates by coefficient name (R's names)."""
        return self._fixef.copy()

    @property
    def se(self) -> pd.Series:
        """Standard errors of the fixed effects: ``sqrt(diag(vcov))``."""
        return self._se.copy()

    @property
    def vcov(self) -> pd.DataFrame:
        """``Var(beta_hat)`` (p x p): ``sigma^2 (X' V0^{-1} X)^{-1}`` for lmer; for glmer the beta
        block of ``2 H^{-1}``, ``H`` the Hessian of ``-2 log L`` in ``(theta, beta)``."""
        return self._vcov.copy()

    @functools.cached_property
    def _ranef_table(self) -> pd.DataFrame:
        return self._ranef_source()

    @property
    def ranef(self) -> pd.DataFrame:
        """Conditional modes and SDs, as R's ``as.data.frame(ranef(fit, condVar = TRUE))``:
        columns grpvar, term, grp, condval, condsd (the SDs come from a selected inverse,
        computed on first access)."""
        return self._ranef_table.copy()

    @property
    def loglik(self) -> float:
        """Log-likelihood at the optimum (the restricted one for REML fits, as R's logLik)."""
        return -0.5 * self.objective

    @property
    def converged(self) -> bool:
        """Whether the fit met its convergence criteria (details in :attr:`diagnostics`)."""
        return bool(self.optinfo["converged"])

    def _repr_html_(self) -> str:
        """The notebook view: model line, glance and tidy tables (:func:`jaxlmm.tidy.summary_html`)."""
        try:
            return _tidy().summary_html(self)
        except Exception:  # a notebook view never raises; the text repr is the fallback
            import html

            return f"<pre>{html.escape(repr(self))}</pre>"


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class LmerResult(FitAccessors):
    """A linear mixed model fitted by REML or ML.

    ``objective`` is lme4's REML criterion or deviance (``-2 log L`` at the optimum);
    ``theta`` the relative covariance factor parameters in lme4's order; ``fixef``/``se``/``vcov``
    the fixed effects; ``varcorr`` and ``ranef`` as R's ``as.data.frame(VarCorr(fit))`` and
    ``as.data.frame(ranef(fit, condVar = TRUE))``.

    Immutable: the pandas objects are returned as fresh copies, arrays are read-only.
    """

    formula: str
    reml: bool
    objective: float
    nobs: int
    n_dropped: int
    _fixef: pd.Series
    _se: pd.Series
    _vcov: pd.DataFrame
    sigma: float
    theta: np.ndarray
    theta_names: tuple[str, ...]
    _varcorr: pd.DataFrame
    _ranef_source: Callable[[], pd.DataFrame]
    singular: bool
    _fitted: pd.Series
    _residuals: pd.Series
    optinfo: types.MappingProxyType
    ngroups: types.MappingProxyType
    dropped_columns: tuple[str, ...] = ()
    weights: np.ndarray | None = None  # prior weights of the rows used (None for a fit out of core)
    data_name: str | None = None  # a label for the data, if the caller gave one
    _model: Any = None  # jaxlmm.model.LmerModel: design and Gram blocks, for inference and refits
    _b: tuple = ()  # conditional modes per term (levels_i, p_i), term order of the design
    _rside: Any = None  # jaxlmm.residual.RSideFit: the fitted residual structure, if any

    @property
    def varcorr(self) -> pd.DataFrame:
        """As R's ``as.data.frame(VarCorr(fit))``: grp, var1, var2, vcov, sdcor; plus ``se``, the
        Wald standard error of ``sdcor`` (delta method from the exact Hessian of the deviance in
        ``(theta, sigma)``; NaN for a term at the boundary). The first access computes the
        Hessian (without ``se`` for fits with a residual structure: see ``residual_params``)."""
        if self._rside is not None:
            return self._varcorr.copy()
        return self._varcorr_se.copy()

    @property
    def fitted(self) -> pd.Series:
        """Conditional fitted values ``X beta + Z b + offset``, indexed like the rows used. A fit
        from a Parquet dataset keeps no rows: :class:`ArgumentError` (``predict(newdata)`` works)."""
        self._rows_only("fitted")
        return self._fitted.copy()

    @property
    def residuals(self) -> pd.Series:
        """Response residuals ``y - fitted`` (not for a fit from a Parquet dataset: see ``fitted``)."""
        self._rows_only("residuals")
        return self._residuals.copy()

    @property
    def df(self) -> int:
        """Number of estimated parameters: fixed effects, theta, residual-structure parameters
        and sigma."""
        n_r = self._rside.meta.n_params if self._rside is not None else 0
        return len(self.fixef) + len(self.theta) + n_r + 1

    @property
    def aic(self) -> float:
        """``objective + 2 df``: Akaike's criterion (from the REML criterion for REML fits, as R)."""
        return self.objective + 2.0 * self.df

    @property
    def bic(self) -> float:
        """``objective + df log(n)``; for REML fits with a residual structure or without random
        effects (nlme's ``gls``/``lme``) ``n = nobs - p``, as nlme counts."""
        n = self.nobs
        if self.reml and (self._rside is not None or not self.ngroups):
            n -= len(self._fixef)
        return self.objective + self.df * np.log(n)

    # --- residual structures (jaxlmm.residual) ---------------------------------------------

    @property
    def correlation_params(self) -> pd.Series:
        """Parameters of the residual correlation structure on the natural scale (correlations;
        the range of :class:`~jaxlmm.Exponential`); empty without one."""
        if self._rside is None:
            return pd.Series([], dtype=float, name="correlation")
        return self._rside.correlation_params()

    @property
    def variance_params(self) -> pd.Series:
        """Parameters of the residual variance function (SD ratios of :class:`~jaxlmm.VarIdent`,
        the power or exponent); empty without one."""
        if self._rside is None:
            return pd.Series([], dtype=float, name="variance")
        return self._rside.variance_params()

    @functools.cached_property
    def _residual_params(self) -> pd.DataFrame:
        from .inference import covariance_from_hessian
        from .residual import natural_hessian

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

    def resid(self, type: str = "response") -> pd.Series:
        """Residuals as nlme's ``resid(fit, type=)``: ``"response"`` ``y - fitted``;
        ``"pearson"`` divided by their modelled SD ``sigma s_i / sqrt(w_i)``; ``"normalized"``
        also decorrelated within groups, ``L_g^{-1}`` applied (``C_g = L_g L_g'``): iid
        standard Normal under the model."""
        if type not in ("response", "pearson", "normalized"):
            raise ArgumentError(f"type must be 'response', 'pearson' or 'normalized', got {type!r}")
        self._rows_only("resid")
        r = self._residuals
        if type == "response":
            return r.copy()
        w = np.ones(len(r)) if self.weights is None else self.weights
        v = np.sqrt(w) * r.to_numpy() / self.sigma
        if self._rside is not None:
            from .residual import pearson_normalized

            v = pearson_normalized(self._model, self._rside.natural, v, type == "normalized")
        return pd.Series(v, index=r.index, name=f"{type}_residuals")

    @property
    def has_rows(self) -> bool:
        """Whether per-row outputs exist (not a fit accumulated out of core from Parquet)."""
        return self._model is None or self._model.has_rows

    def _rows_only(self, what: str) -> None:
        if not self.has_rows:
            raise ArgumentError(f"{what} needs the data's rows, which a fit from a Parquet dataset does not keep "
                                "(predictions for rows you pass work: fit.predict(newdata))")

    def _iid_only(self, what: str) -> None:
        if self._rside is not None:
            raise ArgumentError(
                f"{what} is not available yet for fits with a residual correlation or variance "
                "structure (fixed-effect tests: coef_table(ddf='residual') or ddf=None)"
            )

    @property
    def deviance(self) -> float:
        """``-2 log L`` (equal to ``objective`` for ML fits; the REML criterion for REML fits)."""
        return self.objective

    @property
    def diagnostics(self) -> types.MappingProxyType:
        """Convergence and singularity details behind the fit's one consolidated warning:
        ``converged``, ``singular``, ``warnings`` (the messages), ``message``, ``grad``,
        ``grad_norm``, ``n_evals``, ``n_iter``, ``optimizer``, ``time_s``, ``hessian_min_eig`` (the
        smallest curvature at the optimum off the boundary, internal scale), ``restarts`` (from a
        stationary start or a saddle, :mod:`jaxlmm.finish`)."""
        keys = ("converged", "warnings", "message", "grad", "grad_norm", "n_evals", "n_iter", "optimizer",
                "time_s", "hessian_min_eig", "restarts")
        d = {k: self.optinfo.get(k) for k in keys}
        d["singular"] = bool(self.singular)
        return make_mapping(d)

    def scaled_residuals(self) -> np.ndarray:
        """Pearson residuals: ``sqrt(w) (y - fitted) / sigma`` (divided by the variance
        function's ``s_i`` too when the fit has one)."""
        return self.resid("pearson").to_numpy()

    # --- inference (jaxlmm.inference, jaxlmm.ddf) ----------------------------------------

    @functools.cached_property
    def hessian(self) -> np.ndarray:
        """Exact Hessian of ``objective`` with respect to ``theta`` at the optimum ``(k, k)``
        (lme4's parametrisation; compare ``fit@optinfo$derivs$Hessian``)."""
        from .inference import theta_hessian

        self._iid_only("hessian")
        return read_only(theta_hessian(self._model, self.theta, self.reml), None)

    @functools.cached_property
    def _varpar_hessian(self) -> np.ndarray:
        from .inference import varpar_hessian

        self._iid_only("the variance-parameter Hessian")
        return varpar_hessian(self._model, self.theta, self.sigma, self.reml)

    @functools.cached_property
    def _vcov_varpar(self) -> pd.DataFrame:
        from .inference import covariance_from_hessian

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
        from .parameters import sdcor_names

        return tuple(sdcor_names(self._model.design, self._model.specs))

    @functools.cached_property
    def _sdcor_table(self) -> pd.DataFrame:
        from .inference import sdcor_table

        return sdcor_table(self)

    @functools.cached_property
    def _varcorr_se(self) -> pd.DataFrame:
        from .inference import varcorr_with_se

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
        from .intervals import confint

        self._iid_only("confint")
        if method != "wald":
            self._rows_only(f"confint(method={method!r})")
        return confint(self, method=method, level=level, parm=parm, **kwargs)

    def coef_table(self, ddf: str | None = "satterthwaite") -> pd.DataFrame:
        """Fixed effects with tests: columns ``estimate, std_error, df, t, p``.

        ``ddf``: ``"satterthwaite"`` (lmerTest), ``"kenward-roger"`` (pbkrtest: adjusted
        standard errors too), ``"residual"`` (n - p), ``None`` (z tests, infinite df).
        """
        from .ddf import coef_table

        if ddf not in ("residual", None):
            self._iid_only(f"coef_table(ddf={ddf!r})")
        if ddf == "kenward-roger":
            self._rows_only("Kenward-Roger")
        return coef_table(self, ddf)

    def test(self, L, ddf: str = "satterthwaite", rhs=None) -> pd.Series:
        """F test of ``L beta = rhs`` (``L``: q x p array, a DataFrame with coefficient columns or
        a dict of weights): ``F, num_df, den_df, p`` with a Satterthwaite or Kenward–Roger
        denominator df."""
        from .ddf import hypothesis_test

        self._iid_only("test")
        return hypothesis_test(self, L, ddf, rhs)

    # --- prediction, simulation, refits (jaxlmm.predict, jaxlmm.simulate) ------------------

    def predict(self, newdata=None, re: bool = True, new_levels: str = "population") -> pd.Series:
        """Predictions ``X beta + offset (+ Z b if re)``. ``newdata``: a frame with the model's
        columns (default: the rows used in the fit). ``new_levels`` for unseen grouping levels:
        ``"population"`` (random effect 0), ``"error"`` or ``"nan"``."""
        from .predict import predict

        if newdata is None:
            self._rows_only("predict() without newdata")
        return predict(self, newdata=newdata, re=re, new_levels=new_levels)

    def simulate(self, n: int = 1, seed=None, re: bool = True) -> pd.DataFrame:
        """``n`` responses simulated from the fitted model (one column each, rows as the fit).
        ``re=True`` draws new random effects ``b ~ N(0, sigma^2 Lambda Lambda')`` (lme4's
        default); ``re=False`` keeps the conditional modes. Residuals ``N(0, sigma^2 / w)``."""
        from .simulate import simulate

        self._iid_only("simulate")
        self._rows_only("simulate")
        return simulate(self, n=n, seed=seed, re=re)

    def refit(self, y) -> "LmerResult":
        """The same model refitted to a new response ``y`` (length ``nobs``), reusing the design,
        the Gram blocks of Z and X, and the compiled program."""
        from .simulate import refit

        self._iid_only("refit")
        self._rows_only("refit")
        return refit(self, y)

    def bootstrap(self, n: int = 1000, seed=None, *, batch_size: int | None = None) -> pd.DataFrame:
        """Parametric bootstrap: ``n`` responses simulated from the fit, all refitted by one
        compiled, vmapped program. One row per replicate: fixed effects, sd/cor parameters,
        sigma, objective, converged."""
        from .simulate import bootstrap

        self._iid_only("bootstrap")
        self._rows_only("bootstrap")
        return bootstrap(self, n=n, seed=seed, batch_size=batch_size)

    def profile(self, which=None, **kwargs) -> pd.DataFrame:
        """Profile likelihood traces (``parameter, value, zeta``); see ``jaxlmm.profile``."""
        from .profile import profile

        self._iid_only("profile")
        self._rows_only("profile")
        return profile(self, which=which, **kwargs)

    def summary(self) -> "Summary":
        """What lme4's ``summary()`` prints: criterion, residuals, random and fixed effects
        (``str``); ``.markdown`` the same content as Markdown tables."""
        return Summary(format_summary(self), markdown=functools.partial(_summary_markdown, self))

    def tidy(self, effects=("fixed", "ran_pars"), ddf: str | None = "satterthwaite", conf_int: bool = False,
             conf_level: float = 0.95) -> pd.DataFrame:
        """broom.mixed's ``tidy``: one row per parameter, columns ``effect, group, term, estimate,
        std.error, statistic, df, p.value`` (see :func:`jaxlmm.tidy.tidy`)."""
        return _tidy().tidy(self, effects=effects, ddf=ddf, conf_int=conf_int, conf_level=conf_level)

    def glance(self) -> pd.DataFrame:
        """broom's ``glance``: one row with ``nobs, sigma, logLik, AIC, BIC, deviance, df.residual``."""
        return _tidy().glance(self)

    def augment(self, data=None) -> pd.DataFrame:
        """broom's ``augment``: the rows used with ``.fitted``, ``.resid`` and ``.fixed``."""
        return _tidy().augment(self, data)

    def __repr__(self) -> str:
        method = "REML" if self.reml else "ML"
        crit = "REML criterion" if self.reml else "deviance"
        fe = ", ".join(f"{k}={v:.4g}" for k, v in self.fixef.items())
        flag = ", singular" if self.singular else ""
        flag += "" if self.converged else ", NOT CONVERGED"
        return (
            f"<LmerResult {self.formula!r} by {method}: {crit} {self.objective:.4f}, "
            f"nobs={self.nobs}, sigma={self.sigma:.4g}; fixef: {fe}{flag}>"
        )


def _tidy():
    from . import tidy

    return tidy


def _summary_markdown(fit) -> str:
    return _tidy().summary_markdown(fit)


class Summary:
    """Printable summary: ``str`` gives lme4's layout (``text``); ``markdown`` the same content as
    Markdown tables, computed on first use (notebooks show it)."""

    def __init__(self, text: str, markdown: Callable[[], str] | None = None) -> None:
        self.text = text
        self._markdown = markdown

    @property
    def markdown(self) -> str:
        """The summary as Markdown tables (:func:`jaxlmm.tidy.summary_markdown`)."""
        if self._markdown is None:
            raise ArgumentError("this summary has no Markdown form")
        return self._markdown()

    def _repr_markdown_(self) -> str:
        """Jupyter's view: the Markdown tables, or the text layout in a code block should they
        fail (a notebook view never raises)."""
        try:
            return self.markdown
        except Exception:  # noqa: BLE001 - a notebook view never raises
            return "```text\n" + self.text + "\n```\n"

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text


def make_mapping(d: dict[str, Any]) -> types.MappingProxyType:
    return types.MappingProxyType(dict(d))
