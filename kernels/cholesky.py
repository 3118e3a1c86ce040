"""Numeric right-looking blocked Cholesky over a :class:`BlockStructure`, in JAX.

Block-diagonal stages: batched small Cholesky of every level's block, then ``L[i,j] =
M[i,j] L[j,j]^{-T}`` block by block (gather), then the Schur updates as batched block products
accumulated by segment sums (sparse destinations) or scatter-adds (dense tail). The tail is
factored densely (potrf). Everything has static shapes given the structure.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
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


def _eliminate(s: BlockStructure, diag: list, off: dict):
    """Eliminate the block-diagonal stages; return their factors and the tail's Schur
    complement, stored in its lower triangle (upper triangle zero)."""
    dtype = diag[0].dtype
    K, m, w = s.n_stages, s.m, s.widths
    F = {}
    for (i, j) in s.bd_keys:
        name = key_name(i, j)
        z = jnp.zeros((s.rows[name].shape[0], w[i], w[j]), dtype)
        if name in s.embed:
            z = z.at[s.embed[name]].set(off[name])
        F[name] = z
    D = list(diag[: s.n_bd])

    T = jnp.zeros((m * m + 1,), dtype)
    for i in range(s.n_bd, K):
        T = T.at[s.tail_diag[str(i)].ravel()].add(diag[i].ravel())
    for (i, j) in s.tail_keys:
        name = key_name(i, j)
        T = T.at[s.tail_off[name].ravel()].add(off[name].ravel())

    Ld = []
    for j in range(s.n_bd):
        Ljj = small_cholesky(D[j])
        Ld.append(Ljj)
        for i in range(j + 1, K):
            name = key_name(i, j)
            if name in F:
                F[name] = small_right_solve_lt(jnp.take(Ljj, s.cols[name], axis=0), F[name])
        for u in s.updates:
            if u.j != j:
                continue
            A = jnp.take(F[key_name(u.i, j)], s.pa[u.name], axis=0)
            B = jnp.take(F[key_name(u.l, j)], s.pb[u.name], axis=0)
            prod = jnp.einsum("kab,kcb->kac", A, B)
            if u.kind == "diag":
                D[u.l] = D[u.l] - jax.ops.segment_sum(prod, s.dest[u.name], num_segments=s.nlevels[u.l])
            elif u.kind == "coo":
                tgt = key_name(u.i, u.l)
                F[tgt] = F[tgt] - jax.ops.segment_sum(
                    prod, s.dest[u.name], num_segments=F[tgt].shape[0]
                )
            else:
                vals = prod.ravel()
                if u.permuted:
                    vals = jnp.take(vals, s.perm[u.name])
                T = T.at[s.dest[u.name].ravel()].add(-vals, indices_are_sorted=True)

    return Ld, F, T[: m * m].reshape(m, m)  # lower triangle + block-diagonal blocks of the tail


def blocked_cholesky(s: BlockStructure, diag: list, off: dict) -> BlockedFactor:
    """Factor ``M`` given its level-diagonal blocks and its nonzero off-diagonal blocks.

    ``diag[i]``: ``(nlevels[i], p_i, p_i)`` for every stage; ``off[\"i,j\"]``: ``(nnz, p_i, p_j)``
    values on the input pattern given to :func:`analyze` (keys ``s.input_keys``).
    """
    Ld, F, T = _eliminate(s, diag, off)
    T = T + jnp.tril(T, -1).T
    return BlockedFactor(diag=Ld, off=F, tail=lax.linalg.cholesky(T, symmetrize_input=False))


@jax.custom_vjp
def cholesky_log_diagonal(t_lower: jnp.ndarray) -> jnp.ndarray:
    """``log diag L`` of ``L L' = T`` with ``T`` symmetric, given by its lower triangle.

    Reverse mode uses ``d sum_k c_k log L_kk / dT = L^{-T} diag(c) L^{-1} / 2``: one triangular
    inverse and one product instead of differentiating through the factorization.
    """
    return jnp.log(jnp.diagonal(lax.linalg.cholesky(t_lower, symmetrize_input=False)))


def _cld_fwd(t_lower):
    # symmetric input, so that forward-mode tangents through this rule are symmetric too
    L = lax.linalg.cholesky(t_lower + jnp.tril(t_lower, -1).T, symmetrize_input=False)
    return jnp.log(jnp.diagonal(L)), L


def _cld_bwd(L, c):
    m = L.shape[0]
    Linv = lax.linalg.triangular_solve(L, jnp.eye(m, dtype=L.dtype), left_side=True, lower=True)
    G = 0.5 * (Linv.T @ (c[:, None] * Linv))
    return (2.0 * jnp.tril(G, -1) + jnp.diag(jnp.diagonal(G)),)


cholesky_log_diagonal.defvjp(_cld_fwd, _cld_bwd)


def blocked_log_diagonal(s: BlockStructure, diag: list, off: dict):
    """``log diag L`` only (no factor kept): per block-diagonal stage ``(nlevels, p)`` and for the
    tail ``(m,)``. Cheaper to differentiate than :func:`blocked_cholesky`."""
    Ld, _, T = _eliminate(s, diag, off)
    bd = [jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)) for L in Ld]
    return bd, cholesky_log_diagonal(T)


def log_diagonal(f: BlockedFactor) -> tuple[list, jnp.ndarray]:
    """``log diag L`` per block-diagonal stage (``(nlevels, p)`` each) and for the tail ``(m,)``."""
    bd = [jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)) for L in f.diag]
    return bd, jnp.log(jnp.diagonal(f.tail))
