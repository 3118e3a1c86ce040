"""Design construction: coefficient names, coding, grouping levels, term order, missing values."""

import warnings

import numpy as np
import pandas as pd
import pytest

from conftest import load_data
from jaxlmm import RankDeficiencyWarning
from jaxlmm.terms.design import build_design, r_style_name


@pytest.fixture
def cake():
    return load_data("cake")


def small(n_per=4, seed=0):
    """Four groups of ``n_per`` rows with a numeric x, a 3-level factor f and a response y."""
    rng = np.random.default_rng(seed)
    n = 4 * n_per
    return pd.DataFrame({
        "y": rng.normal(size=n),
        "x": np.tile(np.arange(1.0, n_per + 1), 4),
        "f": np.array(["b", "c", "a"])[np.arange(n) % 3],
        "g": np.repeat(["g1", "g2", "g3", "g4"], n_per),
    })


# ---------------------------------------------------------------- names and coding


def test_r_style_name():
    assert r_style_name("Intercept") == "(Intercept)"
    assert r_style_name("recipe[T.B]") == "recipeB"
    assert r_style_name("recipe[T.B]:temperature[T.T185]") == "recipeB:temperatureT185"
    assert r_style_name("f[a]") == "fa"
    assert r_style_name("Days") == "Days"


def test_r_style_coefficient_names(cake):
    d = build_design("angle ~ recipe * temperature + (1 | replicate)", cake)
    assert d.x_names[0] == "(Intercept)"
    for name in ["recipeB", "recipeC", "temperatureT185", "temperatureT225",
                 "recipeB:temperatureT185", "recipeC:temperatureT225"]:
        assert name in d.x_names
    # first sorted level is the baseline: no column for it
    assert not any("recipeA" in c or "temperatureT175" in c for c in d.x_names)
    assert d.p == 1 + 2 + 5 + 2 * 5 == len(d.x_names)
    assert d.X.dtype == np.float64 and d.X.shape == (270, 18)
    assert d.dropped_columns == ()


def test_treatment_coding_first_sorted_level_is_baseline():
    df = small()
    d = build_design("y ~ f + (1 | g)", df)
    assert d.x_names == ("(Intercept)", "fb", "fc")
    np.testing.assert_array_equal(d.X[:, 0], 1.0)
    np.testing.assert_array_equal(d.X[:, 1], (df.f == "b").to_numpy(float))
    np.testing.assert_array_equal(d.X[:, 2], (df.f == "c").to_numpy(float))


def test_no_intercept_gives_full_dummy_coding():
    df = small()
    for formula in ["y ~ 0 + f + (1 | g)", "y ~ f - 1 + (1 | g)", "y ~ -1 + f + (1 | g)"]:
        assert build_design(formula, df).x_names == ("fa", "fb", "fc")


def test_categorical_keeps_its_level_order():
    df = small()
    df["f"] = pd.Categorical(df.f, categories=["c", "a", "b"])
    d = build_design("y ~ f + (1 | g)", df)
    assert d.x_names == ("(Intercept)", "fa", "fb")
    np.testing.assert_array_equal(d.X[:, 1], (df.f == "a").to_numpy(float))


def test_categorical_grouping_keeps_its_level_order():
    df = small()
    df["g"] = pd.Categorical(df.g, categories=["g3", "g1", "g4", "g2", "unused"])
    t = build_design("y ~ x + (1 | g)", df).terms[0]
    assert t.levels == ("g3", "g1", "g4", "g2")  # unused categories removed
    np.testing.assert_array_equal(np.asarray(t.levels)[t.codes], df.g.astype(str).to_numpy())


def test_integer_grouping_is_categorical():
    df = small()
    df["g"] = np.repeat([10, 2, 7, 33], 4)
    d = build_design("y ~ x + (1 | g)", df)
    t = d.terms[0]
    assert t.n_levels == 4
    assert t.levels == ("2", "7", "10", "33")  # distinct values, in numeric order
    assert t.codes.dtype == np.int32
    np.testing.assert_array_equal(np.asarray(t.levels)[t.codes], df.g.astype(str).to_numpy())
    assert t.columns.shape == (16, 1)


def test_float_grouping_with_integer_values_is_labelled_as_integers():
    df = small()
    df["g"] = np.repeat([1.0, 2.0, 3.0, 4.0], 4)
    assert build_design("y ~ x + (1 | g)", df).terms[0].levels == ("1", "2", "3", "4")


def test_sleepstudy_subject_stored_as_int(sleepstudy):
    assert pd.api.types.is_integer_dtype(sleepstudy.Subject)
    t = build_design("Reaction ~ Days + (Days | Subject)", sleepstudy).terms[0]
    assert t.n_levels == 18
    assert t.levels[0] == "308"
    assert t.column_names == ("(Intercept)", "Days")
    np.testing.assert_array_equal(t.columns[:, 1], sleepstudy.Days.to_numpy(float))
    np.testing.assert_array_equal(t.columns[:, 0], 1.0)


def test_random_slope_column_names():
    df = small()
    assert build_design("y ~ x + (0 + x | g)", df).terms[0].column_names == ("x",)
    assert build_design("y ~ x + (x - 1 | g)", df).terms[0].column_names == ("x",)
    t = build_design("y ~ x + (x || g)", df).terms[0]
    assert t.column_names == ("(Intercept)", "x") and t.uncorrelated


def test_interaction_grouping_uses_observed_combinations():
    df = pd.DataFrame({
        "y": np.arange(12.0),
        "a": ["a1"] * 6 + ["a2"] * 6,
        "b": ["b1", "b2", "b1", "b2", "b1", "b2", "b2", "b3", "b2", "b3", "b2", "b3"],
    })
    t = build_design("y ~ 1 + (1 | a:b)", df).terms[0]
    assert t.name == "a:b"
    assert t.levels == ("a1:b1", "a1:b2", "a2:b2", "a2:b3")  # a2:b1 and a1:b3 never occur
    labels = (df.a + ":" + df.b).to_numpy()
    np.testing.assert_array_equal(np.asarray(t.levels)[t.codes], labels)


def test_nested_grouping_pastes():
    pastes = load_data("Pastes")
    d = build_design("strength ~ 1 + (1 | batch/cask)", pastes)
    assert [t.name for t in d.terms] == ["cask:batch", "batch"]  # 30 levels before 10
    assert [t.n_levels for t in d.terms] == [30, 10]
    assert d.terms[0].levels[0] == "a:A"
    # the same as writing the interaction out
    d2 = build_design("strength ~ 1 + (1 | cask:batch) + (1 | batch)", pastes)
    for t1, t2 in zip(d.terms, d2.terms):
        assert t1.levels == t2.levels
        np.testing.assert_array_equal(t1.codes, t2.codes)


# ---------------------------------------------------------------- term order


def _ordered_frame():
    rng = np.random.default_rng(1)
    n = 24
    return pd.DataFrame({
        "y": rng.normal(size=n),
        "g2": np.arange(n) % 2,
        "g3": np.arange(n) % 3,
        "h3": (np.arange(n) // 8) % 3,
        "g6": np.arange(n) % 6,
    })


def test_terms_sorted_largest_number_of_levels_first():
    df = _ordered_frame()
    d = build_design("y ~ 1 + (1 | g2) + (1 | g6) + (1 | g3)", df)
    assert [t.name for t in d.terms] == ["g6", "g3", "g2"]


def test_terms_already_in_order_are_kept():
    df = _ordered_frame()
    d = build_design("y ~ 1 + (1 | g6) + (1 | g3) + (1 | h3) + (1 | g2)", df)
    assert [t.name for t in d.terms] == ["g6", "g3", "h3", "g2"]


def test_term_order_ties_follow_lme4():
    # lme4: rev(order(nlevels)) when any term has more levels than the one before it,
    # so tied terms come out in reverse formula order
    df = _ordered_frame()
    d = build_design("y ~ 1 + (1 | g2) + (1 | g3) + (1 | h3)", df)
    assert [t.name for t in d.terms] == ["h3", "g3", "g2"]


# ---------------------------------------------------------------- missing values


def test_rows_with_missing_values_are_dropped_and_counted(sleepstudy):
    df = sleepstudy.astype({"Days": float})
    df.loc[3, "Reaction"] = np.nan   # response
    df.loc[15, "Days"] = np.nan      # covariate
    d = build_design("Reaction ~ Days + (1 | Subject)", df)
    assert d.n_dropped == 2 and d.n == 178
    assert list(d.row_index) == [k for k in range(180) if k not in (3, 15)]
    # the rest of each group stays
    t = d.terms[0]
    assert t.n_levels == 18
    counts = np.bincount(t.codes)
    assert sorted(counts.tolist()) == [9, 9] + [10] * 16
    np.testing.assert_array_equal(d.y, df.Reaction.drop(index=[3, 15]).to_numpy())


def test_missing_grouping_value_drops_the_row(sleepstudy):
    df = sleepstudy.astype({"Subject": "category"})
    df.loc[0, "Subject"] = np.nan
    d = build_design("Reaction ~ Days + (1 | Subject)", df)
    assert d.n_dropped == 1 and d.n == 179


def test_missing_random_slope_value_drops_the_row(sleepstudy):
    df = sleepstudy.assign(z=sleepstudy.Days.astype(float))
    df.loc[[7, 8], "z"] = np.nan
    d = build_design("Reaction ~ Days + (z | Subject)", df)
    assert d.n_dropped == 2 and d.n == 178


def test_group_losing_all_rows_disappears(sleepstudy):
    df = sleepstudy.assign(Reaction=sleepstudy.Reaction.where(sleepstudy.Subject != 308))
    d = build_design("Reaction ~ Days + (1 | Subject)", df)
    assert d.n_dropped == 10
    assert d.terms[0].n_levels == 17 and "308" not in d.terms[0].levels


def test_unused_columns_with_missing_values_do_not_drop_rows(sleepstudy):
    df = sleepstudy.assign(junk=np.nan, other=["a", None] * 90)
    d = build_design("Reaction ~ Days + (1 | Subject)", df)
    assert d.n_dropped == 0 and d.n == 180


def test_missing_offset_drops_the_row(sleepstudy):
    off = np.zeros(180)
    off[4] = np.nan
    d = build_design("Reaction ~ Days + (1 | Subject)", sleepstudy, offset=off)
    assert d.n_dropped == 1 and d.n == 179


# ---------------------------------------------------------------- weights and offset


def test_weights_and_offset_default(sleepstudy):
    d = build_design("Reaction ~ Days + (1 | Subject)", sleepstudy)
    np.testing.assert_array_equal(d.weights, np.ones(180))
    np.testing.assert_array_equal(d.offset, np.zeros(180))


def test_weights_and_offset_as_column_or_array(sleepstudy):
    rng = np.random.default_rng(2)
    w, o = rng.uniform(0.5, 2.0, 180), rng.normal(size=180)
    df = sleepstudy.assign(w=w, o=o)
    df.loc[10, "Reaction"] = np.nan
    by_name = build_design("Reaction ~ Days + (1 | Subject)", df, weights="w", offset="o")
    by_array = build_design("Reaction ~ Days + (1 | Subject)", df, weights=w, offset=o)
    by_list = build_design("Reaction ~ Days + (1 | Subject)", df, weights=list(w),
                           offset=pd.Series(o))
    keep = np.arange(180) != 10
    for d in (by_name, by_array, by_list):
        assert d.n == 179
        np.testing.assert_array_equal(d.weights, w[keep])
        np.testing.assert_array_equal(d.offset, o[keep])


# ---------------------------------------------------------------- transforms


def test_C_transform_makes_a_factor():
    df = small().astype({"x": int})
    d = build_design("y ~ C(x) + (1 | g)", df)
    assert d.x_names == ("(Intercept)", "C(x)2", "C(x)3", "C(x)4")
    np.testing.assert_array_equal(d.X[:, 1], (df.x == 2).to_numpy(float))


def test_np_log_transform():
    df = small()
    d = build_design("y ~ np.log(x) + (1 | g)", df)
    assert d.x_names == ("(Intercept)", "np.log(x)")
    np.testing.assert_allclose(d.X[:, 1], np.log(df.x.to_numpy()))


def test_transformed_response():
    df = small().assign(y=lambda f: np.exp(f.y))
    d = build_design("np.log(y) ~ x + (1 | g)", df)
    np.testing.assert_allclose(d.y, np.log(df.y.to_numpy()))
    assert d.response == "np.log(y)"


def test_transform_in_random_part():
    df = small()
    t = build_design("y ~ x + (0 + np.log(x) | g)", df).terms[0]
    assert t.column_names == ("np.log(x)",)
    np.testing.assert_allclose(t.columns[:, 0], np.log(df.x.to_numpy()))


def test_dict_data(sleepstudy):
    data = {c: sleepstudy[c].to_numpy() for c in sleepstudy}
    d = build_design("Reaction ~ Days + (1 | Subject)", data)
    assert d.n == 180 and d.x_names == ("(Intercept)", "Days")


# ---------------------------------------------------------------- aliased columns


def test_aliased_column_dropped_with_warning(sleepstudy):
    df = sleepstudy.assign(D2=2.0 * sleepstudy.Days)
    with pytest.warns(RankDeficiencyWarning, match="D2"):
        d = build_design("Reaction ~ Days + D2 + (1 | Subject)", df)
    assert d.x_names == ("(Intercept)", "Days")
    assert d.dropped_columns == ("D2",)
    assert np.linalg.matrix_rank(d.X) == d.p


def test_aliased_factor_columns_dropped(cake):
    cake = cake.assign(r2=cake.recipe.map({"A": "x", "B": "y", "C": "z"}))
    with pytest.warns(RankDeficiencyWarning, match="r2y, r2z"):
        d = build_design("angle ~ recipe + r2 + (1 | replicate)", cake)
    assert d.x_names == ("(Intercept)", "recipeB", "recipeC")
    assert d.dropped_columns == ("r2y", "r2z")


def test_full_rank_design_gives_no_warning(sleepstudy):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = build_design("Reaction ~ Days + (Days | Subject)", sleepstudy)
    assert d.dropped_columns == ()
