"""Nonlinear mixed models (``nlmer``): the mean function's parser, the design, PNLS on the
blocked Cholesky, Laplace / adaptive Gauss-Hermite objectives with implicit gradients, nlme's
Lindstrom-Bates iterations, and the fitted model."""

from .expression import FUNCTIONS, MeanExpression, parse_model
from .many import nlmer_many
from .nlmer import nlmer
from .result import NlmerResult

__all__ = ["FUNCTIONS", "MeanExpression", "NlmerResult", "nlmer", "nlmer_many", "parse_model"]
