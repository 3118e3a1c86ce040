"""Forward and back substitution, ``L x = b`` and ``L' x = b``, with a :class:`BlockedFactor`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from .cholesky import BlockedFactor
from .small import small_solve_lower, small_solve_upper
from .structure import BlockStructure, key_name


def solve_lower_transpose(s: BlockStructure, f: BlockedFactor, b_bd: list, b_tail: jnp.ndarray):
    """Solve ``L' x = b``; ``b_bd[j]`` is ``(nlevels[j], p_j)``, ``b_tail`` is ``(m,)``.

    Returns ``(x_bd, x_tail)`` in the same layout. The tail is solved densely first, then the
    block-diagonal stages in reverse order: ``x_j = L_jj^{-T} (b_j - sum_i L_ij' x_i)``.
    """
    x_tail = lax.linalg.triangular_solve(
        f.tail, b_tail[:, None], left_side=True, lower=True, transpose_a=True
    )[:, 0]
    K, w = s.n_stages, s.widths
    x = [None] * K
    for i in range(s.n_bd, K):
        o = s.tail_offset(i)
        x[i] = x_tail[o : o + s.nlevels[i] * w[i]].reshape(s.nlevels[i], w[i])
    for j in reversed(range(s.n_bd)):
        r = b_bd[j]
        for i in range(j + 1, K):
            name = key_name(i, j)
            if name not in f.off:
                continue
            xi = jnp.take(x[i], s.rows[name], axis=0)
            contrib = jnp.einsum("kab,ka->kb", f.off[name], xi)
            r = r - jax.ops.segment_sum(contrib, s.cols[name], num_segments=s.nlevels[j])
        x[j] = small_solve_upper(f.diag[j], r)
    return x[: s.n_bd], x_tail


def solve_lower(s: BlockStructure, f: BlockedFactor, b_bd: list, b_tail: jnp.ndarray):
    """Solve ``L x = b`` (forward substitution; layout as :func:`solve_lower_transpose`).

    Block-diagonal stages in order, ``x_j = L_jj^{-1} b_j``, each then subtracted from the later
    stages' right-hand sides (``b_i -= L_ij x_j`` on the filled blocks, the tail's included),
    then the tail densely. Returns ``(x_bd, x_tail)``.
    """
    K, w = s.n_stages, s.widths
    b = list(b_bd)
    t = b_tail
    x = []
    for j in range(s.n_bd):
        xj = small_solve_lower(f.diag[j], b[j])
        x.append(xj)
        for i in range(j + 1, K):
            name = key_name(i, j)
            if name not in f.off:
                continue
            contrib = jnp.einsum("kab,kb->ka", f.off[name], jnp.take(xj, s.cols[name], axis=0))
            if i < s.n_bd:
                b[i] = b[i] - jax.ops.segment_sum(contrib, s.rows[name], num_segments=s.nlevels[i])
            else:
                pos = s.tail_offset(i) + s.rows[name][:, None] * w[i] + jnp.arange(w[i])[None, :]
                t = t.at[pos.ravel()].add(-contrib.ravel())
    x_tail = lax.linalg.triangular_solve(f.tail, t[:, None], left_side=True, lower=True)[:, 0]
    return x, x_tail
