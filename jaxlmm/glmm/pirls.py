"""The conditional modes of a generalized linear mixed model by penalised iteratively reweighted
least squares (PIRLS), and its Laplace / adaptive Gauss-Hermite ``-2 log L``, on the blocked
Cholesky of :mod:`jaxlmm.kernels`.

``eta = offset + X beta + sum_i Z_i T_i u_i`` with ``u ~ N(0, I)`` (``b_i = T_i u_i`` per level).
For fixed ``(theta, beta)`` the conditional mode ``u*`` minimises the penalised deviance

    g(u) = sum_r -2 log p(y_r | mu_r(u)) + |u|^2.

One PIRLS (Fisher scoring) step solves ``(Lambda' Z' W Z Lambda + I) u_new = Lambda' Z' (W eta_Z + a)``
with ``W = w (dmu/deta)^2 / (phi V(mu))``, ``a = w (y - mu) (dmu/deta) / (phi V(mu))`` (the score in
``eta``) and ``eta_Z = Z Lambda u``; steps are halved while ``g`` increases. The system is the
model's blocked Gram matrix with row weights ``W``: the random-effects stages of the linear
model, and a last stage of one column whose cross-products hold ``Z' (W eta_Z + a)``. Only the
weights change between iterations; the structure (:func:`analyze`) is computed once.

Laplace (lme4's ``nAGQ = 1``):  ``-2 log L = g(u*) + log det(Lambda' Z' W Z Lambda + I)`` at ``u*``.

Derivatives in ``(theta, beta)``: the PIRLS loop runs without derivatives; from its mode one
Newton step on ``g`` (observed weights) follows. Gradients (fits) use the implicit function
theorem at the mode: ``u = S(u, x)`` with ``S = Lambda' Z' a(eta(u, x))`` gives
``du/dx = H^{-1} dS/dx``, ``H = Lambda' Z' W_obs Z Lambda + I``, so the reverse pass solves
``H lambda = u_bar`` with the Newton step's own factor and returns ``(dS/dx)' lambda``, a pass over
the rows (:func:`implicit_newton_step`): no factorization is differentiated. For exact second
derivatives (``jax.hessian``) the Newton steps are differentiated instead: a step from the exact
mode ``u*(x0)`` gives ``u*(x) + O(|x - x0|^2)`` and a second one ``u*(x) + O(|x - x0|^4)``, so two
steps give the exact Hessian; the tests check the fits' finite-difference Hessians against it.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..covariance.templates import templates
from .family import family as make_family
from ..kernels import BlockStructure, analyze, blocked_cholesky, solve_leading, solve_lower_transpose, split_stages
from ..kernels.cholesky import blocked_log_diagonal
from ..kernels.structure import key_name
from ..gram.blocks import stage_pattern
from ..gram.shards import segment_cross
from ..lmm.objective import scale_blocks
from ..precision import zero_cotangent
from .rows import pad, padding_values

PIRLS_MAX_ITER = 60
PIRLS_MAX_HALVINGS = 30
N_NEWTON = 2  # Newton steps from the PIRLS mode for exact first and second derivatives


@dataclasses.dataclass(frozen=True)
class GlmmArrays:
    """Per-model device arrays of a GLMM: rows, level codes, level-pair ids and the structure.

    ``codes[i] (n,)``, ``cols[i] (n, p_i)`` per random-effects term; ``pair_ids["i,j"] (n,)``
    the index of each row's level pair of terms ``i > j`` in the block pattern; ``X (n, p)``,
    ``y``, ``w`` (prior weights, binomial trials), ``offset`` ``(n,)``. ``structure``: the
    blocked pattern of the terms plus one last single-column stage."""

    structure: BlockStructure
    codes: tuple
    cols: tuple
    pair_ids: dict
    X: jnp.ndarray
    y: jnp.ndarray
    w: jnp.ndarray
    offset: jnp.ndarray
    specs: tuple = dataclasses.field(metadata=dict(static=True))
    nlevels: tuple = dataclasses.field(metadata=dict(static=True))
    npairs: tuple = dataclasses.field(metadata=dict(static=True))  # ((name, count), ...)
    family_name: str = dataclasses.field(metadata=dict(static=True))
    link_name: str = dataclasses.field(metadata=dict(static=True))
    scale_free: bool = dataclasses.field(metadata=dict(static=True))

    @property
    def n_terms(self) -> int:
        return len(self.specs)

    @property
    def n_theta(self) -> int:
        return sum(s.size for s in self.specs)

    @property
    def p(self) -> int:
        return self.X.shape[1]

    @property
    def family(self):
        return make_family(self.family_name, self.link_name)


jax.tree_util.register_dataclass(
    GlmmArrays,
    data_fields=["structure", "codes", "cols", "pair_ids", "X", "y", "w", "offset"],
    meta_fields=["specs", "nlevels", "npairs", "family_name", "link_name", "scale_free"],
)


def glmm_arrays(codes, cols, X, y, w, offset, specs, fam, n_pad: int | None = None) -> GlmmArrays:
    """Analyze the pattern once and move the rows to the device (call under x64). ``n_pad``: pad
    the rows to this count with weight-0 rows (:func:`padding_values`; level codes 0, model
    columns 0) that contribute nothing; the level-pair pattern is that of the real rows."""
    nlevels = tuple(int(c.max()) + 1 if len(c) else 0 for c in codes)
    widths = tuple(c.shape[1] for c in cols)
    pattern, pair_ids = stage_pattern([np.asarray(c, dtype=np.int64) for c in codes], nlevels)
    s = analyze(nlevels + (1,), widths + (1,), pattern)
    s = jax.tree_util.tree_map(jnp.asarray, s)
    n_pad = len(y) if n_pad is None else int(n_pad)
    y_pad, off_pad = padding_values(fam)
    return GlmmArrays(
        structure=s,
        # (dtypes converted by numpy: a conversion on the device would compile per row count)
        codes=tuple(jnp.asarray(pad(np.asarray(c, np.int32), n_pad)) for c in codes),
        cols=tuple(jnp.asarray(pad(np.asarray(c, np.float64), n_pad)) for c in cols),
        pair_ids={k: jnp.asarray(pad(np.asarray(v, np.int32), n_pad)) for k, v in pair_ids.items()},
        X=jnp.asarray(pad(np.asarray(X, np.float64), n_pad)), y=jnp.asarray(pad(np.asarray(y, np.float64), n_pad, y_pad)),
        w=jnp.asarray(pad(np.asarray(w, np.float64), n_pad)),
        offset=jnp.asarray(pad(np.asarray(offset, np.float64), n_pad, off_pad)),
        specs=tuple(specs), nlevels=nlevels,
        npairs=tuple((k, int(len(pattern[tuple(map(int, k.split(",")))][0]))) for k in pair_ids),
        family_name=fam.name, link_name=fam.link.name, scale_free=fam.scale_free,
    )


# --- the linear predictor and the GLM quantities ------------------------------------------------


def random_part(u: list, theta, G: GlmmArrays):
    """``Z Lambda u (n,)`` for ``u`` per term ``(levels_i, p_i)``."""
    Ts = templates(theta, G.specs)
    eta = jnp.zeros(G.y.shape, G.y.dtype)
    for i in range(G.n_terms):
        b = u[i] @ Ts[i].T
        eta = eta + jnp.sum(G.cols[i] * b[G.codes[i]], axis=1)
    return eta


def _mu(eta, G: GlmmArrays):
    return G.family.link.inverse(eta)


def score_weights(eta, G: GlmmArrays, phi):
    """``a = w (y - mu) mu' / (phi V)`` (minus half of d(-2 log p)/d eta) and the Fisher weights
    ``W = w mu'^2 / (phi V)``, both ``(n,)``."""
    fam = G.family
    mu = fam.link.inverse(eta)
    me = fam.link.mu_eta(eta)
    v = fam.variance(mu) * phi
    return G.w * (G.y - mu) * me / v, G.w * me * me / v


def _observed(eta, G: GlmmArrays, phi):
    """The score ``a`` and the observed weights ``-da/deta`` (elementwise, by forward mode)."""
    a, da = jax.jvp(lambda e: score_weights(e, G, phi)[0], (eta,), (jnp.ones_like(eta),))
    return a, -da


def _row_neg2_loglik(y, mu, w, phi, fam):
    """``-2 log p(y_r | mu_r)`` per row, 0 on padding rows (``w = 0``; evaluated there at weight 1,
    where every term is finite, so that no NaN reaches a derivative)."""
    real = w > 0
    return jnp.where(real, fam.neg2_loglik(y, mu, jnp.where(real, w, 1.0), phi), 0.0)


def neg2_loglik(eta, G: GlmmArrays, phi):
    """``sum_r -2 log p(y_r | mu_r)`` (a scalar)."""
    fam = G.family
    return jnp.sum(_row_neg2_loglik(G.y, fam.link.inverse(eta), G.w, phi, fam))


# --- the blocked system -------------------------------------------------------------------------


def weighted_blocks(W, rhs, G: GlmmArrays, theta):
    """Blocks of ``[Z r]' diag(W) [Z r]``-like system: diagonal and pair blocks ``Z_i' W Z_j``,
    last-stage blocks ``Z_j' rhs`` and a last diagonal entry ``1 + 4 |Lambda' Z' rhs|^2``, which
    keeps the extended matrix positive definite (the solve does not depend on it)."""
    k = G.n_terms
    npairs = dict(G.npairs)

    def cross(a, b, seg, nseg):
        return segment_cross(a, b, W, seg, nseg)

    diag = [cross(G.cols[i], G.cols[i], G.codes[i], G.nlevels[i]) for i in range(k)]
    off = {}
    for i in range(k):
        for j in range(i):
            name = key_name(i, j)
            off[name] = cross(G.cols[i], G.cols[j], G.pair_ids[name], npairs[name])
    Ts = templates(theta, G.specs)
    c2 = jnp.zeros((), W.dtype)
    for j in range(k):
        zr = jax.ops.segment_sum(G.cols[j] * rhs[:, None], G.codes[j], num_segments=G.nlevels[j])
        off[key_name(k, j)] = zr[:, None, :]
        c2 = c2 + jnp.sum((zr @ Ts[j]) ** 2)
    diag.append((1.0 + 4.0 * c2).reshape(1, 1, 1))
    return diag, off


def solve_modes(theta, W, rhs, G: GlmmArrays) -> list:
    """``u = (Lambda' Z' W Z Lambda + I)^{-1} Lambda' Z' rhs`` per term."""
    return _solve_modes_factor(theta, W, rhs, G)[0]


def _solve_modes_factor(theta, W, rhs, G: GlmmArrays):
    """:func:`solve_modes` and the factor of the extended system (whose leading block, the
    random-effects stages, is the factor of ``Lambda' Z' W Z Lambda + I``)."""
    diag, off = weighted_blocks(W, rhs, G, theta)
    d, o = scale_blocks(theta, G.specs, diag, off)
    s = G.structure
    f = blocked_cholesky(s, d, o)
    b_bd = [jnp.zeros((s.nlevels[j], s.widths[j]), W.dtype) for j in range(s.n_bd)]
    b_tail = jnp.zeros((s.m,), W.dtype).at[-1].set(-f.tail[-1, -1])
    x_bd, x_tail = solve_lower_transpose(s, f, b_bd, b_tail)
    return split_stages(s, x_bd, x_tail, G.n_terms), f


def log_det(theta, W, G: GlmmArrays):
    """``log det(Lambda' Z' W Z Lambda + I)``."""
    diag, off = weighted_blocks(W, jnp.zeros_like(W), G, theta)
    d, o = scale_blocks(theta, G.specs, diag, off)
    bd, lead, _ = blocked_log_diagonal(G.structure, d, o, 1, False)
    return 2.0 * (sum(jnp.sum(b) for b in bd) + lead)


# --- PIRLS --------------------------------------------------------------------------------------


def _fixed_part(beta, G):
    return G.offset + G.X @ beta


def penalised_deviance(u, theta, beta, phi, G: GlmmArrays):
    eta = _fixed_part(beta, G) + random_part(u, theta, G)
    return neg2_loglik(eta, G, phi) + sum(jnp.sum(ui * ui) for ui in u)


def _step(u, theta, beta, phi, G: GlmmArrays, observed: bool):
    """One Fisher-scoring (or Newton, ``observed``) step of the modes: the new ``u``."""
    return _step_factor(u, theta, beta, phi, G, observed)[0]


def _step_factor(u, theta, beta, phi, G: GlmmArrays, observed: bool):
    """:func:`_step` and the factor of its system (:func:`_solve_modes_factor`)."""
    eta_z = random_part(u, theta, G)
    eta = _fixed_part(beta, G) + eta_z
    if observed:
        a, W = _observed(eta, G, phi)
    else:
        a, W = score_weights(eta, G, phi)
    return _solve_modes_factor(theta, W, W * eta_z + a, G)


def score_term(u, theta, beta, phi, G: GlmmArrays) -> list:
    """``S(u) = Lambda' Z' a(eta(u))`` per term ``(levels_i, p_i)``: the modes are its fixed point
    (``grad g / 2 = u - S(u)``)."""
    eta = _fixed_part(beta, G) + random_part(u, theta, G)
    a, _ = score_weights(eta, G, phi)
    Ts = templates(theta, G.specs)
    return [jax.ops.segment_sum(G.cols[i] * a[:, None], G.codes[i], num_segments=G.nlevels[i]) @ Ts[i]
            for i in range(G.n_terms)]


@jax.custom_vjp
def implicit_newton_step(u_star, theta, beta, phi, G: GlmmArrays) -> list:
    """One Newton step from the PIRLS mode ``u_star`` (observed weights), with the derivative of
    the exact mode by the implicit function theorem (module docstring): reverse mode only."""
    return _step(u_star, theta, beta, phi, G, observed=True)


def _implicit_fwd(u_star, theta, beta, phi, G):
    u, f = _step_factor(u_star, theta, beta, phi, G, observed=True)
    return u, (f, u_star, theta, beta, phi, G)


def _implicit_bwd(res, u_bar):
    f, u_star, theta, beta, phi, G = res
    lam = solve_leading(G.structure, f, list(u_bar))
    _, vjp = jax.vjp(lambda t, b, p: score_term(u_star, t, b, p, G), theta, beta, phi)
    t_bar, b_bar, p_bar = vjp(lam)
    return ([jnp.zeros_like(v) for v in u_star], t_bar, b_bar, p_bar, zero_cotangent(G))


implicit_newton_step.defvjp(_implicit_fwd, _implicit_bwd)


def zero_modes(G: GlmmArrays, dtype=jnp.float64) -> list:
    return [jnp.zeros((G.nlevels[i], G.specs[i].p), dtype) for i in range(G.n_terms)]


def pirls(theta, beta, phi, G: GlmmArrays, u0=None, max_iter: int | None = None):
    """Conditional modes at fixed ``(theta, beta, phi)``: Fisher scoring with step halving.

    Returns ``(u, g(u), n_iter, converged)``. Converged: the step's largest change is below
    ``1e-10 (1 + max|u|)``, or ``g`` stops decreasing beyond rounding (``1e-15 |g|``), within
    ``max_iter`` (default :data:`PIRLS_MAX_ITER`, read when the program is traced)."""
    max_iter = PIRLS_MAX_ITER if max_iter is None else max_iter
    u0 = zero_modes(G, beta.dtype) if u0 is None else u0
    f0 = penalised_deviance(u0, theta, beta, phi, G)

    def cond(c):
        _, _, it, done, _ = c
        return (~done) & (it < max_iter)

    def body(c):
        u, f, it, _, _ = c
        target = _step(u, theta, beta, phi, G, observed=False)
        delta = [t - v for t, v in zip(target, u)]

        def h_cond(h):
            t, fn, j = h
            return (~(fn <= f + 1e-15 * jnp.abs(f))) & (j < PIRLS_MAX_HALVINGS)

        def h_body(h):
            t, _, j = h
            t = 0.5 * t
            un = [v + t * d for v, d in zip(u, delta)]
            return t, penalised_deviance(un, theta, beta, phi, G), j + 1

        f_full = penalised_deviance(target, theta, beta, phi, G)
        t, fn, _ = lax.while_loop(h_cond, h_body, (jnp.asarray(1.0, f.dtype), f_full, jnp.asarray(0)))
        ok = jnp.isfinite(fn) & (fn <= f + 1e-15 * jnp.abs(f))
        un = [v + t * d for v, d in zip(u, delta)]
        un = [jnp.where(ok, a, b) for a, b in zip(un, u)]
        fn = jnp.where(ok, fn, f)
        step = jnp.max(jnp.stack([jnp.max(jnp.abs(t * d)) for d in delta]))
        size = jnp.max(jnp.stack([jnp.max(jnp.abs(v)) for v in un]))
        small = step <= 1e-10 * (1.0 + size)
        stalled = (f - fn) <= 1e-15 * jnp.abs(f)
        return un, fn, it + 1, small | stalled | ~ok, ok

    u, f, it, done, ok = lax.while_loop(cond, body, (u0, f0, jnp.asarray(0), jnp.asarray(False), jnp.asarray(True)))
    converged = done & ok & jnp.isfinite(f)
    return u, f, it, converged


def modes(theta, beta, phi, G: GlmmArrays, n_newton: int = N_NEWTON, max_iter: int | None = None, u0=None):
    """The conditional modes as a differentiable function of ``(theta, beta, phi)``: PIRLS without
    derivatives (from ``u0``, default zero), then ``n_newton`` Newton steps (see module
    docstring): one, with the implicit derivative (reverse mode), or more, differentiated (both
    modes, for exact Hessians). Returns ``(u, n_iter, converged)``."""
    sg = lax.stop_gradient
    u0 = None if u0 is None else [sg(v) for v in u0]
    u, _, it, ok = pirls(sg(theta), sg(beta), sg(phi), G, u0=u0, max_iter=max_iter)
    u = [sg(v) for v in u]
    if n_newton == 1:
        return implicit_newton_step(u, theta, beta, phi, G), it, ok
    for _ in range(n_newton):
        u = _step(u, theta, beta, phi, G, observed=True)
    return u, it, ok


# --- the objective ------------------------------------------------------------------------------


def unpack(x, G: GlmmArrays):
    """``x = (theta, beta[, log phi])`` -> ``(theta, beta, phi)``."""
    k, p = G.n_theta, G.p
    theta, beta = x[:k], x[k : k + p]
    phi = jnp.asarray(1.0, x.dtype) if G.scale_free else jnp.exp(x[k + p])
    return theta, beta, phi


def laplace_at(u, theta, beta, phi, G: GlmmArrays):
    """``g(u) + log det(Lambda' Z' W(u) Z Lambda + I)`` with Fisher weights at ``u``."""
    eta = _fixed_part(beta, G) + random_part(u, theta, G)
    _, W = score_weights(eta, G, phi)
    return neg2_loglik(eta, G, phi) + sum(jnp.sum(v * v) for v in u) + log_det(theta, W, G)


def agq_at(u, theta, beta, phi, G: GlmmArrays, nodes, weights):
    """Adaptive Gauss-Hermite ``-2 log L`` for one scalar term: per level ``j``,
    ``log int prod_r p(y_r | u) phi(u) du`` with ``u = u*_j + sqrt(2) z_k / sqrt(h_j)``,
    ``h_j = 1 + theta^2 sum_{r in j} W_r c_r^2`` (Hermite nodes ``z_k``, weights ``omega_k``)."""
    fam = G.family
    base = _fixed_part(beta, G)
    c = G.cols[0][:, 0]
    codes = G.codes[0]
    L = G.nlevels[0]
    th = theta[0]
    u0 = u[0][:, 0]
    eta = base + th * c * u0[codes]
    _, W = score_weights(eta, G, phi)
    h = jax.ops.segment_sum(W * c * c, codes, num_segments=L) * th * th + 1.0
    s = jnp.sqrt(2.0 / h)

    def node(z):
        ug = u0 + s * z
        e = base + th * c * ug[codes]
        ll = -0.5 * jax.ops.segment_sum(_row_neg2_loglik(G.y, fam.link.inverse(e), G.w, phi, fam), codes,
                                        num_segments=L)
        return ll - 0.5 * ug * ug + z * z

    terms = jax.vmap(node)(nodes) + jnp.log(weights)[:, None]  # (nodes, L)
    total = jax.scipy.special.logsumexp(terms, axis=0) + jnp.log(s) - 0.5 * np.log(2.0 * np.pi)
    return -2.0 * jnp.sum(total)


def objective_aux(x, prev, G: GlmmArrays, nagq: int = 1, n_newton: int = 1):
    """The Laplace (``nagq = 1``) or adaptive Gauss-Hermite ``-2 log L`` at
    ``x = (theta, beta[, log phi])``, ``inf`` where PIRLS fails (so that a line search steps
    back), with ``(u, eta, PIRLS iterations, PIRLS converged)`` as aux output. ``prev``: the aux
    of an earlier evaluation (or None); PIRLS starts from its modes when it converged there and
    they are finite, else from zero. ``n_newton``: Newton steps from the mode (1: implicit
    derivative, reverse mode only; 2 for exact second derivatives)."""
    theta, beta, phi = unpack(x, G)
    u0 = None
    if prev is not None:
        pu, _, _, pok = prev
        good = pok & jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in pu]))
        u0 = [jnp.where(good, v, 0.0) for v in pu]
    u, it, ok = modes(theta, beta, phi, G, n_newton=n_newton, u0=u0)
    if nagq == 1:
        f = laplace_at(u, theta, beta, phi, G)
    else:
        z, wz = np.polynomial.hermite.hermgauss(nagq)
        f = agq_at(u, theta, beta, phi, G, jnp.asarray(z), jnp.asarray(wz))
    eta = _fixed_part(beta, G) + random_part(u, theta, G)
    f = jnp.where(ok & jnp.isfinite(f), f, jnp.inf)
    return f, (u, eta, it, ok)


def aux_zeros(G: GlmmArrays):
    """Zeros shaped as :func:`objective_aux`'s aux output ``(u, eta, iterations, converged)``
    (the optimiser's initial state, without tracing the objective)."""
    it = np.int64 if jax.config.jax_enable_x64 else np.int32
    u = [np.zeros((G.nlevels[i], G.specs[i].p)) for i in range(G.n_terms)]
    return u, np.zeros(G.y.shape), np.asarray(0, it), np.asarray(False)


def objective(x, G: GlmmArrays, nagq: int = 1, n_newton: int = 1):
    """:func:`objective_aux` from zero modes, the value only."""
    return objective_aux(x, None, G, nagq, n_newton)[0]
