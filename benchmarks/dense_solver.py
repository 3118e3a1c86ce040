"""The design card's baseline solver: the REML criterion from the full ``n x n`` marginal
covariance ``V`` (relative to sigma^2), factored by a dense Cholesky in JAX.

    crit = log|V| + log|X' V^-1 X| + (n - p) (1 + log(2 pi r' V^-1 r / (n - p)))

with ``r = y - X beta_hat``. Used by ``bench_dense.py`` (W5) and the suite's dense peer (W3).
Call with float64 enabled; jax is imported on first use.
"""

from __future__ import annotations


def reml_criterion(V, X, y):
    """The REML criterion of ``y ~ N(X beta, sigma^2 V)``, beta and sigma profiled out."""
    import jax
    import jax.numpy as jnp

    L = jnp.linalg.cholesky(V)

    def solve(B):
        return jax.scipy.linalg.cho_solve((L, True), B)

    XtViX = X.T @ solve(X)
    beta = jnp.linalg.solve(XtViX, X.T @ solve(y))
    r = y - X @ beta
    nu = y.shape[0] - X.shape[1]
    return (2 * jnp.sum(jnp.log(jnp.diag(L))) + jnp.linalg.slogdet(XtViX)[1]
            + nu * (1 + jnp.log(2 * jnp.pi * (r @ solve(r)) / nu)))
