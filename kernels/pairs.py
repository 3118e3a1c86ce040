"""Fixed pair products: the fill of a scalar first stage into the dense tail as one weighted sum.

Eliminating the first stage (``j = 0``, width 1, never updated by an earlier stage) subtracts
from the tail, for every pair ``(r, q)`` of its factor blocks in one level ``k``,

    T[r, q] -= L[r, k] L[q, k],   L[r, k] = s_r s_0 C[r, k] / sqrt(D_k),

where ``C`` are the unscaled input blocks, ``s`` the stage scales (``blocked_cholesky``'s
``scale``; 1 without) and ``D_k`` the first stage's (scaled) diagonal. With every tail stage of
the pair scalar, the product factors as ``s_r s_q * w_k * P[r, q, k]`` with ``w_k = s_0^2 / D_k``
and ``P[r, q, k] = C[r, k] C[q, k]`` fixed by the data. So the fill is ``D_s' (sum_k w_k P_k) D_s``:
the ``P`` values are computed here once per data set, and each evaluation gathers the
``nlevels_0``-vector ``w`` at the pairs' levels, multiplies and scatter-adds into the tail before
its congruence by the scales (:func:`jaxlmm.kernels.cholesky.blocked_cholesky`), instead of
gathering both factor blocks of every pair (and scattering into both in reverse mode).

Only valid while the input blocks ``C`` are the ones ``P`` was computed from: a caller that
replaces off-diagonal blocks of the stages involved must drop the products.
"""

from __future__ import annotations

import numpy as np

from .structure import BlockStructure, key_name


def fixed_pair_groups(s: BlockStructure, exclude: tuple[int, ...] = ()) -> tuple:
    """Names of the dense-tail update groups whose pair products are fixed: first stage, scalar,
    block diagonal, and both sides scalar tail stages not in ``exclude``."""
    if s.n_bd == 0 or s.widths[0] != 1:
        return ()
    out = []
    for g in s.dense_groups:
        stages = set(g.left) | set(g.right)
        if g.j == 0 and not g.permuted and all(s.widths[i] == 1 for i in stages) \
                and not stages & set(exclude):
            out.append(g.name)
    return tuple(out)


def pair_products(s: BlockStructure, off: dict, exclude: tuple[int, ...] = ()) -> dict:
    """``{group name: (P, k)}`` for :func:`fixed_pair_groups`: ``P (pairs,)`` the products of the
    unscaled input values of each pair, ``k (pairs,)`` its first-stage level, both in the
    group's (sorted) destination order. Host arrays in, host arrays out.

    ``s``: the structure as :func:`jaxlmm.kernels.analyze` (or ``buckets.pad_structure``) left
    it, with numpy index arrays; ``off``: the input blocks ``(nnz, 1, 1)`` of ``s.input_keys``.
    Stages in ``exclude`` (whose blocks a caller replaces, such as a response) are left out.
    """
    names = fixed_pair_groups(s, exclude)
    if not names:
        return {}
    blocks = {}  # the first stage's input blocks on its filled pattern
    for (i, j) in s.bd_keys:
        if j != 0:
            continue
        name = key_name(i, j)
        v = np.zeros(np.asarray(s.rows[name]).shape[0])
        if name in s.bd_inputs:
            x = np.asarray(off[name], dtype=np.float64).reshape(-1)
            if name in s.embed:
                np.add.at(v, np.asarray(s.embed[name]), x)
            else:
                v = x.copy()
        blocks[i] = v
    out = {}
    for g in s.dense_groups:
        if g.name not in names:
            continue
        left = np.concatenate([blocks[i] for i in g.left])
        right = np.concatenate([blocks[i] for i in g.right])
        cols = np.concatenate([np.asarray(s.cols[key_name(i, 0)]) for i in g.left])
        a, b = np.asarray(s.pa[g.name]), np.asarray(s.pb[g.name])
        out[g.name] = (left[a] * right[b], cols[a].astype(np.int32))
    return out
