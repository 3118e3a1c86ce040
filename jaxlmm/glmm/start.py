"""The GLMM's starting fixed effects: the GLM without random effects, by IRLS (lme4's start).

Under (quasi-)complete separation IRLS runs off to ``|X beta|`` in the hundreds, where PIRLS
finds no modes, so the start keeps IRLS's direction at ``|X beta| <= MAX_START_ETA``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from .pirls import GlmmArrays

MAX_START_ETA = 15.0  # the GLM start's largest |X beta| (see glm_coefficients)


def glm_coefficients(G: GlmmArrays, max_iter: int = 50):
    """``beta`` of the GLM without random effects by IRLS from R's starting ``mu`` (zeros if it
    fails, e.g. under separation) and, for a family with a dispersion, its Pearson estimate."""
    fam = G.family
    y, w, X = G.y, G.w, G.X
    if fam.name == "binomial":
        mu0 = (w * y + 0.5) / (w + 1.0)
    elif fam.name == "poisson":
        mu0 = y + 0.1
    else:
        mu0 = y
    p = X.shape[1]

    def step(eta):
        mu, me = fam.link.inverse(eta), fam.link.mu_eta(eta)
        W = w * me * me / fam.variance(mu)
        z = eta - G.offset + (y - mu) / me
        A = X.T @ (W[:, None] * X) + 1e-12 * jnp.eye(p, dtype=X.dtype)
        beta = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(A, lower=True), X.T @ (W * z))
        return beta

    def cond(c):
        _, _, it, done = c
        return (~done) & (it < max_iter)

    def body(c):
        eta, beta, it, _ = c
        new = step(eta)
        done = jnp.max(jnp.abs(new - beta)) <= 1e-10 * (1.0 + jnp.max(jnp.abs(new)))
        return G.offset + X @ new, new, it + 1, done | ~jnp.all(jnp.isfinite(new))

    beta0 = jnp.zeros((p,), X.dtype)
    _, beta, _, _ = lax.while_loop(cond, body, (fam.link.link(mu0), beta0, jnp.asarray(0), jnp.asarray(False)))
    beta = jnp.where(jnp.all(jnp.isfinite(beta)), beta, 0.0)
    # under (quasi-)complete separation IRLS runs off to |X beta| in the hundreds, where PIRLS
    # finds no modes: start with the same direction at a moderate size instead
    size = jnp.max(jnp.abs(X @ beta) * (w > 0)) if p else jnp.asarray(0.0, X.dtype)
    beta = beta * jnp.minimum(1.0, MAX_START_ETA / jnp.maximum(size, 1e-300))
    mu = fam.link.inverse(G.offset + X @ beta)
    n = jnp.sum(w > 0)  # the real rows (padding rows have weight 0)
    phi = jnp.sum(w * (y - mu) ** 2 / fam.variance(mu)) / jnp.maximum(1, n - p)
    return beta, phi
