"""The fitted model: :class:`LmerResult`, an immutable record with lme4's accessors."""

from __future__ import annotations

import dataclasses
import functools
import types
from typing import Any, Callable

import numpy as np
import pandas as pd

from .summary import format_summary


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class LmerResult:
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
    weights: np.ndarray | None = None
    data_name: str | None = None
    _model: Any = None  # jaxlmm.model.LmerModel: design and Gram blocks, for inference and refits
    _b: tuple = ()  # conditional modes per term (levels_i, p_i), term order of the design

    @property
    def fixef(self) -> pd.Series:
        """Fixed-effect estimates by coefficient name (R's names)."""
        return self._fixef.copy()

    @property
    def se(self) -> pd.Series:
        """Standard errors of the fixed effects."""
        return self._se.copy()

    @property
    def vcov(self) -> pd.DataFrame:
        """``Var(beta_hat) = sigma^2 (X' V0^{-1} X)^{-1}`` (p x p)."""
        return self._vcov.copy()

    @property
    def varcorr(self) -> pd.DataFrame:
        """As R's ``as.data.frame(VarCorr(fit))``: grp, var1, var2, vcov, sdcor."""
        return self._varcorr.copy()

    @property
    def fitted(self) -> pd.Series:
        """Conditional fitted values ``X beta + Z b + offset``, indexed like the rows used."""
        return self._fitted.copy()

    @property
    def residuals(self) -> pd.Series:
        """Response residuals ``y - fitted``."""
        return self._residuals.copy()

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
    def df(self) -> int:
        """Number of estimated parameters: fixed effects, theta, and sigma."""
        return len(self.fixef) + len(self.theta) + 1

    @property
    def loglik(self) -> float:
        """Log-likelihood at the optimum (the restricted one for REML fits, as R's logLik)."""
        return -0.5 * self.objective

    @property
    def aic(self) -> float:
        return self.objective + 2.0 * self.df

    @property
    def bic(self) -> float:
        return self.objective + self.df * np.log(self.nobs)

    @property
    def deviance(self) -> float:
        """``-2 log L`` (equal to ``objective`` for ML fits; the REML criterion for REML fits)."""
        return self.objective

    @property
    def converged(self) -> bool:
        return bool(self.optinfo["converged"])

    def scaled_residuals(self) -> np.ndarray:
        """Pearson residuals divided by sigma: ``sqrt(w) (y - fitted) / sigma``."""
        w = np.ones(len(self.residuals)) if self.weights is None else self.weights
        return np.sqrt(w) * self._residuals.to_numpy() / self.sigma

    def summary(self) -> "Summary":
        """What lme4's ``summary()`` prints: criterion, residuals, random and fixed effects."""
        return Summary(format_summary(self))

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


class Summary:
    """Printable summary (``str`` gives lme4's layout)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text


def make_mapping(d: dict[str, Any]) -> types.MappingProxyType:
    return types.MappingProxyType(dict(d))
