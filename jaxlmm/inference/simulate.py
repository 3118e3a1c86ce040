"""Simulation from a fitted model, refits to new responses, and the parametric bootstrap.

``y* = X beta + offset + sum_i Z_i b_i* + sigma e / sqrt(w)`` with ``b_i* = sigma u T_i'``,
``u, e ~ N(0, I)`` (new random effects, lme4's default) or ``b_i* = b_i`` (conditional modes).

The bootstrap refits every replicate with one compiled, vmapped program (:mod:`jaxlmm.batch`).
"""

from __future__ import annotations

import numbers
import time

import numpy as np
import pandas as pd

from ..arguments import (
    check_memory,
    check_seed,
    optional_positive_int,
    positive_int,
    random_generator,
)
from ..lmm.batch import fit_many
from ..lmm.engine import fit_model
from ..lmm.fit import optimizer_of
from ..covariance.templates import templates_np
from ..errors import ArgumentError, DataError, InferenceWarning, warn_unconverged
from ..lmm.model import model_with_response


def check_simulation(fit, n, seed, re) -> int:
    """Validate ``simulate``/``bootstrap`` arguments before any draw: ``n`` a positive integer
    whose ``(nobs, n)`` responses and their working arrays fit in memory, ``seed`` (see
    :func:`jaxlmm.arguments.check_seed`), ``re`` a bool. Returns ``n`` as an int."""
    n = positive_int(n, "n")
    check_seed(seed)
    if not isinstance(re, (bool, np.bool_)):
        raise ArgumentError(f"re must be True or False, got {re!r}")
    design = fit._model.design
    # the responses, one (n, nobs, width) array of random effects per term and two
    # (nobs, n) temporaries: a bound of the peak of simulate_matrix (and of the DataFrame)
    width = max((t.width for t in design.terms), default=0)
    check_memory(8.0 * design.n * n * (3 + width), "n",
                 f"{n} simulated responses of {design.n} rows (float64, with working arrays)")
    return n


def simulate_matrix(fit, n: int, seed=None, re: bool = True) -> np.ndarray:
    """``(nobs, n)`` simulated responses (see module docstring)."""
    n = check_simulation(fit, n, seed, re)
    try:
        return _simulate_matrix(fit, n, random_generator(seed), re)
    except MemoryError:  # less free memory than the machine has
        raise ArgumentError(f"n is too large: {n} simulated responses of {fit._model.design.n} rows do not fit in "
                            "the memory free now; use a smaller n") from None


def _simulate_matrix(fit, n: int, rng: np.random.Generator, re: bool) -> np.ndarray:
    design = fit._model.design
    sigma = fit.sigma
    eta = design.X @ fit._fixef.to_numpy() + design.offset
    Y = np.repeat(eta[:, None], n, axis=1)
    Ts = templates_np(fit.theta, fit._model.specs)
    for t, T, b in zip(design.terms, Ts, fit._b):
        if re:
            u = rng.standard_normal((n, t.n_levels, t.width))
            bs = sigma * u @ T.T  # (n, levels, p)
            Y += np.einsum("ik,sik->is", t.columns, bs[:, t.codes, :])
        else:
            Y += np.einsum("ik,ik->i", t.columns, b[t.codes])[:, None]
    Y += sigma * rng.standard_normal(Y.shape) / np.sqrt(design.weights)[:, None]
    return Y


def simulate(fit, n: int = 1, seed=None, re: bool = True) -> pd.DataFrame:
    Y = simulate_matrix(fit, n, seed, re)
    cols = [f"sim_{k + 1}" for k in range(Y.shape[1])]
    return pd.DataFrame(Y, index=fit._model.design.row_index, columns=cols)


_NUMERIC_OBJECTS = ("integer", "floating", "mixed-integer-float", "decimal", "empty")


def _missing(v) -> bool:
    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, (float, np.floating)) and np.isnan(v))


def _spells_number(v) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def _real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def _aligned(y: pd.Series, rows: pd.Index, name: str) -> pd.Series:
    """``y`` in the order of the rows the fit used, matched by label as pandas matches; labels of
    rows the fit did not use (dropped for missing values) are ignored. A Series whose labels do
    not cover those rows is an ArgumentError: matching by position could pair the wrong rows."""
    if y.index.equals(rows):
        return y
    if not y.index.is_unique:
        raise ArgumentError(f"{name} is a Series with duplicate index labels; the fit matches it to its rows by "
                            f"label: pass {name}.to_numpy() to match by position")
    missing = rows[~rows.isin(y.index)]
    if len(missing):
        raise ArgumentError(f"{name} is a Series whose index lacks label {missing[0]!r} of a row the fit used "
                            f"({len(missing)} such labels); the fit matches a Series to its rows by label: pass "
                            f"{name}.to_numpy() to match by position")
    return y.loc[rows]


def response_vector(fit, y, *, booleans: bool = False, name: str = "y", rows: pd.Index | None = None) -> np.ndarray:
    """A new response for ``fit.refit``: one finite number per row used, as float64 ``(nobs,)``.

    ``y``: a sequence, a 1-D array (or an ``(nobs, 1)`` column), matched to the rows by
    position, or a Series or one-column DataFrame, matched by index label. Strings (even ``"1.5"``), complex numbers, dates and other non-numbers are a
    DataError, so are booleans unless ``booleans`` (a binomial response), and missing or
    infinite values; a wrong shape or length is an ArgumentError. All name ``name``. ``rows``:
    the labels of the rows the fit used (default: its design's).
    """
    nobs = fit.nobs
    want = f"one number per row used in the fit ({nobs})"
    if isinstance(y, pd.DataFrame):
        if y.shape[1] != 1:
            cols = ", ".join(repr(str(c)) for c in list(y.columns)[:5]) + (", ..." if y.shape[1] > 5 else "")
            raise ArgumentError(f"{name} is a DataFrame with {y.shape[1]} columns ({cols}); pass one column: {want}")
        y = y.iloc[:, 0]
    if isinstance(y, pd.Series):
        y = _aligned(y, fit._model.design.row_index if rows is None else rows, name)
    if isinstance(y, (str, bytes, dict, set)) or y is None:
        raise ArgumentError(f"{name} must be an array or Series of {want}, got {type(y).__name__}")
    if isinstance(y, pd.Series):
        if pd.api.types.is_bool_dtype(y.dtype):
            arr = y.to_numpy(dtype=object) if y.hasnans else y.to_numpy(dtype=bool)
        elif pd.api.types.is_numeric_dtype(y.dtype) and not pd.api.types.is_complex_dtype(y.dtype):
            arr = y.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            arr = y.to_numpy(dtype=object)
    else:
        try:
            arr = np.asarray(y)
        except (TypeError, ValueError) as e:  # ragged nesting and the like
            raise ArgumentError(f"{name} must be an array of {want}: {e}") from None
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ArgumentError(f"{name} must be one-dimensional, {want}; got an array of shape {arr.shape}")
    if len(arr) != nobs:
        raise ArgumentError(f"{name} has {len(arr)} values but the fit used {nobs} rows; pass {want}")
    kind = arr.dtype.kind
    if kind == "O":
        inferred = pd.api.types.infer_dtype(arr, skipna=True)
        if inferred == "boolean":
            kind = "b"
        elif inferred in _NUMERIC_OBJECTS:
            arr = pd.to_numeric(pd.Series(arr), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            kind = "f"
        else:
            bad = next((v for v in arr if not _missing(v) and not _real(v)), arr[0])
            raise DataError(f"{name} must be numeric; it holds {inferred} values such as {bad!r}")
    if kind == "b":
        if not booleans:
            raise DataError(f"{name} is boolean (True/False); refit needs numbers: convert it (e.g. "
                            f"{name}.astype(float)) if 0/1 is meant")
        if any(_missing(v) for v in arr):
            raise DataError(f"{name} has missing values; refit needs a complete response")
        arr = arr.astype(np.float64)
    elif kind in "US":
        shown = next((v for v in arr if not _spells_number(v)), arr[0])  # numpy turned numbers into text too
        raise DataError(f"{name} must be numeric; it holds strings such as {str(shown)!r} (convert them first)")
    elif kind == "c":
        raise DataError(f"{name} must be real numbers; it holds complex values such as {complex(arr[0])!r}")
    elif kind not in "iuf":
        raise DataError(f"{name} must be numeric; it has dtype {arr.dtype}")
    y = arr.astype(np.float64)
    bad = ~np.isfinite(y)
    if bad.any():
        k = int(np.argmax(bad))
        what = "missing" if np.isnan(y[k]) else "infinite"
        m = int(bad.sum())
        raise DataError(f"{name} has {m} missing or infinite value{'s' if m > 1 else ''} (the first, {what}, at "
                        f"position {k}); refit needs a complete response")
    return y


def refit(fit, y):
    model = model_with_response(fit._model, response_vector(fit, y))
    return fit_model(model, reml=fit.reml, stacklevel=4, result_type=type(fit),
                     optimizer=optimizer_of(fit))


def refit_many(fit, Y: np.ndarray, batch_size: int | None = None, max_iter: int = 1000) -> dict:
    """Refit responses ``Y (nobs, B)`` with one vmapped program (see :mod:`jaxlmm.batch`)."""
    return fit_many(fit._model, Y, fit.theta, fit.reml, batch_size=batch_size, max_iter=max_iter)


def bootstrap(fit, n: int = 1000, seed=None, batch_size: int | None = None) -> pd.DataFrame:
    n = check_simulation(fit, n, seed, True)
    batch_size = optional_positive_int(batch_size, "batch_size")
    t0 = time.perf_counter()
    Y = simulate_matrix(fit, n, seed, re=True)
    r = refit_many(fit, Y, batch_size=batch_size)
    conv = r["converged"]
    sd = r["sdcor"]
    frame = pd.DataFrame(r["beta"], columns=list(fit._fixef.index))
    for k, name in enumerate(fit._sdcor_names):
        frame[name] = np.abs(sd[:, k]) if name.startswith("sd_") or name == "sigma" else sd[:, k]
    frame["objective"] = r["objective"]
    frame["converged"] = conv
    frame.index.name = "replicate"
    frame.attrs["seconds"] = time.perf_counter() - t0
    warn_unconverged(conv, "bootstrap replicates", InferenceWarning, stacklevel=3)
    return frame
