"""Residual correlation structures given by a correlation matrix over a group's occasions:
compound symmetry (nlme's ``corCompSymm``), unstructured (``corSymm``) and Toeplitz.

The rows of every group are ordered by time and padded to ``T`` slots as in
:mod:`jaxlmm.rside.correlation` (whose base class and time checks these structures use); each
structure gives ``C_g (T, T)`` (identity on padding).

- Compound symmetry: one correlation ``rho`` between any two rows of a group; closed forms for
  ``B' C^{-1} B`` and ``log|C_g|`` (no factorisation), and a decomposition into the rows and one
  pseudo-row of column sums per group.
- Unstructured: one correlation per pair of the ``n`` occasions (``n(n - 1)/2`` parameters,
  canonical partial correlations on the unconstrained scale); Toeplitz: one correlation per lag
  up to the largest lag ``K`` (partial autocorrelations, mapped by the Durbin–Levinson
  recursion). Both gather each group's ``C_g`` from one matrix over the occasions (``(n, n)``,
  or ``(K + 1, K + 1)`` over the times from a group's first) and use a batched Cholesky.

Parameters are optimised on an unconstrained scale ``u`` and reported as correlations.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..errors import ArgumentError, DataError
from ..terms.levels import level_labels
from .correlation import (
    AR1,
    CorMeta,
    CorrelationStructure,
    Exponential,
    check_exact_times,
    check_integer_times,
    check_unique_times,
)


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


def corr_from_cpc(z, n: int):
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
            codes, _ = level_labels(values)
            return codes.astype(np.float64) + 1.0
        return super().time_key(values)

    def prepare(self, key, mask, labels):
        check_unique_times(key, mask, self, labels)
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
        C = corr_from_cpc(jnp.tanh(u), n)
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
        check_integer_times(key, mask, self)
        check_exact_times(key, mask, self)
        check_unique_times(key, mask, self, labels)
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
