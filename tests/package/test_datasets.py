"""Bundled example data sets: shapes, string grouping columns, names, formulas."""

from __future__ import annotations

import pandas as pd
import pytest

from jaxlmm import datasets
from jaxlmm.errors import DataError, JaxlmmError

SHAPES = {
    "sleepstudy": (180, 3),
    "dyestuff": (30, 2),
    "dyestuff2": (30, 2),
    "penicillin": (144, 3),
    "pastes": (60, 4),
    "classroom": (18, 5),
    "orthodont": (108, 5),
    "cbpp": (56, 5),
}

GROUPING = {
    "sleepstudy": ["Subject"],
    "dyestuff": ["Batch"],
    "dyestuff2": ["Batch"],
    "penicillin": ["plate", "sample"],
    "pastes": ["batch", "cask", "sample"],
    "classroom": ["classroom"],
    "orthodont": ["Subject"],
    "cbpp": ["herd", "period"],
}


def test_names_and_examples_cover_the_same_sets():
    assert datasets.names() == list(SHAPES)
    assert set(datasets.EXAMPLES) == set(SHAPES)
    assert all("~" in f for f in datasets.EXAMPLES.values())


def test_canonical_formulas():
    ex = datasets.EXAMPLES
    assert ex["sleepstudy"] == "Reaction ~ Days + (Days | Subject)"
    assert ex["dyestuff"] == "Yield ~ 1 + (1 | Batch)"
    assert ex["dyestuff2"] == "Yield ~ 1 + (1 | Batch)"
    assert ex["penicillin"] == "diameter ~ 1 + (1 | plate) + (1 | sample)"
    assert ex["pastes"] == "strength ~ 1 + (1 | batch/cask)"
    assert ex["classroom"] == "score ~ noise + gender + (1 | classroom)"


@pytest.mark.parametrize("name", list(SHAPES))
def test_load_shape_and_no_missing(name):
    df = datasets.load(name)
    assert isinstance(df, pd.DataFrame)
    assert df.shape == SHAPES[name]
    assert not df.isna().any().any()


@pytest.mark.parametrize("name", list(SHAPES))
def test_grouping_columns_are_strings(name):
    df = datasets.load(name)
    for col in GROUPING[name]:
        assert all(isinstance(v, str) for v in df[col]), col
    # the response (first column of every example formula) is numeric
    response = datasets.EXAMPLES[name].split("~")[0].strip()
    if response.startswith("cbind("):  # a binomial response: successes and trials
        response = "incidence"
    assert pd.api.types.is_numeric_dtype(df[response])


def test_sleepstudy_contents():
    df = datasets.load("sleepstudy")
    assert list(df.columns) == ["Reaction", "Days", "Subject"]
    assert df["Subject"].iloc[0] == "308"
    assert df["Subject"].nunique() == 18
    assert sorted(df["Days"].unique()) == list(range(10))
    assert df["Reaction"].iloc[0] == pytest.approx(249.56)


def test_design_structure_of_lme4_sets():
    pen = datasets.load("penicillin")
    assert pen["plate"].nunique() == 24 and pen["sample"].nunique() == 6
    pastes = datasets.load("pastes")
    assert pastes["batch"].nunique() == 10
    assert pastes["cask"].nunique() == 3
    assert pastes["sample"].nunique() == 30
    dye = datasets.load("dyestuff")
    assert dye["Batch"].value_counts().tolist() == [5] * 6


def test_load_is_case_insensitive_and_returns_fresh_copies():
    a = datasets.load("SleepStudy")
    b = datasets.load(" sleepstudy ")
    pd.testing.assert_frame_equal(a, b)
    a.loc[0, "Reaction"] = -1.0
    assert datasets.load("sleepstudy").loc[0, "Reaction"] == pytest.approx(249.56)


def test_unknown_name_lists_available():
    with pytest.raises(DataError) as info:
        datasets.load("nosuchdata")
    msg = str(info.value)
    assert "nosuchdata" in msg
    for name in SHAPES:
        assert name in msg
    assert isinstance(info.value, JaxlmmError)


def test_classroom_design():
    df = datasets.load("classroom")
    assert len(df) == 18
    assert list(df.columns) == ["student", "classroom", "noise", "gender", "score"]
    sizes = df.groupby("classroom", sort=False).size()
    assert list(sizes.index) == ["A", "B", "C", "D"]
    assert sizes.tolist() == [5, 4, 5, 4]
    noise = df.groupby("classroom", sort=False)["noise"].agg(["min", "max"])
    assert (noise["min"] == noise["max"]).all()  # noise is constant within a classroom
    assert noise["min"].tolist() == [10, 4, 6, 8]
    assert set(df["gender"]) == {"F", "M"}
    assert df["student"].is_unique
    assert pd.api.types.is_float_dtype(df["score"])
    assert (df["score"].round(1) == df["score"]).all()


def test_classroom_csv_matches_generator():
    from jaxlmm.datasets import make_classroom

    expected = make_classroom.simulate()
    got = datasets.load("classroom")
    pd.testing.assert_frame_equal(
        got.astype({"score": float}),
        expected.astype({c: str for c in ("student", "classroom", "gender")}),
        check_dtype=False,
    )
    # a different seed gives different scores (the seed is what pins the data)
    other = make_classroom.simulate(seed=1)
    assert not other["score"].equals(expected["score"])


def test_classroom_generator_writes_csv(tmp_path):
    from jaxlmm.datasets import make_classroom

    out = tmp_path / "classroom.csv"
    assert make_classroom.main([str(out)]) == 0
    written = pd.read_csv(out)
    assert written.shape == (18, 5)
    shipped = datasets.load("classroom")
    assert written["score"].tolist() == shipped["score"].tolist()


def test_orthodont_levels_follow_r():
    df = datasets.load("orthodont")
    assert list(df["Sex"].cat.categories) == ["Male", "Female"]
    assert sorted(df["occasion"].unique()) == [1, 2, 3, 4]
    assert df.groupby("Subject").size().eq(4).all()


def test_cbpp_is_a_binomial_example():
    df = datasets.load("cbpp")
    assert datasets.EXAMPLE_FAMILIES == {"cbpp": "binomial"}
    assert list(df["herd"].cat.categories) == [str(k) for k in range(1, 16)]
    assert (df["prop"] - df["incidence"] / df["size"]).abs().max() < 1e-12
