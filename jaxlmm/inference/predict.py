"""Predictions ``X_new beta + offset + sum_i Z_i,new b_i`` for the fitted rows or new data.

New rows are encoded with the fit's own formulaic specs and column aliases (same categorical
levels and contrasts, same transforms with the fit's state: ``poly``, ``scale``, ``center``,
splines), their grouping values matched to the fitted levels by label. A level of a fixed-effect
factor (or of a factor inside a random-effects term) not seen in the fit is an error, as in lme4;
a grouping level not seen in the fit gets the population value (``b = 0``), an error, or NaN, as
asked; rows with a missing value in a needed column predict NaN. ``offset(...)`` terms of the
formula are evaluated on the new rows; an offset given as a column is read from them.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ..terms.design import model_matrix
from ..terms.levels import row_labels
from ..errors import ArgumentError, DataError
from ..terms.frames import as_frame
from ..terms.rlang import closest

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
    formula_cols = list(design.fixed_variables)
    for o in design.offset_terms:
        formula_cols += o.variables
    if re:
        for t in design.terms:
            formula_cols += t.variables
    needed = list(dict.fromkeys(formula_cols))
    if re:
        needed += [f for t in design.terms for f in t.factors]
    if design.offset_column is not None:
        needed.append(design.offset_column)
    needed = list(dict.fromkeys(needed))
    missing = [v for v in needed if v not in df.columns]
    if missing:
        raise DataError(f"newdata lacks column {missing[0]!r} needed by the model (needs {sorted(needed)}); "
                        f"newdata: {closest(missing[0], df.columns)}")
    if design.offset_column is None and not design.offset_terms and np.any(design.offset != 0):
        raise ArgumentError(
            "the model was fitted with an offset array; predictions for newdata need the offset "
            "as a column: refit with offset='column name' or offset(...) in the formula"
        )
    ok = ~df[needed].isna().any(axis=1).to_numpy() if needed else np.ones(n, bool)
    eta = np.full(n, np.nan)
    if not ok.any():
        return pd.Series(eta, index=df.index, name="predicted")
    sub = df.loc[ok]
    enc = design.encoding
    frame = enc.frame(sub, dict.fromkeys(formula_cols), drop_unused=False)
    X = encode_new(design.x_spec, frame, "fixed-effects part", design.x_all_names, enc)
    keep = [design.x_all_names.index(c) for c in design.x_names]
    e = X[:, keep] @ beta
    if design.offset_column is not None:
        e = e + sub[design.offset_column].to_numpy(dtype=float)
    for o in design.offset_terms:
        e = e + encode_new(o.spec, frame, f"offset({o.expr})", None, enc)[:, 0]
    if re:
        bad = np.zeros(len(sub), bool)
        for t, b in zip(design.terms, fit._b):
            Z = encode_new(t.spec, frame, f"random-effects term {t.name}", t.column_names, enc)
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


def _check_levels(spec, frame: pd.DataFrame, what: str, enc) -> None:
    """A level of a categorical factor that the fit never saw is an error (lme4: "new levels"),
    not the baseline level in silence."""
    columns = {alias: column for column, alias in enc.aliases}
    for factor, (kind, state) in (getattr(spec, "encoder_state", None) or {}).items():
        if getattr(kind, "value", kind) != "categorical" or "categories" not in state or factor not in frame.columns:
            continue
        seen = set(state["categories"])
        values = pd.unique(frame[factor].dropna().astype(object))
        new = [v for v in values if v not in seen]
        if new:
            col = columns.get(factor, factor)
            raise DataError(
                f"newdata has level {new[0]!r} of {col!r} ({what}) not seen in the fit "
                f"(levels: {', '.join(map(repr, list(state['categories'])[:10]))}"
                f"{', ...' if len(state['categories']) > 10 else ''}); a fixed effect cannot be predicted for it"
            )


def encode_new(spec, frame: pd.DataFrame, what: str, expected, enc) -> np.ndarray:
    """The model matrix of new rows by a fit's formulaic ``spec`` (columns ``expected``), a level
    unseen in the fit refused as a DataError."""
    _check_levels(spec, frame, what, enc)
    from formulaic.errors import DataMismatchWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", DataMismatchWarning)
        try:
            M, names, _ = model_matrix(spec, frame, what, "", enc)
        except DataError:
            raise
        except Exception as e:  # a new level inside a transform such as C(x) or factor(x)
            msg = enc.display(str(e))
            if "not seen" in msg or "outside of the nominated levels" in msg:
                raise DataError(f"newdata has levels not seen in the fit in the {what}: {msg.split(': ', 1)[-1][:200]}") \
                    from None
            raise
    if expected is not None and tuple(names) != tuple(expected):
        raise DataError(
            f"newdata encodes the {what} as columns {names}, the fit had {list(expected)}: "
            "check the values of its categorical columns"
        )
    return M
