"""The data boundary: any table in, pandas columns out.

jaxlmm computes on pandas columns. Data may come as a pandas DataFrame, a dict of columns
(arrays or lists of one length), or any eager table that narwhals understands (polars, pyarrow
``Table``, modin, cuDF, ...). Column names are read first, without converting anything; then only
the columns a model uses are converted to pandas. Categorical and enum columns stay categorical
with their level order (polars ``Enum`` / ``Categorical``, pyarrow dictionary columns).
"""

from __future__ import annotations

from typing import Any, Iterable

import pandas as pd

from ..errors import DataError

_KINDS = "a pandas DataFrame, a dict of columns, or a polars / pyarrow (narwhals-compatible) table"


def _narwhals(data: Any):
    """``data`` as an eager narwhals DataFrame, or None when narwhals does not know it."""
    try:
        import narwhals.stable.v2 as nw
    except ImportError:  # narwhals is a dependency; without it only pandas and dicts work
        return None
    try:
        frame = nw.from_native(data, eager_only=True, pass_through=True)
    except Exception:
        return None
    return frame if isinstance(frame, nw.DataFrame) else None


def column_names(data: Any) -> list[str]:
    """The table's column names (nothing converted)."""
    if isinstance(data, pd.DataFrame):
        return [str(c) for c in data.columns]
    if isinstance(data, dict):
        return [str(c) for c in data]
    frame = _narwhals(data)
    if frame is None:
        raise DataError(f"data must be {_KINDS}; got {type(data).__name__}")
    return list(frame.columns)


def as_frame(data: Any, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """``data`` as a pandas DataFrame; for non-pandas input only ``columns`` (those present,
    default all) are converted. A pandas DataFrame is returned as it is (no copy)."""
    if isinstance(data, pd.DataFrame):
        return data
    want = None if columns is None else list(dict.fromkeys(str(c) for c in columns))
    if isinstance(data, dict):
        keys = {str(k): k for k in data}
        pick = list(keys) if want is None else [c for c in want if c in keys]
        try:
            return pd.DataFrame({c: data[keys[c]] for c in pick})
        except (ValueError, TypeError) as e:
            raise DataError(f"cannot make a table from the dict given as data: {e}") from None
    frame = _narwhals(data)
    if frame is None:
        raise DataError(f"data must be {_KINDS}; got {type(data).__name__}")
    if want is not None:
        frame = frame.select([c for c in want if c in set(frame.columns)])
    try:
        return frame.to_pandas()
    except Exception as e:  # a backend that cannot export to pandas (pyarrow missing, ...)
        raise DataError(f"cannot convert the {type(data).__name__} given as data to pandas: {e}") from None
