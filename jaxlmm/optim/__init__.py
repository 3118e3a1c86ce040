"""Optimisers, free of statistics: they see a function of a vector and its exact gradient.

Modules: ``bfgs`` (BFGS with a line search inside one ``lax.while_loop``, run in chunks so that
Ctrl-C answers), ``trust_region`` (Newton with the exact Hessian in a trust region), ``finish``
(what happens at the optimum: the convergence rule, the boundary snap, restarts from saddles,
finite-difference Hessian steps).
"""
