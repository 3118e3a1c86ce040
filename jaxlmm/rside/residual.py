"""Residual (R-side) structures inside the blocked objective (design note section 6).

With ``R = sigma^2 Lambda_R``, ``Lambda_R = W^{-1/2} S C S W^{-1/2}`` block diagonal by the
correlation groups, the objective is lme4's profiled criterion of the whitened problem: the Gram
matrix ``[Z X y]' Lambda_R^{-1} [Z X y]`` replaces ``[Z X y]' W [Z X y]`` and
``log|Lambda_R|`` replaces ``-log|W|``. The structure of the blocked Cholesky is unchanged.

Rows are packed once into ``A (G, T, c)``: group ``g``'s rows ordered by time, padded with zero
rows to ``T`` slots; the ``c`` compact columns are every term's per-row columns, then ``X`` and
``y - offset``, scaled by ``sqrt(w)``. Correlation groups must be nested in every random-effects
grouping factor (as in nlme), so all rows of a group share one level per term and the group's
``c x c`` whitened cross-product ``G_g = A~_g' A~_g`` lands, block by block, on the same level
(pair) of the Gram matrix as its rows' unweighted products would. Per parameter value that is
one pass over the groups (``O(n c^2)``; batched ``T x T`` Cholesky for unstructured and
Toeplitz correlation).

Without a variance function, AR(1), exponential (few distinct gaps) and compound symmetry
avoid even that: the whitened Gram matrix is ``sum_j w_j(params) A_j`` with fixed Gram-shaped
components ``A_j`` computed once (:meth:`~jaxlmm.correlation.CorrelationStructure.decompose`),
so an evaluation costs a few multiples of the Gram matrix's size, nothing per row.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from .correlation import CorMeta, CorrelationStructure
from ..terms.design import Design
from ..terms.levels import grouping
from ..errors import ArgumentError
from ..gram.blocks import Gram, cross_blocks
from ..kernels.structure import key_name
from ..lmm.objective import ModelArrays, deviance_varpar, objective
from ..covariance.start import ols_residuals
from ..precision import float64
from .variance import VarianceFunction, VarMeta


@dataclasses.dataclass(frozen=True)
class RSideMeta:
    """Static description of the packed residual structure."""

    correlation: CorrelationStructure | None
    variance: VarianceFunction | None
    cor_meta: CorMeta | None
    var_meta: VarMeta | None
    slices: tuple[tuple[int, int], ...]  # compact columns of each stage (terms..., XY)
    nlevels: tuple[int, ...]  # levels of each term
    pairs: tuple[tuple[int, int, int], ...]  # (i, j, nnz) off-diagonal term pairs, i > j
    shape: tuple[int, int]  # (G, T)
    stats: bool = False  # the Gram blocks are fixed components weighted by the parameters

    @property
    def n_cor(self) -> int:
        return self.cor_meta.n_params if self.cor_meta else 0

    @property
    def n_var(self) -> int:
        return self.var_meta.n_params if self.var_meta else 0

    @property
    def n_params(self) -> int:
        return self.n_cor + self.n_var

    @property
    def names(self) -> tuple[str, ...]:
        return (self.cor_meta.names if self.cor_meta else ()) + (self.var_meta.names if self.var_meta else ())


@dataclasses.dataclass(frozen=True)
class RSideArrays:
    """Packed rows and index maps (see module docstring)."""

    A: object  # (G, T, c); empty when meta.stats (the components replace the rows)
    slot: object  # (n,) flat slot g * T + t of each row
    cor: dict
    var: object  # (G, T) per-slot values of the variance function's column (0 on padding); empty without one
    level: tuple  # per term (G,) level of each group
    pair: dict  # key_name(i, j) -> (G,) index into the level-pair pattern
    log_w: object  # sum log w
    meta: RSideMeta = dataclasses.field(metadata=dict(static=True))
    comp: dict = dataclasses.field(default_factory=dict)  # "diag": [(J, ...)], "off": {name: (J, ...)}


jax.tree_util.register_dataclass(
    RSideArrays, data_fields=["A", "slot", "cor", "var", "level", "pair", "log_w", "comp"], meta_fields=["meta"]
)

# components are used while (number of components) x (size of the Gram blocks) stays below
# this many times the per-row work they replace (n c^2)
COMPONENT_BUDGET = 2.0


def _group_codes(design: Design, correlation) -> tuple[np.ndarray, list[str] | None]:
    """Each row's correlation group and the groups' labels (no correlation: a group per row)."""
    if correlation is None:
        return np.arange(design.n), None
    for t in design.terms:  # the random-effects factor itself: reuse its codes
        if t.factors == (correlation.group,):
            return t.codes.astype(np.int64), list(t.levels)
    codes, labels = grouping(design.aux, (correlation.group,))
    return codes.astype(np.int64), labels


def _check_nesting(design: Design, gcode: np.ndarray, G: int, correlation) -> list[np.ndarray]:
    """Each term's level per group; raises unless every group lies inside one level."""
    out = []
    for t in design.terms:
        c = t.codes.astype(np.int64)
        lo = np.full(G, np.iinfo(np.int64).max)
        hi = np.full(G, -1)
        np.minimum.at(lo, gcode, c)
        np.maximum.at(hi, gcode, c)
        bad = lo != hi
        if bad.any():
            g = int(np.nonzero(bad)[0][0])
            raise ArgumentError(
                f"correlation groups {correlation.group!r} must be nested in the random-effects "
                f"grouping factor {t.name!r} (as in nlme): group {g} has rows in levels "
                f"{t.levels[lo[g]]!r} and {t.levels[hi[g]]!r}. Use a correlation group inside "
                f"{t.name!r} (e.g. the same column)"
            )
        out.append(lo)
    return out


def build_rside(design: Design, gram: Gram, correlation: CorrelationStructure | None,
                variance: VarianceFunction | None, sufficient: bool = True, moment_start: bool = True) -> RSideArrays:
    """Pack the rows by correlation group and time (numpy arrays; validation errors here).

    Without a variance function, structures that can (AR(1), exponential with few distinct
    gaps, compound symmetry) write the whitened Gram matrix as fixed Gram-shaped components
    weighted by functions of their parameters (:meth:`CorrelationStructure.decompose`); these
    are computed here once and the objective does no work per row or group
    (``sufficient=False`` keeps the per-row path). ``moment_start=False``: no moment estimate of
    the correlation from the OLS residuals (the caller gives the start), so that rebuilding the
    structure on new data keeps one static description (one compiled objective)."""
    structure_columns(correlation, variance)
    n = design.n
    gcode, glabels = _group_codes(design, correlation)
    G = n if glabels is None else len(glabels)
    if correlation is not None and correlation.uses_time:
        key = correlation.time_key(design.aux[correlation.time])
    else:
        key = np.arange(n, dtype=np.float64)
    order = np.lexsort((key, gcode))
    counts = np.bincount(gcode, minlength=G)
    T = int(counts.max())
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    t_sorted = np.arange(n) - np.repeat(starts, counts)
    slot = np.empty(n, dtype=np.int64)
    slot[order] = gcode[order] * T + t_sorted
    mask = np.zeros(G * T, bool)
    mask[slot] = True
    mask = mask.reshape(G, T)

    def pack(v: np.ndarray, fill=0.0) -> np.ndarray:
        out = np.full((G * T,) + v.shape[1:], fill, dtype=v.dtype)
        out[slot] = v
        return out.reshape((G, T) + v.shape[1:])

    levels = _check_nesting(design, gcode, G, correlation) if correlation is not None else \
        [t.codes.astype(np.int64) for t in design.terms]
    cor_meta, cor_arrays = None, {}
    if correlation is not None:
        cor_meta, cor_arrays = correlation.prepare(pack(key, np.nan), mask, glabels)
        u0 = correlation.moment_start(cor_meta, cor_arrays, pack(np.sqrt(design.weights) * ols_residuals(design)),
                                      mask) if moment_start else None
        if u0 is not None:
            cor_meta = dataclasses.replace(cor_meta, start=tuple(float(v) for v in u0))
    var_meta, var_vals = None, np.zeros(n)
    if variance is not None:
        var_meta, var_vals = variance.prepare(design.aux[variance.column])

    widths = [t.width for t in design.terms] + [design.p + 1]
    bounds = np.concatenate([[0], np.cumsum(widths)])
    slices = tuple((int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]))
    A = np.empty((n, int(bounds[-1])))
    for t, (a, b) in zip(design.terms, slices):
        A[:, a:b] = t.columns
    A[:, bounds[-2] : bounds[-1] - 1] = design.X
    A[:, -1] = design.y - design.offset
    if not np.all(design.weights == 1.0):
        A *= np.sqrt(design.weights)[:, None]

    k = len(design.terms)
    pairs, pair_idx = [], {}
    for i in range(k):
        for j in range(i):
            name = key_name(i, j)
            if name not in gram.off:
                continue
            ni = design.terms[i].n_levels
            keyg = levels[j] * ni + levels[i]
            uniq = np.unique(keyg)
            if len(uniq) != gram.off[name].shape[0]:  # pragma: no cover - a broken invariant
                raise AssertionError("level-pair pattern of the groups differs from the rows'")
            pair_idx[name] = np.searchsorted(uniq, keyg)
            pairs.append((i, j, len(uniq)))
    comp, reduced = {}, None
    if sufficient and correlation is not None and variance is None:
        prev = np.full(n, -1)
        same = gcode[order][1:] == gcode[order][:-1]
        prev[order[1:][same]] = order[:-1][same]
        reduced = correlation.decompose(A, gcode, prev, key)
    if reduced is not None:
        comps, stats = reduced
        size = sum(d.size for d in gram.diag) + sum(v.size for v in gram.off.values())
        if len(comps) * size > COMPONENT_BUDGET * n * A.shape[1] ** 2:
            reduced = None
    if reduced is not None:
        comp = _component_blocks(design, gram, comps, slices)
        cor_arrays = {**cor_arrays, **{"comp_" + k: v for k, v in stats.items()}}
        A = np.zeros((0, 0, A.shape[1]))
    else:
        A = pack(A)
    meta = RSideMeta(
        correlation=correlation, variance=variance, cor_meta=cor_meta, var_meta=var_meta,
        slices=slices, nlevels=tuple(t.n_levels for t in design.terms), pairs=tuple(pairs), shape=(G, T),
        stats=reduced is not None,
    )
    return RSideArrays(
        A=A, slot=slot, cor=cor_arrays, var=pack(var_vals) if variance is not None else np.zeros((0, 0)),
        level=tuple(levels), pair=pair_idx,
        log_w=np.float64(np.sum(np.log(design.weights))), meta=meta, comp=comp,
    )


def _component_blocks(design: Design, gram: Gram, comps, slices) -> dict:
    """Each component's Gram blocks, stacked: ``diag[i] (J, levels_i, p_i, p_i)``, ``off``."""
    diags, offs = [], []
    for left, right, src, sym in comps:
        split = lambda M: [M[:, a:b] for a, b in slices]  # noqa: E731
        d, o = cross_blocks(gram, [t.codes[src] for t in design.terms], split(left), split(right), sym)
        diags.append(d)
        offs.append(o)
    return {"diag": [np.stack([d[i] for d in diags]) for i in range(len(diags[0]))],
            "off": {k: np.stack([o[k] for o in offs]) for k in offs[0]}}


def to_device(R: RSideArrays) -> RSideArrays:
    return jax.tree_util.tree_map(jnp.asarray, R)


# --- parameters ------------------------------------------------------------------------------


def start(meta: RSideMeta) -> np.ndarray:
    """Unconstrained starting values: the correlation structure's (a moment estimate from the
    OLS residuals where 0 can be a stationary point), then the variance function's."""
    parts = []
    if meta.correlation is not None:
        parts.append(meta.correlation.start(meta.cor_meta))
    if meta.variance is not None:
        parts.append(meta.variance.start(meta.var_meta))
    return np.concatenate(parts) if parts else np.zeros(0)


def natural(u, meta: RSideMeta):
    """Natural parameters (correlations / range, then variance parameters) from unconstrained."""
    parts = []
    if meta.correlation is not None:
        parts.append(jnp.atleast_1d(meta.correlation.natural(u[: meta.n_cor], meta.cor_meta)))
    if meta.variance is not None:
        parts.append(jnp.atleast_1d(meta.variance.natural(u[meta.n_cor :])))
    return jnp.concatenate(parts) if parts else u


# --- the whitened Gram blocks ------------------------------------------------------------------


def _scaled_rows(nat, R: RSideArrays, B):
    """``S^{-1} B`` and ``sum log s`` (the variance function)."""
    meta = R.meta
    if meta.variance is None:
        return B, jnp.asarray(0.0, B.dtype)
    logs = meta.variance.log_sd(nat[meta.n_cor :], R.var)
    return B * jnp.exp(-logs)[..., None], jnp.sum(logs)


def _whitened_gram(nat, R: RSideArrays):
    """Per unit ``G_g = A_g' Lambda_g^{-1} A_g (units, c, c)`` and ``log|Lambda_R|``."""
    meta = R.meta
    B, sum_logs = _scaled_rows(nat, R, R.A)
    if meta.correlation is None:
        Gc = jnp.einsum("gtc,gtd->gcd", B, B)
        logdet_c = jnp.asarray(0.0, B.dtype)
    else:
        Gc, ld = meta.correlation.gram(nat[: meta.n_cor], B, meta.cor_meta, R.cor)
        logdet_c = jnp.sum(ld)
    return Gc, logdet_c + 2.0 * sum_logs - R.log_w


def gram_blocks_at(nat, R: RSideArrays):
    """The Gram blocks ``(diag, off)`` of the whitened problem and ``log|Lambda_R|``, in the
    layout of :class:`jaxlmm.gram.Gram`."""
    meta = R.meta
    if meta.stats:
        stats = {k[5:]: v for k, v in R.cor.items() if k.startswith("comp_")}
        w, logdet_c = meta.correlation.component_weights(nat[: meta.n_cor], meta.cor_meta, stats)
        diag = [jnp.tensordot(w, D, 1) for D in R.comp["diag"]]
        off = {k: jnp.tensordot(w, v, 1) for k, v in R.comp["off"].items()}
        return diag, off, logdet_c - R.log_w
    Gc, logdet = _whitened_gram(nat, R)
    sl = [slice(a, b) for a, b in meta.slices]
    k = len(meta.nlevels)
    xy = sl[k]
    diag = [jax.ops.segment_sum(Gc[:, sl[i], sl[i]], R.level[i], num_segments=meta.nlevels[i]) for i in range(k)]
    diag.append(jnp.sum(Gc[:, xy, xy], axis=0, keepdims=True))
    off = {}
    for i, j, nnz in meta.pairs:
        off[key_name(i, j)] = jax.ops.segment_sum(Gc[:, sl[i], sl[j]], R.pair[key_name(i, j)], num_segments=nnz)
    for j in range(k):
        off[key_name(k, j)] = jax.ops.segment_sum(Gc[:, xy, sl[j]], R.level[j], num_segments=meta.nlevels[j])
    return diag, off, logdet


def arrays_at(nat, M: ModelArrays, R: RSideArrays) -> ModelArrays:
    """``M`` with the Gram blocks and ``log|W|`` of the whitened problem at ``nat``."""
    diag, off, logdet = gram_blocks_at(nat, R)
    # every Gram block changes: the fixed pair products of M's blocks no longer hold
    return dataclasses.replace(M, diag=diag, off=off, log_det_w=-logdet, pairs={})


def rside_objective(x, M: ModelArrays, R: RSideArrays):
    """The profiled criterion at ``x = (theta, u)`` (``u`` unconstrained R-side parameters)."""
    k = x.shape[0] - R.meta.n_params
    return objective(x[:k], arrays_at(natural(x[k:], R.meta), M, R))


def whiten_rows(nat, R: RSideArrays, V, decorrelate: bool = True):
    """``L_g^{-1} S_g^{-1} V_g`` per group (``S_g^{-1} V_g`` only without ``decorrelate``) for
    columns over the rows ``V (n, c)``, already scaled by ``sqrt(w)`` (traceable)."""
    meta = R.meta
    G, T = meta.shape
    packed = jnp.zeros((G * T, V.shape[1]), V.dtype).at[R.slot].set(V).reshape(G, T, V.shape[1])
    B, _ = _scaled_rows(nat, R, packed)
    if decorrelate and meta.correlation is not None:
        B, _ = meta.correlation.whiten(nat[: meta.n_cor], B, meta.cor_meta, R.cor)
    return B.reshape(G * T, V.shape[1])[R.slot]


@functools.partial(jax.jit, static_argnames=("decorrelate",))
def whiten_vector(nat, R: RSideArrays, v, decorrelate: bool = True):
    """:func:`whiten_rows` of one vector ``v (n,)``, already scaled by ``sqrt(w)`` (nlme's
    normalised and Pearson residuals: ``v = sqrt(w) (y - fitted) / sigma``)."""
    return whiten_rows(nat, R, v[:, None], decorrelate)[:, 0]


def structure_columns(correlation, variance) -> dict[str, str]:
    """The data columns the structures use (name -> what uses it), validated before any work."""
    out: dict[str, str] = {}
    if correlation is not None:
        if not isinstance(correlation, CorrelationStructure):
            raise ArgumentError(
                "correlation must be one of jaxlmm's structures (AR1, Exponential, CompoundSymmetry, "
                f"Unstructured, Toeplitz), got {correlation!r}"
            )
        for c in correlation.columns():
            out.setdefault(c, f"correlation {correlation!r}")
    if variance is not None:
        if not isinstance(variance, VarianceFunction):
            raise ArgumentError(f"variance must be VarIdent, VarPower or VarExp, got {variance!r}")
        for c in variance.columns():
            out.setdefault(c, f"variance {variance!r}")
    return out


arrays_at_jit = jax.jit(arrays_at)


def _deviance_natural(v, M: ModelArrays, R: RSideArrays, k: int):
    """``-2 log L`` at ``v = (theta (k), natural R-side parameters, sigma)``, sigma not profiled."""
    Mn = arrays_at(v[k:-1], M, R)
    return deviance_varpar(jnp.concatenate([v[:k], v[-1:]]), Mn)


# Hessian columns per call: forward over reverse for this many directions at once (memory: that
# many tangents of every intermediate of the evaluation, so an unstructured correlation's
# hundreds of parameters do not all go at once)
HESSIAN_CHUNK = 32


@functools.partial(jax.jit, static_argnums=(3,))
def _hessian_columns(v, M: ModelArrays, R: RSideArrays, k: int, E):
    """``H e`` for the directions ``e`` in the rows of ``E``: the Hessian of
    :func:`_deviance_natural` (``jax.hessian``'s forward over reverse, for some columns)."""
    grad = jax.grad(_deviance_natural)
    return jax.vmap(lambda e: jax.jvp(lambda w: grad(w, M, R, k), (v,), (e,))[1])(E)


@dataclasses.dataclass(frozen=True)
class RSideFit:
    """The fitted residual structure: unconstrained and natural parameter values."""

    meta: RSideMeta
    u: np.ndarray
    natural: np.ndarray

    def correlation_params(self):
        import pandas as pd

        m = self.meta
        return pd.Series(self.natural[: m.n_cor], index=list(m.cor_meta.names if m.cor_meta else ()),
                         name="correlation", dtype=float)

    def variance_params(self):
        import pandas as pd

        m = self.meta
        return pd.Series(self.natural[m.n_cor :], index=list(m.var_meta.names if m.var_meta else ()),
                         name="variance", dtype=float)


def natural_hessian(model, theta: np.ndarray, nat: np.ndarray, sigma: float, reml: bool) -> np.ndarray:
    """Exact Hessian of ``-2 log L`` (restricted for REML) in ``(theta, natural R-side parameters,
    sigma)`` at the optimum (forward over reverse; XLA factorizations)."""
    with float64():
        M = model.arrays(reml, host_lapack=False)
        R = model.rside_arrays()
        v = jnp.asarray(np.r_[theta, nat, sigma], dtype=jnp.float64)
        d = v.shape[0]
        c = min(d, HESSIAN_CHUNK)
        eye = np.eye(-(-d // c) * c, d)  # padded with zero directions to whole chunks
        cols = [np.asarray(_hessian_columns(v, M, R, len(theta), jnp.asarray(eye[a : a + c])))
                for a in range(0, eye.shape[0], c)]
        return np.concatenate(cols)[:d].T  # row j is H e_j, column j of jax.hessian's


def pearson_normalized(model, nat: np.ndarray, v: np.ndarray, normalized: bool) -> np.ndarray:
    """``S^{-1} v`` (Pearson) or ``L^{-1} S^{-1} v`` (normalised) for ``v = sqrt(w) r / sigma``."""
    with float64():
        R = model.rside_arrays()
        return np.asarray(whiten_vector(jnp.asarray(nat), R, jnp.asarray(v, dtype=jnp.float64),
                                        decorrelate=normalized))
