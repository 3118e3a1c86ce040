"""Covariance of the random effects: ``Var(b_i) = sigma^2 T_i T_i'`` per term, ``T_i`` the
lower-triangular template filled from ``theta`` (lme4's ``Lambda``).

Modules: ``templates`` (theta <-> templates, bounds, the identity start, ``rectify`` of sign
flips), ``sdcor`` (theta and sigma <-> SDs and correlations: the one sd/cor rule), ``start``
(moment starting values from OLS residuals), ``tables`` (lme4's ``VarCorr`` and ``ranef``
tables).
"""
