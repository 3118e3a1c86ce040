"""lmer_many: every response's estimates equal an individual lmer fit; inputs and bad input."""

import warnings

import numpy as np
import pytest

import jaxlmm as jl
from jaxlmm import datasets

FORMULA = "~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def sleep():
    return datasets.load("sleepstudy")


@pytest.fixture(scope="module")
def Y(sleep):
    fit = jl.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    return fit.simulate(6, seed=3)


def individual(sleep, y, reml=True, formula="Days + (Days | Subject)"):
    d = sleep.assign(yy=y)
    return jl.lmer(f"yy ~ {formula}", d, reml=reml)


@pytest.mark.filterwarnings("ignore::jaxlmm.FitWarning")
@pytest.mark.parametrize("reml", [True, False])
def test_each_response_equals_its_own_fit(sleep, Y, reml):
    res = jl.lmer_many(FORMULA, sleep, Y, reml=reml)
    assert list(res.index) == list(Y.columns)
    assert res["converged"].all()
    for name in Y.columns:
        f = individual(sleep, Y[name].to_numpy(), reml)
        row = res.loc[name]
        assert row["objective"] == pytest.approx(f.objective, rel=1e-9)
        np.testing.assert_allclose(row[list(f.fixef.index)].to_numpy(float), f.fixef.to_numpy(), rtol=1e-6)
        np.testing.assert_allclose(row[[f"se_{k}" for k in f.fixef.index]].to_numpy(float), f.se.to_numpy(), rtol=1e-5)
        assert row["sigma"] == pytest.approx(f.sigma, rel=1e-6)
        vc = f.varcorr
        assert row["sd_(Intercept)|Subject"] == pytest.approx(vc.sdcor.iloc[0], rel=1e-5)
        assert row["cor_Days.(Intercept)|Subject"] == pytest.approx(vc.sdcor.iloc[2], rel=1e-4, abs=1e-6)
        assert row["singular"] == f.singular


def test_column_names_and_missing_values(sleep, Y):
    d = sleep.copy()
    for k in range(3):
        d[f"r{k}"] = Y.iloc[:, k].to_numpy()
    d.loc[5, "r1"] = np.nan  # dropped for every response
    res = jl.lmer_many("Reaction ~ Days + (Days | Subject)", d, ["r0", "r1", "r2"])
    assert res.attrs["n_dropped"] == 1 and res.attrs["nobs"] == 179
    f = jl.lmer("r2 ~ Days + (Days | Subject)", d.drop(index=5))
    assert res.loc["r2", "objective"] == pytest.approx(f.objective, rel=1e-9)
    # a DataFrame of responses keeps its column names; the formula's own response by default
    res2 = jl.lmer_many(FORMULA, sleep, Y.iloc[:, :2])
    assert list(res2.index) == list(Y.columns[:2])
    one = jl.lmer_many("Reaction ~ Days + (Days | Subject)", sleep)
    ref = jl.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    assert one.loc["Reaction", "objective"] == pytest.approx(ref.objective, rel=1e-9)


def test_batches_of_different_sizes_agree(sleep, Y):
    a = jl.lmer_many(FORMULA, sleep, Y.to_numpy(), batch_size=4)
    b = jl.lmer_many(FORMULA, sleep, Y.to_numpy(), batch_size=1)
    np.testing.assert_allclose(a["objective"].to_numpy(), b["objective"].to_numpy(), rtol=1e-12)


def test_non_convergence_is_flagged_once(sleep, Y):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res = jl.lmer_many(FORMULA, sleep, Y.to_numpy(), max_iter=2)
    assert (~res["converged"]).all()
    assert sum(issubclass(x.category, jl.FitWarning) for x in w) == 1


def test_bad_input(sleep):
    with pytest.raises(jl.ArgumentError, match="give responses="):
        jl.lmer_many(FORMULA, sleep)
    with pytest.raises(jl.DataError, match="unknown response column 'nope'"):
        jl.lmer_many(FORMULA, sleep, ["nope"])
    with pytest.raises(jl.DataError, match="response column 'Subject' must be numeric"):
        jl.lmer_many(FORMULA, sleep, ["Subject"])
    with pytest.raises(jl.ArgumentError, match="has 3 rows but data has 180"):
        jl.lmer_many(FORMULA, sleep, np.zeros((3, 2)))
    with pytest.raises(jl.ArgumentError, match="more than once"):
        jl.lmer_many(FORMULA, sleep, ["Reaction", "Reaction"])
    with pytest.raises(jl.FormulaError, match="exactly one '~'"):
        jl.lmer_many("Days + (1 | Subject)", sleep, ["Reaction"])
    with pytest.raises(jl.ArgumentError, match="batch_size must be a positive integer"):
        jl.lmer_many(FORMULA, sleep, ["Reaction"], batch_size=0)
    with pytest.raises(jl.ArgumentError, match="shard must be True, False or None"):
        jl.lmer_many(FORMULA, sleep, ["Reaction"], shard="yes")


SHARDED = r"""
import json, numpy as np, jax, jaxlmm as jl
from jaxlmm import datasets
assert len(jax.devices()) == 8, jax.devices()
s = datasets.load("sleepstudy")
Y = jl.lmer("Reaction ~ Days + (Days | Subject)", s).simulate(13, seed=5).to_numpy()
a = jl.lmer_many("~ Days + (Days | Subject)", s, Y)               # batch axis over 8 devices
b = jl.lmer_many("~ Days + (Days | Subject)", s, Y, shard=False)  # one device
num = a.select_dtypes("number").to_numpy(float); ref = b.select_dtypes("number").to_numpy(float)
print(json.dumps({"diff": float(np.max(np.abs(num - ref) / np.maximum(1, np.abs(ref)))), "n": len(a)}))
"""


def test_sharded_over_eight_cpu_devices():
    """The batch axis sharded over a mesh of 8 (virtual CPU) devices gives the one-device fits."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SHARDED], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["n"] == 13
    assert res["diff"] < 1e-9
