"""The data boundary: pandas, dicts, polars and pyarrow tables give the same fit."""

import numpy as np
import pandas as pd
import pytest

import jaxlmm
from jaxlmm import datasets
from jaxlmm.errors import DataError, FormulaError
from jaxlmm.terms.frames import as_frame, column_names

FORMULA = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def sleep():
    d = datasets.load("sleepstudy").copy()
    d["unused"] = "x"  # a column the formula does not use (never converted)
    return d


@pytest.fixture(scope="module")
def reference(sleep):
    return jaxlmm.lmer(FORMULA, sleep)


def _same(a, b):
    assert a.objective == pytest.approx(b.objective, rel=1e-12)
    np.testing.assert_allclose(a.fixef, b.fixef, rtol=1e-10)
    np.testing.assert_allclose(a.se, b.se, rtol=1e-9)
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(a.fitted.to_numpy(), b.fitted.to_numpy(), rtol=1e-9)
    assert list(a.fixef.index) == list(b.fixef.index)
    pd.testing.assert_frame_equal(a.ranef.reset_index(drop=True), b.ranef.reset_index(drop=True),
                                  check_exact=False, rtol=1e-7)


def test_dict_of_columns(sleep, reference):
    _same(jaxlmm.lmer(FORMULA, {c: sleep[c].to_numpy() for c in sleep.columns}), reference)


def test_pyarrow_table(sleep, reference):
    pa = pytest.importorskip("pyarrow")
    _same(jaxlmm.lmer(FORMULA, pa.Table.from_pandas(sleep, preserve_index=False)), reference)


def test_polars_frame(sleep, reference):
    pl = pytest.importorskip("polars")
    _same(jaxlmm.lmer(FORMULA, pl.from_pandas(sleep)), reference)


def test_only_used_columns_are_converted(sleep):
    pa = pytest.importorskip("pyarrow")
    t = pa.Table.from_pandas(sleep, preserve_index=False)
    assert column_names(t) == list(sleep.columns)
    assert list(as_frame(t, ["Days", "Subject", "nope"]).columns) == ["Days", "Subject"]
    assert list(as_frame({"a": [1, 2], "b": [3, 4]}, ["b"]).columns) == ["b"]


def _cake_like(n=60, seed=1):
    rng = np.random.default_rng(seed)
    levels = ["low", "mid", "high"]  # not alphabetical: the level order must survive
    return pd.DataFrame({
        "y": rng.normal(size=n), "dose": rng.choice(levels, n),
        "g": rng.integers(0, 6, n).astype(str),
    }), levels


def test_categorical_level_order_survives():
    """A categorical / enum column keeps its level order: the first level is the baseline."""
    d, levels = _cake_like()
    d["dose"] = pd.Categorical(d["dose"], categories=levels)
    ref = jaxlmm.lmer("y ~ dose + (1 | g)", d)
    assert list(ref.fixef.index) == ["(Intercept)", "dosemid", "dosehigh"]
    pa = pytest.importorskip("pyarrow")
    _same_fixef(jaxlmm.lmer("y ~ dose + (1 | g)", pa.Table.from_pandas(d, preserve_index=False)), ref)
    pl = pytest.importorskip("polars")
    pdf = pl.from_pandas(d.assign(dose=d["dose"].astype(str))).with_columns(pl.col("dose").cast(pl.Enum(levels)))
    _same_fixef(jaxlmm.lmer("y ~ dose + (1 | g)", pdf), ref)


def _same_fixef(a, b):
    assert list(a.fixef.index) == list(b.fixef.index)
    np.testing.assert_allclose(a.fixef, b.fixef, rtol=1e-10)


def test_bad_data_kinds():
    with pytest.raises(DataError, match="pandas DataFrame, a dict of columns, or a polars"):
        jaxlmm.lmer(FORMULA, [[1, 2, 3]])
    with pytest.raises(DataError, match="dict"):
        jaxlmm.lmer("y ~ 1 + (1 | g)", {"y": [1.0, 2.0, 3.0], "g": ["a", "b"]})


def test_unknown_column_named_for_polars(sleep):
    pl = pytest.importorskip("polars")
    with pytest.raises(FormulaError, match="unknown column 'Dayz'"):
        jaxlmm.lmer("Reaction ~ Dayz + (1 | Subject)", pl.from_pandas(sleep))
