"""Residual variance functions (nlme's ``varFunc``): ``sd(e_i) = sigma * s_i(delta)``.

Each function maps a data column to a per-row array once (host side) and, inside the jitted
objective, the parameters to ``log s_i`` (0 on padded slots):

- :class:`VarIdent` ``(by)``: ``s_i = delta_k`` for stratum ``k`` of ``by``, the reference
  stratum's ratio fixed at 1 (unconstrained: ``log delta``);
- :class:`VarPower` ``(covariate)``: ``s_i = |v_i|^delta``;
- :class:`VarExp` ``(covariate)``: ``s_i = exp(delta v_i)``.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..terms.levels import level_labels
from ..errors import ArgumentError, DataError


@dataclasses.dataclass(frozen=True)
class VarMeta:
    n_params: int
    names: tuple[str, ...]


class VarianceFunction:
    """Base class: one data column; per-row values prepared once."""

    column: str

    def columns(self) -> tuple[str, ...]:
        return (self.column,)

    def __post_init__(self) -> None:
        """Dataclass hook of every variance function: its column name is checked."""
        if not isinstance(self.column, str) or not self.column:
            raise ArgumentError(f"{type(self).__name__}: the column must be a non-empty string, got {self.column!r}")

    def prepare(self, values: pd.Series) -> tuple[VarMeta, np.ndarray]:
        """``(meta, per-row values (n,))``; the values are packed with 0 on padding."""
        raise NotImplementedError

    def natural(self, u):
        return u

    def start(self, meta: VarMeta) -> np.ndarray:
        return np.zeros(meta.n_params)

    def log_sd(self, nat, v):
        """``log s`` for packed per-row values ``v (G, T)``."""
        raise NotImplementedError


def _numeric(values: pd.Series, who) -> np.ndarray:
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        raise DataError(f"{who!r}: column {values.name!r} must be numeric, it has dtype {values.dtype}")
    v = values.to_numpy(dtype=np.float64)
    if not np.isfinite(v).all():
        raise DataError(f"{who!r}: column {values.name!r} has infinite values")
    return v


@dataclasses.dataclass(frozen=True)
class VarIdent(VarianceFunction):
    """A residual SD ratio per stratum of ``by`` (nlme's ``varIdent(form = ~ 1 | by)``); the
    ``reference`` stratum (default: the first level, categorical order or sorted) has ratio 1."""

    by: str
    reference: object = None

    def __post_init__(self):
        if not isinstance(self.by, str) or not self.by:
            raise ArgumentError(f"VarIdent: by must be a column name, got {self.by!r}")

    @property
    def column(self) -> str:
        return self.by

    def prepare(self, values):
        codes, labels = level_labels(values)
        if self.reference is not None:
            ref = str(self.reference)
            if ref not in labels:
                raise ArgumentError(f"{self!r}: reference stratum {ref!r} is not a level of {self.by!r} "
                                    f"(levels: {labels})")
            k = labels.index(ref)
            order = [k] + [j for j in range(len(labels)) if j != k]
            remap = np.empty(len(labels), dtype=np.int64)
            remap[order] = np.arange(len(labels))
            codes = remap[codes]
            labels = [labels[j] for j in order]
        if len(labels) < 2:
            raise DataError(f"{self!r}: column {self.by!r} has a single stratum ({labels[0]!r}); "
                            "there is no variance ratio to estimate")
        counts = np.bincount(codes, minlength=len(labels))
        if (counts < 2).any():
            lab = labels[int(np.nonzero(counts < 2)[0][0])]
            raise DataError(f"{self!r}: stratum {lab!r} of {self.by!r} has a single row; its variance "
                            "ratio cannot be estimated")
        return VarMeta(len(labels) - 1, tuple(labels[1:])), codes.astype(np.float64)

    def natural(self, u):
        return jnp.exp(u)

    def log_sd(self, nat, v):
        logs = jnp.concatenate([jnp.zeros((1,), nat.dtype), jnp.log(nat)])
        return logs[v.astype(jnp.int32)]


@dataclasses.dataclass(frozen=True)
class VarPower(VarianceFunction):
    """``sd = sigma |covariate|^power`` (nlme's ``varPower(form = ~ covariate)``)."""

    column: str

    def prepare(self, values):
        v = _numeric(values, self)
        if (v == 0).any():
            raise DataError(f"{self!r}: column {self.column!r} has zero values; |v|^power is 0 there")
        logv = np.log(np.abs(v))
        if np.ptp(logv) == 0:
            what = f"column {self.column!r}" if np.ptp(v) == 0 else f"|v| of column {self.column!r}"
            raise DataError(f"{self!r}: {what} is constant ({abs(v[0]):g}), so |v|^power is one factor "
                            "for every row and cannot be told apart from sigma: the power has no information")
        return VarMeta(1, ("power",)), logv

    def log_sd(self, nat, v):
        return nat[0] * v


@dataclasses.dataclass(frozen=True)
class VarExp(VarianceFunction):
    """``sd = sigma exp(expon * covariate)`` (nlme's ``varExp(form = ~ covariate)``)."""

    column: str

    def prepare(self, values):
        v = _numeric(values, self)
        if v.size and np.ptp(v) == 0:
            raise DataError(f"{self!r}: column {self.column!r} is constant ({v[0]:g}), so exp(expon v) is "
                            "one factor for every row and cannot be told apart from sigma: expon has no "
                            "information")
        return VarMeta(1, ("expon",)), v

    def log_sd(self, nat, v):
        return nat[0] * v
