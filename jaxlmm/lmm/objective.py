"""The profiled REML criterion / ML deviance of a linear mixed model (lme4's definitions).

With ``Omega = Lambda' A Lambda + I`` on the random-effects part and ``L L' = Omega`` extended by
``X`` and ``y`` (blocked, see ``jaxlmm.kernels``), ``r^2 = L_yy^2``, ``nu = n`` (ML) or ``n - p``:

    ML:   2 sum log diag L_Z + n (1 + log(2 pi r^2 / n)) - log|W|
    REML: 2 sum log diag L_Z + 2 sum log diag L_X + nu (1 + log(2 pi r^2 / nu)) - log|W|

No solve is needed. Everything is a pure function of ``(theta, ModelArrays)``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ..covariance.templates import TemplateSpec, templates
from ..gram.blocks import Gram
from ..kernels import BlockStructure, analyze, blocked_cholesky
from ..kernels.buckets import PadLayout, pad_inputs, pad_structure
from ..kernels.cholesky import BlockedFactor, blocked_log_diagonal
from ..kernels.pairs import pair_products


@dataclasses.dataclass(frozen=True)
class ModelArrays:
    """The per-model constants of the objective: structure, Gram blocks and sizes."""

    structure: BlockStructure
    diag: list
    off: dict
    log_det_w: jnp.ndarray
    # the number of rows, traced (a float64 scalar): one compiled program serves every row count
    # of a model structure, so fits over subsets of rows do not compile (and keep) one each
    n: jnp.ndarray
    specs: tuple = dataclasses.field(metadata=dict(static=True))
    p: int = dataclasses.field(metadata=dict(static=True))
    reml: bool = dataclasses.field(metadata=dict(static=True))
    # dense tail potrf/potri through host LAPACK (CPU backends; reverse mode only). Set False
    # for forward-mode derivatives (Hessians by jacfwd) or non-CPU backends.
    host_lapack: bool = dataclasses.field(default=False, metadata=dict(static=True))
    # the fixed pair products of ``off`` (jaxlmm.kernels.pairs): valid only with these Gram
    # blocks of the random-effects stages; whoever replaces them (residual structures) drops these
    pairs: dict = dataclasses.field(default_factory=dict)

    @property
    def n_terms(self) -> int:
        return len(self.specs)

    @property
    def m_z_tail(self) -> int:
        """Rows of the dense tail that belong to random effects (before X and y)."""
        return self.structure.m - (self.p + 1)


jax.tree_util.register_dataclass(
    ModelArrays,
    data_fields=["structure", "diag", "off", "log_det_w", "n", "pairs"],
    meta_fields=["specs", "p", "reml", "host_lapack"],
)


def analyzed(gram: Gram, bucket: bool = False) -> tuple[BlockStructure, PadLayout | None]:
    """The blocked structure of the Gram pattern (host arrays) and, with ``bucket``, padded to
    shape buckets (:mod:`jaxlmm.kernels.buckets`: a program compiled for one data set serves
    every data set of the model structure whose sizes fall in the same buckets) with the layout
    that maps it back."""
    s = analyze(gram.nlevels, gram.widths, gram.pattern)
    if not bucket:
        return s, None
    return pad_structure(s, {k: v.shape[0] for k, v in gram.off.items()})


def model_arrays(gram: Gram, specs: tuple[TemplateSpec, ...], *, n: int, p: int, reml: bool,
                 log_det_w: float, host_lapack: bool | None = None,
                 analysis: tuple[BlockStructure, PadLayout | None] | None = None) -> ModelArrays:
    """Move the structure and the Gram blocks to the device (call under x64). ``analysis``:
    :func:`analyzed`'s result (computed here, unpadded, when not given); with a padding layout
    the Gram blocks are padded with zero blocks (padded levels: ``Lambda' 0 Lambda + I = I``).
    The fixed pair products of the first term's fill into the dense tail are computed here, once
    (the X/y stage, which batched responses replace, left out)."""
    s, layout = analyzed(gram) if analysis is None else analysis
    diag, off = gram.diag, gram.off
    if layout is not None:
        diag, off = pad_inputs(layout, diag, off)
    pairs = pair_products(s, off, exclude=(len(specs),))
    s = jax.tree_util.tree_map(jnp.asarray, s)
    return ModelArrays(
        structure=s,
        diag=[jnp.asarray(d) for d in diag],
        off={k: jnp.asarray(v) for k, v in off.items()},
        log_det_w=jnp.asarray(log_det_w),
        n=jnp.asarray(float(n)),
        specs=tuple(specs), p=p, reml=reml,
        host_lapack=_default_host_lapack(int(s.m)) if host_lapack is None else bool(host_lapack),
        pairs={k: (jnp.asarray(P), jnp.asarray(lv)) for k, (P, lv) in pairs.items()},
    )


HOST_LAPACK_MIN_TAIL = 256  # below this the callback's overhead (~0.3 ms) exceeds XLA's cost


def _default_host_lapack(m_tail: int) -> bool:
    """Host LAPACK for the tail's inverse on CPU backends when the dense tail is large."""
    return jax.default_backend() == "cpu" and m_tail >= HOST_LAPACK_MIN_TAIL


def scaled_blocks(theta, M: ModelArrays):
    """Blocks of ``Lambda' A Lambda + I`` (random-effects stages) and of the X/y stage."""
    return scale_blocks(theta, M.specs, M.diag, M.off)


def scale_blocks(theta, specs: tuple[TemplateSpec, ...], diag: list, off: dict):
    """``Lambda' (.) Lambda + I`` on the random-effects stages of blocks ``diag``/``off`` (terms,
    then one last stage left unscaled): the system of :func:`scaled_blocks` for any weights."""
    Ts = templates(theta, specs)
    k = len(specs)
    out_diag = []
    for i in range(k):
        T = Ts[i]
        d = jnp.einsum("ba,lbc,cd->lad", T, diag[i], T)
        out_diag.append(d + jnp.eye(T.shape[0], dtype=d.dtype))
    out_diag.append(diag[k])
    out_off = {}
    for name, v in off.items():
        i, j = map(int, name.split(","))
        if i < k:
            v = jnp.einsum("ba,kbc->kac", Ts[i], v)
        out_off[name] = jnp.einsum("kac,cd->kad", v, Ts[j])
    return out_diag, out_off


def scaled_system(theta, M: ModelArrays):
    """``Lambda' A Lambda + I`` as the kernels take it: ``(diag, off, scale)`` with the scaled
    diagonal blocks, the unscaled off-diagonal blocks and the templates that scale them (None
    for the X/y stage). The kernels scale the off-diagonal blocks of the dense tail at once, so
    the number of operations grows with the number of terms, not of term pairs."""
    Ts = _gathered_templates(theta, M.specs)
    diag = [_scale_diag(T, d) for T, d in zip(Ts, M.diag)] + [M.diag[len(Ts)]]
    return diag, M.off, list(Ts) + [None]


def _gathered_templates(theta, specs):
    """The templates as :func:`jaxlmm.covariance.templates` gives them, each by one gather from
    ``theta`` (a scatter costs several operations more in the program and its derivative)."""
    flat = jnp.concatenate([theta, jnp.zeros((1,), theta.dtype)])
    out, k = [], 0
    for s in specs:
        idx = np.full((s.p, s.p), theta.shape[0])  # the appended zero
        idx[np.array(s.rows), np.array(s.cols)] = k + np.arange(s.size)
        out.append(flat[idx])
        k += s.size
    return out


def _scale_diag(T, d):
    """``T' d_l T + I`` for every level ``l``."""
    if T.shape == (1, 1):
        t = T[0, 0]
        return d * t * t + 1.0
    d = jnp.einsum("ba,lbc,cd->lad", T, d, T)
    return d + jnp.eye(T.shape[0], dtype=d.dtype)


def factor(theta, M: ModelArrays) -> BlockedFactor:
    diag, off, scale = scaled_system(theta, M)
    return blocked_cholesky(M.structure, diag, off, scale, M.pairs)


def objective_from_log_diagonal(bd: list, lead, trail, M: ModelArrays):
    """The criterion from ``log diag L``: block-diagonal stages ``bd``; the tail's random-effects
    part summed (``lead``); the tail's last ``p + 1`` entries (X and y) in ``trail``."""
    return criterion_from_log_diagonal(bd, lead, trail, M.n, M.p, M.reml, M.log_det_w)


def criterion_from_log_diagonal(bd: list, lead, trail, n, p: int, reml: bool, log_det_w):
    """lme4's REML criterion or ML deviance from ``log diag L`` of ``[Z Lambda, X, y]``'s extended
    system (see :func:`objective_from_log_diagonal`) for ``n`` rows, ``p`` fixed effects and
    ``log_det_w = sum log w``: ``log|L_Z|^2 (+ log|R_X|^2) + nu (1 + log(2 pi r^2 / nu)) - log_det_w``,
    ``nu = n - p`` for REML, ``n`` for ML."""
    ld_l2 = 2.0 * (sum(jnp.sum(b) for b in bd) + lead)
    ld_rx2 = 2.0 * jnp.sum(trail[:p])
    r2 = jnp.exp(2.0 * trail[-1])
    if reml:
        nu = n - p
        return ld_l2 + ld_rx2 + nu * (1.0 + jnp.log(2.0 * np.pi * r2 / nu)) - log_det_w
    return ld_l2 + n * (1.0 + jnp.log(2.0 * np.pi * r2 / n)) - log_det_w


def _parts_from_log_diagonal(bd, lead, trail, M: ModelArrays):
    ld_l2 = 2.0 * (sum(jnp.sum(b) for b in bd) + lead)
    ld_rx2 = 2.0 * jnp.sum(trail[: M.p])
    r2 = jnp.exp(2.0 * trail[-1])
    return ld_l2, ld_rx2, r2


def deviance_parts(theta, M: ModelArrays):
    """``(log|L_Z|^2, log|L_X|^2, r^2)`` at ``theta``: the penalised residual sum of squares
    ``r^2 = min_{beta,u} |W^{1/2}(y - X beta - Z Lambda u)|^2 + |u|^2`` and the log-determinants."""
    diag, off, scale = scaled_system(theta, M)
    bd, lead, trail = blocked_log_diagonal(M.structure, diag, off, M.p + 1, M.host_lapack, scale,
                                          M.pairs)
    return _parts_from_log_diagonal(bd, lead, trail, M)


def objective(theta, M: ModelArrays):
    """The REML criterion (``M.reml``) or deviance at ``theta``: a scalar."""
    diag, off, scale = scaled_system(theta, M)
    bd, lead, trail = blocked_log_diagonal(M.structure, diag, off, M.p + 1, M.host_lapack, scale,
                                          M.pairs)
    return objective_from_log_diagonal(bd, lead, trail, M)


def deviance_varpar(varpar, M: ModelArrays):
    """``-2 log L`` (restricted for ``M.reml``) at ``varpar = (theta, sigma)``, sigma not profiled:

        ML:   log|L_Z|^2 + r^2 / sigma^2 + n log(2 pi sigma^2) - log|W|
        REML: the same plus log|L_X|^2, with n - p in place of n.

    (lmerTest's ``devfun_vp``; equals :func:`objective` at ``sigma^2 = r^2 / nu``.)
    """
    theta, sigma = varpar[:-1], varpar[-1]
    ld_l2, ld_rx2, r2 = deviance_parts(theta, M)
    s2 = sigma**2
    nu = M.n - M.p if M.reml else M.n
    d = ld_l2 + r2 / s2 + nu * jnp.log(2.0 * np.pi * s2) - M.log_det_w
    return d + ld_rx2 if M.reml else d


def unscaled_vcov(theta, M: ModelArrays):
    """``(L_X L_X')^{-1}`` at ``theta`` (p x p): ``Var(beta_hat) = sigma^2`` times this.
    Differentiable in both modes (XLA factorization)."""
    f = factor(theta, M)
    mz = M.m_z_tail
    LX = f.tail[mz : mz + M.p, mz : mz + M.p]
    Linv = jax.scipy.linalg.solve_triangular(LX, jnp.eye(M.p, dtype=LX.dtype), lower=True)
    return Linv.T @ Linv
