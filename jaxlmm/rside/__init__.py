"""The R side: correlated or heteroscedastic residuals ``e ~ N(0, sigma^2 S C S)``, block
diagonal by group (nlme's ``correlation=`` and ``weights=``), whitened so that the LMM's
blocked machinery applies unchanged.

Modules: ``correlation`` (the structure interface and the Markov structures AR(1), Exponential),
``correlation_matrices`` (CompoundSymmetry, Unstructured, Toeplitz), ``variance`` (VarIdent,
VarPower, VarExp), ``residual`` (packing by group and time, whitening, the R-side Gram blocks and
objective), ``gls`` (nlme's ``gls``: no random effects).
"""
