"""Property-based: whatever the data and the formula, a fit returns finite estimates or raises a
JaxlmmError (issue 14): never another exception type, never NaN.

Frames are drawn with random column dtypes (int8 ... uint64, bool, float32/64, nullable
integers, categories with unused levels, strings, datetimes, mixed objects) with NaN, inf and
None sprinkled in; formulas are drawn from valid and invalid lme4 formulas over those columns.
``JAXLMM_HYPOTHESIS_EXAMPLES`` sets the number of examples (default 40; the examples are
derandomised so that CI runs the same ones every time).
"""

import os
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxlmm
from jaxlmm.errors import JaxlmmError

EXAMPLES = int(os.environ.get("JAXLMM_HYPOTHESIS_EXAMPLES", "40"))

DTYPES = ["int8", "uint8", "int16", "int64", "uint64", "float32", "float64", "bool", "Int64", "category",
          "category_unused", "str", "datetime", "object_mixed"]

FORMULAS = [
    "y ~ x + (1 | g)",
    "y ~ x + (x | g)",
    "y ~ x + (x || g)",
    "y ~ I(x^2) + z + (1 | g) + (1 | h)",
    "y ~ x * z + (1 | g)",
    "y ~ poly(x, 2) + (1 | g)",
    "y ~ scale(x) + (1 | g:h)",
    "y ~ x + (1 | g/h)",
    "log(y) ~ x + (1 | g)",
    "y ~ x + offset(z) + (1 | g)",
    "y ~ C + (1 | g)",
    "y ~ `x y` + (1 | g)",
    "y ~ factor(x) + (1 | g)",
    "y ~ 0 + x + (1 | h)",
    "y ~ (1 | g) + (1 | h)",
    # invalid ones
    "y ~ x + (1 | )",
    "y ~ x + (1 | nope)",
    "y ~ x | g",
    "y ~ x + (1 | g",
    "y ~ ",
    "~ x + (1 | g)",
    "y ~ x + (x + 1 | g | h)",
    "y ~ x + (1 | log(g))",
    "y ~ nope(x) + (1 | g)",
    "y ~ x + offset(x, z) + (1 | g)",
    "y ~ I(x ^^ 2) + (1 | g)",
    "y ~ x + (0 | g)",
]


def _column(draw, dtype: str, n: int, rng: np.random.Generator) -> pd.Series:
    base = rng.normal(size=n) * draw(st.sampled_from([1.0, 1e-3, 1e3]))
    small = rng.integers(0, 5, n)
    if dtype in ("int8", "uint8", "int16", "int64", "uint64"):
        return pd.Series(small.astype(dtype))
    if dtype in ("float32", "float64"):
        return pd.Series(base.astype(dtype))
    if dtype == "bool":
        return pd.Series(small > 2)
    if dtype == "Int64":
        s = pd.Series(small, dtype="Int64")
        s[rng.random(n) < 0.1] = pd.NA
        return s
    if dtype == "category":
        return pd.Series(pd.Categorical(np.array(list("abc"))[small % 3]))
    if dtype == "category_unused":
        return pd.Series(pd.Categorical(np.array(list("abc"))[small % 3], categories=list("abcdz")))
    if dtype == "str":
        return pd.Series(np.array(["p", "q", "r", "s"])[small % 4])
    if dtype == "datetime":
        return pd.Series(pd.Timestamp("2024-01-01") + pd.to_timedelta(small, unit="D"))
    return pd.Series([1.5 if k % 2 else "w" for k in small], dtype=object)


@st.composite
def frames(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = draw(st.sampled_from([12, 30, 60]))
    g = rng.integers(0, draw(st.sampled_from([1, 3, 6])), n)
    h = rng.integers(0, 4, n)
    df = pd.DataFrame({
        "y": rng.normal(size=n) + g * 0.5 + rng.exponential(size=n) * 3,
        "g": pd.Series(g).astype(draw(st.sampled_from(["int64", "str", "category"]))),
        "h": np.array(["u", "v", "w", "x"])[h],
    })
    df["x"] = _column(draw, draw(st.sampled_from(DTYPES)), n, rng).to_numpy()
    df["z"] = _column(draw, draw(st.sampled_from(DTYPES)), n, rng).to_numpy()
    df["C"] = df["x"]
    df["x y"] = df["z"]
    for col in draw(st.lists(st.sampled_from(["y", "x", "z", "g"]), max_size=3)):
        kind = draw(st.sampled_from(["nan", "inf", "none"]))
        rows = rng.random(n) < 0.15
        if kind == "none":
            s = df[col].astype(object)
            s[rows] = None
            df[col] = s
        elif kind == "inf" and pd.api.types.is_float_dtype(df[col]):
            df.loc[rows, col] = np.inf
        elif pd.api.types.is_float_dtype(df[col]):
            df.loc[rows, col] = np.nan
    if draw(st.booleans()):
        df["y"] = draw(st.sampled_from([0.0, 1e200, -1.0])) + 0 * df["y"]  # constant / extreme / negative
    return df


def _finite(fit) -> bool:
    vals = [fit.objective, *np.ravel(fit.fixef.to_numpy()), *np.ravel(fit.theta), fit.sigma]
    return bool(np.all(np.isfinite(vals)))


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(df=frames(), formula=st.sampled_from(FORMULAS), how=st.sampled_from(["lmer", "lmer", "ml", "glmer"]))
def test_a_fit_is_finite_or_a_jaxlmm_error(df, formula, how):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if how == "glmer":
                data = df.assign(y=pd.to_numeric(df["y"], errors="coerce").round().abs().clip(upper=50))
                fit = jaxlmm.glmer(formula, data, "poisson")
            else:
                fit = jaxlmm.lmer(formula, df, reml=how == "lmer")
        except JaxlmmError:
            return
    assert _finite(fit), (formula, fit)


@pytest.mark.parametrize("formula", ["y ~ x + (1 | g)", "y ~ x + (x | g)"])
def test_every_dtype_either_fits_or_is_refused_clearly(formula):
    rng = np.random.default_rng(0)
    for dtype in DTYPES:
        df = pd.DataFrame({"y": rng.normal(size=40), "g": np.repeat(list("abcde"), 8)})
        df["x"] = _column(lambda s: 1.0, dtype, 40, rng).to_numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                fit = jaxlmm.lmer(formula, df)
            except JaxlmmError as e:
                assert dtype in ("datetime", "object_mixed"), (dtype, e)
                continue
        assert _finite(fit), dtype
