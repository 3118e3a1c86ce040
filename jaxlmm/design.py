"""From a parsed formula and a data frame to model matrices.

The response ``y (n,)``, fixed-effects matrix ``X (n, p)`` (float64, aliased columns dropped),
prior weights ``w (n,)``, offset ``(n,)``, and for each random-effects term its int32 level
codes ``(n,)`` and per-row columns ``Z_i (n, p_i)``. ``Z`` is never formed as an ``n x q``
matrix. Rows with a missing value in any column the model uses are dropped and counted.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from typing import Any

import numpy as np
import pandas as pd

from .errors import ArgumentError, DataError, FormulaError, RankDeficiencyWarning
from .formula import ParsedFormula, parse_formula
from .frames import as_frame, column_names


@dataclasses.dataclass(frozen=True)
class TermDesign:
    """One random-effects term: ``Z_i`` is ``columns`` placed at ``codes`` (level of each row)."""

    name: str
    factors: tuple[str, ...]
    expr: str
    codes: np.ndarray  # (n,) int32
    levels: tuple[str, ...]
    columns: np.ndarray  # (n, p_i) float64
    column_names: tuple[str, ...]
    uncorrelated: bool
    spec: Any = None  # formulaic ModelSpec of ``expr`` (encodes new data the same way)

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    @property
    def width(self) -> int:
        return self.columns.shape[1]


@dataclasses.dataclass(frozen=True)
class Design:
    """Everything the fit needs from the data (see module docstring)."""

    formula: ParsedFormula
    response: str
    y: np.ndarray
    X: np.ndarray
    x_names: tuple[str, ...]
    dropped_columns: tuple[str, ...]
    weights: np.ndarray
    offset: np.ndarray
    terms: tuple[TermDesign, ...]
    n_dropped: int
    row_index: pd.Index
    x_spec: Any = None  # formulaic ModelSpec of the fixed part (before aliased columns were dropped)
    x_all_names: tuple[str, ...] = ()  # X's column names before dropping aliased ones
    offset_column: str | None = None  # the data column the offset came from, if any
    aux: pd.DataFrame | None = None  # extra columns (residual structures) for the rows used

    @property
    def n(self) -> int:
        return self.y.shape[0]

    @property
    def p(self) -> int:
        return self.X.shape[1]


def r_style_name(name: str) -> str:
    """formulaic's column names in R's spelling: ``Intercept`` -> ``(Intercept)``, ``f[T.b]`` -> ``fb``."""
    if name == "Intercept":
        return "(Intercept)"
    name = re.sub(r"\[T\.([^\]]*)\]", r"\1", name)
    return re.sub(r"\[([^\]]*)\]", r"\1", name)


def _required(expr: str, what: str, label: str | None = None) -> set[str]:
    import formulaic

    try:
        return {str(v) for v in formulaic.Formula(expr).required_variables}
    except Exception as e:  # formulaic's parser errors
        raise FormulaError(f"cannot parse {what} {label or repr(expr)}: {e}") from None


def _model_matrix(
    expr, df: pd.DataFrame, what: str, label: str | None = None
) -> tuple[np.ndarray, list[str], Any]:
    """``(matrix, R-style names, formulaic ModelSpec)`` of ``expr`` (a formula string, or the
    ModelSpec of an earlier fit to encode new data the same way)."""
    import formulaic

    label = label or repr(getattr(expr, "formula", expr))
    try:
        if isinstance(expr, str):
            mm = formulaic.model_matrix(expr, df, na_action="ignore")
        else:
            mm = expr.get_model_matrix(df, na_action="ignore")
    except Exception as e:
        raise FormulaError(f"cannot build the model matrix of {what} {label}: {e}") from None
    names = [r_style_name(str(c)) for c in mm.columns]
    arr = np.asarray(mm, dtype=np.float64).reshape(len(df), len(names))
    bad = ~np.isfinite(arr)
    if bad.any():
        col = names[int(np.nonzero(bad.any(axis=0))[0][0])]
        raise DataError(f"{what} {label}: column {col!r} has non-finite values (e.g. log of a non-positive number)")
    return arr, names, mm.model_spec


def _level_labels(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Integer codes and labels of a grouping variable (categorical whatever its dtype)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        cat = values.cat.remove_unused_categories()
        return cat.cat.codes.to_numpy().astype(np.int64), [_label(c) for c in cat.cat.categories]
    try:
        codes, uniq = pd.factorize(values, sort=True)  # hash-based; levels in sorted order
        uniq = np.asarray(uniq)
        if uniq.dtype == object and len({isinstance(u, str) for u in uniq}) > 1:
            raise TypeError
    except TypeError:  # e.g. an object column mixing numbers and strings
        raise DataError(
            f"grouping column {values.name!r} mixes values of different types "
            "(e.g. numbers and strings); convert it to str or to a pandas Categorical"
        ) from None
    return codes.astype(np.int64), _labels(uniq)


def check_levels(t, n_levels: int, width: int, n: int, residual: bool = True) -> None:
    """lme4's identifiability checks of a random-effects term's number of levels. ``residual``:
    the model has a residual variance (``lmer``); without one (``glmer``) a term may have one
    level per observation (observation-level random effects), as glmer allows."""
    if n_levels < 2:
        raise DataError(
            f"grouping factor {t.name!r} of term {t} has a single level; "
            "a random effect needs at least two"
        )
    if n_levels > n or (residual and n_levels == n):
        raise DataError(
            f"grouping factor {t.name!r} has {n_levels} levels for {n} observations; "
            "the number of levels must be below the number of observations"
        )
    if residual and n_levels * width >= n:
        raise DataError(
            f"term {t} has {n_levels * width} random effects for {n} observations; "
            "the random-effects parameters and the residual variance are unidentifiable"
        )


def term_order(nlevels: list[int]) -> list[int]:
    """lme4's order of terms: the reverse of the ascending stable order of their levels."""
    if not any(b > a for a, b in zip(nlevels, nlevels[1:])):
        return list(range(len(nlevels)))
    return list(reversed(np.argsort(nlevels, kind="stable").tolist()))


def _labels(uniq: np.ndarray) -> list[str]:
    """:func:`_label` of each sorted unique value, vectorised for integer and string arrays."""
    if uniq.dtype.kind in "iu":
        return uniq.astype(str).tolist()
    if uniq.dtype.kind == "f" and np.all(np.isfinite(uniq)) and np.all(uniq == np.round(uniq)) \
            and np.all(np.abs(uniq) < 2**53):
        return uniq.astype(np.int64).astype(str).tolist()
    if uniq.dtype == object and all(type(u) is str for u in uniq):
        return list(uniq)
    return [_label(u) for u in uniq]


def row_labels(df: pd.DataFrame, factors: tuple[str, ...]) -> np.ndarray:
    """Each row's level label of the grouping ``a:b:...`` as :func:`_grouping` spells it
    (object array; None where a value is missing)."""
    parts = []
    for f in factors:
        col = df[f]
        miss = col.isna().to_numpy()
        lab = np.array([None if m else _label(v) for v, m in zip(col.tolist(), miss)], dtype=object)
        parts.append(lab)
    out = parts[0]
    for lab in parts[1:]:
        out = np.array([None if a is None or b is None else f"{a}:{b}" for a, b in zip(out, lab)], dtype=object)
    return out


def _label(v) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _grouping(df: pd.DataFrame, factors: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
    codes, labels = _level_labels(df[factors[0]])
    for f in factors[1:]:
        c2, l2 = _level_labels(df[f])
        combined = codes * len(l2) + c2
        uniq, codes = np.unique(combined, return_inverse=True)
        labels = [f"{labels[u // len(l2)]}:{l2[u % len(l2)]}" for u in uniq]
    return codes.astype(np.int32), labels


def _aliased(X: np.ndarray, tol: float = 1e-7) -> list[int]:
    """Indices of columns in the span of the columns before them (R's pivoting rule)."""
    keep: list[int] = []
    drop: list[int] = []
    Q = np.zeros((X.shape[0], 0))
    for k in range(X.shape[1]):
        x = X[:, k]
        nx = np.linalg.norm(x)
        r = x - Q @ (Q.T @ x) if Q.shape[1] else x.copy()
        r = r - Q @ (Q.T @ r) if Q.shape[1] else r
        nr = np.linalg.norm(r)
        if nx == 0 or nr <= tol * nx:
            drop.append(k)
        else:
            keep.append(k)
            Q = np.column_stack([Q, r / nr])
    return drop


def _vector_argument(value, name: str, df: pd.DataFrame, n_total: int) -> tuple[np.ndarray | None, str | None]:
    """A weights/offset argument as a float array over all rows (or the column name it came from)."""
    if value is None:
        return None, None
    if isinstance(value, str):
        if value not in df.columns:
            raise ArgumentError(f"{name}={value!r}: no column {value!r} in data")
        col = df[value]
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            raise ArgumentError(f"{name} column {value!r} must be numeric")
        return col.to_numpy(dtype=np.float64, na_value=np.nan), value
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ArgumentError(f"{name} must be a column name or a numeric array") from None
    if arr.ndim != 1:
        raise ArgumentError(
            f"{name} must be a column name or a 1-D array with one value per row of data "
            f"({n_total}), got an array of shape {arr.shape}"
        )
    if arr.shape[0] != n_total:
        raise ArgumentError(f"{name} has length {arr.shape[0]} but data has {n_total} rows")
    return arr, None


def needed_columns(pf: ParsedFormula, columns: set[str]) -> dict[str, str]:
    """The data columns the formula uses (name -> where), in order of first use."""
    needed: dict[str, str] = {}
    # a response that is not a column is a Python expression (R's LHS is arithmetic, not terms)
    resp_vars = (
        {pf.response} if pf.response in columns
        else _required("{" + pf.response + "}", "response", repr(pf.response))
    )
    for v in resp_vars:
        needed.setdefault(v, "response")
    for v in _required(pf.fixed, "fixed-effects part"):
        needed.setdefault(v, "fixed effects")
    for t in pf.random:
        if t.expr.strip() not in ("1", "0 + 1"):
            for v in _required(t.expr, f"random-effects term {t}"):
                needed.setdefault(v, f"term {t}")
        for f in t.factors:
            needed.setdefault(f, f"grouping factor of {t}")
    return needed


def build_design(formula: str | ParsedFormula, data: Any, *, weights=None, offset=None,
                 extra_columns: dict[str, str] | None = None, require_random: bool = True,
                 chunk: bool = False, residual: bool = True) -> Design:
    """Validate the data against the formula and build the model matrices (before any compute).

    ``extra_columns`` (name -> what uses it, e.g. a correlation structure's group and time
    columns) must exist, take part in dropping rows with missing values, and come back in
    ``Design.aux`` for the rows used.

    ``chunk``: the data are one chunk of a larger table (``jaxlmm.outofcore``): no aliased
    columns are dropped, no level counts are checked and the terms keep the formula's order
    (all of that is decided on the whole table). ``residual=False`` (``glmer``): no residual
    variance, so a term may have as many levels as rows."""
    pf = formula if isinstance(formula, ParsedFormula) else parse_formula(formula)
    if require_random and not pf.random:
        raise FormulaError(
            f"formula {pf.formula!r} has no random-effects term such as (1 | group); "
            "lmer needs at least one"
        )
    columns = set(column_names(data))

    resp_is_col = pf.response in columns
    resp_expr = "{" + pf.response + "}"
    needed = needed_columns(pf, columns)
    for v, where in (extra_columns or {}).items():
        if v not in columns:
            raise DataError(f"unknown column {v!r} ({where}); data has columns {sorted(columns)}")
        needed.setdefault(v, where)
    for v, where in needed.items():
        if v not in columns:
            raise FormulaError(
                f"unknown column {v!r} ({where}) in formula {pf.formula!r}; "
                f"data has columns {sorted(columns)}"
            )
    # only the used columns of a polars / pyarrow / dict table are converted
    df = as_frame(data, [*needed, *(a for a in (weights, offset) if isinstance(a, str))])
    n_total = len(df)

    w_all, w_col = _vector_argument(weights, "weights", df, n_total)
    o_all, o_col = _vector_argument(offset, "offset", df, n_total)
    if w_all is not None:
        bad = ~np.isfinite(w_all) | (w_all < 0)
        if bad.any():
            k = int(np.nonzero(bad)[0][0])
            raise ArgumentError(f"weights must be finite and non-negative; row {k} has {w_all[k]}")
        if (w_all == 0).any():
            raise ArgumentError("weights must be positive: drop the rows with zero weight")
    if o_all is not None and np.isinf(o_all).any():
        k = int(np.nonzero(np.isinf(o_all))[0][0])
        raise ArgumentError(f"offset must be finite; row {k} has {o_all[k]}")

    used = list(needed)
    dup = sorted({str(c) for c in df.columns[df.columns.duplicated()]} & set(used))
    if dup:
        raise DataError(f"data has more than one column named {dup[0]!r}")
    sub = df[used]
    mask = ~sub.isna().any(axis=1).to_numpy()
    if o_all is not None:
        mask &= ~np.isnan(o_all)
    n_dropped = int(n_total - mask.sum())
    if not mask.any():
        raise DataError(
            f"no rows left after dropping rows with missing values in {sorted(used)}"
        )
    sub = sub.loc[mask]
    if not resp_is_col:
        yv, _, _ = _model_matrix("0 + " + resp_expr, sub, "response", repr(pf.response))
        if yv.shape[1] != 1:
            raise DataError(f"response {pf.response!r} must be one numeric column")
        y = yv[:, 0]
    else:
        col = sub[pf.response]
        if not residual and pd.api.types.is_bool_dtype(col):
            col = col.astype(np.float64)  # a binary response for glmer: True is 1
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            raise DataError(f"response column {pf.response!r} must be numeric, it has dtype {col.dtype}")
        y = col.to_numpy(dtype=np.float64)
        if not np.isfinite(y).all():
            raise DataError(f"response column {pf.response!r} has infinite values")

    X, x_names, x_spec = _model_matrix(pf.fixed, sub, "fixed-effects part")
    x_all_names = tuple(x_names)
    drop = [] if chunk else _aliased(X)
    dropped = tuple(x_names[k] for k in drop)
    if drop:
        warnings.warn(
            f"fixed-effect model matrix is rank deficient: dropping aliased column(s) "
            f"{', '.join(dropped)}",
            RankDeficiencyWarning,
            stacklevel=3,
        )
        keep = [k for k in range(X.shape[1]) if k not in drop]
        X = X[:, keep]
        x_names = [x_names[k] for k in keep]

    n = len(y)
    terms = []
    for t in pf.random:
        Zi, znames, zspec = _model_matrix(t.expr, sub, f"random-effects term {t}")
        if Zi.shape[1] == 0:
            raise FormulaError(f"random-effects term {t} has no columns")
        codes, labels = _grouping(sub, t.factors)
        if not chunk:
            check_levels(t, len(labels), Zi.shape[1], n, residual)
        terms.append(
            TermDesign(
                name=t.name, factors=t.factors, expr=t.expr, codes=codes, levels=tuple(labels),
                columns=Zi, column_names=tuple(znames), uncorrelated=t.uncorrelated, spec=zspec,
            )
        )
    nl = [t.n_levels for t in terms]
    if not chunk and any(b > a for a, b in zip(nl, nl[1:])):
        terms = [terms[k] for k in term_order(nl)]

    w = np.ones(n) if w_all is None else w_all[mask]
    off = np.zeros(n) if o_all is None else o_all[mask]
    return Design(
        formula=pf, response=pf.response, y=y, X=X, x_names=tuple(x_names), dropped_columns=dropped,
        weights=w, offset=off, terms=tuple(terms), n_dropped=n_dropped, row_index=sub.index,
        x_spec=x_spec, x_all_names=x_all_names, offset_column=o_col,
        aux=sub[list(extra_columns)] if extra_columns else None,
    )
