"""jaxlmm: linear mixed models in lme4 syntax, fitted by REML/ML on a jitted blocked sparse
Cholesky in JAX.

Data flow: ``formula`` (lme4 bars) -> ``design`` (X, level codes, per-row columns) -> ``gram``
(blocked ``[Z X y]' W [Z X y]``) -> ``objective`` (profiled criterion over ``kernels``) ->
``optimize``/``fit`` (BFGS with exact gradients) -> ``results`` (:class:`LmerResult`).
"""

from .errors import (
    ArgumentError,
    DataError,
    FitWarning,
    FormulaError,
    JaxlmmError,
    JaxlmmWarning,
    RankDeficiencyWarning,
)
from .lmer import lmer
from .results import LmerResult

__version__ = "0.1.0"

__all__ = [
    "lmer",
    "LmerResult",
    "JaxlmmError",
    "FormulaError",
    "DataError",
    "ArgumentError",
    "JaxlmmWarning",
    "FitWarning",
    "RankDeficiencyWarning",
    "__version__",
]
