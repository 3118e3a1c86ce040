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


def split_stages(s: BlockStructure, x_bd: list, x_tail: jnp.ndarray, k: int) -> list:
    """The solution of stages ``0..k-1`` as one ``(nlevels[i], widths[i])`` array each, from the
    ``(x_bd, x_tail)`` layout of the solves."""
    out = []
    for i in range(k):
        if i < s.n_bd:
            out.append(x_bd[i])
        else:
            o = s.tail_offset(i)
            out.append(x_tail[o : o + s.nlevels[i] * s.widths[i]].reshape(s.nlevels[i], s.widths[i]))
    return out


def solve_leading(s: BlockStructure, f: BlockedFactor, v: list) -> list:
    """``A^{-1} v`` for the leading stages ``0..k-1`` (``k = len(v)``, each ``v[i]``
    ``(nlevels[i], widths[i])``) of a matrix ``[[A, C'], [C, D]]`` factored in ``f``, whose
    trailing stages ``k..`` are the dense tail's last entries: the leading factor block is the
    factor of ``A``, so a forward solve, the trailing entries set to zero, and a back solve give
    ``A^{-1} v``."""
    k = len(v)
    b_bd = [v[j] for j in range(s.n_bd)]
    b_tail = jnp.zeros((s.m,), v[0].dtype)
    for i in range(s.n_bd, k):
        o = s.tail_offset(i)
        b_tail = b_tail.at[o : o + s.nlevels[i] * s.widths[i]].set(v[i].ravel())
    y_bd, y_tail = solve_lower(s, f, b_bd, b_tail)
    n_trail = sum(s.nlevels[i] * s.widths[i] for i in range(k, s.n_stages))
    y_tail = y_tail.at[s.m - n_trail :].set(0.0)
    x_bd, x_tail = solve_lower_transpose(s, f, y_bd, y_tail)
    return split_stages(s, x_bd, x_tail, k)
