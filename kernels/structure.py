"""Symbolic analysis of a blocked sparse SPD matrix: elimination order, fill-in, update lists.

Done once per sparsity pattern on the host (numpy/scipy); the result is a pytree whose index
arrays are leaves and whose sizes are static metadata, so the numeric factorization compiles
once per pattern shape.

Stage ``j`` is eliminated *block diagonally* when, after the fill from the stages eliminated
before it, its diagonal block is still block diagonal by level (every level of an earlier stage
meets at most one of its levels: nesting). The leading run of such stages is kept sparse; all
later stages form one dense *tail* (crossed factors and the last stage).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import numpy as np
import scipy.sparse as sp

Key = tuple[int, int]


def key_name(i: int, j: int) -> str:
    return f"{i},{j}"


@dataclasses.dataclass(frozen=True)
class Update:
    """Schur-complement update ``M[i,l] -= L[i,j] L[l,j]'`` from eliminating stage ``j`` into a
    block-diagonal stage: ``kind`` is ``"diag"`` (into the block diagonal of stage ``l == i``)
    or ``"coo"`` (into the sparse block ``(i, l)``). Updates into the dense tail are batched
    (:class:`DenseGroup`)."""

    name: str
    j: int
    i: int
    l: int
    kind: str


@dataclasses.dataclass(frozen=True)
class DenseGroup:
    """Every dense-tail update ``T[i,l] -= L[i,j] L[l,j]'`` of stage ``j`` whose blocks have one
    width class ``(w_i, w_l)``, as one batched product: ``pa``/``pb`` index the concatenation of
    the factor blocks ``L[i,j]`` over ``left`` (resp. ``L[l,j]`` over ``right``, stages of width
    ``w_l``), ``dest`` the flat tail positions (sorted, after ``perm`` when ``permuted``)."""

    name: str
    j: int
    left: tuple[int, ...]
    right: tuple[int, ...]
    permuted: bool


@dataclasses.dataclass(frozen=True)
class BlockStructure:
    """Static description of the blocked factorization (see module docstring).

    Arrays (pytree leaves): ``rows``/``cols`` of every filled sparse block ``(i, j)`` with ``j``
    block diagonal (sorted by column, then row); ``embed`` maps the input nonzero blocks to
    filled positions (only for the blocks of ``bd_inputs`` with fill-in); ``tail_diag``/``tail_off`` are flat indices into the ``m x m`` tail's
    lower triangle (entries above the diagonal go to a dump slot ``m*m``), one array per width
    class of the tail's input blocks (``tail_diag_groups``: ``(name, w, stages)``;
    ``tail_off_groups``: ``(name, w_i, w_j, block names)``, the blocks concatenated in that
    order); ``pa``/``pb``/``dest`` list the block pairs of every update (``updates``, and the
    batched dense-tail updates ``dense_groups``); ``panel_index`` places a stage's factor blocks
    of one width (``panel_groups``: ``(name, j, stages)``) in its dense panel. Dense-tail
    destinations are sorted (directly, or after the permutation ``perm`` of the flattened
    products) so that the scatter-add runs on sorted indices. The number of operations of the
    numeric factorization grows with the number of stages and width classes, not with the
    number of stage pairs.
    """

    rows: dict
    cols: dict
    embed: dict
    tail_diag: dict
    tail_off: dict
    pa: dict
    pb: dict
    dest: dict
    perm: dict
    panel_index: dict
    nlevels: tuple = dataclasses.field(metadata=dict(static=True))
    widths: tuple = dataclasses.field(metadata=dict(static=True))
    n_bd: int = dataclasses.field(metadata=dict(static=True))
    tail_offsets: tuple = dataclasses.field(metadata=dict(static=True))
    m: int = dataclasses.field(metadata=dict(static=True))
    bd_keys: tuple = dataclasses.field(metadata=dict(static=True))
    tail_keys: tuple = dataclasses.field(metadata=dict(static=True))
    input_keys: tuple = dataclasses.field(metadata=dict(static=True))
    updates: tuple = dataclasses.field(metadata=dict(static=True))
    panel_stages: tuple = dataclasses.field(default=(), metadata=dict(static=True))
    tail_diag_groups: tuple = dataclasses.field(default=(), metadata=dict(static=True))
    tail_off_groups: tuple = dataclasses.field(default=(), metadata=dict(static=True))
    panel_groups: tuple = dataclasses.field(default=(), metadata=dict(static=True))
    dense_groups: tuple = dataclasses.field(default=(), metadata=dict(static=True))
    bd_inputs: tuple = dataclasses.field(default=(), metadata=dict(static=True))

    @property
    def n_stages(self) -> int:
        return len(self.nlevels)

    def tail_offset(self, i: int) -> int:
        return self.tail_offsets[i - self.n_bd]


jax.tree_util.register_dataclass(
    BlockStructure,
    data_fields=["rows", "cols", "embed", "tail_diag", "tail_off", "pa", "pb", "dest", "perm",
                 "panel_index"],
    meta_fields=[
        "nlevels", "widths", "n_bd", "tail_offsets", "m", "bd_keys", "tail_keys", "input_keys",
        "updates", "panel_stages", "tail_diag_groups", "tail_off_groups", "panel_groups",
        "dense_groups", "bd_inputs",
    ],
)


def lower_only(flat: np.ndarray, m: int) -> np.ndarray:
    """Redirect flat indices above the diagonal of the ``m x m`` tail to the dump slot ``m*m``."""
    flat = np.asarray(flat)
    upper = (flat // m) < (flat % m)
    return np.where(upper, m * m, flat).astype(flat.dtype)


def index_dtype(bound: int):
    return np.int32 if bound < 2**31 - 1 else np.int64


def join_on_column(cols_a: np.ndarray, cols_b: np.ndarray, ncols: int):
    """All pairs ``(a, b)`` with ``cols_a[a] == cols_b[b]``; both inputs sorted ascending."""
    start_b = np.searchsorted(cols_b, np.arange(ncols))
    cnt_b = np.bincount(cols_b, minlength=ncols)
    cnt = cnt_b[cols_a]
    total = int(cnt.sum())
    ia = np.repeat(np.arange(cols_a.shape[0]), cnt)
    first = np.repeat(np.cumsum(cnt) - cnt, cnt)
    ib = np.repeat(start_b[cols_a], cnt) + (np.arange(total) - first)
    return ia, ib


def _pattern(rows, cols, shape) -> sp.csc_matrix:
    m = sp.csc_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=shape)
    m.sum_duplicates()
    m.data[:] = 1
    m.sort_indices()
    return m


def _binary(m) -> sp.csc_matrix:
    """The 0/1 pattern of a sparse matrix (CSC, sorted indices)."""
    m = m.tocsc()
    m.data[:] = 1
    m = m.astype(np.int8)
    m.sort_indices()
    return m


def _bool_product(a: sp.csc_matrix, b: sp.csc_matrix) -> sp.csc_matrix:
    return _binary(a.astype(np.int64) @ b.T.astype(np.int64))


def _pattern_union(a: sp.csc_matrix, b: sp.csc_matrix) -> sp.csc_matrix:
    return _binary(a.astype(np.int64) + b.astype(np.int64))


# Choosing how a block-diagonal stage updates the dense tail. Pairs: one small product per
# pair of filled blocks, scatter-added (cost ~ entries scattered). Panel: the stage's blocks
# scattered into a dense (levels * width, m) panel P, then T -= P'P, one GEMM (cost ~ flops,
# a few hundred times cheaper per unit on CPUs). The panel wins when the tail fill is dense.
# Pairs also cost memory: three int32 indices and a float64 product per scattered entry, more in
# the gradient, so beyond ``PAIRS_MAX_ENTRIES`` (about 1 GB) the panel is used when it fits.
PANEL_FLOPS_PER_ENTRY = 200.0
PANEL_MAX_ENTRIES = 50_000_000
PAIRS_MAX_ENTRIES = 25_000_000


def analyze(
    nlevels: tuple[int, ...],
    widths: tuple[int, ...],
    offdiag: Mapping[Key, tuple[np.ndarray, np.ndarray]],
    panel: bool | None = None,
) -> BlockStructure:
    """Analyze the pattern of a blocked SPD matrix.

    ``offdiag[(i, j)] = (rows, cols)`` (``i > j``) lists the nonzero ``widths[i] x widths[j]``
    blocks of off-diagonal block ``(i, j)`` by level, without duplicates. The last stage is
    always part of the dense tail. ``panel``: how block-diagonal stages update the tail (see
    ``PANEL_FLOPS_PER_ENTRY``): ``None`` chooses by cost per stage, ``True``/``False`` forces.
    """
    nlevels = tuple(int(x) for x in nlevels)
    widths = tuple(int(x) for x in widths)
    K = len(nlevels)
    pat: dict[Key, sp.csc_matrix] = {}
    for (i, j), (r, c) in offdiag.items():
        if not i > j:
            raise ValueError(f"off-diagonal block {(i, j)} must have i > j")
        if len(r):
            pat[(i, j)] = _pattern(np.asarray(r), np.asarray(c), (nlevels[i], nlevels[j]))

    n_bd = 0
    for j in range(K - 1):
        ok = all(
            pat[(j, q)].getnnz(axis=0).max(initial=0) <= 1 for q in range(j) if (j, q) in pat
        )
        if not ok:
            break
        n_bd = j + 1
        for l in range(j + 1, K):
            if (l, j) not in pat:
                continue
            for i in range(l + 1, K):
                if (i, j) not in pat:
                    continue
                f = _bool_product(pat[(i, j)], pat[(l, j)])
                pat[(i, l)] = f if (i, l) not in pat else _pattern_union(pat[(i, l)], f)

    tail_stages = list(range(n_bd, K))
    offsets, off = [], 0
    for i in tail_stages:
        offsets.append(off)
        off += nlevels[i] * widths[i]
    m = off
    flat_dtype = index_dtype(m * m + 1)

    def toff(i):
        return offsets[i - n_bd]

    rows, cols, embed = {}, {}, {}
    bd_keys, bd_inputs = [], []
    for j in range(n_bd):
        for i in range(j + 1, K):
            if (i, j) not in pat:
                continue
            pm = pat[(i, j)]
            r = pm.indices.astype(np.int64)
            c = np.repeat(np.arange(nlevels[j]), np.diff(pm.indptr))
            name = key_name(i, j)
            rows[name] = r.astype(np.int32)
            cols[name] = c.astype(np.int32)
            bd_keys.append((i, j))
            if (i, j) in offdiag and len(offdiag[(i, j)][0]):
                r0, c0 = (np.asarray(x, dtype=np.int64) for x in offdiag[(i, j)])
                lin = c * nlevels[i] + r
                pos = np.searchsorted(lin, c0 * nlevels[i] + r0)
                bd_inputs.append(name)
                if not np.array_equal(pos, np.arange(len(lin))):  # fill-in or another order
                    embed[name] = pos.astype(np.int32)

    # the tail's input blocks, batched by width class: one scatter per class, not per block
    tail_diag, diag_groups = {}, []
    for w in sorted({widths[i] for i in tail_stages}):
        stages = tuple(i for i in tail_stages if widths[i] == w)
        base = np.concatenate([toff(i) + np.arange(nlevels[i])[:, None] * w + np.arange(w)[None, :]
                               for i in stages])  # (levels, w)
        name = str(len(diag_groups))
        tail_diag[name] = lower_only((base[:, :, None] * m + base[:, None, :]).astype(flat_dtype), m)
        diag_groups.append((name, w, stages))
    input_keys = tuple(sorted(k for k in offdiag if len(offdiag[k][0])))
    tail_keys = tuple((i, j) for (i, j) in input_keys if j >= n_bd)
    tail_off, off_groups = {}, []
    for wi, wj in sorted({(widths[i], widths[j]) for (i, j) in tail_keys}):
        keys = tuple((i, j) for (i, j) in tail_keys if (widths[i], widths[j]) == (wi, wj))
        idx = []
        for (i, j) in keys:
            r0, c0 = (np.asarray(x, dtype=np.int64) for x in offdiag[(i, j)])
            ri = toff(i) + r0[:, None] * wi + np.arange(wi)[None, :]
            cj = toff(j) + c0[:, None] * wj + np.arange(wj)[None, :]
            idx.append(ri[:, :, None] * m + cj[:, None, :])
        name = str(len(off_groups))
        tail_off[name] = np.concatenate(idx).astype(flat_dtype)
        off_groups.append((name, wi, wj, tuple(key_name(i, j) for (i, j) in keys)))

    panel_index, panel_stages, panel_groups = {}, [], []
    for j in range(n_bd):
        tail_blocks = [i for i in tail_stages if (i, j) in pat]
        if not tail_blocks or m == 0:
            continue
        n_pairs = 0
        for a_, i in enumerate(tail_blocks):
            for l in tail_blocks[: a_ + 1]:
                cnt = np.bincount(cols[key_name(i, j)], minlength=nlevels[j]).astype(np.int64)
                cnt_l = np.bincount(cols[key_name(l, j)], minlength=nlevels[j]).astype(np.int64)
                n_pairs += int(np.dot(cnt, cnt_l)) * widths[i] * widths[l]
        entries = nlevels[j] * widths[j] * m
        flops = 2.0 * entries * m
        use = panel if panel is not None else (flops < PANEL_FLOPS_PER_ENTRY * n_pairs
                                                 or n_pairs > PAIRS_MAX_ENTRIES)
        if not use or entries > PANEL_MAX_ENTRIES:
            continue
        panel_stages.append(j)
        pdtype = index_dtype(entries)
        wj = widths[j]
        for wi in sorted({widths[i] for i in tail_blocks}):
            stages = tuple(i for i in tail_blocks if widths[i] == wi)
            idx = []
            for i in stages:
                name = key_name(i, j)
                r, c = rows[name].astype(np.int64), cols[name].astype(np.int64)
                # P[c, b, toff(i) + r*wi + a] = L[i,j] block (a, b)
                idx.append(c[:, None, None] * wj * m + np.arange(wj)[None, None, :] * m
                           + toff(i) + r[:, None, None] * wi + np.arange(wi)[None, :, None])
            gname = f"{j}:{wi}"
            panel_index[gname] = np.concatenate(idx).astype(pdtype)
            panel_groups.append((gname, j, stages))

    pa, pb, dest, perm, updates = {}, {}, {}, {}, []
    dense_parts: dict = {}  # (j, wi, wl) -> per update (i, l, a, b, flat destinations)
    for j in range(n_bd):
        for l in range(j + 1, K):
            if (l, j) not in pat:
                continue
            nl = key_name(l, j)
            for i in range(l, K):
                if (i, j) not in pat:
                    continue
                ni = key_name(i, j)
                name = f"{j}:{i},{l}"
                if l < n_bd and i == l:
                    a = np.arange(len(rows[nl]))
                    pa[name], pb[name] = a.astype(np.int32), a.astype(np.int32)
                    dest[name] = rows[nl]
                    updates.append(Update(name, j, i, l, "diag"))
                    continue
                if l >= n_bd and j in panel_stages:
                    continue  # the stage's panel product covers every tail update
                a, b = join_on_column(cols[ni].astype(np.int64), cols[nl].astype(np.int64), nlevels[j])
                ra, rb = rows[ni][a].astype(np.int64), rows[nl][b].astype(np.int64)
                if l < n_bd:
                    lin_il = cols[key_name(i, l)].astype(np.int64) * nlevels[i] + rows[key_name(i, l)]
                    d = np.searchsorted(lin_il, rb * nlevels[i] + ra).astype(np.int32)
                    pa[name], pb[name], dest[name] = a.astype(np.int32), b.astype(np.int32), d
                    updates.append(Update(name, j, i, l, "coo"))
                    continue
                if i == l:
                    keep = ra >= rb
                    a, b, ra, rb = a[keep], b[keep], ra[keep], rb[keep]
                ri = toff(i) + ra[:, None] * widths[i] + np.arange(widths[i])[None, :]
                rl = toff(l) + rb[:, None] * widths[l] + np.arange(widths[l])[None, :]
                d = lower_only((ri[:, :, None] * m + rl[:, None, :]).astype(flat_dtype), m)
                dense_parts.setdefault((j, widths[i], widths[l]), []).append((i, l, a, b, d))

    # dense-tail updates of one stage, batched by width class: the factor blocks of the stage are
    # concatenated by width (in stage order), and every pair product of the class is gathered,
    # multiplied and scatter-added at once, on destinations sorted (directly, or after the
    # permutation ``perm`` of the flattened products)
    dense_groups = []
    for (j, wi, wl), parts in dense_parts.items():
        left = tuple(i for i in tail_stages if (i, j) in pat and widths[i] == wi)
        right = tuple(i for i in tail_stages if (i, j) in pat and widths[i] == wl)
        start_l = dict(zip(left, np.cumsum([0] + [len(rows[key_name(i, j)]) for i in left])))
        start_r = dict(zip(right, np.cumsum([0] + [len(rows[key_name(i, j)]) for i in right])))
        a = np.concatenate([start_l[i] + p[2] for p in parts for i in [p[0]]])
        b = np.concatenate([start_r[l] + p[3] for p in parts for l in [p[1]]])
        d = np.concatenate([p[4] for p in parts])
        order = np.argsort(d.ravel(), kind="stable")
        name = f"dense:{j}:{wi},{wl}"
        if wi * wl == 1:
            a, b, d = a[order], b[order], d[order]
            permuted = False
        else:
            perm[name] = order.astype(index_dtype(order.shape[0]))
            d = d.ravel()[order]
            permuted = True
        pa[name], pb[name], dest[name] = a.astype(np.int32), b.astype(np.int32), d
        dense_groups.append(DenseGroup(name, j, left, right, permuted))

    return BlockStructure(
        rows=rows, cols=cols, embed=embed, tail_diag=tail_diag, tail_off=tail_off,
        pa=pa, pb=pb, dest=dest, perm=perm, panel_index=panel_index,
        nlevels=nlevels, widths=widths, n_bd=n_bd, tail_offsets=tuple(offsets), m=m,
        bd_keys=tuple(bd_keys), tail_keys=tail_keys, input_keys=input_keys,
        updates=tuple(updates), panel_stages=tuple(panel_stages),
        tail_diag_groups=tuple(diag_groups), tail_off_groups=tuple(off_groups),
        panel_groups=tuple(panel_groups), dense_groups=tuple(dense_groups), bd_inputs=tuple(bd_inputs),
    )
