"""Shape buckets: a :class:`BlockStructure` padded to a small set of sizes, so that one compiled
program serves every pattern whose sizes fall in the same buckets.

Every static size of the numeric factorization comes from the pattern: levels per stage, the
number of filled blocks, of input blocks and of update pairs, the dense tail's order ``m``.
:func:`pad_structure` rounds each up to a bucket (:func:`bucket`: ``STEPS`` sizes per octave,
always at least one slot more than needed) and fills the extra slots so that they provably
contribute nothing:

- a padded level has a zero diagonal block (so ``Lambda' 0 Lambda + I = I``: its factor is the
  identity and its log-diagonal zero) and no off-diagonal block; in the dense tail the padded
  levels of a stage follow its real ones, so the tail is the real tail with identity rows and
  columns interleaved, and its factor is the real factor with the same identity rows
  (``L_ij = (T_ij - sum_k L_ik L_jk) / L_jj`` only adds products with the zeros);
- a padded filled block sits in the last (padded) level's column of its stage and is zero
  (a zero input block solved against the identity);
- a padded update pair reads a zero block and adds its (zero) product to a real destination, or
  to the tail's dump slot ``m*m`` (which the factorization discards);
- padded input blocks are zero and go to the dump slot (tail) or to a zero filled block.

:class:`PadLayout` keeps the real sizes on the host: :func:`pad_inputs` pads the numeric input
blocks, :func:`unpad_factor` / :func:`unpad_solution` cut a factor or a solution back to the
unpadded layout (bit for bit the factor of the unpadded matrix, up to the order of additions).
The last stage (the one :func:`analyze` always puts last in the tail) is never padded.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .structure import BlockStructure, index_dtype, key_name, lower_only

STEPS = 8  # bucket sizes per octave for index arrays (at most 12.5% padding)
LEVEL_STEPS = 16  # for 512 levels or more, which also size the dense tail (at most 6.25%, 20% more potrf flops)


def bucket(n: int, steps: int = STEPS) -> int:
    """The smallest bucket size ``>= n + 1``: ``n + 1`` below ``steps``, otherwise the next
    multiple of ``2**e`` with ``steps <= (n + 1) / 2**e < 2 * steps``."""
    need = int(n) + 1
    if need <= steps:
        return need
    e = need.bit_length() - steps.bit_length()  # 2**e * steps <= need < 2**(e+1) * steps, about
    step = 1 << max(e, 0)
    return -(-need // step) * step


def level_bucket(n: int) -> int:
    """The padded number of levels of a stage: :func:`bucket` with ``STEPS`` sizes per octave
    below 512 levels and ``LEVEL_STEPS`` from there (finer where the dense tail's cost, cubic in
    its order, matters)."""
    return bucket(n, STEPS if n < 512 else LEVEL_STEPS)


@dataclasses.dataclass(frozen=True)
class PadLayout:
    """The real sizes behind a padded structure (host side, never traced)."""

    structure: BlockStructure  # the unpadded structure (numpy arrays)
    nlevels: tuple  # real levels per stage
    padded_levels: tuple
    filled: dict  # bd key name -> real number of filled blocks
    inputs: dict  # input key name -> real number of input blocks
    padded_inputs: dict  # input key name -> padded number
    tail_index: np.ndarray  # positions of the real tail rows within the padded tail


def _pad_rows(a: np.ndarray, n_total: int, fill) -> np.ndarray:
    """``a`` (length n along axis 0) extended to ``n_total`` with ``fill`` (scalar or array)."""
    extra = n_total - a.shape[0]
    if extra <= 0:
        return a
    pad = np.broadcast_to(np.asarray(fill, dtype=a.dtype), (extra,) + a.shape[1:])
    return np.concatenate([a, pad])


def pad_structure(s: BlockStructure, input_nnz: dict) -> tuple[BlockStructure, PadLayout]:
    """``s`` (numpy arrays, from :func:`analyze`) padded to bucket sizes, and its layout.
    ``input_nnz``: the number of input blocks per input key name (``"i,j"``)."""
    K, w, nl = s.n_stages, s.widths, s.nlevels
    NL = tuple(level_bucket(nl[i]) if i < K - 1 else nl[i] for i in range(K))
    tail = list(range(s.n_bd, K))
    offsets, off = [], 0
    for i in tail:
        offsets.append(off)
        off += NL[i] * w[i]
    M, m = off, s.m
    flat_dtype = index_dtype(M * M + 1)

    def toff(i):
        return offsets[i - s.n_bd]

    tail_index = np.concatenate([toff(i) + np.arange(nl[i] * w[i]) for i in tail]).astype(np.int64)

    def remap(flat):
        """Flat positions of the real ``m x m`` tail (dump ``m*m``) in the padded ``M x M`` one."""
        f = np.asarray(flat, dtype=np.int64)
        r, c = np.divmod(np.minimum(f, m * m - 1), m)
        out = tail_index[r] * M + tail_index[c]
        return np.where(f == m * m, M * M, out).astype(flat_dtype)

    # filled blocks of the block-diagonal stages: padded entries in the last level's column
    rows, cols, filled, NF = {}, {}, {}, {}
    for name in s.rows:
        i, j = map(int, name.split(","))
        n = s.rows[name].shape[0]
        filled[name], NF[name] = n, bucket(n)
        rows[name] = _pad_rows(s.rows[name], NF[name], 0)
        cols[name] = _pad_rows(s.cols[name], NF[name], NL[j] - 1)

    inputs = {k: int(v) for k, v in input_nnz.items()}
    padded_inputs = {k: (NF[k] if k in NF and k not in s.embed else bucket(v)) for k, v in inputs.items()}
    embed = {name: _pad_rows(e, padded_inputs[name], NF[name] - 1) for name, e in s.embed.items()}

    tail_diag = {}
    for name, wd, stages in s.tail_diag_groups:
        base = np.concatenate([toff(i) + np.arange(NL[i])[:, None] * wd + np.arange(wd)[None, :] for i in stages])
        tail_diag[name] = lower_only((base[:, :, None] * M + base[:, None, :]).astype(flat_dtype), M)

    tail_off = {}
    for name, _, _, names in s.tail_off_groups:
        parts, start = [], 0
        for n_ in names:
            k = inputs[n_]
            parts.append(_pad_rows(remap(s.tail_off[name][start : start + k]), padded_inputs[n_], M * M))
            start += k
        tail_off[name] = np.concatenate(parts)

    pa, pb, dest, perm = {}, {}, {}, {}
    for u in s.updates:
        nl_name, ni_name = key_name(u.l, u.j), key_name(u.i, u.j)
        if u.kind == "diag":
            a = np.arange(NF[nl_name], dtype=np.int32)
            pa[u.name], pb[u.name], dest[u.name] = a, a, rows[nl_name]
            continue
        N = bucket(s.pa[u.name].shape[0])
        pa[u.name] = _pad_rows(s.pa[u.name], N, NF[ni_name] - 1)  # a zero block
        pb[u.name] = _pad_rows(s.pb[u.name], N, 0)
        dest[u.name] = _pad_rows(s.dest[u.name], N, 0)  # adds exactly zero

    def shift(idx, blocks):
        """Indices into the concatenation of ``blocks`` (real lengths) moved to padded lengths."""
        real = np.cumsum([0] + [filled[b] for b in blocks])
        new = np.cumsum([0] + [NF[b] for b in blocks])
        k = np.searchsorted(real, idx, side="right") - 1
        return (idx - real[k] + new[k]).astype(np.int32), int(new[-1])

    for g in s.dense_groups:
        left = [key_name(i, g.j) for i in g.left]
        right = [key_name(l, g.j) for l in g.right]
        a, n_left = shift(s.pa[g.name], left)
        b, _ = shift(s.pb[g.name], right)
        n, N = a.shape[0], bucket(a.shape[0])
        pa[g.name] = _pad_rows(a, N, n_left - 1)  # the last left block's last (zero) slot
        pb[g.name] = _pad_rows(b, N, 0)
        d = remap(s.dest[g.name])
        if g.permuted:
            q = d.shape[0] // max(n, 1)
            perm[g.name] = np.concatenate([s.perm[g.name], np.arange(n * q, N * q)]).astype(index_dtype(N * q))
            dest[g.name] = _pad_rows(d, N * q, M * M)
        else:
            dest[g.name] = _pad_rows(d, N, M * M)

    panel_index = {}
    for gname, j, stages in s.panel_groups:
        wj = w[j]
        parts, start = [], 0
        for i in stages:
            name = key_name(i, j)
            k = filled[name]
            p = s.panel_index[gname][start : start + k].astype(np.int64)
            start += k
            cb, col = np.divmod(p, m)
            parts.append(cb * M + tail_index[col])
            wi = w[i]
            pad = (((NL[j] - 1) * wj + np.arange(wj)[None, None, :]) * M + toff(i)
                   + np.arange(wi)[None, :, None])
            parts.append(np.broadcast_to(pad, (NF[name] - k, wi, wj)))
        panel_index[gname] = np.concatenate(parts).astype(index_dtype(NL[j] * wj * M))

    padded = dataclasses.replace(
        s, rows=rows, cols=cols, embed=embed, tail_diag=tail_diag, tail_off=tail_off, pa=pa, pb=pb,
        dest=dest, perm=perm, panel_index=panel_index, nlevels=NL, tail_offsets=tuple(offsets), m=M,
    )
    layout = PadLayout(structure=s, nlevels=tuple(nl), padded_levels=NL, filled=filled, inputs=inputs,
                       padded_inputs=padded_inputs, tail_index=tail_index)
    return padded, layout


def pad_inputs(layout: PadLayout, diag: list, off: dict, identity: bool = False) -> tuple[list, dict]:
    """The numeric input blocks (numpy) padded to the layout's sizes: off-diagonal blocks with
    zero blocks; diagonal blocks with zero blocks (for blocks that become ``Lambda' A Lambda + I``
    before the factorization) or, with ``identity``, identity blocks (a matrix factored as given)."""
    def fill(d):
        return np.eye(d.shape[-1]) if identity else 0.0
    diag = [_pad_rows(np.asarray(d), n, fill(np.asarray(d))) for d, n in zip(diag, layout.padded_levels)]
    off = {k: _pad_rows(np.asarray(v), layout.padded_inputs[k], 0.0) for k, v in off.items()}
    return diag, off


def unpad_factor(layout: PadLayout, diag: list, off: dict, tail):
    """A factor of the padded matrix (numpy) cut to the unpadded layout."""
    diag = [np.asarray(d)[:n] for d, n in zip(diag, layout.nlevels)]
    off = {k: np.asarray(v)[: layout.filled[k]] for k, v in off.items()}
    t = layout.tail_index
    return diag, off, np.asarray(tail)[np.ix_(t, t)]


def unpad_solution(layout: PadLayout, x_bd: list, x_tail):
    """A solution in the padded layout cut to the unpadded one."""
    return [np.asarray(x)[:n] for x, n in zip(x_bd, layout.nlevels)], np.asarray(x_tail)[layout.tail_index]
