"""Numeric right-looking blocked Cholesky over a :class:`BlockStructure`, in JAX.

Block-diagonal stages: batched small Cholesky of every level's block, then ``L[i,j] =
M[i,j] L[j,j]^{-T}`` block by block (gather), then the Schur updates as batched block products
accumulated by segment sums (sparse destinations) or scatter-adds (dense tail). The tail is
factored densely (potrf). Everything has static shapes given the structure.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from jax import lax

from .small import small_cholesky, small_right_solve_lt
from .structure import BlockStructure, key_name


@dataclasses.dataclass(frozen=True)
class BlockedFactor:
    """Lower Cholesky factor ``L`` with ``L L' = M``.

    ``diag[j]``: ``(nlevels[j], p_j, p_j)`` factors of the block-diagonal stages;
    ``off[\"i,j\"]``: ``(nnz, p_i, p_j)`` blocks of ``L[i,j]`` on the filled pattern;
    ``tail``: the ``(m, m)`` dense lower factor of the tail.
    """

    diag: list
    off: dict
    tail: jnp.ndarray


jax.tree_util.register_dataclass(BlockedFactor, data_fields=["diag", "off", "tail"], meta_fields=[])


def _concat(blocks: list):
    return blocks[0] if len(blocks) == 1 else jnp.concatenate(blocks, axis=0)


# index arrays of a BlockStructure are in bounds by construction: no bounds handling (which
# costs several operations per gather or scatter in the program and its derivatives)
def _take(x, idx):
    return x.at[idx].get(mode="promise_in_bounds")


def _take_sorted(x, idx):
    return x.at[idx].get(mode="promise_in_bounds", indices_are_sorted=True)


def _scale_block(v, left, right):
    """``left' v_k right`` for blocks ``v (nnz, p, q)`` (None: identity)."""
    if left is not None:
        v = v * left[0, 0] if left.shape == (1, 1) else jnp.einsum("ba,kbc->kac", left, v)
    if right is not None:
        v = v * right[0, 0] if right.shape == (1, 1) else jnp.einsum("kac,cd->kad", v, right)
    return v


def _congruence(T, s: BlockStructure, scale: list):
    """``D' T D`` for the ``(m, m)`` tail ``T`` and ``D`` block diagonal: ``scale[i] (p_i, p_i)``
    for every level of tail stage ``i`` (None: identity). One product per stage, or one
    elementwise product when every scaled stage is scalar."""
    stages = [i for i in range(s.n_bd, s.n_stages) if scale[i] is not None]
    if not stages:
        return T
    dtype = T.dtype
    if all(s.widths[i] == 1 for i in stages):
        d = _concat([jnp.broadcast_to(scale[i][0, 0], (s.nlevels[i],)) if scale[i] is not None
                     else jnp.ones((s.nlevels[i] * s.widths[i],), dtype) for i in range(s.n_bd, s.n_stages)])
        return T * d[:, None] * d[None, :]

    def left(X):  # D' X, stage by stage of rows
        parts = []
        for i in range(s.n_bd, s.n_stages):
            o, nl, w = s.tail_offset(i), s.nlevels[i], s.widths[i]
            rows = X[o : o + nl * w]
            if scale[i] is not None:
                rows = jnp.einsum("ba,lbm->lam", scale[i], rows.reshape(nl, w, -1)).reshape(nl * w, -1)
            parts.append(rows)
        return _concat(parts)

    return left(left(T).T).T


def _eliminate(s: BlockStructure, diag: list, off: dict, scale: list | None = None,
               pairs: dict | None = None):
    """Eliminate the block-diagonal stages; return their factors and the tail's Schur
    complement, stored in its lower triangle (upper triangle zero). With ``scale``, every
    off-diagonal block is ``scale[i]' off[i,j] scale[j]`` (see :func:`blocked_cholesky`). The
    dense-tail groups in ``pairs`` (:func:`jaxlmm.kernels.pairs.pair_products` of ``off``) are
    filled from their fixed products, before the tail's congruence by the scales."""
    pairs = pairs or {}
    dtype = diag[0].dtype
    K, m, w = s.n_stages, s.m, s.widths
    F = {}
    for (i, j) in s.bd_keys:
        name = key_name(i, j)
        z = jnp.zeros((s.rows[name].shape[0], w[i], w[j]), dtype)
        if name in s.bd_inputs:
            v = off[name]
            if scale is not None:
                v = _scale_block(v, scale[i], scale[j])
            if name in s.embed:  # fill-in: the input blocks are a subset of the filled pattern
                # (an add: padded input blocks, all zero, share one zero slot: jaxlmm.kernels.buckets)
                v = z.at[s.embed[name]].add(v, mode="promise_in_bounds")
            z = v
        F[name] = z
    D = list(diag[: s.n_bd])

    T = jnp.zeros((m * m + 1,), dtype)
    for name, _, _, names in s.tail_off_groups:
        T = T.at[s.tail_off[name].ravel()].add(_concat([off[n] for n in names]).ravel(),
                                               mode="promise_in_bounds")
    for g in s.dense_groups:
        if g.name in pairs:  # T[r, q] -= w_k P[r, q, k], w_k = s_0^2 / D_k (jaxlmm.kernels.pairs)
            P, k = pairs[g.name]
            w = 1.0 / diag[0][:, 0, 0]
            if scale is not None and scale[0] is not None:
                w = w * scale[0][0, 0] ** 2
            T = T.at[s.dest[g.name].ravel()].add(-_take(w, k) * P, indices_are_sorted=True,
                                                 mode="promise_in_bounds")
    if scale is not None and (s.tail_off_groups or pairs):
        T = jnp.concatenate([_congruence(T[: m * m].reshape(m, m), s, scale).ravel(), T[m * m :]])
    for name, _, stages in s.tail_diag_groups:
        T = T.at[s.tail_diag[name].ravel()].add(_concat([diag[i] for i in stages]).ravel(),
                                                mode="promise_in_bounds")

    Ld = []
    for j in range(s.n_bd):
        Ljj = small_cholesky(D[j])
        Ld.append(Ljj)
        for i in range(j + 1, K):
            name = key_name(i, j)
            if name in F:
                F[name] = small_right_solve_lt(_take_sorted(Ljj, s.cols[name]), F[name])
        if j in s.panel_stages:
            T = T - _panel_update(s, j, F, m, dtype)
        for u in s.updates:
            if u.j != j:
                continue
            A = _take(F[key_name(u.i, j)], s.pa[u.name])
            B = _take(F[key_name(u.l, j)], s.pb[u.name])
            prod = jnp.einsum("kab,kcb->kac", A, B)
            if u.kind == "diag":
                D[u.l] = D[u.l] - jax.ops.segment_sum(prod, s.dest[u.name], num_segments=s.nlevels[u.l])
            else:
                tgt = key_name(u.i, u.l)
                F[tgt] = F[tgt] - jax.ops.segment_sum(
                    prod, s.dest[u.name], num_segments=F[tgt].shape[0]
                )
        for g in s.dense_groups:
            if g.j != j or g.name in pairs:
                continue
            A = _take(_concat([F[key_name(i, j)] for i in g.left]), s.pa[g.name])
            B = _take(_concat([F[key_name(l, j)] for l in g.right]), s.pb[g.name])
            vals = jnp.einsum("kab,kcb->kac", A, B).ravel()
            if g.permuted:
                vals = _take(vals, s.perm[g.name])
            T = T.at[s.dest[g.name].ravel()].add(-vals, indices_are_sorted=True, mode="promise_in_bounds")

    return Ld, F, T[: m * m].reshape(m, m)  # lower triangle + block-diagonal blocks of the tail


def _panel_update(s: BlockStructure, j: int, F: dict, m: int, dtype):
    """``tril(P'P)`` as a flat ``(m*m + 1,)`` array, ``P (levels_j * w_j, m)`` the dense panel of
    stage ``j``'s factor blocks in the tail's columns."""
    wj = s.widths[j]
    P = jnp.zeros((s.nlevels[j] * wj * m,), dtype)
    for name, jj, stages in s.panel_groups:
        if jj == j:
            vals = _concat([F[key_name(i, j)] for i in stages])
            # an add: padded (zero) blocks may share a position (jaxlmm.kernels.buckets)
            P = P.at[s.panel_index[name].ravel()].add(vals.ravel(), mode="promise_in_bounds")
    P = P.reshape(s.nlevels[j] * wj, m)
    S = jnp.tril(P.T @ P)
    return jnp.concatenate([S.ravel(), jnp.zeros((1,), dtype)])


def blocked_cholesky(s: BlockStructure, diag: list, off: dict, scale: list | None = None,
                     pairs: dict | None = None) -> BlockedFactor:
    """Factor ``M`` given its level-diagonal blocks and its nonzero off-diagonal blocks.

    ``diag[i]``: ``(nlevels[i], p_i, p_i)`` for every stage; ``off[\"i,j\"]``: ``(nnz, p_i, p_j)``
    values on the input pattern given to :func:`analyze` (keys ``s.input_keys``). With
    ``scale`` (one ``(p_i, p_i)`` matrix or None, for identity, per stage), the off-diagonal
    blocks of ``M`` are ``scale[i]' off[i,j] scale[j]`` (a congruence ``D' M D`` by the block
    diagonal ``D`` of the scales, on the off-diagonal blocks only): blocks into the dense tail
    are scaled there, once, instead of block by block. ``pairs``: the fixed pair products of
    ``off`` (:func:`jaxlmm.kernels.pairs.pair_products`), which make the first stage's fill into
    the tail one weighted sum; the factor blocks ``off`` are still those of ``off``.
    """
    Ld, F, T = _eliminate(s, diag, off, scale, pairs)
    T = T + jnp.tril(T, -1).T
    return BlockedFactor(diag=Ld, off=F, tail=lax.linalg.cholesky(T, symmetrize_input=False))


def _host_potri(L):
    """LAPACK potri on the host: lower triangle of ``(L L')^{-1}`` (upper triangle zero)."""
    Ti, info = scipy.linalg.lapack.dpotri(np.asarray(L, dtype=np.float64), lower=1)
    return np.tril(Ti)


def _callback(fn, x):
    """``fn(x)`` on the host for a float64 array ``x``.

    Argument and result travel as uint32 pairs and are bitcast: JAX would otherwise
    canonicalize float64 to float32 when the callback runs on a thread where the
    (thread-local) x64 flag is off, as with asynchronous dispatch under jit.
    """
    def host(a):
        a = np.ascontiguousarray(a).view(np.float64).reshape(a.shape[:-1])
        out = np.ascontiguousarray(fn(a), dtype=np.float64)
        return out.view(np.uint32).reshape(out.shape + (2,))

    x_words = lax.bitcast_convert_type(x.astype(jnp.float64), jnp.uint32)
    raw = jax.pure_callback(host, jax.ShapeDtypeStruct(x.shape + (2,), jnp.uint32), x_words,
                            vmap_method="sequential")
    return lax.bitcast_convert_type(raw, jnp.float64)


def _log_diagonal_parts(L, n_trailing):
    d = jnp.log(jnp.diagonal(L))
    m = L.shape[0]
    return jnp.sum(d[: m - n_trailing]), d[m - n_trailing :]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def cholesky_log_diagonal(t_lower: jnp.ndarray, n_trailing: int, host_lapack: bool = False):
    """``(sum_{k < m-r} log L_kk, log L_kk for the last r)`` of ``L L' = T``, ``r = n_trailing``.

    ``T`` is symmetric, given by its lower triangle. Reverse mode uses
    ``d (c0 sum_{k<m-r} log L_kk + sum_{k>=m-r} c_k log L_kk) / dT
      = c0 T^{-1} / 2 + V' diag(c_r - c0) V / 2`` with ``V`` the last ``r`` rows of ``L^{-1}``:
    one inverse of ``T`` and an ``m x r`` triangular solve, instead of differentiating through
    the factorization. With ``host_lapack`` (CPU backends) the inverse is LAPACK's potri on the
    host through ``pure_callback`` (no forward-mode derivatives then); otherwise XLA's
    triangular inverse and a product.
    """
    return _log_diagonal_parts(_factor_lower(t_lower, host_lapack), n_trailing)


def _factor_lower(t_lower, host_lapack):
    if host_lapack:
        # potrf reads the lower triangle only
        return lax.linalg.cholesky(t_lower, symmetrize_input=False)
    # symmetric input, so that forward-mode tangents through this rule are symmetric too
    return lax.linalg.cholesky(t_lower + jnp.tril(t_lower, -1).T, symmetrize_input=False)


def _cld_fwd(t_lower, n_trailing, host_lapack):
    L = _factor_lower(t_lower, host_lapack)
    return _log_diagonal_parts(L, n_trailing), L


def _cld_bwd(n_trailing, host_lapack, L, cot):
    c0, cr = cot
    m = L.shape[0]
    r = n_trailing
    eye_r = jnp.eye(m, r, k=-(m - r), dtype=L.dtype)  # columns e_{m-r}, ..., e_{m-1}
    Vt = lax.linalg.triangular_solve(L, eye_r, left_side=True, lower=True, transpose_a=True)
    W = 0.5 * (Vt * (cr - c0)[None, :]) @ Vt.T
    if host_lapack:
        Ti = _callback(_host_potri, L)
    else:
        Linv = lax.linalg.triangular_solve(L, jnp.eye(m, dtype=L.dtype), left_side=True, lower=True)
        Ti = jnp.tril(Linv.T @ Linv)
    # cotangent of the lower-triangle storage: 2 * strict lower part of G plus its diagonal
    G_part = c0 * (Ti - 0.5 * jnp.diag(jnp.diagonal(Ti)))
    return (G_part + 2.0 * jnp.tril(W, -1) + jnp.diag(jnp.diagonal(W)),)


cholesky_log_diagonal.defvjp(_cld_fwd, _cld_bwd)


def blocked_log_diagonal(s: BlockStructure, diag: list, off: dict, n_trailing: int = 1,
                         host_lapack: bool = False, scale: list | None = None, pairs: dict | None = None):
    """``log diag L`` only (no factor kept), cheaper to differentiate than :func:`blocked_cholesky`
    (``scale`` and ``pairs`` as there).

    Returns ``(bd, lead, trail)``: per block-diagonal stage ``(nlevels, p)``; the sum of the
    tail's log-diagonal except its last ``n_trailing`` entries; those last entries.
    """
    Ld, _, T = _eliminate(s, diag, off, scale, pairs)
    bd = [jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)) for L in Ld]
    lead, trail = cholesky_log_diagonal(T, n_trailing, host_lapack)
    return bd, lead, trail
