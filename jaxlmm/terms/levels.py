"""Grouping factors of random-effects terms: level codes, labels and lme4's checks.

A grouping variable of ``n`` rows becomes integer codes ``(n,)`` into its levels and one label
per level: a Categorical's used categories in their order, any other column's distinct values
sorted (labels as R prints them: an integral float ``2.0`` is ``"2"``). A grouping ``a:b:...``
is the interaction of its factors: the level pairs that occur, numbered by
``code_a * n_b + code_b`` in sorted order, labelled ``"la:lb"``, with int32 codes. lme4's
identifiability checks of a term's number of levels and lme4's order of the terms (by
decreasing number of levels) live here too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import DataError


def level_label(v) -> str:
    """The label of one level value: ``str(v)``, an integral float without its ``.0`` (as R)."""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _labels(uniq: np.ndarray) -> list[str]:
    """:func:`level_label` of each sorted unique value, vectorised for integer and string arrays."""
    if uniq.dtype.kind in "iu":
        return uniq.astype(str).tolist()
    if uniq.dtype.kind == "f" and np.all(np.isfinite(uniq)) and np.all(uniq == np.round(uniq)) \
            and np.all(np.abs(uniq) < 2**53):
        return uniq.astype(np.int64).astype(str).tolist()
    if uniq.dtype == object and all(type(u) is str for u in uniq):
        return list(uniq)
    return [level_label(u) for u in uniq]


def level_labels(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Integer codes and labels of a grouping variable (categorical whatever its dtype)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        cat = values.cat.remove_unused_categories()
        return cat.cat.codes.to_numpy().astype(np.int64), [level_label(c) for c in cat.cat.categories]
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


def grouping(df: pd.DataFrame, factors: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
    """int32 codes ``(n,)`` and labels ``a:b:...`` of the levels of the interaction of ``factors``
    that occur in ``df`` (sorted by the codes of the first factor, then the next, ...)."""
    codes, labels = level_labels(df[factors[0]])
    for f in factors[1:]:
        c2, l2 = level_labels(df[f])
        combined = codes * len(l2) + c2
        uniq, codes = np.unique(combined, return_inverse=True)
        labels = [f"{labels[u // len(l2)]}:{l2[u % len(l2)]}" for u in uniq]
    return codes.astype(np.int32), labels


def row_labels(df: pd.DataFrame, factors: tuple[str, ...]) -> np.ndarray:
    """Each row's level label of the grouping ``a:b:...`` as :func:`grouping` spells it
    (object array; None where a value is missing)."""
    parts = []
    for f in factors:
        col = df[f]
        miss = col.isna().to_numpy()
        lab = np.array([None if m else level_label(v) for v, m in zip(col.tolist(), miss)], dtype=object)
        parts.append(lab)
    out = parts[0]
    for lab in parts[1:]:
        out = np.array([None if a is None or b is None else f"{a}:{b}" for a, b in zip(out, lab)], dtype=object)
    return out


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
