"""Fits from Parquet data accumulated batch by batch equal the in-memory fits."""

import numpy as np
import pandas as pd
import pytest

import jaxlmm as jl
from conftest import load_data

CASES = {
    "sleepstudy": ("Reaction ~ Days + (Days | Subject)", {}),
    "Penicillin": ("diameter ~ 1 + (1 | plate) + (1 | sample)", {}),  # crossed: level pairs accumulate
    "Pastes": ("strength ~ 1 + (1 | batch/cask)", {}),  # nested: composite levels
    "cake": ("angle ~ recipe * temperature + (1 | recipe:replicate)", {}),  # categorical fixed effects
    "sleepstudy_weighted": ("Reaction ~ Days + (Days | Subject)", {"weights": "w", "offset": "off"}),
}


def write_parts(df, tmp_path, parts=3):
    """Shuffled rows over several files: groups and levels split across files and batches."""
    df = df.sample(frac=1.0, random_state=1).reset_index(drop=True)
    bounds = np.linspace(0, len(df), parts + 1).astype(int)
    for k in range(parts):
        df.iloc[bounds[k] : bounds[k + 1]].to_parquet(tmp_path / f"part{k}.parquet")
    return str(tmp_path / "*.parquet"), df


@pytest.mark.parametrize("name", list(CASES))
def test_same_fit_as_in_memory(name, tmp_path):
    from jaxlmm.lmm.lmer import lmer_dataset

    formula, kw = CASES[name]
    path, df = write_parts(load_data(name), tmp_path)
    a = jl.lmer(formula, df, **kw)
    b = lmer_dataset(formula, path, batch_rows=23, **kw)
    assert b.objective == pytest.approx(a.objective, rel=1e-10)
    assert list(b.fixef.index) == list(a.fixef.index)
    np.testing.assert_allclose(b.fixef.to_numpy(), a.fixef.to_numpy(), rtol=1e-7)
    # SEs to 1e-5: equally converged fits (objective equal to 1e-12) differ by ~2e-6 in Pastes' SE
    np.testing.assert_allclose(b.se.to_numpy(), a.se.to_numpy(), rtol=1e-5)
    np.testing.assert_allclose(b.theta, a.theta, rtol=1e-4, atol=1e-6)
    assert b.sigma == pytest.approx(a.sigma, rel=1e-6)  # different starts: optimiser-level agreement
    assert b.nobs == a.nobs and dict(b.ngroups) == dict(a.ngroups)
    pd.testing.assert_frame_equal(b.ranef[["grpvar", "term", "grp"]], a.ranef[["grpvar", "term", "grp"]])
    # modes at optimiser-level agreement, as theta (Pastes: ~1e-5 apart between equally converged fits)
    np.testing.assert_allclose(b.ranef["condval"], a.ranef["condval"], rtol=1e-4, atol=1e-5)
    # inference that needs only the Gram blocks works out of core
    np.testing.assert_allclose(b.coef_table()["df"], a.coef_table()["df"], rtol=1e-5)
    np.testing.assert_allclose(b.varcorr["se"], a.varcorr["se"], rtol=1e-4)
    assert b.optinfo["out_of_core"] and not b.has_rows


def test_missing_values_and_pyarrow_dataset(tmp_path):
    import pyarrow.dataset as pads

    df = load_data("sleepstudy")
    df.loc[[3, 77], "Reaction"] = np.nan
    df.to_parquet(tmp_path / "s.parquet")
    a = jl.lmer("Reaction ~ Days + (Days | Subject)", df)
    b = jl.lmer("Reaction ~ Days + (Days | Subject)", pads.dataset(str(tmp_path / "s.parquet")))
    assert b.n_dropped == 2 and b.nobs == 178
    assert b.objective == pytest.approx(a.objective, rel=1e-10)
    assert "REML criterion" in str(b.summary())


def test_row_outputs_are_refused(tmp_path):
    df = load_data("sleepstudy")
    df.to_parquet(tmp_path / "s.parquet")
    fit = jl.lmer("Reaction ~ Days + (Days | Subject)", str(tmp_path / "s.parquet"))
    for call in (lambda: fit.resid(), lambda: fit.simulate(), lambda: fit.bootstrap(5), lambda: fit.predict(),
                 lambda: fit.profile(), lambda: fit.coef_table("kenward-roger"), lambda: jl.anova(fit, fit),
                 lambda: fit.fitted, lambda: fit.residuals, lambda: fit.resid("pearson"), lambda: fit.augment(),
                 lambda: fit.augment(df), lambda: fit.scaled_residuals()):
        with pytest.raises(jl.ArgumentError, match=r"Parquet dataset does not keep.*fit\.predict\(newdata\)"):
            call()
    new = df.head(3)
    np.testing.assert_allclose(fit.predict(new), jl.lmer("Reaction ~ Days + (Days | Subject)", df).predict(new), rtol=1e-6)


def test_bad_input(tmp_path):
    df = load_data("sleepstudy")
    df.to_parquet(tmp_path / "s.parquet")
    (tmp_path / "not.parquet").write_text("hello")
    with pytest.raises(jl.DataError, match="no Parquet data"):
        jl.lmer("Reaction ~ Days + (1 | Subject)", str(tmp_path / "nothing*.parquet"))
    with pytest.raises(jl.DataError, match="cannot read Parquet data"):
        jl.lmer("Reaction ~ Days + (1 | Subject)", str(tmp_path / "not.parquet"))
    with pytest.raises(jl.FormulaError, match="unknown column 'Dayz'.*did you mean 'Days'"):  # as in memory
        jl.lmer("Reaction ~ Dayz + (1 | Subject)", str(tmp_path / "s.parquet"))
    with pytest.raises(jl.ArgumentError, match="weights must be a column name"):
        jl.lmer("Reaction ~ Days + (1 | Subject)", str(tmp_path / "s.parquet"), weights=np.ones(180))
    from jaxlmm.lmm.lmer import lmer_dataset

    with pytest.raises(jl.ArgumentError, match="batch_rows"):
        lmer_dataset("Reaction ~ Days + (1 | Subject)", str(tmp_path / "s.parquet"), batch_rows=0)
    df["Days2"] = df["Days"] * 2.0
    df.to_parquet(tmp_path / "s2.parquet")
    with pytest.raises(jl.DataError, match="rank deficient"):
        jl.lmer("Reaction ~ Days + Days2 + (1 | Subject)", str(tmp_path / "s2.parquet"))
