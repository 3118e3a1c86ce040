"""Reports read from a fit through a small Protocol (:class:`~jaxlmm.report.protocol.Fit`):
``summary`` (lme4's printed summary), ``tidy`` (broom's tidy / glance / augment, Markdown and
the notebook view), ``plots`` (caterpillar, residual, Q-Q and profile plots with matplotlib).
"""
