"""Generalized linear mixed models: ``g(E[y | b]) = X beta + Z b + offset``,
``b ~ N(0, Lambda Lambda')``, ``y | b`` from an exponential family; ``-2 log L`` by the Laplace
approximation or adaptive Gauss-Hermite quadrature at the conditional modes from PIRLS on the
same blocked Cholesky; BFGS over ``(theta, beta[, log phi])`` with exact gradients.

Modules: ``family`` (families and links), ``pirls`` (conditional modes and the Laplace / AGQ
objective), ``model`` (:class:`GlmmModel`), ``fit`` (the engine: optimise, Hessian, the record),
``record`` (:class:`GlmmFit`), ``batch`` (many responses in one vmapped program), ``simulate``
(simulation, refits, the parametric bootstrap), ``result`` (:class:`jaxlmm.GlmerResult`),
``glmer`` and ``many`` (the front doors ``glmer``, ``glmer_many``).
"""
