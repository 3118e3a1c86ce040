"""The blocked penalised system of a nonlinear mixed model, on the kernels' blocked Cholesky.

Rows ``r``, parameters ``k = 1..P``: ``phi_r = A_r beta + (Z Lambda u)_r`` (``(n, P)``, see
:mod:`jaxlmm.nlmm.design`), ``b = Lambda u``, ``u ~ N(0, sigma^2 I)``, ``y_r ~ N(f_r(phi_r),
sigma^2 / w_r)``. The penalised residual sum of squares is

    g(u, beta) = sum_r w_r (y_r - f_r)^2 + |u|^2.

With ``J_r = df_r/dphi_r`` (``(n, P)``, forward mode), the Gauss-Newton matrix of ``g / 2`` in
``u`` is ``I + Lambda' Z' M Z Lambda`` with the per-row ``P x P`` weights ``M_r = w_r J_r J_r'``,
and its exact Hessian has ``M_r = w_r (J_r J_r' - (y_r - f_r) d^2 f_r / dphi_r^2)``. Either is
assembled per term and level pair (:func:`term_blocks`): entry ``(c, d)`` of the block of terms
``i, j`` at a level pair sums ``Z_i[r, c] Z_j[r, d] M_r[param(i, c), param(j, d)]`` over its rows,
so the pattern is the LMM's. A last dense stage ``T (n, m)`` (the Gauss-Newton right-hand side
``z``, and for the joint step over ``beta`` the Jacobian ``X~ = df/dbeta`` before it) is crossed
with the Gauss-Newton columns ``Z_i[r, c] J_r[param(i, c)]``; its last diagonal entry is
``z' W z + 1``, which keeps the extended matrix positive definite, so that the back solve from
``-L[-1, -1] e_last`` returns the solution of the leading system.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ..covariance.templates import templates
from ..gram.blocks import stage_pattern
from ..kernels import BlockStructure, analyze, blocked_cholesky, solve_lower_transpose, split_stages
from ..kernels.cholesky import blocked_log_diagonal
from ..kernels.structure import key_name
from ..lmm.objective import scale_blocks
from .design import MeanFunction, NlmmDesign


@dataclasses.dataclass(frozen=True)
class NlmmArrays:
    """Device arrays of one NLMM (rows unpadded). ``structure``: terms plus a one-column last
    stage; ``joint``: terms plus a last stage of ``p + 1`` columns (``beta`` and the right-hand
    side). ``codes[i] (n,)``, ``cols[i] (n, w_i)`` per term, ``pair_ids`` as the GLMM's;
    ``A[k] (n, p_k)`` per parameter; ``y, w (n,)``; ``data[column] (n,)`` for the mean."""

    structure: BlockStructure
    joint: BlockStructure
    codes: tuple
    cols: tuple
    pair_ids: dict
    A: tuple
    y: jnp.ndarray
    w: jnp.ndarray
    data: dict
    specs: tuple = dataclasses.field(metadata=dict(static=True))
    nlevels: tuple = dataclasses.field(metadata=dict(static=True))
    npairs: tuple = dataclasses.field(metadata=dict(static=True))
    term_params: tuple = dataclasses.field(metadata=dict(static=True))
    mean: MeanFunction = dataclasses.field(metadata=dict(static=True))
    nagq: int = dataclasses.field(metadata=dict(static=True))

    @property
    def n_terms(self) -> int:
        return len(self.specs)

    @property
    def n_theta(self) -> int:
        return sum(s.size for s in self.specs)

    @property
    def p(self) -> int:
        return sum(a.shape[1] for a in self.A)

    @property
    def n_params(self) -> int:
        return len(self.A)


jax.tree_util.register_dataclass(
    NlmmArrays,
    data_fields=["structure", "joint", "codes", "cols", "pair_ids", "A", "y", "w", "data"],
    meta_fields=["specs", "nlevels", "npairs", "term_params", "mean", "nagq"],
)


def nlmm_arrays(design: NlmmDesign, specs: tuple, nagq: int = 1) -> NlmmArrays:
    """Analyze the pattern once and move the rows to the device (call under x64)."""
    terms = design.lmm.terms
    codes = [np.asarray(t.codes, dtype=np.int64) for t in terms]
    nlevels = tuple(t.n_levels for t in terms)
    widths = tuple(t.width for t in terms)
    pattern, pair_ids = stage_pattern(codes, nlevels)
    conv = lambda s: jax.tree_util.tree_map(jnp.asarray, s)  # noqa: E731
    return NlmmArrays(
        structure=conv(analyze(nlevels + (1,), widths + (1,), pattern)),
        joint=conv(analyze(nlevels + (1,), widths + (design.p + 1,), pattern)),
        codes=tuple(jnp.asarray(c.astype(np.int32)) for c in codes),
        cols=tuple(jnp.asarray(np.asarray(t.columns, np.float64)) for t in terms),
        pair_ids={k: jnp.asarray(np.asarray(v, np.int32)) for k, v in pair_ids.items()},
        A=tuple(jnp.asarray(np.asarray(a, np.float64)) for a in design.A),
        y=jnp.asarray(np.asarray(design.lmm.y, np.float64)), w=jnp.asarray(np.asarray(design.lmm.weights, np.float64)),
        data={k: jnp.asarray(v) for k, v in design.data.items()},
        specs=tuple(specs), nlevels=nlevels,
        npairs=tuple((k, int(len(pattern[tuple(map(int, k.split(",")))][0]))) for k in pair_ids),
        term_params=design.term_params, mean=design.mean, nagq=int(nagq),
    )


# --- parameters, mean and derivatives -----------------------------------------------------------


def split_beta(beta, G: NlmmArrays) -> list:
    out, o = [], 0
    for a in G.A:
        out.append(beta[o : o + a.shape[1]])
        o += a.shape[1]
    return out


def fixed_phi(beta, G: NlmmArrays):
    """``A beta`` as ``(n, P)``."""
    return jnp.stack([a @ bk for a, bk in zip(G.A, split_beta(beta, G))], axis=1)


def random_phi(u: list, theta, G: NlmmArrays):
    """``Z Lambda u`` on the parameters, ``(n, P)``."""
    Ts = templates(theta, G.specs)
    out = jnp.zeros((G.y.shape[0], G.n_params), G.y.dtype)
    for i in range(G.n_terms):
        b = (u[i] @ Ts[i].T)[G.codes[i]] * G.cols[i]  # (n, w_i)
        out = out.at[:, list(G.term_params[i])].add(b)
    return out


def mean_at(phi, G: NlmmArrays):
    """``f (n,)`` at the parameters ``phi (n, P)``."""
    names = G.mean.parameters
    return jnp.broadcast_to(G.mean({n: phi[:, k] for k, n in enumerate(names)}, G.data), G.y.shape)


def mean_jacobian(phi, G: NlmmArrays):
    """``f (n,)`` and ``J = df/dphi (n, P)`` (one linearisation, ``P`` tangents: f is row-wise)."""
    f, lin = jax.linearize(lambda p: mean_at(p, G), phi)
    E = jnp.eye(G.n_params, dtype=phi.dtype)
    J = jax.vmap(lambda e: lin(jnp.broadcast_to(e, phi.shape)))(E)  # (P, n)
    return f, J.T


def mean_hessian(phi, G: NlmmArrays):
    """``d^2 f_r / dphi_r^2 (n, P, P)`` (forward over forward)."""
    E = jnp.eye(G.n_params, dtype=phi.dtype)

    def jac_col(p, e):
        return jax.jvp(lambda q: mean_at(q, G), (p,), (jnp.broadcast_to(e, p.shape),))[1]

    def hess_col(e2):
        return jax.vmap(lambda e1: jax.jvp(lambda q: jac_col(q, e1), (phi,), (jnp.broadcast_to(e2, phi.shape),))[1])(E)

    return jnp.transpose(jax.vmap(hess_col)(E), (2, 1, 0))


# --- blocks -------------------------------------------------------------------------------------


def term_blocks(M, G: NlmmArrays) -> tuple[list, dict]:
    """Diagonal blocks ``(levels_i, w_i, w_i)`` and pair blocks ``(pairs, w_i, w_j)`` of
    ``Z' M Z`` for per-row parameter weights ``M (n, P, P)`` (module docstring)."""
    k = G.n_terms
    npairs = dict(G.npairs)

    def block(i, j, seg, nseg):
        pi, pj = list(G.term_params[i]), list(G.term_params[j])
        v = M[:, pi][:, :, pj] * G.cols[i][:, :, None] * G.cols[j][:, None, :]
        return jax.ops.segment_sum(v, seg, num_segments=nseg)

    diag = [block(i, i, G.codes[i], G.nlevels[i]) for i in range(k)]
    off = {}
    for i in range(k):
        for j in range(i):
            name = key_name(i, j)
            off[name] = block(i, j, G.pair_ids[name], npairs[name])
    return diag, off


def gn_columns(J, G: NlmmArrays) -> list:
    """The Gauss-Newton columns ``Z_i[r, c] J_r[param(i, c)]`` per term, ``(n, w_i)``."""
    return [G.cols[i] * J[:, list(G.term_params[i])] for i in range(G.n_terms)]


def beta_jacobian(J, G: NlmmArrays):
    """``X~ = df/dbeta (n, p)``: parameter ``k``'s Jacobian column times its ``A_k``."""
    return jnp.concatenate([J[:, k : k + 1] * a for k, a in enumerate(G.A)], axis=1)


def gram_blocks(M, J, T, G: NlmmArrays, last: float = 1.0) -> tuple[list, dict]:
    """The unscaled blocks of the terms' ``Z' M Z`` and of the last stage ``T (n, m)`` crossed with
    the Gauss-Newton columns and with itself, ``last`` added to its last diagonal entry (module
    docstring; 0 gives the linearised LMM's Gram matrix ``[Z~ X~ w]' W [Z~ X~ w]``)."""
    diag, off = term_blocks(M, G)
    k = G.n_terms
    wT = T * G.w[:, None]
    for j, a in enumerate(gn_columns(J, G)):
        off[key_name(k, j)] = jax.ops.segment_sum(wT[:, :, None] * a[:, None, :], G.codes[j], num_segments=G.nlevels[j])
    tt = T.T @ wT
    diag.append((tt.at[-1, -1].add(last))[None])
    return diag, off


def column_blocks(C: list, T, G: NlmmArrays, last: float = 1.0) -> tuple[list, dict]:
    """:func:`gram_blocks` from columns already weighted (whitened by a residual structure):
    the terms' Gauss-Newton columns ``C[i] (n, w_i)`` and the last stage ``T (n, m)``, each block
    the sum over rows of their products by level (or level pair). Valid when whitening mixes rows
    of one level only (residual groups nested in every grouping factor)."""
    k = G.n_terms
    npairs = dict(G.npairs)

    def prod(a, b, seg, nseg):
        return jax.ops.segment_sum(a[:, :, None] * b[:, None, :], seg, num_segments=nseg)

    diag = [prod(C[i], C[i], G.codes[i], G.nlevels[i]) for i in range(k)]
    off = {}
    for i in range(k):
        for j in range(i):
            name = key_name(i, j)
            off[name] = prod(C[i], C[j], G.pair_ids[name], npairs[name])
    for j in range(k):
        off[key_name(k, j)] = prod(T, C[j], G.codes[j], G.nlevels[j])
    diag.append(((T.T @ T).at[-1, -1].add(last))[None])
    return diag, off


def whitened_columns(white, cols: list, T, G: NlmmArrays) -> tuple[list, object]:
    """``white`` applied to ``sqrt(w)`` times the Gauss-Newton columns and ``T`` (one call)."""
    sw = jnp.sqrt(G.w)[:, None]
    W = white(jnp.concatenate(cols + [T], axis=1) * sw)
    ends = np.cumsum([c.shape[1] for c in cols])
    parts = jnp.split(W, ends, axis=1)
    return parts[:-1], parts[-1]


def _with_tail(theta, M, J, T, G: NlmmArrays):
    """The scaled blocks of :func:`gram_blocks`."""
    return scale_blocks(theta, G.specs, *gram_blocks(M, J, T, G))


def gn_weights(J, G: NlmmArrays):
    """``M_r = w_r J_r J_r'``."""
    return G.w[:, None, None] * J[:, :, None] * J[:, None, :]


def gn_solve(theta, phi, phi_rand, beta, G: NlmmArrays, joint: bool, white=None):
    """One Gauss-Newton step of ``g``: the new ``u`` per term (and ``beta`` when ``joint``, else
    the given one) and the factor of the Gauss-Newton system at ``phi``. ``white``: the residual
    structure's whitening of ``(n, c)`` columns (``None``: independent rows)."""
    f, J = mean_jacobian(phi, G)
    z = G.y - f + jnp.sum(J * phi_rand, axis=1)
    if joint:
        Xt = beta_jacobian(J, G)
        T = jnp.concatenate([Xt, (z + Xt @ beta)[:, None]], axis=1)
        s = G.joint
    else:
        T = z[:, None]
        s = G.structure
    if white is None:
        d, o = _with_tail(theta, gn_weights(J, G), J, T, G)
    else:
        d, o = scale_blocks(theta, G.specs, *column_blocks(*whitened_columns(white, gn_columns(J, G), T, G), G))
    fac = blocked_cholesky(s, d, o)
    b_bd = [jnp.zeros((s.nlevels[j], s.widths[j]), phi.dtype) for j in range(s.n_bd)]
    b_tail = jnp.zeros((s.m,), phi.dtype).at[-1].set(-fac.tail[-1, -1])
    x_bd, x_tail = solve_lower_transpose(s, fac, b_bd, b_tail)
    u = split_stages(s, x_bd, x_tail, G.n_terms)
    if joint:
        beta = x_tail[s.m - 1 - G.p : s.m - 1]
    return u, beta, fac


def gn_log_det(theta, phi, G: NlmmArrays):
    """``log det(I + Lambda' Z' W J J' Z Lambda)`` at ``phi`` (the Laplace term)."""
    _, J = mean_jacobian(phi, G)
    T = jnp.zeros((G.y.shape[0], 1), phi.dtype)
    d, o = _with_tail(theta, gn_weights(J, G), J, T, G)
    bd, lead, _ = blocked_log_diagonal(G.structure, d, o, 1, False)
    return 2.0 * (sum(jnp.sum(b) for b in bd) + lead)


def exact_factor(theta, phi, G: NlmmArrays):
    """The factor of the exact Hessian of ``g / 2`` in ``u`` at ``phi`` (last stage: 1)."""
    f, J = mean_jacobian(phi, G)
    Hf = mean_hessian(phi, G)
    res = G.y - f
    M = G.w[:, None, None] * (J[:, :, None] * J[:, None, :] - res[:, None, None] * Hf)
    T = jnp.zeros((G.y.shape[0], 1), phi.dtype)
    d, o = _with_tail(theta, M, J, T, G)
    return blocked_cholesky(G.structure, d, o)
