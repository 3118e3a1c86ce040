"""The GLMM record: :class:`GlmmFit`, the immutable numbers of a fitted generalized linear mixed
model with lme4's accessors (estimates, residuals of each type, information criteria, Wald
tests and intervals of the fixed effects), the same names as the LMM record where they apply.
:func:`make_record` assembles it from the optimum; :class:`jaxlmm.GlmerResult`
(:mod:`jaxlmm.glmm.result`) derives from it and adds predictions, simulation and reports."""

from __future__ import annotations

import dataclasses
import functools
import types
from typing import Any, Callable

import numpy as np
import pandas as pd

from .. import distributions
from ..covariance.tables import ranef_table, varcorr_table
from ..covariance.templates import templates_np, theta_names
from ..errors import ArgumentError
from ..lmm.fit import Conditional
from ..lmm.record import FitAccessors
from ..precision import float64
from ..records import make_mapping, read_only
from .model import factor_at


RESIDUAL_TYPES = ("deviance", "pearson", "response", "working")


@dataclasses.dataclass(frozen=True)
class GlmmOptimum:
    """The end of a GLMM optimisation (:func:`jaxlmm.glmm.fit.optimise`), as the LMM's
    :class:`jaxlmm.lmm.fit.ThetaFit`: ``x = (theta, beta[, log phi])`` rectified and ``x_raw``
    before rectification (the modes ``u``, per term ``(levels_i, p_i)``, belong to it), ``eta (n,)``
    the linear predictor, ``H`` the ``(d, d)`` Hessian of ``objective = -2 log L`` on the user's
    scale, ``boundary`` the theta entries snapped to 0, the BFGS and PIRLS diagnostics."""

    x: np.ndarray
    x_raw: np.ndarray
    objective: float
    grad: np.ndarray
    H: np.ndarray
    n_iter: int
    n_evals: int
    status: int
    converged: bool
    message: str
    singular: bool
    boundary: np.ndarray
    u: list
    eta: np.ndarray
    pirls_iterations: int
    pirls_converged: bool
    hessian_min_eig: float
    restarts: int
    gmax: float


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class GlmmFit(FitAccessors):
    """A generalized linear mixed model fitted by maximum likelihood (Laplace or adaptive
    Gauss-Hermite approximation): the record :func:`jaxlmm.glmm.fit.fit_glmm` assembles;
    :class:`jaxlmm.GlmerResult` adds predictions, simulation, refits and reports.

    ``objective`` is ``-2 log L`` (the approximation, all constants included: lme4's
    ``-2 * logLik(fit)`` for ``nagq = 1``); ``theta`` the relative covariance parameters in
    lme4's order (for binomial and Poisson the random-effect SDs themselves); ``fitted`` the
    conditional means on the response scale. Immutable: pandas objects are returned as copies.
    """

    formula: str
    family: Any  # jaxlmm.family.Family
    nagq: int
    objective: float
    nobs: int
    n_dropped: int
    _fixef: pd.Series
    _se: pd.Series
    _vcov: pd.DataFrame
    theta: np.ndarray
    theta_names: tuple[str, ...]
    dispersion: float
    _varcorr: pd.DataFrame
    _ranef_source: Callable[[], pd.DataFrame]
    singular: bool
    _eta: np.ndarray
    optinfo: types.MappingProxyType
    ngroups: types.MappingProxyType
    hessian: np.ndarray  # Hessian of objective in (theta, beta[, log phi]) (differences of the exact gradient)
    dropped_columns: tuple[str, ...] = ()
    _model: Any = None  # jaxlmm.glmm.model.GlmmModel
    _b: tuple = ()
    reml: bool = False  # always maximum likelihood (for anova and shared code)
    data_name: str | None = None  # a label for the data, if the caller gave one

    # --- estimates ------------------------------------------------------------------------

    @property
    def sigma(self) -> float:
        """``sqrt(dispersion)``: 1 for binomial and Poisson (R's ``sigma()``)."""
        return float(np.sqrt(self.dispersion))

    @property
    def varcorr(self) -> pd.DataFrame:
        """As R's ``as.data.frame(VarCorr(fit))``: grp, var1, var2, vcov, sdcor."""
        return self._varcorr.copy()

    @property
    def y(self) -> pd.Series:
        d = self._model.design
        return pd.Series(d.y, index=d.row_index, name=d.response)

    @property
    def weights(self) -> np.ndarray:
        """Prior weights (binomial: number of trials) of the rows used."""
        return read_only(self._model.design.weights)

    @property
    def linear_predictor(self) -> pd.Series:
        """``eta = X beta + Z b + offset`` at the conditional modes."""
        return pd.Series(self._eta, index=self._model.design.row_index, name="eta")

    @property
    def fitted(self) -> pd.Series:
        """Conditional means ``mu = g^{-1}(eta)`` on the response scale."""
        return pd.Series(self._mu, index=self._model.design.row_index, name="fitted")

    @functools.cached_property
    def _mu(self) -> np.ndarray:
        return self._model.mean(self._eta)

    @property
    def residuals(self) -> pd.Series:
        """Deviance residuals (R's ``residuals()`` default for glmer)."""
        return self.resid("deviance")

    def resid(self, type: str = "deviance") -> pd.Series:
        """Residuals: ``"deviance"`` ``sign(y - mu) sqrt(w d(y, mu))``; ``"pearson"``
        ``(y - mu) sqrt(w / (phi V(mu)))``; ``"response"`` ``y - mu``; ``"working"``
        ``(y - mu) / (dmu/deta)``."""
        if type not in RESIDUAL_TYPES:
            raise ArgumentError(f"type must be one of {RESIDUAL_TYPES}, got {type!r}")
        d = self._model.design
        fam, mu, y, w = self.family, self._mu, d.y, d.weights
        with float64():
            if type == "deviance":
                v = np.asarray(fam.deviance_residuals(y, mu, w))
            elif type == "pearson":
                v = np.asarray(fam.pearson_residuals(y, mu, w)) / np.sqrt(self.dispersion)
            elif type == "response":
                v = y - mu
            else:
                v = (y - mu) / np.asarray(fam.link.mu_eta(self._eta))
        return pd.Series(v, index=d.row_index, name=f"{type}_residuals")

    def scaled_residuals(self) -> np.ndarray:
        """Pearson residuals (lme4's "Scaled residuals" of a glmer summary)."""
        return self.resid("pearson").to_numpy()

    # --- likelihood -----------------------------------------------------------------------

    @property
    def df(self) -> int:
        """Number of parameters: fixed effects, theta (and the dispersion for Gamma)."""
        return len(self._fixef) + len(self.theta) + (0 if self.family.scale_free else 1)

    @property
    def deviance(self) -> float:
        """``-2 log L`` (equal to ``objective``)."""
        return self.objective

    @property
    def aic(self) -> float:
        return self.objective + 2.0 * self.df

    @property
    def bic(self) -> float:
        return self.objective + self.df * np.log(self.nobs)

    @property
    def diagnostics(self) -> types.MappingProxyType:
        """Details behind the fit's one consolidated warning: ``converged``, ``singular``,
        ``warnings``, ``message``, ``grad``, ``grad_norm``, ``n_evals``, ``n_iter``,
        ``pirls_converged``, ``pirls_iterations``, ``hessian_ok``, ``optimizer``, ``time_s``,
        ``hessian_min_eig``, ``restarts``."""
        keys = ("converged", "warnings", "message", "grad", "grad_norm", "n_evals", "n_iter",
                "pirls_converged", "pirls_iterations", "hessian_ok", "optimizer", "time_s", "hessian_min_eig",
                "restarts")
        d = {k: self.optinfo.get(k) for k in keys}
        d["singular"] = bool(self.singular)
        return make_mapping(d)

    @property
    def has_rows(self) -> bool:
        return True

    def _rows_only(self, what: str) -> None:  # every glmer fit keeps its rows
        return None

    # --- inference ------------------------------------------------------------------------

    def coef_table(self, ddf: str | None = None) -> pd.DataFrame:
        """Fixed effects with Wald z tests (lme4's ``summary``): ``estimate, std_error, z, p``."""
        if ddf is not None:
            raise ArgumentError("glmer fits have z tests only: ddf must be None")
        est, se = self._fixef.to_numpy(), self._se.to_numpy()
        z = est / se
        return pd.DataFrame({"estimate": est, "std_error": se, "z": z, "p": 2.0 * distributions.norm_sf(np.abs(z))},
                            index=self._fixef.index)

    def confint(self, method: str = "wald", level: float = 0.95, parm=None) -> pd.DataFrame:
        """Wald intervals of the fixed effects, ``beta +- z_{(1+level)/2} se`` (columns ``lower``,
        ``upper``; as :meth:`jaxlmm.LmerResult.confint`). ``parm``: names to keep. Profile and
        bootstrap intervals are not available for glmer fits yet (``bootstrap()`` gives the
        replicates)."""
        if method != "wald":
            raise ArgumentError(f"confint(method={method!r}) is not available for glmer fits; use method='wald'")
        if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0.0 < level < 1.0:
            raise ArgumentError(f"level must be in (0, 1), got {level!r}")
        q = distributions.norm_ppf(0.5 + level / 2.0)
        est, se = self._fixef, self._se
        out = pd.DataFrame({"lower": est - q * se, "upper": est + q * se})
        if parm is not None:
            names = [parm] if isinstance(parm, str) else list(parm)
            bad = [p for p in names if p not in out.index]
            if bad:
                raise ArgumentError(f"unknown parameter {bad[0]!r}; choose from {list(out.index)}")
            out = out.loc[names]
        return out









    def __repr__(self) -> str:
        fe = ", ".join(f"{k}={v:.4g}" for k, v in self._fixef.items())
        flag = ", singular" if self.singular else ""
        flag += "" if self.converged else ", NOT CONVERGED"
        how = "Laplace" if self.nagq == 1 else f"AGQ-{self.nagq}"
        return (f"<GlmerResult {self.formula!r} {self.family.name}({self.family.link.name}) by {how}: "
                f"-2 log L {self.objective:.4f}, nobs={self.nobs}; fixef: {fe}{flag}>")


class GlmerRanefSource:
    """The conditional-modes table of a glmer fit, computed on first use: the modes ``b`` with
    conditional SDs from ``T S T'``, ``S`` a selected inverse of the blocked factor of
    ``Lambda' Z' W Z Lambda + I`` at the fitted linear predictor ``eta`` (``theta``, dispersion
    ``phi``). A module-level callable, so that fits pickle."""

    def __init__(self, model, theta, eta, phi, beta, vcov, b, templates) -> None:
        self.model, self.theta, self.eta, self.phi = model, theta, eta, phi
        self.beta, self.vcov, self.b, self.templates = beta, vcov, b, templates

    def __call__(self) -> pd.DataFrame:
        factor, structure = factor_at(self.model, self.theta, self.eta, self.phi)
        cond = Conditional(beta=self.beta, vcov=self.vcov, sigma=1.0, b=self.b, templates=self.templates,
                           structure=structure, factor=factor)
        return ranef_table(self.model.design.terms, self.b, cond.cond_cov())


def make_record(model, o: GlmmOptimum, V: np.ndarray, b: list, info: dict, result_type: type = GlmmFit) -> GlmmFit:
    """Assemble the record (a ``result_type``, :class:`GlmmFit` or a subclass) from the optimum
    (see :func:`jaxlmm.glmm.fit.fit_glmm`)."""
    design = model.design
    k, p = model.n_theta, model.p
    x = o.x
    beta = x[k : k + p]
    phi = 1.0 if model.family.scale_free else float(np.exp(x[k + p]))
    names = list(design.x_names)
    Ts = templates_np(x[:k], model.specs)
    vc = varcorr_table(design.terms, Ts, 1.0)
    if model.family.scale_free:
        vc = vc[vc["grp"] != "Residual"].reset_index(drop=True)
    else:
        vc.loc[vc["grp"] == "Residual", ["vcov", "sdcor"]] = [phi, np.sqrt(phi)]
    eta = o.eta
    ranef_source = GlmerRanefSource(model, np.array(x[:k]), np.asarray(eta), phi, np.array(beta), V, list(b), Ts)

    return result_type(
        formula=design.formula.formula, family=model.family, nagq=model.nagq, objective=float(o.objective),
        nobs=design.n, n_dropped=design.n_dropped,
        _fixef=pd.Series(beta, index=names, name="estimate"),
        _se=pd.Series(np.sqrt(np.diag(V)), index=names, name="std_error"),
        _vcov=pd.DataFrame(V, index=names, columns=names),
        theta=read_only(x[:k]), theta_names=tuple(theta_names(design.terms)), dispersion=phi, _varcorr=vc,
        _ranef_source=ranef_source, singular=bool(o.singular),
        _eta=read_only(eta), optinfo=make_mapping(info),
        ngroups=make_mapping({t.name: t.n_levels for t in design.terms}), hessian=read_only(o.H),
        dropped_columns=design.dropped_columns, _model=model, _b=tuple(read_only(bi) for bi in b),
    )
