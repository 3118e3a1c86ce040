"""The LMM record: :class:`LmmFit`, the immutable numbers of a fitted linear mixed model and
the accessors that need nothing above them (estimates, fitted values, residuals, information
criteria, diagnostics). :class:`FitAccessors` holds what the GLMM record shares.

The engine (:mod:`jaxlmm.lmm.engine`) assembles an ``LmmFit``; the user-facing
:class:`jaxlmm.LmerResult` (:mod:`jaxlmm.lmm.result`) derives from it and adds inference and
reports, so that refits inside inference never reach up to the face.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..covariance.tables import ranef_table
from ..errors import ArgumentError
from ..records import Cache, make_mapping
from ..rside.residual import pearson_normalized
from ..saving import SavedFit


class RanefSource:
    """The conditional-modes table of an lmer fit, computed on first use: the modes ``b`` with
    their conditional SDs from a selected inverse of the blocked factor kept in ``cond``
    (a :class:`jaxlmm.lmm.fit.Conditional`). A module-level callable, so that fits pickle."""

    def __init__(self, design, cond) -> None:
        self.design = design
        self.cond = cond

    def __call__(self) -> pd.DataFrame:
        return ranef_table(self.design.terms, self.cond.b, self.cond.cond_cov())


class FitAccessors(SavedFit):
    """Accessors shared by :class:`LmerResult` and :class:`jaxlmm.GlmerResult` (fields ``_fixef``,
    ``_se``, ``_vcov``, ``_ranef_source``, ``objective``, ``optinfo``).

    Fits pickle and deep-copy (:mod:`jaxlmm.records`: caches of device arrays are left out and
    rebuilt on first use); :meth:`save` writes one to a file that :func:`jaxlmm.load` reads."""

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


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class LmmFit(FitAccessors):
    """A linear mixed model fitted by REML or ML: the record the engine
    (:func:`jaxlmm.lmm.engine.fit_model`) assembles; :class:`jaxlmm.LmerResult` adds inference
    and reports on top.

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
    _model: Any = None  # jaxlmm.lmm.model.LmerModel: design and Gram blocks, for inference and refits
    _b: tuple = ()  # conditional modes per term (levels_i, p_i), term order of the design
    _rside: Any = None  # jaxlmm.rside.residual.RSideFit: the fitted residual structure, if any
    _cache: Cache = dataclasses.field(default_factory=Cache, repr=False)  # inference computed on first use


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

    @property
    def varcorr(self) -> pd.DataFrame:
        """As R's ``as.data.frame(VarCorr(fit))``: grp, var1, var2, vcov, sdcor
        (:func:`jaxlmm.covariance.tables.varcorr_table`)."""
        return self._varcorr.copy()

    # --- residual structures (jaxlmm.rside) ---------------------------------------------

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
