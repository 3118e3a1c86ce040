"""Nonlinear mixed models (in progress, issue 17): the mean function's parser so far."""

from .expression import FUNCTIONS, MeanExpression, parse_model

__all__ = ["FUNCTIONS", "MeanExpression", "parse_model"]
