"""Selected inverse: the level-diagonal blocks of ``M^{-1}`` from its blocked Cholesky factor.

Takahashi's recursions, run on the host (numpy) once after a fit. With ``S = M^{-1}`` and stage
``j`` block diagonal, for every nonzero block ``k`` of ``L[i,j]`` in level column ``c``:

    S[i,j]_k = - sum_{(l,b) in column c} S[(i,r_k),(l,r_b)] L[l,j]_b L_jj[c]^{-1}
    S[j,j]_c = L_jj[c]^{-T} (L_jj[c]^{-1} - sum_{(i,k) in column c} L[i,j]_k' S[i,j]_k)

which needs ``S`` only on the filled pattern of ``L``. The dense tail is inverted directly.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from .structure import BlockStructure, join_on_column, key_name


def _lookup(lin_sorted: np.ndarray, lin: np.ndarray) -> np.ndarray:
    pos = np.searchsorted(lin_sorted, lin)
    if np.any(pos >= len(lin_sorted)) or np.any(lin_sorted[np.minimum(pos, len(lin_sorted) - 1)] != lin):
        raise AssertionError("selected inverse needs a block outside the filled pattern")
    return pos


def diagonal_blocks_of_inverse(s: BlockStructure, diag, off, tail, n_keep: int | None = None):
    """Level-diagonal blocks of the inverse of the leading stages ``0..n_keep-1`` of ``M``.

    ``diag``, ``off``, ``tail``: the factor (numpy arrays, as in ``BlockedFactor``). Returns a
    list with one ``(nlevels[i], p_i, p_i)`` array per kept stage.
    """
    K = s.n_stages if n_keep is None else n_keep
    w, nl = s.widths, s.nlevels
    m_keep = s.m if K >= s.n_stages else s.tail_offset(K)
    Lt = np.asarray(tail, dtype=np.float64)[:m_keep, :m_keep]
    if m_keep:
        Si, info = scipy.linalg.lapack.dpotri(np.tril(Lt), lower=1)  # lower triangle of (Lt Lt')^{-1}
        St = np.tril(Si) + np.tril(Si, -1).T
    else:
        St = np.zeros((0, 0))

    def tail_idx(i, r):
        return s.tail_offset(i) + r[:, None] * w[i] + np.arange(w[i])[None, :]

    rows = {k: np.asarray(v, dtype=np.int64) for k, v in s.rows.items()}
    cols = {k: np.asarray(v, dtype=np.int64) for k, v in s.cols.items()}
    lin = {k: cols[k] * nl[int(k.split(",")[0])] + rows[k] for k in rows}
    Sd: dict[int, np.ndarray] = {}
    So: dict[str, np.ndarray] = {}

    def sigma_pair(i, l, ra, rb):
        """S[(i, ra), (l, rb)] blocks, shape (n, p_i, p_l)."""
        if i >= s.n_bd and l >= s.n_bd:
            if w[i] == 1 and w[l] == 1:
                return St[s.tail_offset(i) + ra, s.tail_offset(l) + rb][:, None, None]
            ii, ll = tail_idx(i, ra), tail_idx(l, rb)
            return St[ii[:, :, None], ll[:, None, :]]
        if i == l:
            return Sd[i][ra]
        if i > l:
            name = key_name(i, l)
            return So[name][_lookup(lin[name], rb * nl[i] + ra)]
        name = key_name(l, i)
        return np.swapaxes(So[name][_lookup(lin[name], ra * nl[l] + rb)], 1, 2)

    for j in reversed(range(s.n_bd)):
        Ljj = np.asarray(diag[j])
        Linv = np.linalg.inv(Ljj)
        below = [i for i in range(j + 1, K) if key_name(i, j) in s.rows]
        Lij = {i: np.asarray(off[key_name(i, j)]) for i in below}
        acc = {i: np.zeros((len(rows[key_name(i, j)]), w[i], w[j])) for i in below}
        for i in below:
            ni = key_name(i, j)
            for l in below:
                nlj = key_name(l, j)
                a, b = join_on_column(cols[ni], cols[nlj], nl[j])
                S_il = sigma_pair(i, l, rows[ni][a], rows[nlj][b])
                np.add.at(acc[i], a, S_il @ Lij[l][b])
        t = Linv.copy()
        for i in below:
            ni = key_name(i, j)
            Sij = -acc[i] @ Linv[cols[ni]]
            if i < K:
                So[ni] = Sij
            contrib = np.swapaxes(Lij[i], 1, 2) @ Sij
            t_sub = np.zeros_like(t)
            np.add.at(t_sub, cols[ni], contrib)
            t = t - t_sub
        Sd[j] = np.swapaxes(Linv, 1, 2) @ t
    out = []
    for i in range(K):
        if i < s.n_bd:
            out.append(Sd[i])
        else:
            r = np.arange(nl[i])
            ii = tail_idx(i, r)
            out.append(St[ii[:, :, None], ii[:, None, :]])
    return out
