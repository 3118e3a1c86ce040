"""The fitted generalized linear mixed model: :class:`GlmerResult`, with lme4's accessors and
the same names as :class:`jaxlmm.LmerResult` where they apply."""

from __future__ import annotations

import dataclasses
import functools
import types
from typing import Any, Callable

import numpy as np
import pandas as pd
from scipy import stats

from .errors import ArgumentError
from .records import read_only
from .results import FitAccessors, Summary, make_mapping


RESIDUAL_TYPES = ("deviance", "pearson", "response", "working")


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class GlmerResult(FitAccessors):
    """A generalized linear mixed model fitted by maximum likelihood (Laplace or adaptive
    Gauss-Hermite approximation).

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
    _model: Any = None  # jaxlmm.glmer.GlmmModel
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
        from .precision import float64

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
        return pd.DataFrame({"estimate": est, "std_error": se, "z": z, "p": 2.0 * stats.norm.sf(np.abs(z))},
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
        q = stats.norm.ppf(0.5 + level / 2.0)
        est, se = self._fixef, self._se
        out = pd.DataFrame({"lower": est - q * se, "upper": est + q * se})
        if parm is not None:
            names = [parm] if isinstance(parm, str) else list(parm)
            bad = [p for p in names if p not in out.index]
            if bad:
                raise ArgumentError(f"unknown parameter {bad[0]!r}; choose from {list(out.index)}")
            out = out.loc[names]
        return out

    # --- prediction, simulation, refits ---------------------------------------------------

    def predict(self, newdata=None, type: str = "link", re: bool = True,
                new_levels: str = "population") -> pd.Series:
        """Predictions on the ``"link"`` scale (``eta``) or the ``"response"`` scale
        (``g^{-1}(eta)``); ``re`` and ``new_levels`` as :meth:`jaxlmm.LmerResult.predict`."""
        from .predict import predict
        from .precision import float64

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
        from .glmer_simulate import simulate

        return simulate(self, n=n, seed=seed, re=re)

    def refit(self, y) -> "GlmerResult":
        """The same model fitted to a new response (one value per row used)."""
        from .glmer_simulate import refit

        return refit(self, y)

    def bootstrap(self, n: int = 200, seed=None, *, batch_size: int | None = None) -> pd.DataFrame:
        """Parametric bootstrap: ``n`` responses simulated from the fit and refitted by one
        compiled, vmapped program. One row per replicate: fixed effects, theta, objective,
        converged."""
        from .glmer_simulate import bootstrap

        return bootstrap(self, n=n, seed=seed, batch_size=batch_size)

    def tidy(self, effects=("fixed", "ran_pars"), conf_int: bool = False, conf_level: float = 0.95) -> pd.DataFrame:
        """broom.mixed's ``tidy``: fixed effects with Wald z tests (``df`` infinite) and the
        random-effect SDs and correlations (``ran_pars``, without standard errors)."""
        from .tidy import tidy

        return tidy(self, effects=effects, ddf=None, conf_int=conf_int, conf_level=conf_level)

    def glance(self) -> pd.DataFrame:
        """broom's ``glance``: one row with ``nobs, sigma, logLik, AIC, BIC, deviance, df.residual``."""
        from .tidy import glance

        return glance(self)

    def summary(self) -> Summary:
        """What lme4's ``summary()`` prints for a glmer fit (``str``); ``.markdown`` the same
        content as Markdown tables."""
        from .results import _summary_markdown
        from .summary import format_summary

        return Summary(format_summary(self), markdown=functools.partial(_summary_markdown, self))

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
        from .fit import Conditional
        from .glmer import factor_at
        from .lmer import _ranef

        factor, structure = factor_at(self.model, self.theta, self.eta, self.phi)
        cond = Conditional(beta=self.beta, vcov=self.vcov, sigma=1.0, b=self.b, templates=self.templates,
                           structure=structure, factor=factor)
        return _ranef(self.model.design, self.b, cond.cond_cov())


def make_result(model, o: dict, V: np.ndarray, b: list, info: dict) -> GlmerResult:
    """Assemble a :class:`GlmerResult` from the optimum (see :func:`jaxlmm.glmer.fit_glmm`)."""
    from .covariance import templates_np
    from .lmer import _theta_names, _varcorr

    design = model.design
    k, p = model.n_theta, model.p
    x = o["x"]
    beta = x[k : k + p]
    phi = 1.0 if model.family.scale_free else float(np.exp(x[k + p]))
    names = list(design.x_names)
    Ts = templates_np(x[:k], model.specs)
    vc = _varcorr(design, Ts, 1.0)
    if model.family.scale_free:
        vc = vc[vc["grp"] != "Residual"].reset_index(drop=True)
    else:
        vc.loc[vc["grp"] == "Residual", ["vcov", "sdcor"]] = [phi, np.sqrt(phi)]
    eta = o["eta"]
    ranef_table = GlmerRanefSource(model, np.array(x[:k]), np.asarray(eta), phi, np.array(beta), V, list(b), Ts)

    return GlmerResult(
        formula=design.formula.formula, family=model.family, nagq=model.nagq, objective=float(o["objective"]),
        nobs=design.n, n_dropped=design.n_dropped,
        _fixef=pd.Series(beta, index=names, name="estimate"),
        _se=pd.Series(np.sqrt(np.diag(V)), index=names, name="std_error"),
        _vcov=pd.DataFrame(V, index=names, columns=names),
        theta=read_only(x[:k]), theta_names=tuple(_theta_names(design)), dispersion=phi, _varcorr=vc,
        _ranef_source=ranef_table, singular=bool(o["singular"]),
        _eta=read_only(eta), optinfo=make_mapping(info),
        ngroups=make_mapping({t.name: t.n_levels for t in design.terms}), hessian=read_only(o["H"]),
        dropped_columns=design.dropped_columns, _model=model, _b=tuple(read_only(bi) for bi in b),
    )
