"""Batched factorizations and triangular solves of small matrices.

For width p <= UNROLL the loops over p are unrolled at trace time, so a batch of ``(..., p, p)``
matrices is handled by elementwise operations (closed form; no per-matrix LAPACK call).
Wider blocks fall back to ``jax.lax.linalg``.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

UNROLL = 6


def small_cholesky(a: jnp.ndarray) -> jnp.ndarray:
    """Lower Cholesky factors ``L L' = A`` of a batch ``A`` of shape ``(..., p, p)``."""
    p = a.shape[-1]
    if p == 1:
        return jnp.sqrt(a)
    if p > UNROLL:
        return lax.linalg.cholesky(a, symmetrize_input=False)
    L = [[None] * p for _ in range(p)]
    for j in range(p):
        s = a[..., j, j]
        for k in range(j):
            s = s - L[j][k] * L[j][k]
        d = jnp.sqrt(s)
        L[j][j] = d
        for i in range(j + 1, p):
            t = a[..., i, j]
            for k in range(j):
                t = t - L[i][k] * L[j][k]
            L[i][j] = t / d
    zero = jnp.zeros_like(a[..., 0, 0])
    rows = [jnp.stack([L[i][j] if j <= i else zero for j in range(p)], axis=-1) for i in range(p)]
    return jnp.stack(rows, axis=-2)


def small_solve_lower(l: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """Solve ``L x = b`` for lower-triangular ``L (..., p, p)`` and ``b (..., p)``."""
    p = l.shape[-1]
    if p > UNROLL:
        # explicit batch shape: the solve's transpose rule rejects broadcast batch dimensions
        l = jnp.broadcast_to(l, b.shape[:-1] + l.shape[-2:])
        return lax.linalg.triangular_solve(l, b[..., None], left_side=True, lower=True)[..., 0]
    x = [None] * p
    for i in range(p):
        t = b[..., i]
        for k in range(i):
            t = t - l[..., i, k] * x[k]
        x[i] = t / l[..., i, i]
    return jnp.stack(x, axis=-1)


def small_solve_upper(l: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """Solve ``L' x = b`` for lower-triangular ``L (..., p, p)`` and ``b (..., p)``."""
    p = l.shape[-1]
    if p > UNROLL:
        l = jnp.broadcast_to(l, b.shape[:-1] + l.shape[-2:])
        return lax.linalg.triangular_solve(
            l, b[..., None], left_side=True, lower=True, transpose_a=True
        )[..., 0]
    x = [None] * p
    for i in reversed(range(p)):
        t = b[..., i]
        for k in range(i + 1, p):
            t = t - l[..., k, i] * x[k]
        x[i] = t / l[..., i, i]
    return jnp.stack(x, axis=-1)


def small_right_solve_lt(l: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
    """``X L^{-T}`` for ``L (..., q, q)`` lower triangular and ``X (..., r, q)``.

    Each row ``x`` of ``X`` gives the row ``y`` with ``L y' = x'``: a forward substitution.
    """
    return small_solve_lower(l[..., None, :, :], x)
