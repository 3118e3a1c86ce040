"""Within-group residual correlation structures (nlme's ``corStruct``).

The residual covariance is block diagonal by group, ``R_g = sigma^2 S_g C_g S_g`` (``S_g`` from a
variance function, :mod:`jaxlmm.variance`). A structure here gives, for the rows of every group
ordered by time and padded to ``T`` slots, the correlation matrix ``C_g (T, T)`` (identity on
padding) and applies ``L_g^{-1}`` (``C_g = L_g L_g'``) to the packed rows ``B (G, T, c)``,
returning the whitened rows and ``log|C_g|``. AR(1) and exponential correlation are Markov in
time, so ``L_g^{-1}`` is bidiagonal and needs no factorisation; compound symmetry has a closed
form for ``B' C^{-1} B``; unstructured and Toeplitz use a batched Cholesky.

Parameters are optimised on an unconstrained scale ``u`` and reported on the natural scale
(correlations, or the range of the exponential).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .errors import ArgumentError, DataError


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


def _check_unique_times(key: np.ndarray, mask: np.ndarray, structure, labels) -> None:
    k = np.where(mask, key, np.nan)
    dup = mask[:, 1:] & mask[:, :-1] & (k[:, 1:] == k[:, :-1])
    if dup.any():
        g = int(np.nonzero(dup.any(axis=1))[0][0])
        raise DataError(
            f"{structure!r}: time column {structure.time!r} has duplicate values inside a group "
            f"(group {labels[g]!r}, time {k[g][1:][dup[g]][0]:g}); each occasion may "
            "appear once per group"
        )


def _check_integer_times(key: np.ndarray, mask: np.ndarray, structure) -> None:
    v = key[mask]
    bad = v != np.round(v)
    if bad.any():
        raise DataError(
            f"{structure!r}: time column {structure.time!r} must hold integer occasions, "
            f"found {v[bad][0]:g}; use Exponential(group, time) for continuous time"
        )


def _check_exact_times(key: np.ndarray, mask: np.ndarray, structure) -> None:
    """Integer occasions must be exact in float64 (below 2^53), or their gaps are not."""
    v = np.abs(key[mask])
    if v.size and v.max() >= 2.0**53:
        raise DataError(
            f"{structure!r}: time column {structure.time!r} has values as large as {v.max():g}, "
            "beyond 2^53, where float64 numbers are not exact integers (their gaps would be "
            "rounded); subtract a reference time"
        )


def _integer_power(x, k, bits: int):
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
        _check_integer_times(key, mask, self)
        _check_exact_times(key, mask, self)
        _check_unique_times(key, mask, self, labels)
        step = _steps(key, mask)
        largest = int(step.max()) if step.size else 0
        return CorMeta(1, ("phi",), max(largest.bit_length(), 1)), {"step": step}

    def natural(self, u, meta):
        return jnp.tanh(u / 2.0)  # nlme's log((1 + phi) / (1 - phi))

    def correlation_at(self, nat, meta, step):
        return _integer_power(nat[0], step, meta.size)

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
        _check_unique_times(key, mask, self, labels)
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


@dataclasses.dataclass(frozen=True)
class CompoundSymmetry(CorrelationStructure):
    """Exchangeable correlation ``rho`` between any two rows of a ``group``,
    ``-1/(m - 1) < rho < 1`` with ``m`` the largest group. nlme's ``corCompSymm``. Closed form:
    ``C^{-1} = (I - k 11') / (1 - rho)``, ``k = rho / (1 + (m_g - 1) rho)``,
    ``log|C| = (m_g - 1) log(1 - rho) + log(1 + (m_g - 1) rho)``."""

    group: str
    time: None = None
    uses_time = False

    def __post_init__(self):
        if self.time is not None:
            raise ArgumentError("CompoundSymmetry takes only the group column: CompoundSymmetry(group)")
        super().__post_init__()

    def columns(self):
        return (self.group,)

    def prepare(self, key, mask, labels):
        m = int(mask.sum(axis=1).max())
        if m < 2:
            raise DataError(f"{self!r}: every group of {self.group!r} has a single row; there is no correlation to estimate")
        return CorMeta(1, ("rho",), m), {"m": mask.sum(axis=1).astype(np.float64),
                                         "mask": mask}

    def natural(self, u, meta):
        lo = -1.0 / (meta.size - 1)
        return lo + (1.0 - lo) * jax.nn.sigmoid(u)

    def start(self, meta):
        lo = -1.0 / (meta.size - 1)
        z = (0.0 - lo) / (1.0 - lo)
        return np.array([np.log(z / (1.0 - z))])

    def gram(self, nat, B, meta, arrays):
        rho = nat[0]
        m = arrays["m"]
        k = rho / (1.0 + (m - 1.0) * rho)
        s = jnp.sum(B, axis=1)
        G = (jnp.einsum("gtc,gtd->gcd", B, B) - k[:, None, None] * jnp.einsum("gc,gd->gcd", s, s)) / (1.0 - rho)
        logdet = (m - 1.0) * jnp.log1p(-rho) + jnp.log1p((m - 1.0) * rho)
        return G, logdet

    def decompose(self, A, gcode, prev, key):
        """``A' C^{-1} A = (A'A - sum_g k(m_g) s_g s_g') / (1 - rho)`` with ``s_g`` the group's
        column sums: one component of rows, one of group sums per group size ``m``."""
        G = int(gcode.max()) + 1
        m = np.bincount(gcode, minlength=G)
        S = np.zeros((G, A.shape[1]))
        np.add.at(S, gcode, A)
        first = np.full(G, -1)
        first[gcode[::-1]] = np.arange(len(gcode))[::-1]
        sizes = np.unique(m)
        comps = [(A, A, np.arange(len(gcode)), False)]
        for size in sizes:
            g = np.nonzero(m == size)[0]
            comps.append((S[g], S[g], first[g], False))
        return comps, {"size": sizes.astype(np.float64),
                       "groups": np.array([(m == v).sum() for v in sizes], dtype=np.float64)}

    def component_weights(self, nat, meta, stats):
        rho = nat[0]
        m = stats["size"]
        k = rho / (1.0 + (m - 1.0) * rho)
        w = jnp.concatenate([jnp.ones((1,), nat.dtype), -k]) / (1.0 - rho)
        logdet = jnp.sum(stats["groups"] * ((m - 1.0) * jnp.log1p(-rho) + jnp.log1p((m - 1.0) * rho)))
        return w, logdet

    def matrices(self, nat, meta, arrays):
        mk = arrays["mask"]
        both = mk[:, :, None] & mk[:, None, :]
        T = mk.shape[1]
        eye = jnp.eye(T, dtype=nat.dtype)
        return jnp.where(both, nat[0], 0.0) * (1.0 - eye) + eye


def _corr_from_cpc(z, n: int):
    """Correlation matrix ``(n, n)`` from canonical partial correlations ``z`` (row-wise lower
    triangle, ``|z| < 1``) through its Cholesky factor: positive definite for every ``z``.
    Row ``i`` of the factor is ``L_ij = z_ij sqrt(prod_{k<j} (1 - z_ik^2))`` and
    ``L_ii = sqrt(prod_{k<i} (1 - z_ik^2))``: a few array operations whatever ``n``."""
    r, c = np.tril_indices(n, -1)  # row-wise: (1,0), (2,0), (2,1), (3,0), ...
    idx = np.full((n, n), r.shape[0])  # the appended zero above the diagonal
    idx[r, c] = np.arange(r.shape[0])
    Z = jnp.concatenate([z, jnp.zeros((1,), z.dtype)])[idx]
    log_rest = jnp.cumsum(jnp.log1p(-Z * Z), axis=1)
    log_rest = jnp.concatenate([jnp.zeros((n, 1), z.dtype), log_rest[:, :-1]], axis=1)  # k < j
    rest = jnp.exp(0.5 * log_rest)
    L = jnp.where(np.eye(n, dtype=bool), rest, Z * rest)
    return L @ L.T


def _upper_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """nlme's order of corSymm parameters: (1,2), (1,3), ..., (1,n), (2,3), ..."""
    r, c = np.triu_indices(n, 1)
    return r, c


# An unstructured correlation has n(n - 1)/2 parameters: its optimisation (and the Hessian behind
# standard errors) grows as n^4 and needs as many groups observed at the pairs of occasions
MAX_UNSTRUCTURED_OCCASIONS = 40


def _check_pairs_observed(occ: np.ndarray, n: int, labels: list[str], structure) -> None:
    """Every pair of occasions must be observed together in some group: the data carry no
    information on the correlation of a pair that never is."""
    G = occ.shape[0]
    seen = np.zeros((G, n), dtype=np.int64)
    g, t = np.nonzero(occ >= 0)
    seen[g, occ[g, t]] = 1
    together = seen.T @ seen
    r, c = _upper_pairs(n)
    never = together[r, c] == 0
    if never.any():
        a, b = int(r[never][0]), int(c[never][0])
        raise DataError(
            f"{structure!r}: occasions {labels[a]} and {labels[b]} of {structure.time!r} are never "
            f"observed in the same group of {structure.group!r} ({int(never.sum())} of the "
            f"{len(r)} pairs of occasions are not), so the data carry no information on their "
            f"correlation. Use AR1({structure.group!r}, {structure.time!r}) or "
            f"Toeplitz({structure.group!r}, {structure.time!r}), or fewer occasions"
        )


def _gather_matrices(full, occ):
    """Per-group submatrices ``full[occ_s, occ_t]`` of an ``(n, n)`` matrix; identity where a
    slot is padding (``occ = -1``)."""
    valid = occ >= 0
    o = jnp.where(valid, occ, 0)
    C = full[o[:, :, None], o[:, None, :]]
    both = valid[:, :, None] & valid[:, None, :]
    T = occ.shape[1]
    eye = jnp.eye(T, dtype=full.dtype)
    return jnp.where(both, C, 0.0) * (1.0 - eye) + eye


@dataclasses.dataclass(frozen=True)
class Unstructured(CorrelationStructure):
    """A general correlation matrix over the occasions (distinct values of ``time``): one
    correlation per pair of occasions, nlme's ``corSymm`` (parameters in its order
    ``(1,2), (1,3), ..., (2,3), ...``). Positive definite by construction (canonical partial
    correlations on the unconstrained scale)."""

    group: str
    time: str

    def time_key(self, values):
        """Occasions may be numbers, or any labels (a Categorical in its order, others sorted),
        which are numbered from 1 (the parameter names then use those positions, as nlme)."""
        if isinstance(values.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(values):
            from .design import _level_labels

            codes, _ = _level_labels(values)
            return codes.astype(np.float64) + 1.0
        return super().time_key(values)

    def prepare(self, key, mask, labels):
        _check_unique_times(key, mask, self, labels)
        occ_values = np.unique(key[mask])
        n = len(occ_values)
        if n < 2:
            raise DataError(f"{self!r}: time column {self.time!r} has a single occasion")
        if n > MAX_UNSTRUCTURED_OCCASIONS:
            raise DataError(
                f"{self!r}: time column {self.time!r} has {n} occasions, so an unstructured "
                f"correlation would have {n * (n - 1) // 2} parameters; jaxlmm fits at most "
                f"{MAX_UNSTRUCTURED_OCCASIONS} occasions ({MAX_UNSTRUCTURED_OCCASIONS * (MAX_UNSTRUCTURED_OCCASIONS - 1) // 2} "
                f"correlations). Use AR1({self.group!r}, {self.time!r}), "
                f"Toeplitz({self.group!r}, {self.time!r}) or Exponential({self.group!r}, {self.time!r})"
            )
        occ = np.full(key.shape, -1, dtype=np.int64)
        occ[mask] = np.searchsorted(occ_values, key[mask])
        lab = [f"{v:g}" for v in occ_values]
        _check_pairs_observed(occ, n, lab, self)
        r, c = _upper_pairs(n)
        names = tuple(f"cor({lab[a]},{lab[b]})" for a, b in zip(r, c))
        return CorMeta(len(r), names, n), {"occ": occ}

    def natural(self, u, meta):
        n = meta.size
        C = _corr_from_cpc(jnp.tanh(u), n)
        r, c = _upper_pairs(n)
        return C[r, c]

    def _full(self, nat, meta):
        n = meta.size
        r, c = _upper_pairs(n)
        M = jnp.zeros((n, n), nat.dtype).at[r, c].set(nat)
        return M + M.T + jnp.eye(n, dtype=nat.dtype)

    def matrices(self, nat, meta, arrays):
        return _gather_matrices(self._full(nat, meta), arrays["occ"])


@dataclasses.dataclass(frozen=True)
class Toeplitz(CorrelationStructure):
    """One correlation per lag ``|time_s - time_t|`` on integer occasions (banded to the largest
    lag in the data). Positive definite by construction: partial autocorrelations on the
    unconstrained scale, mapped to correlations by the Durbin–Levinson recursion."""

    group: str
    time: str

    def prepare(self, key, mask, labels):
        _check_integer_times(key, mask, self)
        _check_exact_times(key, mask, self)
        _check_unique_times(key, mask, self, labels)
        tmin = np.where(mask, key, np.inf).min(axis=1, keepdims=True)
        t0 = np.where(mask, key - tmin, -1).astype(np.int64)
        max_lag = int(t0.max())
        if max_lag < 1:
            raise DataError(f"{self!r}: every group of {self.group!r} has a single occasion")
        lags = _observed_lags(t0)
        if len(lags) < max_lag:
            first_missing = int(np.nonzero(lags != np.arange(1, len(lags) + 1))[0][0]) + 1
            step = int(np.gcd.reduce(lags))
            hint = (f"; the lags are multiples of {step}: number the occasions 1, 2, 3, ... "
                    f"(divide {self.time!r} by {step})") if step > 1 else ""
            raise DataError(
                f"{self!r}: the largest lag of {self.time!r} within a group of {self.group!r} is "
                f"{max_lag}, but lag {first_missing} never occurs ({max_lag - len(lags)} of the "
                f"{max_lag} lags do not), so the data carry no information on its correlation"
                f"{hint}. Use AR1({self.group!r}, {self.time!r}) or "
                f"Exponential({self.group!r}, {self.time!r}) for irregular times"
            )
        names = tuple(f"lag{k}" for k in range(1, max_lag + 1))
        return CorMeta(max_lag, names, max_lag), {"occ": t0}

    def natural(self, u, meta):
        """Durbin–Levinson: the autocorrelations ``rho_1..rho_K`` from the partial ones, one
        step per lag in a loop (the program does not grow with ``K``)."""
        pac = jnp.tanh(u)
        K = meta.size
        if K == 1:
            return pac
        j = jnp.arange(K)

        def step(k, carry):  # k = 1, ..., K-1: the order-(k+1) recursion
            phi, rho = carry
            pk = pac[k]
            valid = j < k
            back = jnp.clip(k - 1 - j, 0, K - 1)
            num = jnp.sum(jnp.where(valid, phi * rho[back], 0.0))
            den = 1.0 - jnp.sum(jnp.where(valid, phi * rho, 0.0))
            rho = rho.at[k].set(pk * den + num)
            phi = jnp.where(valid, phi - pk * phi[back], phi).at[k].set(pk)
            return phi, rho

        first = jnp.zeros((K,), pac.dtype).at[0].set(pac[0])
        _, rho = jax.lax.fori_loop(1, K, step, (first, first))
        return rho

    def matrices(self, nat, meta, arrays):
        n = meta.size + 1
        idx = np.arange(n)
        lag = np.abs(idx[:, None] - idx[None, :])
        full = jnp.concatenate([jnp.ones((1,), nat.dtype), nat])[lag]
        return _gather_matrices(full, arrays["occ"])


def _observed_lags(t0: np.ndarray) -> np.ndarray:
    """The distinct lags between two rows of a group, sorted (``t0``: times from the group's
    first, -1 on padding; rows in time order). Memory: the pairs of rows, not the largest lag."""
    valid = t0 >= 0
    found = [np.zeros(0, np.int64)]
    for d in range(1, t0.shape[1]):
        both = valid[:, d:] & valid[:, :-d]
        found.append(np.unique(t0[:, d:][both] - t0[:, :-d][both]))
    return np.unique(np.concatenate(found))


STRUCTURES = (AR1, Exponential, CompoundSymmetry, Unstructured, Toeplitz)  # MarkovStructure: AR1, Exponential
