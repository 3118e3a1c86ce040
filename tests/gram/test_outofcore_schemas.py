"""Parquet datasets whose files disagree on a column the model uses are refused before any row
is read, naming the files, the column and the types; categories that differ between files keep
every level; counts are validated."""

import pandas as pd
import pytest
from conftest import load_data

import jaxlmm as jl


def _two_files(tmp_path, second):
    """sleepstudy's first 90 rows in a.parquet, the rest changed by ``second`` in b.parquet."""
    df = load_data("sleepstudy")
    df.iloc[:90].to_parquet(tmp_path / "a.parquet")
    second(df.iloc[90:].copy()).to_parquet(tmp_path / "b.parquet")
    return str(tmp_path / "*.parquet")


def test_files_that_disagree_on_a_column_type(tmp_path):
    path = _two_files(tmp_path, lambda d: d.assign(Days=d["Days"].astype(str)))
    with pytest.raises(jl.DataError, match=r"column 'Days' has different types in the Parquet files: int64 in "
                                           r"'.*a\.parquet'; large_string in '.*b\.parquet'"):
        jl.lmer("Reaction ~ Days + (Days | Subject)", path)


def test_files_that_disagree_on_a_column_name(tmp_path):
    path = _two_files(tmp_path, lambda d: d.rename(columns={"Days": "days"}))
    with pytest.raises(jl.DataError, match=r"column 'Days' is missing from Parquet file '.*b\.parquet' \(it has "
                                           r"columns \['Reaction', 'Subject', 'days'\]; \['days'\] are not in the "
                                           r"other files\), while '.*a\.parquet' has it"):
        jl.lmer("Reaction ~ Days + (Days | Subject)", path)
    # the first file's schema is the dataset's: a column only the second file has is named too
    (tmp_path / "a.parquet").rename(tmp_path / "c.parquet")
    with pytest.raises(jl.DataError, match=r"column 'days' is missing from Parquet file '.*c\.parquet'"):
        jl.lmer("Reaction ~ days + (1 | Subject)", path)


def test_unused_columns_may_disagree_and_numbers_may_mix(tmp_path):
    path = _two_files(tmp_path, lambda d: d.assign(Subject=d["Subject"].astype(str), Days=d["Days"].astype(float)))
    fit = jl.lmer("Reaction ~ Days + (1 | Days)", path)  # Subject unused; Days int64 and double
    assert fit.nobs == 180
    with pytest.raises(jl.DataError, match="column 'Subject' has different types"):
        jl.lmer("Reaction ~ Days + (1 | Subject)", path)


def test_a_file_that_is_not_parquet_is_named(tmp_path):
    load_data("sleepstudy").to_parquet(tmp_path / "a.parquet")
    (tmp_path / "b.parquet").write_text("hello")
    with pytest.raises(jl.DataError, match=r"cannot read Parquet file '.*b\.parquet'"):
        jl.lmer("Reaction ~ Days + (1 | Subject)", str(tmp_path / "*.parquet"))


def test_categories_that_differ_between_files(tmp_path):
    # each file stores only its own subjects' categories: every level is kept, none becomes missing
    df = load_data("sleepstudy")
    df["S"] = pd.Categorical("s" + df["Subject"].astype(str))
    for name, part in (("a", df[df.Subject < 340]), ("b", df[df.Subject >= 340])):
        part.assign(S=part["S"].cat.remove_unused_categories()).to_parquet(tmp_path / f"{name}.parquet")
    a = jl.lmer("Reaction ~ Days + (Days | S)", df)
    b = jl.lmer("Reaction ~ Days + (Days | S)", str(tmp_path / "*.parquet"))
    assert b.nobs == 180 and b.n_dropped == 0 and dict(b.ngroups) == dict(a.ngroups)
    assert b.objective == pytest.approx(a.objective, rel=1e-10)


@pytest.mark.parametrize("arg, bad", [("max_iter", -5), ("max_iter", "10"), ("max_iter", 0)])
def test_bad_counts(tmp_path, arg, bad):
    from jaxlmm.lmm.lmer import lmer_dataset

    load_data("sleepstudy").to_parquet(tmp_path / "s.parquet")
    with pytest.raises(jl.ArgumentError, match=f"{arg} must be a positive integer"):
        lmer_dataset("Reaction ~ Days + (1 | Subject)", str(tmp_path / "s.parquet"), **{arg: bad})
