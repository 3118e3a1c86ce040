"""Linear mixed models: ``y = X beta + Z b + e``, ``b ~ N(0, sigma^2 Lambda Lambda')``,
``e ~ N(0, sigma^2 W^{-1})`` (or an R-side structure), fitted by REML or ML with beta and sigma
profiled out: the criterion is ``log|L|^2 + (n - p) log r^2`` (REML adds ``log|R_X|^2``) from
the blocked Cholesky factor ``L`` of ``Lambda' Z'WZ Lambda + I``.

Data flow (lme4's ``lFormula -> mkLmerDevfun -> optimizeLmer -> mkMerMod``): ``model``
(design + Gram + templates) -> ``objective`` (the profiled criterion over the kernels) -> ``fit``
(theta by BFGS, conditional estimates) -> ``engine`` (fit_model: the record) -> ``record``
(:class:`LmmFit`) -> ``result`` (:class:`jaxlmm.LmerResult`, inference and reports as methods)
-> ``lmer`` (the front door, also for Parquet data). ``batch`` fits many responses of one
design in one vmapped program; ``many`` is ``lmer_many``.
"""
