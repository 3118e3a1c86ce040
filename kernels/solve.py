"""Back-substitution ``L' x = b`` with a :class:`BlockedFactor`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from .cholesky import BlockedFactor
from .small import small_solve_upper
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
