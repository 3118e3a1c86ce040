"""The Gram matrix ``A = [Z X y]' W [Z X y]`` in blocks, computed once from the design.

Stages: the random-effects terms (largest number of levels first), then one stage ``XY`` of a
single level holding ``[X, y - offset]``. Diagonal blocks are block diagonal by level
``(levels, p_i, p_i)``; off-diagonal blocks list only the level pairs that occur in the data.
All sums are bincounts over the rows; nothing here is repeated per theta.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..terms.design import Design
from ..kernels.structure import key_name


@dataclasses.dataclass(frozen=True)
class Gram:
    """Blocks of ``A``: ``diag[i] (levels_i, p_i, p_i)``; ``off[\"i,j\"] (nnz, p_i, p_j)`` on the
    level pattern ``pattern[(i, j)] = (rows, cols)``."""

    nlevels: tuple[int, ...]
    widths: tuple[int, ...]
    diag: list
    off: dict
    pattern: dict


def _weighted_cross(codes, ncodes, a, b, w):
    """sum over rows with code c of w * a[:, k] * b[:, l]  -> (ncodes, ka, kb)."""
    if ncodes == 1:
        return ((a * w[:, None]).T @ b)[None]
    out = np.empty((ncodes, a.shape[1], b.shape[1]))
    for k in range(a.shape[1]):
        wa = w * a[:, k]
        for l in range(b.shape[1]):
            out[:, k, l] = np.bincount(codes, weights=wa * b[:, l], minlength=ncodes)
    return out


def level_pairs(codes_i: np.ndarray, codes_j: np.ndarray, nlevels_i: int):
    """The level pairs that occur in the rows, as the pattern ``(rows, cols)`` = (level of ``i``,
    level of ``j``) sorted by column then row, and each row's pair index ``(n,)``."""
    key = codes_j.astype(np.int64) * nlevels_i + codes_i
    uniq, inv = np.unique(key, return_inverse=True)
    return (uniq % nlevels_i, uniq // nlevels_i), inv


def stage_pattern(codes: list[np.ndarray], nlevels: tuple[int, ...]) -> tuple[dict, dict]:
    """The level pattern of every off-diagonal block of the stages (terms with ``codes`` and
    ``nlevels``, then one single-level last stage), and each row's level-pair index
    ``pair_ids["i,j"] (n,)`` for every pair of terms ``i > j``."""
    k = len(nlevels)
    pattern, pair_ids = {}, {}
    for i in range(k + 1):
        for j in range(i):
            if i == k:  # the single-level last stage meets every level of term j
                pattern[(i, j)] = (np.zeros(nlevels[j], dtype=np.int64), np.arange(nlevels[j]))
            else:
                pattern[(i, j)], pair_ids[key_name(i, j)] = level_pairs(codes[i], codes[j], nlevels[i])
    return pattern, pair_ids


def gram_blocks(design: Design) -> Gram:
    """Compute the blocked Gram matrix of the design (see module docstring)."""
    w = design.weights
    terms = design.terms
    XY = np.column_stack([design.X, design.y - design.offset])
    nlevels = tuple(t.n_levels for t in terms) + (1,)
    widths = tuple(t.width for t in terms) + (XY.shape[1],)
    K = len(nlevels)
    zero = np.zeros(design.n, dtype=np.int64)
    codes = [t.codes.astype(np.int64) for t in terms] + [zero]
    cols = [t.columns for t in terms] + [XY]
    diag = [_weighted_cross(codes[i], nlevels[i], cols[i], cols[i], w) for i in range(K)]
    pattern, pair_ids = stage_pattern(codes[:-1], nlevels[:-1])
    off = {}
    for (i, j), (r, _) in pattern.items():
        if i == K - 1:
            vals = np.swapaxes(_weighted_cross(codes[j], nlevels[j], cols[j], cols[i], w), 1, 2)
        else:
            vals = _weighted_cross(pair_ids[key_name(i, j)], len(r), cols[i], cols[j], w)
        off[key_name(i, j)] = vals
    return Gram(nlevels=nlevels, widths=widths, diag=diag, off=off, pattern=pattern)


def cross_blocks(gram: Gram, codes: list[np.ndarray], left: list[np.ndarray], right: list[np.ndarray],
                 symmetrize: bool = False) -> tuple[list, dict]:
    """Blocks of ``sum_r left_r' right_r`` in the layout (level pattern) of ``gram``.

    ``codes[i] (N,)`` per random-effects stage, ``left[i]``/``right[i] (N, p_i)`` per stage
    (terms, then XY with a single level): each pseudo-row's level and columns. Every level pair
    must occur in ``gram``'s pattern. ``symmetrize`` adds the transpose (``+ right' left``).
    """
    K = len(gram.nlevels)
    N = left[-1].shape[0]
    codes = [c.astype(np.int64) for c in codes] + [np.zeros(N, dtype=np.int64)]
    ones = np.ones(N)

    def block(c, nc, i, j):
        """``sum left_i (x) right_j`` (+ ``right_i (x) left_j``) by code: ``(nc, p_i, p_j)``."""
        out = _weighted_cross(c, nc, left[i], right[j], ones)
        if symmetrize:
            out = out + _weighted_cross(c, nc, right[i], left[j], ones)
        return out

    diag = [block(codes[i], gram.nlevels[i], i, i) for i in range(K)]
    off = {}
    for (i, j), (r, c) in gram.pattern.items():
        if i == K - 1:  # one level on the XY side: the block is summed by the level of j
            vals = block(codes[j], gram.nlevels[j], i, j)
        else:
            keys = c.astype(np.int64) * gram.nlevels[i] + r
            idx = np.searchsorted(keys, codes[j] * gram.nlevels[i] + codes[i])
            vals = block(idx, len(keys), i, j)
        off[key_name(i, j)] = vals
    return diag, off
