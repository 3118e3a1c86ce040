"""Within-group residual correlation structures (nlme's ``corStruct``): the base class and the
structures that are Markov in time.

The residual covariance is block diagonal by group, ``R_g = sigma^2 S_g C_g S_g`` (``S_g`` from a
variance function, :mod:`jaxlmm.variance`). A structure here gives, for the rows of every group
ordered by time and padded to ``T`` slots, the correlation matrix ``C_g (T, T)`` (identity on
padding) and applies ``L_g^{-1}`` (``C_g = L_g L_g'``) to the packed rows ``B (G, T, c)``,
returning the whitened rows and ``log|C_g|``. AR(1) and exponential correlation are Markov in
time, so ``L_g^{-1}`` is bidiagonal and needs no factorisation. The checks of the time column
that every structure shares are here too; the structures given by a correlation matrix over the
occasions (compound symmetry, unstructured, Toeplitz) are in
:mod:`jaxlmm.rside.correlation_matrices`.

Parameters are optimised on an unconstrained scale ``u`` and reported on the natural scale
(correlations, or the range of the exponential).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..errors import ArgumentError, DataError


@dataclasses.dataclass(frozen=True)
class CorMeta:
    """What a structure needs to know about the packed data (static: hashable)."""

    n_params: int
    names: tuple[str, ...]
    size: int = 0  # occasions (Unstructured), largest lag (Toeplitz), bits of the largest step (AR1), largest group (CS)
    scale: float = 1.0  # typical time gap (Exponential's starting range)
    # starting values on the unconstrained scale from the data (moment estimates); not part of
    # the structure, so not compared: programs compiled for one data set serve another
    start: tuple = dataclasses.field(default=(), compare=False)


class CorrelationStructure:
    """Base class: a grouping column and, where order matters, a time column."""

    uses_time = True

    def columns(self) -> tuple[str, ...]:
        return (self.group,) + ((self.time,) if self.uses_time else ())

    def __post_init__(self) -> None:
        """Dataclass hook of every structure: its column names are checked on construction."""
        for name in self.columns():
            if not isinstance(name, str) or not name:
                raise ArgumentError(f"{type(self).__name__}: column names must be non-empty strings, got {name!r}")

    def time_key(self, values: pd.Series) -> np.ndarray:
        """Numeric sort key of the time column (validated); rows are ordered by it in a group."""
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            raise DataError(f"{self!r}: time column {values.name!r} must be numeric, it has dtype {values.dtype}")
        v = values.to_numpy(dtype=np.float64)
        if not np.isfinite(v).all():
            raise DataError(f"{self!r}: time column {values.name!r} has infinite values")
        return v

    def prepare(self, key: np.ndarray, mask: np.ndarray, labels) -> tuple[CorMeta, dict]:
        raise NotImplementedError

    # --- JAX functions of the natural parameters -----------------------------------------

    def natural(self, u, meta: CorMeta):
        raise NotImplementedError

    def start(self, meta: CorMeta) -> np.ndarray:
        """Starting values (unconstrained): the moment estimate of :meth:`moment_start` when the
        data gave one, else 0."""
        return np.array(meta.start, dtype=np.float64) if meta.start else np.zeros(meta.n_params)

    def moment_start(self, meta: CorMeta, arrays: dict, resid: np.ndarray, mask: np.ndarray):
        """Unconstrained starting values from the within-group OLS residuals ``resid (G, T)``
        (packed as the rows, 0 on padding), or None to start at 0. Structures whose criterion
        can be stationary at 0 override this (AR(1) on occasions spaced more than 1 apart:
        ``d phi^s / d phi = 0`` at ``phi = 0``)."""
        return None

    def matrices(self, nat, meta: CorMeta, arrays: dict):
        """``C_g (G, T, T)``, identity on padded slots."""
        raise NotImplementedError

    def whiten(self, nat, B, meta: CorMeta, arrays: dict):
        """``(L_g^{-1} B_g, log|C_g|)`` for ``B (G, T, c)``: shapes ``(G, T, c)``, ``(G,)``."""
        C = self.matrices(nat, meta, arrays)
        L = jnp.linalg.cholesky(C)
        Bt = jax.scipy.linalg.solve_triangular(L, B, lower=True)
        logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(L, axis1=1, axis2=2)), axis=1)
        return Bt, logdet

    def gram(self, nat, B, meta: CorMeta, arrays: dict):
        """``(B_g' C_g^{-1} B_g, log|C_g|)``: shapes ``(G, c, c)``, ``(G,)``."""
        Bt, logdet = self.whiten(nat, B, meta, arrays)
        return jnp.einsum("gtc,gtd->gcd", Bt, Bt), logdet

    # --- decomposition (rows fixed: no variance function) --------------------------------

    def decompose(self, A: np.ndarray, gcode: np.ndarray, prev: np.ndarray, key: np.ndarray):
        """Write ``A' C^{-1} A = sum_j w_j(params) sum_r l_r' r_r`` with fixed pseudo-rows, so the
        objective needs no pass over the rows: ``(components, stats)`` with components
        ``(left (N, c), right (N, c), src (N,), symmetrize)`` (``src``: a row of the same group,
        for the level codes) and the arrays :meth:`component_weights` needs; None where no such
        form exists. ``A (n, c)`` rows, ``gcode`` group, ``prev`` the previous row of the group
        in time (-1 for none), ``key`` the time, all in the original row order."""
        return None

    def component_weights(self, nat, meta: CorMeta, stats: dict):
        """``(w (J,), sum_g log|C_g|)`` for :meth:`decompose`'s components."""
        raise NotImplementedError


def check_unique_times(key: np.ndarray, mask: np.ndarray, structure, labels) -> None:
    """Each occasion at most once per group (``key (G, T)`` in time order, ``mask`` the rows)."""
    k = np.where(mask, key, np.nan)
    dup = mask[:, 1:] & mask[:, :-1] & (k[:, 1:] == k[:, :-1])
    if dup.any():
        g = int(np.nonzero(dup.any(axis=1))[0][0])
        raise DataError(
            f"{structure!r}: time column {structure.time!r} has duplicate values inside a group "
            f"(group {labels[g]!r}, time {k[g][1:][dup[g]][0]:g}); each occasion may "
            "appear once per group"
        )


def check_integer_times(key: np.ndarray, mask: np.ndarray, structure) -> None:
    """The time column must hold integer occasions (AR1, Toeplitz)."""
    v = key[mask]
    bad = v != np.round(v)
    if bad.any():
        raise DataError(
            f"{structure!r}: time column {structure.time!r} must hold integer occasions, "
            f"found {v[bad][0]:g}; use Exponential(group, time) for continuous time"
        )


def check_exact_times(key: np.ndarray, mask: np.ndarray, structure) -> None:
    """Integer occasions must be exact in float64 (below 2^53), or their gaps are not."""
    v = np.abs(key[mask])
    if v.size and v.max() >= 2.0**53:
        raise DataError(
            f"{structure!r}: time column {structure.time!r} has values as large as {v.max():g}, "
            "beyond 2^53, where float64 numbers are not exact integers (their gaps would be "
            "rounded); subtract a reference time"
        )


def integer_power(x, k, bits: int):
    """``x ** k`` for a scalar ``x`` and integer-valued ``k >= 0`` (any shape, below
    ``2 ** bits``) by repeated squaring over the bits of ``k``: ``bits`` products, no table
    sized by the largest ``k``, no logarithm (``x`` may be 0 or negative); differentiable in
    ``x`` in both modes."""
    out = jnp.ones(jnp.shape(k), x.dtype)
    rest = jnp.asarray(k, x.dtype)
    base = x
    for _ in range(bits):
        odd = jnp.mod(rest, 2.0) == 1.0
        out = jnp.where(odd, out * base, out)
        rest = jnp.floor(rest / 2.0)
        base = base * base
    return out


def _markov_whiten(r, B):
    """Whitening of a Markov (AR(1)-type) series: ``b~_1 = b_1``,
    ``b~_t = (b_t - r_t b_{t-1}) / sqrt(1 - r_t^2)`` with ``r_t`` the correlation to the previous
    row (0 at a group's first row and on padding); ``log|C| = sum log(1 - r_t^2)``."""
    prev = jnp.concatenate([jnp.zeros_like(B[:, :1]), B[:, :-1]], axis=1)
    one_m = 1.0 - r * r
    Bt = (B - r[..., None] * prev) / jnp.sqrt(one_m)[..., None]
    return Bt, jnp.sum(jnp.log(one_m), axis=1)


MAX_STEP_CLASSES = 32


def _markov_decompose(A, prev, step):
    """Markov series with a lag-one correlation ``r`` that depends only on the step to the
    previous row (0: none). With ``p`` the previous row,
    ``b~ b~' = (b b' - r (b p' + p b') + r^2 p p') / (1 - r^2)``; rows grouped by step class
    give three components per class (one for the first rows, ``r = 0``)."""
    classes, cls = np.unique(step, return_inverse=True)
    if len(classes) > MAX_STEP_CLASSES:
        return None
    comps = []
    for k, value in enumerate(classes):
        rows = np.nonzero(cls == k)[0]
        a = A[rows]
        if value == 0:
            comps.append((a, a, rows, False))
            continue
        pr = A[prev[rows]]
        comps += [(a, a, rows, False), (a, pr, rows, True), (pr, pr, rows, False)]
    counts = np.bincount(cls, minlength=len(classes)).astype(np.float64)
    return comps, {"step_class": classes.astype(np.float64), "count": counts}


def _markov_weights(r_class, stats):
    """Component weights for :func:`_markov_decompose` (class 0, a group's first rows, always
    exists and comes first): ``1``, then ``1 / (1 - r^2), -r / (1 - r^2), r^2 / (1 - r^2)`` per
    further class; and ``sum log(1 - r^2)`` over the rows."""
    r = r_class[1:]
    om = 1.0 - r * r
    w = jnp.concatenate([jnp.ones((1,), r_class.dtype), jnp.stack([1.0 / om, -r / om, r * r / om], axis=1).ravel()])
    return w, jnp.sum(stats["count"][1:] * jnp.log(om))


def _markov_matrices(r):
    """``C (G, T, T)`` of a Markov series from the lag-one correlations ``r (G, T)``:
    ``C[s, t] = prod_{s < j <= t} r_j``."""
    # products by masks, not ratios of cumulative products (a lag-one correlation may be 0)
    G, T = r.shape
    idx = np.arange(T)
    out = jnp.ones((G, T, T), r.dtype)
    for j in range(1, T):
        sel = (idx[:, None] < j) & (idx[None, :] >= j)  # s < j <= t
        out = out * jnp.where(sel[None], r[:, j][:, None, None], 1.0)
    out = jnp.triu(out)
    return out + jnp.swapaxes(jnp.triu(out, 1), 1, 2)


class MarkovStructure(CorrelationStructure):
    """A correlation that is Markov in time: ``r(step)`` between consecutive rows of a group,
    products of those between others. Subclasses give :meth:`correlation_at` and store the step
    to the previous row (0 for a group's first row and for padding) as ``arrays["step"]``."""

    def correlation_at(self, nat, meta: CorMeta, step):
        """``r`` for steps ``> 0`` (any shape)."""
        raise NotImplementedError

    def _lag_one(self, nat, meta, arrays):
        step = arrays["step"]
        return jnp.where(step > 0, self.correlation_at(nat, meta, jnp.where(step > 0, step, 1.0)), 0.0)

    def whiten(self, nat, B, meta, arrays):
        return _markov_whiten(self._lag_one(nat, meta, arrays), B)

    def matrices(self, nat, meta, arrays):
        return _markov_matrices(self._lag_one(nat, meta, arrays))

    def decompose(self, A, gcode, prev, key):
        return _markov_decompose(A, prev, np.where(prev >= 0, key - key[np.maximum(prev, 0)], 0.0))

    def component_weights(self, nat, meta, stats):
        k = stats["step_class"]
        r_class = jnp.where(k > 0, self.correlation_at(nat, meta, jnp.where(k > 0, k, 1.0)), 0.0)
        return _markov_weights(r_class, stats)


def _steps(key: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Step from each slot's row to the previous row of its group (0: none)."""
    step = np.zeros(key.shape)
    link = mask[:, 1:] & mask[:, :-1]
    step[:, 1:] = np.where(link, np.nan_to_num(key[:, 1:] - key[:, :-1]), 0.0)
    return step


@dataclasses.dataclass(frozen=True)
class AR1(MarkovStructure):
    """Discrete-time AR(1) within ``group``: ``corr(e_s, e_t) = phi^|time_s - time_t|`` on integer
    occasions (a missed occasion is a gap, not a shift); ``-1 < phi < 1``. nlme's ``corAR1``."""

    group: str
    time: str

    def prepare(self, key, mask, labels):
        check_integer_times(key, mask, self)
        check_exact_times(key, mask, self)
        check_unique_times(key, mask, self, labels)
        step = _steps(key, mask)
        largest = int(step.max()) if step.size else 0
        return CorMeta(1, ("phi",), max(largest.bit_length(), 1)), {"step": step}

    def natural(self, u, meta):
        return jnp.tanh(u / 2.0)  # nlme's log((1 + phi) / (1 - phi))

    def correlation_at(self, nat, meta, step):
        return integer_power(nat[0], step, meta.size)

    def moment_start(self, meta, arrays, resid, mask):
        """``phi = r^(1/s)`` from the correlation ``r`` of the residuals one row apart at the most
        common step ``s`` between consecutive rows (kept inside ``0.05 <= |r| <= 0.9``; ``r > 0``
        for an even step, where AR(1) correlations are positive): ``phi = 0`` is a stationary
        point of the criterion when no step is 1."""
        step = arrays["step"]
        if not (step > 0).any():
            return None
        steps, counts = np.unique(step[step > 0], return_counts=True)
        s = float(steps[np.argmax(counts)])  # the smallest of the most common
        sel = step == s
        prev = np.concatenate([np.zeros_like(resid[:, :1]), resid[:, :-1]], axis=1)
        a, b = resid[sel], prev[sel]
        den = np.sqrt(np.sum(a * a) * np.sum(b * b))
        r = float(np.sum(a * b) / den) if den > 0 else 0.0
        if r <= 0.0 and (s % 2 == 0 or r == 0.0):
            r = 0.05
        r = float(np.sign(r) * np.clip(abs(r), 0.05, 0.9))
        phi = np.sign(r) * abs(r) ** (1.0 / s)
        return np.array([2.0 * np.arctanh(phi)])


@dataclasses.dataclass(frozen=True)
class Exponential(MarkovStructure):
    """Continuous-time exponential correlation within ``group``:
    ``corr(e_s, e_t) = exp(-|time_s - time_t| / range)``, ``range > 0``. nlme's ``corExp``."""

    group: str
    time: str

    def prepare(self, key, mask, labels):
        check_unique_times(key, mask, self, labels)
        step = _steps(key, mask)
        gaps = step[step > 0]
        scale = float(np.median(gaps)) if gaps.size else 1.0
        return CorMeta(1, ("range",), 0, scale), {"step": step}

    def natural(self, u, meta):
        return jnp.exp(u)

    def start(self, meta):
        return np.array([np.log(meta.scale)])  # range = the median gap between rows

    def correlation_at(self, nat, meta, step):
        return jnp.exp(-step / nat[0])
