"""From a parsed formula and a data frame to model matrices.

The response ``y (n,)``, fixed-effects matrix ``X (n, p)`` (float64, aliased columns dropped),
prior weights ``w (n,)``, offset ``(n,)``, and for each random-effects term its int32 level
codes ``(n,)`` and per-row columns ``Z_i (n, p_i)``. ``Z`` is never formed as an ``n x q``
matrix. Rows with a missing value in any column the model uses are dropped and counted.

The formula's R expressions reach formulaic through :mod:`jaxlmm.rlang` (R's names, ``^``,
columns that shadow functions, integer columns as float64); the ``Encoding`` and the formulaic
``ModelSpec`` of every part are kept, so new data are encoded the same way (:mod:`jaxlmm.predict`).
The level codes and labels of the grouping factors, and lme4's checks and order of the terms,
come from :mod:`jaxlmm.terms.levels`.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ArgumentError, DataError, FormulaError, JaxlmmError, RankDeficiencyWarning
from .formula import ParsedFormula, parse_formula
from .frames import as_frame, column_names
from .levels import check_levels, grouping, term_order
from .rlang import Code, Encoding, Translator, closest, context, tokenize


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
    variables: tuple[str, ...] = ()  # the data columns ``expr`` uses

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    @property
    def width(self) -> int:
        return self.columns.shape[1]


@dataclasses.dataclass(frozen=True)
class OffsetTerm:
    """An ``offset(expr)`` term of the formula: its formulaic ModelSpec and the columns it uses."""

    expr: str
    spec: Any
    variables: tuple[str, ...]


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
    offset_column: str | None = None  # the data column the offset argument came from, if any
    aux: pd.DataFrame | None = None  # extra columns (residual structures) for the rows used
    encoding: Encoding = Encoding()  # the formula's column aliases (jaxlmm.rlang)
    fixed_variables: tuple[str, ...] = ()  # the data columns the fixed part uses
    offset_terms: tuple[OffsetTerm, ...] = ()  # offset(...) terms of the formula
    responses: np.ndarray | None = None  # (n, B) responses given as an array (lmer_many), rows used

    @property
    def n(self) -> int:
        return self.y.shape[0]

    @property
    def p(self) -> int:
        return self.X.shape[1]


def r_style_name(name: str) -> str:
    """formulaic's column names in R's spelling: ``Intercept`` -> ``(Intercept)``, ``f[T.b]`` -> ``fb``
    (an integral level of a numeric column ``2.0`` -> ``2``, as R labels it)."""
    if name == "Intercept":
        return "(Intercept)"
    name = re.sub(r"\[T\.(-?\d+)\.0\]", r"[T.\1]", name)
    name = re.sub(r"\[T\.([^\]]*)\]", r"\1", name)
    return re.sub(r"\[([^\]]*)\]", r"\1", name)


MAX_MAGNITUDE = 1e150  # beyond this, sums of squares over the rows overflow float64


def model_matrix(expr, frame: pd.DataFrame, what: str, label: str, encoding: Encoding) -> tuple[np.ndarray, list[str], Any]:
    """``(matrix, R-style names, formulaic ModelSpec)`` of ``expr`` (formulaic code, or the
    ModelSpec of an earlier fit to encode new data the same way) on ``frame`` (built by
    ``encoding.frame``). Non-finite results (``log`` of a non-positive number) are refused."""
    import formulaic

    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):  # non-finite results are refused below
            warnings.simplefilter("ignore", FutureWarning)
            if isinstance(expr, str):
                mm = formulaic.model_matrix(expr, frame, na_action="ignore", context=context())
            else:
                mm = expr.get_model_matrix(frame, context=context())
    except JaxlmmError:
        raise
    except Exception as e:
        raise FormulaError(f"cannot build the model matrix of {what} {label}: {encoding.display(str(e))}") from None
    names = [r_style_name(encoding.display(str(c))) for c in mm.columns]
    arr = np.asarray(mm, dtype=np.float64).reshape(len(frame), len(names))
    bad = ~np.isfinite(arr)
    if bad.any():
        col = names[int(np.nonzero(bad.any(axis=0))[0][0])]
        raise DataError(f"{what} {label}: column {col!r} has non-finite values (e.g. log of a non-positive number)")
    huge = np.abs(arr) > MAX_MAGNITUDE
    if huge.any():
        col = names[int(np.nonzero(huge.any(axis=0))[0][0])]
        raise DataError(f"{what} {label}: column {col!r} has values beyond {MAX_MAGNITUDE:g} in size, whose products "
                        "overflow float64: rescale it")
    return arr, names, mm.model_spec


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


@dataclasses.dataclass(frozen=True)
class FormulaCode:
    """The parts of one formula as formulaic code against one table's columns (see
    :mod:`jaxlmm.rlang`): the response (``None``: the column ``response_column``, or responses
    given separately), the cbind counts, the fixed part, each bar's left side, the offsets."""

    response: Code | None
    response_column: str | None
    cbind: tuple[Code, Code] | None
    fixed: Code
    terms: tuple[Code, ...]
    offsets: tuple[Code, ...]
    encoding: Encoding

    def formula_columns(self) -> list[str]:
        """The columns formulaic evaluates (not the grouping factors)."""
        parts = [self.response, *(self.cbind or ()), self.fixed, *self.terms, *self.offsets]
        return list(dict.fromkeys(v for c in parts if c is not None for v in c.variables))


def _single_name(text: str, columns: set[str]) -> str | None:
    """The column ``text`` names when it is one (backtick-quoted or plain) name of a column."""
    toks = tokenize(text)
    if len(toks) == 1 and toks[0].kind == "name" and toks[0].text in columns:
        return toks[0].text
    return None


def formula_code(pf: ParsedFormula, columns) -> FormulaCode:
    """Translate every part of ``pf`` against ``columns`` (unknown columns are FormulaErrors)."""
    cols = [str(c) for c in columns]
    colset = set(cols)
    tr = Translator(cols, pf.formula)
    response, response_column, cb = None, None, None
    if pf.cbind is not None:
        cb = tuple(tr.code(a, f"cbind() of {pf.response!r}", power_everywhere=True) for a in pf.cbind)
    elif pf.response is not None:
        response_column = _single_name(pf.response, colset)
        if response_column is None:
            response = tr.code(pf.response, "response", power_everywhere=True)
    fixed = tr.code(pf.fixed, "fixed effects")
    terms = tuple(tr.code(t.expr, f"term {t}") for t in pf.random)
    for t in pf.random:
        for f in t.factors:
            if f not in colset:
                raise FormulaError(f"unknown column {f!r} (grouping factor of {t}) in formula {pf.formula!r}; "
                                   f"{closest(f, cols)}")
    offsets = tuple(tr.code(o, f"offset({o})", power_everywhere=True) for o in pf.offsets)
    return FormulaCode(response=response, response_column=response_column, cbind=cb, fixed=fixed, terms=terms,
                       offsets=offsets, encoding=tr.encoding())


def needed_columns(pf: ParsedFormula, columns: set[str]) -> dict[str, str]:
    """The data columns the formula uses (name -> where), in order of first use; a column the
    formula names that ``columns`` lacks is a FormulaError."""
    code = formula_code(pf, columns)
    needed: dict[str, str] = {}
    if code.response_column is not None:
        needed[code.response_column] = "response"
    for c in [code.response, *(code.cbind or ())]:
        for v in (c.variables if c is not None else ()):
            needed.setdefault(v, "response")
    for v in code.fixed.variables:
        needed.setdefault(v, "fixed effects")
    for t, c in zip(pf.random, code.terms):
        for v in c.variables:
            needed.setdefault(v, f"term {t}")
        for f in t.factors:
            needed.setdefault(f, f"grouping factor of {t}")
    for o, c in zip(pf.offsets, code.offsets):
        for v in c.variables:
            needed.setdefault(v, f"offset({o})")
    return needed


def check_varies(y: np.ndarray, label: str) -> None:
    """lme4 refuses a constant response (``check.response.not.const``): nothing to fit."""
    if y.size and np.all(y == y[0]):
        raise DataError(f"response {label} is constant (every row used is {y[0]:g}): there is nothing to fit")


def build_design(formula: str | ParsedFormula, data: Any, *, weights=None, offset=None,
                 extra_columns: dict[str, str] | None = None, require_random: bool = True,
                 chunk: bool = False, residual: bool = True, responses: np.ndarray | None = None,
                 caller: str = "lmer") -> Design:
    """Validate the data against the formula and build the model matrices (before any compute).

    ``extra_columns`` (name -> what uses it, e.g. a correlation structure's group and time
    columns) must exist, take part in dropping rows with missing values, and come back in
    ``Design.aux`` for the rows used. ``responses`` ``(len(data), B)``: responses given as an
    array instead of the formula's left side (which may then be empty); they take part in
    dropping rows too and come back in ``Design.responses`` (``y`` is the first).

    ``chunk``: the data are one chunk of a larger table (``jaxlmm.outofcore``): no aliased
    columns are dropped, no level counts are checked, categories are kept as given and the
    terms keep the formula's order (all of that is decided on the whole table).
    ``residual=False`` (``glmer``): no residual variance, so a term may have as many levels as
    rows. ``caller`` names the function in messages. A constant response is refused, as lme4
    does."""
    pf = formula if isinstance(formula, ParsedFormula) else parse_formula(formula, response_required=responses is None)
    if require_random and not pf.random:
        raise FormulaError(
            f"formula {pf.formula!r} has no random-effects term such as (1 | group); "
            f"{caller} needs at least one"
        )
    if pf.response is None and responses is None:
        raise FormulaError(f"formula {pf.formula!r} has no response left of '~'")
    if pf.cbind is not None and residual:
        raise FormulaError(f"a cbind(successes, failures) response is for glmer's binomial family, not {caller}")
    columns = column_names(data)
    colset = set(columns)
    if responses is not None:  # the formula's left side, if any, is replaced
        pf = dataclasses.replace(pf, response=None, cbind=None)
    code = formula_code(pf, columns)
    needed = needed_columns(pf, colset)
    for v, where in (extra_columns or {}).items():
        if v not in colset:
            raise DataError(f"unknown column {v!r} ({where}); {closest(v, columns)}")
        needed.setdefault(v, where)
    arg_cols = [a for a in (weights, offset) if isinstance(a, str)]
    # only the used columns of a polars / pyarrow / dict table are converted
    df = as_frame(data, [*needed, *arg_cols])
    n_total = len(df)
    used = list(needed)
    dup = sorted({str(c) for c in df.columns[df.columns.duplicated()]} & (set(used) | set(arg_cols)))
    if dup:
        raise DataError(f"data has more than one column named {dup[0]!r}")

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
    Y_all = None
    if responses is not None:
        Y_all = np.asarray(responses, dtype=np.float64)
        if Y_all.ndim != 2 or Y_all.shape[0] != n_total:
            raise ArgumentError(f"responses must be an array of {n_total} rows, got shape {Y_all.shape}")

    sub = df[used]
    mask = ~sub.isna().any(axis=1).to_numpy()
    if o_all is not None:
        mask &= ~np.isnan(o_all)
    if Y_all is not None:
        mask &= ~np.isnan(Y_all).any(axis=1)
    n_dropped = int(n_total - mask.sum())
    if not mask.any():
        raise DataError(
            f"no rows left after dropping rows with missing values in {sorted(used)}"
        )
    sub = sub.loc[mask]
    enc = code.encoding
    frame = enc.frame(sub, code.formula_columns(), drop_unused=not chunk)

    def matrix(c: Code, what: str, label: str):
        return model_matrix(c.text, frame, what, label, enc)

    def one_column(c: Code, what: str, label: str) -> np.ndarray:
        for var in c.variables:
            col = sub[var]
            if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)) \
                    or isinstance(col.dtype, pd.CategoricalDtype):
                raise DataError(f"{what} {label} must be numeric; column {var!r} has dtype {col.dtype}")
        v, _, _ = model_matrix("0 + {" + c.text + "}", frame, what, label, enc)
        if v.shape[1] != 1:
            raise DataError(f"{what} {label} must be one numeric column")
        return v[:, 0]

    trials = None
    resp_label = repr(pf.response)
    if Y_all is not None:
        Y = Y_all[mask]
        if not np.isfinite(Y).all():
            raise DataError("responses have infinite values")
        y = Y[:, 0]
        response = "y"
    elif code.cbind is not None:
        s_, f_ = (one_column(c, "cbind() count", repr(a)) for c, a in zip(code.cbind, pf.cbind))
        for v, a in ((s_, pf.cbind[0]), (f_, pf.cbind[1])):
            bad = (v < 0) | (v != np.round(v))
            if bad.any():
                k = int(np.nonzero(bad)[0][0])
                raise DataError(f"cbind() counts must be non-negative whole numbers; {a!r} is {v[k]:g} "
                                f"in row {sub.index[k]!r}")
        if weights is not None:
            raise ArgumentError("a cbind(successes, failures) response gives the trials; leave weights=None")
        trials = s_ + f_
        zero = trials == 0
        if zero.any():
            k = int(np.nonzero(zero)[0][0])
            raise DataError(f"cbind() row {sub.index[k]!r} has no trials (0 successes and 0 failures): drop it")
        y = s_ / trials
        response = f"cbind({pf.cbind[0]}, {pf.cbind[1]})"
        resp_label = repr(response)
    elif code.response_column is not None:
        response = pf.response
        col = sub[code.response_column]
        if not residual and pd.api.types.is_bool_dtype(col):
            col = col.astype(np.float64)  # a binary response for glmer: True is 1
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            raise DataError(f"response column {code.response_column!r} must be numeric, it has dtype {col.dtype}")
        y = col.to_numpy(dtype=np.float64)
        if not np.isfinite(y).all():
            raise DataError(f"response column {code.response_column!r} has infinite values")
        if np.abs(y).max() > MAX_MAGNITUDE:
            raise DataError(f"response column {code.response_column!r} has values beyond {MAX_MAGNITUDE:g} in size, "
                            "whose squares overflow float64: rescale it")
    else:
        response = pf.response
        y = one_column(code.response, "response", repr(pf.response))
    if not chunk and Y_all is None:  # (responses given as an array: the caller checks them)
        check_varies(y, resp_label)

    X, x_names, x_spec = matrix(code.fixed, "fixed-effects part", repr(pf.fixed))
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
    for t, c in zip(pf.random, code.terms):
        Zi, znames, zspec = matrix(c, "random-effects term", str(t))
        if Zi.shape[1] == 0:
            raise FormulaError(f"random-effects term {t} has no columns")
        codes, labels = grouping(sub, t.factors)
        if not chunk:
            check_levels(t, len(labels), Zi.shape[1], n, residual)
        terms.append(
            TermDesign(
                name=t.name, factors=t.factors, expr=t.expr, codes=codes, levels=tuple(labels),
                columns=Zi, column_names=tuple(znames), uncorrelated=t.uncorrelated, spec=zspec,
                variables=c.variables,
            )
        )
    nl = [t.n_levels for t in terms]
    if not chunk and any(b > a for a, b in zip(nl, nl[1:])):
        terms = [terms[k] for k in term_order(nl)]

    w = np.ones(n) if w_all is None else w_all[mask]
    if trials is not None:
        w = trials
    off = np.zeros(n) if o_all is None else o_all[mask]
    offset_terms = []
    for o, c in zip(pf.offsets, code.offsets):
        v, _, spec = model_matrix("0 + {" + c.text + "}", frame, "offset", f"offset({o})", enc)
        if v.shape[1] != 1:
            raise DataError(f"offset({o}) must be one numeric column")
        off = off + v[:, 0]
        offset_terms.append(OffsetTerm(expr=o, spec=spec, variables=c.variables))
    return Design(
        formula=pf, response=response, y=y, X=X, x_names=tuple(x_names), dropped_columns=dropped,
        weights=w, offset=off, terms=tuple(terms), n_dropped=n_dropped, row_index=sub.index,
        x_spec=x_spec, x_all_names=x_all_names, offset_column=o_col,
        aux=sub[list(extra_columns)] if extra_columns else None,
        encoding=enc, fixed_variables=code.fixed.variables, offset_terms=tuple(offset_terms),
        responses=Y if Y_all is not None else None,
    )
