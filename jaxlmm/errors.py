"""jaxlmm's exception and warning classes.

Every error a user can cause is a :class:`JaxlmmError` (a ``ValueError``) naming the
column, term or argument at fault; every warning is a :class:`JaxlmmWarning` (a
``UserWarning``). A fit emits at most one consolidated warning.
"""

from __future__ import annotations

import warnings

import numpy as np


class JaxlmmError(ValueError):
    """Base class of the errors jaxlmm raises for bad input."""


class FormulaError(JaxlmmError):
    """The model formula cannot be parsed or refers to something that does not exist."""


class DataError(JaxlmmError):
    """The data cannot support the model (missing columns, wrong types, too few rows or levels)."""


class ArgumentError(JaxlmmError):
    """An argument such as ``weights`` or ``offset`` is invalid."""


class FitError(JaxlmmError):
    """The model cannot be fitted from where it starts (e.g. PIRLS finds no conditional modes at
    the starting values of a GLMM)."""


class JaxlmmWarning(UserWarning):
    """Base class of jaxlmm's warnings."""


class FitWarning(JaxlmmWarning):
    """One consolidated warning per fit: convergence trouble and/or a singular fit."""


class RankDeficiencyWarning(JaxlmmWarning):
    """Aliased fixed-effect columns were dropped."""


class InferenceWarning(JaxlmmWarning):
    """An inference is approximate or not available (e.g. Wald intervals at a boundary estimate,
    a Hessian that is not positive definite, bootstrap replicates that did not converge)."""


def warn_unconverged(converged, what: str, category: type, stacklevel: int) -> None:
    """The one warning of a batch of fits (many responses, bootstrap replicates): how many of
    ``converged`` are False, ``what`` naming the fits; ``stacklevel`` counted from the caller."""
    converged = np.asarray(converged, bool)
    bad = int((~converged).sum())
    if bad:
        warnings.warn(f"{bad} of {converged.size} {what} did not converge (column 'converged')", category,
                      stacklevel=stacklevel + 1)
