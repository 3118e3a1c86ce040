"""Inference on a fitted LMM: exact derivatives of the criterion by automatic
differentiation, from which standard errors, degrees of freedom, intervals and tests follow.

Modules: ``hessian`` (Hessians in theta and (theta, sigma), delta-method SEs of sd/cor),
``ddf`` (Satterthwaite, Kenward–Roger and residual df, coefficient tables, F tests),
``kenward_roger`` (pbkrtest's adjusted covariance), ``profile_layout`` and ``profile``
(profile likelihood in the unconstrained sd/cor parameters), ``intervals`` (Wald, profile and
bootstrap intervals), ``simulate`` (simulation, refits, the vmapped bootstrap), ``anova``
(likelihood-ratio tests, ML refits), ``predict`` (new data: model matrices and level matching).
Refits come from the engine (:mod:`jaxlmm.lmm.engine`), never from the front door.
"""
