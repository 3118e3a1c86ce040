"""The fitted nonlinear mixed model's record: :class:`NlmmFit`, its immutable numbers and accessors
(estimates in nlme's names, per-group coefficients, fitted values, residuals, information
criteria, Wald tests and intervals, predictions, nlme's summary layout, broom's tidy/glance).
"""

from __future__ import annotations

import dataclasses
import functools
import types
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np
import pandas as pd

from .. import distributions
from ..errors import ArgumentError, DataError
from ..inference.predict import encode_new
from ..lmm.record import FitAccessors
from ..precision import float64
from ..records import make_mapping
from ..report.summary import Summary
from ..terms.frames import as_frame, column_names
from ..terms.levels import row_labels
from .design import NlmmDesign

METHODS = {"laplace": "Laplace", "agq": "adaptive Gauss-Hermite", "lb": "Lindstrom-Bates"}


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class NlmmFit(FitAccessors):
    """A nonlinear mixed model fitted by ML (or REML for ``method="lb"``).

    ``objective`` is ``-2 log L`` of the method's approximation (Laplace, adaptive Gauss-Hermite,
    or for Lindstrom-Bates the linearised model's at the fixed point, as nlme reports it);
    ``fixef`` in nlme's names; ``theta`` lme4's relative covariance parameters (``b = Lambda u``,
    ``u ~ N(0, sigma^2 I)``); ``coef`` the per-group coefficients (fixed plus random effects);
    ``fitted`` the conditional means ``f`` at the modes. Immutable."""

    model: str
    method: str
    nagq: int
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
    _fitted: np.ndarray
    _fitted_population: np.ndarray
    optinfo: types.MappingProxyType
    ngroups: types.MappingProxyType
    hessian: np.ndarray | None
    _design: NlmmDesign
    _b: tuple
    _templates: tuple
    _rside: Any = None  # jaxlmm.rside.residual.RSideFit: the fitted residual structure, if any

    @property
    def formula(self) -> str:
        return self.model

    @property
    def params(self) -> tuple[str, ...]:
        """The model's parameter names."""
        return self._design.params

    @property
    def varcorr(self) -> pd.DataFrame:
        """As R's ``as.data.frame(VarCorr(fit))``: grp, var1, var2, vcov, sdcor."""
        return self._varcorr.copy()

    @property
    def y(self) -> pd.Series:
        d = self._design.lmm
        return pd.Series(d.y, index=d.row_index, name=d.response)

    @property
    def fitted(self) -> pd.Series:
        """``f`` at the conditional modes (nlme's ``fitted(fit)``, level of the innermost group)."""
        return pd.Series(self._fitted, index=self._design.lmm.row_index, name="fitted")

    @property
    def fitted_population(self) -> pd.Series:
        """``f`` with the random effects at zero (nlme's ``fitted(fit, level = 0)``)."""
        return pd.Series(self._fitted_population, index=self._design.lmm.row_index, name="fitted")

    @property
    def residuals(self) -> pd.Series:
        """Response residuals ``y - f`` at the conditional modes."""
        d = self._design.lmm
        return pd.Series(d.y - self._fitted, index=d.row_index, name="residuals")

    @property
    def df(self) -> int:
        """Number of parameters: fixed effects, theta, the residual structure's and sigma."""
        n_r = self._rside.meta.n_params if self._rside is not None else 0
        return len(self._fixef) + len(self.theta) + n_r + 1

    @property
    def pearson_residuals(self) -> pd.Series:
        """``(y - f) sqrt(w) / (sigma s_r)``, ``s_r`` the variance function's SD ratio of row ``r``
        (nlme's ``resid(fit, type = "pearson")``)."""
        d = self._design
        scale = np.sqrt(np.asarray(d.lmm.weights, np.float64)) / self.sigma
        if d.variance is not None:
            _, v = d.variance.prepare(d.lmm.aux[d.variance.column])
            with float64():
                logs = d.variance.log_sd(jnp.asarray(self.variance_params.to_numpy()), jnp.asarray(v))
                scale = scale * np.exp(-np.asarray(logs))
        return pd.Series((d.lmm.y - self._fitted) * scale, index=d.lmm.row_index, name="pearson")

    @property
    def correlation_params(self) -> pd.Series:
        """The residual correlation structure's parameters on the natural scale (empty without)."""
        if self._rside is None:
            return pd.Series([], dtype=float, name="correlation")
        return self._rside.correlation_params()

    @property
    def variance_params(self) -> pd.Series:
        """The residual variance function's parameters on the natural scale (empty without)."""
        if self._rside is None:
            return pd.Series([], dtype=float, name="variance")
        return self._rside.variance_params()

    @property
    def deviance(self) -> float:
        return self.objective

    @property
    def aic(self) -> float:
        return self.objective + 2.0 * self.df

    @property
    def bic(self) -> float:
        return self.objective + self.df * np.log(self.nobs)

    @functools.cached_property
    def coef(self) -> dict:
        """Per grouping factor, a table with one row per level and one column per fixed-effect
        coefficient: the fixed effect plus the level's random effect where the parameter has one
        in that term (R's ``coef()``)."""
        d = self._design
        slices = d.beta_slices
        out = {}
        for i, t in enumerate(d.lmm.terms):
            tab = pd.DataFrame(np.tile(self._fixef.to_numpy(), (t.n_levels, 1)), index=pd.Index(t.levels, name=t.name),
                               columns=list(self._fixef.index))
            for c, k in enumerate(d.term_params[i]):
                tab.iloc[:, slices[k][0]] += self._b[i][:, c]
            out[t.name] = tab
        return make_mapping(out)

    @property
    def diagnostics(self) -> types.MappingProxyType:
        """Details behind the fit's one warning: ``converged``, ``warnings``, ``message``,
        ``n_evals``, ``n_iter`` (outer iterations for ``lb``), ``pnls_converged``, ``time_s``, ..."""
        return self.optinfo

    @property
    def has_rows(self) -> bool:
        return True

    def _rows_only(self, what: str) -> None:
        return None

    # --- inference --------------------------------------------------------------------------

    def coef_table(self) -> pd.DataFrame:
        """Fixed effects with Wald tests: ``estimate, std_error, z, p`` (nlme reports t tests
        on the linearised model's degrees of freedom; these are the large-sample z tests)."""
        est, se = self._fixef.to_numpy(), self._se.to_numpy()
        z = est / se
        return pd.DataFrame({"estimate": est, "std_error": se, "z": z, "p": 2.0 * distributions.norm_sf(np.abs(z))},
                            index=self._fixef.index)

    def confint(self, method: str = "wald", level: float = 0.95, parm=None) -> pd.DataFrame:
        """Wald intervals ``beta +- z se`` of the fixed effects (columns ``lower``, ``upper``)."""
        if method != "wald":
            raise ArgumentError(f"confint(method={method!r}) is not available for nlmer fits; use method='wald'")
        if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0.0 < level < 1.0:
            raise ArgumentError(f"level must be in (0, 1), got {level!r}")
        q = distributions.norm_ppf(0.5 + level / 2.0)
        out = pd.DataFrame({"lower": self._fixef - q * self._se, "upper": self._fixef + q * self._se})
        if parm is not None:
            names = [parm] if isinstance(parm, str) else list(parm)
            bad = [p for p in names if p not in out.index]
            if bad:
                raise ArgumentError(f"unknown parameter {bad[0]!r}; choose from {list(out.index)}")
            out = out.loc[names]
        return out

    def tidy(self) -> pd.DataFrame:
        """broom.mixed's ``tidy``: fixed effects (``estimate, std.error, statistic, p.value``)
        then the random-effect SDs and correlations (``ran_pars``) and the residual SD."""
        ct = self.coef_table()
        fixed = pd.DataFrame({"effect": "fixed", "group": None, "term": ct.index, "estimate": ct["estimate"].to_numpy(),
                              "std.error": ct["std_error"].to_numpy(), "statistic": ct["z"].to_numpy(),
                              "p.value": ct["p"].to_numpy()})
        rows = []
        for r in self._varcorr.itertuples(index=False):
            if r.grp == "Residual":
                term = "sd__Observation"
            elif r.var2 is None or (isinstance(r.var2, float) and np.isnan(r.var2)):
                term = f"sd__{r.var1}"
            else:
                term = f"cor__{r.var1}.{r.var2}"
            rows.append({"effect": "ran_pars", "group": r.grp, "term": term, "estimate": r.sdcor})
        return pd.concat([fixed, pd.DataFrame(rows)], ignore_index=True)

    def glance(self) -> pd.DataFrame:
        """broom's ``glance``: ``nobs, sigma, logLik, AIC, BIC, deviance, df.residual``."""
        return pd.DataFrame([{"nobs": self.nobs, "sigma": self.sigma, "logLik": self.loglik, "AIC": self.aic,
                              "BIC": self.bic, "deviance": self.objective, "df.residual": self.nobs - self.df}])

    def summary(self) -> Summary:
        """nlme's ``summary()`` layout (``str``)."""
        return Summary(format_nlmm_summary(self))

    # --- prediction -------------------------------------------------------------------------

    def predict(self, newdata=None, re: bool = True, new_levels: str = "population") -> pd.Series:
        """``f`` at new rows: fixed effects plus, with ``re``, the random effects of the rows'
        levels (``new_levels="population"``: an unseen level gets none, as lme4's
        ``allow.new.levels``; ``"error"``: refuse it). Without ``newdata``: the fitted values
        (``re``) or the population ones."""
        if new_levels not in ("population", "error"):
            raise ArgumentError(f"new_levels must be 'population' or 'error', got {new_levels!r}")
        if newdata is None:
            return self.fitted if re else self.fitted_population
        return predict_rows(self, newdata, re, new_levels)

    def __repr__(self) -> str:
        fe = ", ".join(f"{k}={v:.4g}" for k, v in self._fixef.items())
        flag = ", singular" if self.singular else ""
        flag += "" if self.converged else ", NOT CONVERGED"
        how = METHODS[self.method] + (f"-{self.nagq}" if self.method == "agq" else "")
        return (f"<NlmerResult {self.model!r} by {how}: -2 log L {self.objective:.4f}, nobs={self.nobs}; "
                f"fixef: {fe}{flag}>")


def predict_rows(fit: NlmmFit, newdata: Any, re: bool, new_levels: str) -> pd.Series:
    """:meth:`NlmmFit.predict` for new rows: each parameter's fixed-effects matrix from its
    formula's encoding, the model's columns, the levels' random effects."""
    d = fit._design
    cols = set(column_names(newdata))
    need = set(d.mean.columns) | {f for t in d.lmm.terms if re for f in t.factors}
    for ad in d.a_designs:
        if ad is not None:
            need |= set(ad.fixed_variables)
    missing = sorted(c for c in need if c not in cols)
    if missing:
        raise DataError(f"newdata lacks the column {missing[0]!r}, which the fit uses")
    df = as_frame(newdata)
    n = len(df)
    beta = fit._fixef.to_numpy()
    phi = np.zeros((n, len(d.params)))
    for k, ((a, b), ad) in enumerate(zip(d.beta_slices, d.a_designs)):
        if ad is None:
            phi[:, k] = beta[a]
            continue
        frame = ad.encoding.frame(df, ad.fixed_variables, drop_unused=False)
        A = encode_new(ad.x_spec, frame, f"fixed effects of {d.params[k]!r}", ad.x_all_names, ad.encoding)
        phi[:, k] = A[:, [ad.x_all_names.index(c) for c in ad.x_names]] @ beta[a:b]
    if re:
        for i, t in enumerate(d.lmm.terms):
            lab = row_labels(df, t.factors)
            index = {l: j for j, l in enumerate(t.levels)}
            pos = np.array([index.get(v, -1) for v in lab])
            if new_levels == "error" and np.any(pos < 0):
                r = int(np.nonzero(pos < 0)[0][0])
                raise DataError(f"newdata row {df.index[r]!r} has the level {lab[r]!r} of {t.name!r}, unseen in the fit")
            b = np.where((pos >= 0)[:, None], fit._b[i][np.maximum(pos, 0)], 0.0)
            for c, k in enumerate(d.term_params[i]):
                phi[:, k] += b[:, c]
    data = {}
    for c in d.mean.columns:
        s = df[c]
        if not pd.api.types.is_numeric_dtype(s):
            raise DataError(f"newdata column {c!r} must be numeric")
        data[c] = np.asarray(s, dtype=np.float64)
    with float64():
        f = d.mean({name: jnp.asarray(phi[:, k]) for k, name in enumerate(d.params)},
                   {c: jnp.asarray(v) for c, v in data.items()})
        f = np.broadcast_to(np.asarray(f, dtype=np.float64), (n,))
    return pd.Series(f, index=df.index, name="predicted")


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def format_nlmm_summary(fit: NlmmFit) -> str:
    """nlme's ``summary(nlme)`` layout: the model, information criteria, random effects (SDs and
    correlations), fixed effects with Wald tests, residual quantiles, group counts."""
    how = METHODS[fit.method] + (f" with {fit.nagq} nodes" if fit.method == "agq" else "")
    crit = "REML" if fit.reml else "ML"
    lines = [f"Nonlinear mixed-effects model fit by {how} ({crit})", f"  Model: {fit.model}",
             f"  Data rows: {fit.nobs}", "",
             "       AIC      BIC    logLik", f"  {fit.aic:8.6g} {fit.bic:8.6g} {fit.loglik:9.6g}", "",
             "Random effects:"]
    vc = fit._varcorr
    lines.append(f"  {'Groups':<12} {'Name':<12} {'StdDev':>10}  Corr")
    for r in vc.itertuples(index=False):
        if r.var2 is not None and not (isinstance(r.var2, float) and np.isnan(r.var2)):
            continue
        name = "" if r.grp == "Residual" else str(r.var1)
        lines.append(f"  {str(r.grp):<12} {name:<12} {r.sdcor:>10.6g}")
    cors = vc[vc["var2"].notna()] if "var2" in vc else vc.iloc[0:0]
    for r in cors.itertuples(index=False):
        lines.append(f"  corr({r.var1}, {r.var2}) = {r.sdcor:.4f}  [{r.grp}]")
    if fit._rside is not None:
        for what, params in (("Correlation structure", fit.correlation_params), ("Variance function",
                                                                                  fit.variance_params)):
            struct = fit._design.correlation if what.startswith("Corr") else fit._design.variance
            if struct is not None:
                lines += ["", f"{what}: {struct!r}",
                          "  " + "  ".join(f"{k} = {v:.6g}" for k, v in params.items())]
    lines += ["", "Fixed effects:"]
    ct = fit.coef_table()
    w = max(len(n) for n in ct.index)
    lines.append(f"  {'':<{w}} {'Value':>12} {'Std.Error':>12} {'z-value':>9} {'p-value':>9}")
    for name, r in ct.iterrows():
        lines.append(f"  {name:<{w}} {r.estimate:>12.6g} {r.std_error:>12.6g} {r.z:>9.4g} {r.p:>9.4g}")
    q = np.quantile(fit.pearson_residuals.to_numpy(), [0, 0.25, 0.5, 0.75, 1.0])
    lines += ["", "Standardized residuals:", "  " + "  ".join(f"{v:.4g}" for v in q),
              "", "Number of groups: " + ", ".join(f"{k} {v}" for k, v in fit.ngroups.items()),
              f"Number of observations: {fit.nobs}"]
    if fit.optinfo.get("warnings"):
        lines += ["", "Warnings: " + "; ".join(fit.optinfo["warnings"])]
    return "\n".join(lines)
