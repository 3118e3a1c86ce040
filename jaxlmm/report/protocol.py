"""What the reports read from a fit: :class:`Fit`, a structural type (``typing.Protocol``) that
both :class:`jaxlmm.LmerResult` and :class:`jaxlmm.GlmerResult` satisfy, so that the reports
name no result class and import nothing above them."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import pandas as pd


class Fit(Protocol):
    """The accessors :mod:`jaxlmm.report` uses (the GLMM result adds ``family`` and ``nagq``)."""

    formula: str
    reml: bool
    objective: float
    nobs: int
    n_dropped: int
    singular: bool
    sigma: float
    dropped_columns: tuple
    data_name: str | None
    ngroups: Any
    optinfo: Any

    @property
    def fixef(self) -> pd.Series: ...

    @property
    def se(self) -> pd.Series: ...

    @property
    def vcov(self) -> pd.DataFrame: ...

    @property
    def varcorr(self) -> pd.DataFrame: ...

    @property
    def ranef(self) -> pd.DataFrame: ...

    @property
    def fitted(self) -> pd.Series: ...

    @property
    def residuals(self) -> pd.Series: ...

    @property
    def loglik(self) -> float: ...

    @property
    def aic(self) -> float: ...

    @property
    def bic(self) -> float: ...

    @property
    def deviance(self) -> float: ...

    @property
    def df(self) -> int: ...

    @property
    def converged(self) -> bool: ...

    @property
    def has_rows(self) -> bool: ...

    def coef_table(self, ddf: str | None = ...) -> pd.DataFrame: ...

    def resid(self, type: str = ...) -> pd.Series: ...

    def scaled_residuals(self) -> np.ndarray: ...
