"""Predictions ``X_new beta + offset + sum_i Z_i,new b_i`` for the fitted rows or new data.

New rows are encoded with the fit's own formulaic specs (same categorical levels and
contrasts, same transforms), their grouping values matched to the fitted levels by label. A
level not seen in the fit gets the population value (``b = 0``), an error, or NaN, as asked;
rows with a missing value in a needed column predict NaN.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .design import _model_matrix, row_labels
from .frames import as_frame
from .errors import ArgumentError, DataError

NEW_LEVELS = ("population", "error", "nan")


def predict(fit, newdata=None, re: bool = True, new_levels: str = "population") -> pd.Series:
    if new_levels not in NEW_LEVELS:
        raise ArgumentError(f"new_levels={new_levels!r} is not one of {NEW_LEVELS}")
    if not isinstance(re, (bool, np.bool_)):
        raise ArgumentError(f"re must be True or False, got {re!r}")
    design = fit._model.design
    beta = fit._fixef.to_numpy()
    if newdata is None:
        eta = design.X @ beta + design.offset
        if re:
            for t, b in zip(design.terms, fit._b):
                eta = eta + np.einsum("np,np->n", t.columns, b[t.codes])
        return pd.Series(eta, index=design.row_index, name="predicted")

    df = as_frame(newdata)
    n = len(df)
    needed = set(_fixed_variables(design))
    if re:
        for t in design.terms:
            needed |= set(t.factors) | _term_variables(t)
    if design.offset_column is not None:
        needed.add(design.offset_column)
    missing = sorted(v for v in needed if v not in df.columns)
    if missing:
        raise DataError(f"newdata lacks column {missing[0]!r} needed by the model (needs {sorted(needed)})")
    if design.offset_column is None and np.any(design.offset != 0):
        raise ArgumentError(
            "the model was fitted with an offset array; predictions for newdata need the offset "
            "as a column: refit with offset='column name'"
        )
    ok = ~df[sorted(needed)].isna().any(axis=1).to_numpy() if needed else np.ones(n, bool)
    eta = np.full(n, np.nan)
    if not ok.any():
        return pd.Series(eta, index=df.index, name="predicted")
    sub = df.loc[ok]
    X = _encode(design.x_spec, sub, "fixed-effects part", design.x_all_names)
    keep = [design.x_all_names.index(c) for c in design.x_names]
    e = X[:, keep] @ beta
    if design.offset_column is not None:
        e = e + sub[design.offset_column].to_numpy(dtype=float)
    if re:
        bad = np.zeros(len(sub), bool)
        for t, b in zip(design.terms, fit._b):
            Z = _encode(t.spec, sub, f"random-effects term {t.name}", t.column_names)
            labels = row_labels(sub, t.factors)
            index = {lv: k for k, lv in enumerate(t.levels)}
            codes = np.array([index.get(lv, -1) for lv in labels])
            new = codes < 0
            if new.any():
                if new_levels == "error":
                    first = labels[np.nonzero(new)[0][0]]
                    raise DataError(
                        f"newdata has level {first!r} of {t.name!r} not seen in the fit "
                        "(new_levels='population' predicts it at b = 0)"
                    )
                if new_levels == "nan":
                    bad |= new
            contrib = np.einsum("np,np->n", Z, b[np.maximum(codes, 0)])
            e = e + np.where(new, 0.0, contrib)
        e = np.where(bad, np.nan, e)
    eta[ok] = e
    return pd.Series(eta, index=df.index, name="predicted")


def _encode(spec, df: pd.DataFrame, what: str, expected) -> np.ndarray:
    M, names, _ = _model_matrix(spec, df, what)
    if tuple(names) != tuple(expected):
        raise DataError(
            f"newdata encodes the {what} as columns {names}, the fit had {list(expected)}: "
            "check the values of its categorical columns"
        )
    return M


def _fixed_variables(design) -> set[str]:
    spec = design.x_spec
    return {str(v) for v in spec.required_variables} if spec is not None else set()


def _term_variables(t) -> set[str]:
    return {str(v) for v in t.spec.required_variables} if t.spec is not None else set()
