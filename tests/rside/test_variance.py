"""Variance functions: validation of their columns."""

import numpy as np
import pytest

import jaxlmm as jl

from test_residual import make_data


def test_varident_stratum_with_one_row():
    df = make_data(0)
    df.loc[df.index[0], "stratum"] = "lonely"
    with pytest.raises(jl.DataError, match="stratum 'lonely' of 'stratum' has a single row"):
        jl.gls("y ~ x", df, variance=jl.VarIdent("stratum"))


def test_varident_single_stratum_and_reference():
    df = make_data(0)
    df["one"] = "a"
    with pytest.raises(jl.DataError, match="single stratum"):
        jl.gls("y ~ x", df, variance=jl.VarIdent("one"))
    with pytest.raises(jl.ArgumentError, match="reference stratum 'z' is not a level"):
        jl.gls("y ~ x", df, variance=jl.VarIdent("stratum", reference="z"))


def test_varident_reference_changes_parametrisation_only():
    df = make_data(1)
    a = jl.gls("y ~ x", df, variance=jl.VarIdent("stratum"))
    b = jl.gls("y ~ x", df, variance=jl.VarIdent("stratum", reference="b"))
    assert a.objective == pytest.approx(b.objective, rel=1e-9)
    ra = np.r_[1.0, a.variance_params.to_numpy()]  # a, b, c
    rb = b.variance_params  # a, c relative to b
    assert rb["a"] == pytest.approx(ra[0] / ra[1], rel=1e-4)
    assert b.sigma == pytest.approx(a.sigma * ra[1], rel=1e-4)


def test_varpower_zero_and_non_numeric():
    df = make_data(0)
    df.loc[df.index[3], "v"] = 0.0
    with pytest.raises(jl.DataError, match="zero values"):
        jl.gls("y ~ x", df, variance=jl.VarPower("v"))
    with pytest.raises(jl.DataError, match="'stratum' must be numeric"):
        jl.gls("y ~ x", df, variance=jl.VarExp("stratum"))
    with pytest.raises(jl.ArgumentError, match="variance must be VarIdent"):
        jl.gls("y ~ x", df, variance="power")
