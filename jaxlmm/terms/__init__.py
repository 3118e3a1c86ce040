"""Terms: from an lme4 formula and a data frame to the design.

``y ~ X + (Z_i | g_i) + ...``: the formula is parsed into fixed-effect terms, random-effect
bars ``(expr | factor)`` (``||`` uncorrelated, ``a/b`` nested, ``a:b`` interactions) and a
``cbind(successes, failures)`` response; each bar becomes a term ``(codes (n,), columns (n, p_i))``,
never a dense ``n x q`` Z. R's model-matrix semantics (``I()``, ``poly``, ``scale``, ``bs``,
``offset``, contrasts) come from formulaic, translated where R and formulaic differ.

Modules: ``formula`` (parsing, bars, cbind), ``rlang`` (R's functions and names in formulas),
``frames`` (pandas, polars, pyarrow and dict inputs via narwhals), ``levels`` (grouping factors,
level labels and lme4's term order), ``design`` (the :class:`~jaxlmm.terms.design.Design`:
``X``, ``y``, weights, offset and the terms).
"""
