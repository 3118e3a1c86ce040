"""Fits pickle, deep-copy, save and load (also in a fresh process) with the same summary,
predictions and inference as the original; jaxlmm.load refuses files it cannot read."""

import copy
import dataclasses
import functools
import json
import pickle
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxlmm as jl
from conftest import load_data
from jaxlmm import records, saving
from jaxlmm.precision import float64

FORMULA = "Reaction ~ Days + (Days | Subject)"


def _try(call):
    """The value of ``call()``, or what it raised (so refusals must be the same too)."""
    try:
        return call()
    except Exception as e:  # noqa: BLE001
        return ("raises", type(e).__name__, str(e))


def outcomes(fit, newdata) -> dict:
    """What a restored fit must reproduce: summary text and views, predictions, inference."""
    out = {
        "summary": _try(lambda: str(fit.summary())),
        "markdown": _try(lambda: fit.summary().markdown),
        "html": _try(fit._repr_html_),
        "repr": _try(lambda: repr(fit)),
        "predict": _try(lambda: fit.predict()),
        "predict_new": _try(lambda: fit.predict(newdata)),
        "predict_new_fixed": _try(lambda: fit.predict(newdata, re=False)),
        "fitted": _try(lambda: fit.fitted),
        "resid": _try(lambda: fit.resid("pearson")),
        "confint": _try(lambda: fit.confint("wald")),
        "varcorr": _try(lambda: fit.varcorr),
        "ranef": _try(lambda: fit.ranef),
        "tidy": _try(lambda: fit.tidy()),
        "glance": _try(lambda: fit.glance()),
        "coef_z": _try(lambda: fit.coef_table(None)),
    }
    if isinstance(fit, jl.GlmerResult):
        out["predict_response"] = _try(lambda: fit.predict(newdata, type="response"))
    else:
        for ddf in ("satterthwaite", "kenward-roger", "residual"):
            out[f"coef_{ddf}"] = _try(lambda ddf=ddf: fit.coef_table(ddf))
        out["residual_params"] = _try(lambda: fit.residual_params)
    return out


def assert_same(a: dict, b: dict, rtol: float = 1e-10) -> None:
    assert a.keys() == b.keys()
    for k in a:
        x, y = a[k], b[k]
        assert type(x) is type(y), (k, x, y)
        if isinstance(x, pd.DataFrame):
            pd.testing.assert_frame_equal(x, y, check_exact=False, rtol=rtol, atol=0.0, obj=k)
        elif isinstance(x, pd.Series):
            pd.testing.assert_series_equal(x, y, check_exact=False, rtol=rtol, atol=0.0, obj=k)
        else:
            assert x == y, k


def lme4_cbpp():
    """cbpp as lme4 has it: herd and period are factors (levels 1..15 and 1..4)."""
    d = load_data("cbpp")
    d["herd"] = pd.Categorical(d["herd"])
    d["period"] = d["period"].astype(str)
    return d


def make_fits(parquet_dir: Path) -> dict:
    """One fit of every result type: (fit, newdata)."""
    sleep, orth, cbpp = load_data("sleepstudy"), load_data("Orthodont"), lme4_cbpp()
    sleep.to_parquet(parquet_dir / "sleep.parquet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jl.FitWarning)
        return {
            "lmer": (jl.lmer(FORMULA, sleep), sleep.iloc[::17]),
            "rside": (jl.lmer("distance ~ age + Sex + (1 | Subject)", orth, correlation=jl.AR1("Subject", "occasion"),
                              variance=jl.VarIdent("Sex")), orth.iloc[::11]),
            "gls": (jl.gls("distance ~ age * Sex", orth, correlation=jl.AR1("Subject", "occasion")), orth.iloc[::11]),
            "outofcore": (jl.lmer(FORMULA, str(parquet_dir / "sleep.parquet")), sleep.iloc[::17]),
            "glmer": (jl.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, "binomial"),
                      cbpp.iloc[::5]),
        }


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The fits, pickled (and saved) before anything lazy was computed, then the originals'
    outcomes: a restored fit recomputes everything it did not keep."""
    d = tmp_path_factory.mktemp("saving")
    fits = make_fits(d)
    blobs = {k: pickle.dumps(f) for k, (f, _) in fits.items()}
    copies = {k: copy.deepcopy(f) for k, (f, _) in fits.items()}
    files = {}
    for k, (f, _) in fits.items():
        files[k] = d / f"{k}.jaxlmm"
        f.save(files[k])
    expected = {k: outcomes(f, new) for k, (f, new) in fits.items()}
    return dict(dir=d, fits=fits, blobs=blobs, copies=copies, files=files, expected=expected)


def test_pickle_and_deepcopy_give_the_same_fit(saved):
    kinds = {k: type(f).__name__ for k, (f, _) in saved["fits"].items()}
    assert kinds == {"lmer": "LmerResult", "rside": "LmerResult", "gls": "LmerResult", "outofcore": "LmerResult",
                     "glmer": "GlmerResult"}
    for k, (fit, new) in saved["fits"].items():
        restored = pickle.loads(saved["blobs"][k])
        assert type(restored) is type(fit) and restored._model._cache == {}  # device arrays: rebuilt lazily
        assert isinstance(restored.optinfo, types.MappingProxyType) and isinstance(restored.ngroups,
                                                                                   types.MappingProxyType)
        assert dict(restored.optinfo).keys() == dict(fit.optinfo).keys() and dict(restored.ngroups) == dict(fit.ngroups)
        with pytest.raises(TypeError):
            restored.optinfo["converged"] = False  # still read-only
        assert_same(outcomes(restored, new), saved["expected"][k])
        assert_same(outcomes(saved["copies"][k], new), saved["expected"][k])
        loaded = jl.load(saved["files"][k])
        assert_same(outcomes(loaded, new), saved["expected"][k])
    # the original keeps its caches; a copy made after use carries the computed tables along
    fit = saved["fits"]["lmer"][0]
    assert fit._model._cache
    again = pickle.loads(pickle.dumps(fit))
    assert "_ranef_table" in again.__dict__ and "kenward_roger" in again._cache  # the record's Cache
    assert_same(outcomes(again, saved["fits"]["lmer"][1]), saved["expected"]["lmer"])


CHILD = """
import pickle, sys, warnings
sys.path[:0] = [sys.argv[1], sys.argv[1].rsplit("/", 1)[0]]  # this folder and tests/ (conftest)
import jaxlmm
from test_saving import outcomes
warnings.simplefilter("ignore")
job = pickle.loads(open(sys.argv[2], "rb").read())
out = {"loaded": {}, "unpickled": {}}
for k, (path, blob, new) in job["fits"].items():
    out["loaded"][k] = outcomes(jaxlmm.load(path), new)
    out["unpickled"][k] = outcomes(pickle.loads(blob), new)
out["frames"] = pickle.loads(job["frames"])
out["reframed"] = pickle.dumps(out["frames"])
open(sys.argv[3], "wb").write(pickle.dumps(out))
"""


def test_fresh_process_gives_the_same_fit(saved):
    """Saved and pickled fits of every kind, and the batched results (DataFrames), read back in a
    new Python process (no caches, programs compiled anew) give the originals' outcomes."""
    d = saved["dir"]
    fit, _ = saved["fits"]["lmer"]
    sleep = load_data("sleepstudy")
    rng = np.random.default_rng(2)
    Y = pd.DataFrame({"y1": sleep["Reaction"] + rng.normal(0, 5, len(sleep)), "y2": 0.5 * sleep["Reaction"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frames = {"lmer_many": jl.lmer_many(FORMULA, sleep, Y), "bootstrap": fit.bootstrap(6, seed=3)}
    job = {"fits": {k: (str(saved["files"][k]), saved["blobs"][k], new) for k, (_, new) in saved["fits"].items()},
           "frames": pickle.dumps(frames)}
    (d / "job.pkl").write_bytes(pickle.dumps(job))
    r = subprocess.run([sys.executable, "-c", CHILD, str(Path(__file__).parent), str(d / "job.pkl"),
                        str(d / "out.pkl")], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    out = pickle.loads((d / "out.pkl").read_bytes())
    for k, exp in saved["expected"].items():
        assert_same(out["loaded"][k], exp)
        assert_same(out["unpickled"][k], exp)
    for name, frame in frames.items():
        for got in (out["frames"][name], pickle.loads(out["reframed"])[name]):
            pd.testing.assert_frame_equal(got, frame, check_exact=True)
            assert got.attrs == frame.attrs


def test_save_file_has_a_versioned_header(saved, tmp_path):
    raw = saved["files"]["glmer"].read_bytes()
    assert raw.startswith(saving.MAGIC)
    header = json.loads(raw[len(saving.MAGIC):].split(b"\n", 1)[0])
    assert header == {"format": saving.FORMAT_VERSION, "jaxlmm": jl.__version__, "kind": "GlmerResult"}
    assert "load" in jl.__all__ and jl.load is saving.load
    assert "only load files you trust" in " ".join(jl.load.__doc__.lower().split())
    fit = saved["fits"]["lmer"][0]
    fit.save(str(tmp_path / "as_str.fit"))  # str or PathLike
    assert jl.load(str(tmp_path / "as_str.fit")).objective == fit.objective
    assert sorted(p.name for p in tmp_path.iterdir()) == ["as_str.fit"]  # no temporary file left


def test_load_refuses_other_files(saved, tmp_path):
    good = saved["files"]["lmer"].read_bytes()
    body = good.split(b"\n", 2)[2]
    cases = {
        "csv": (b"Reaction,Days,Subject\n249.56,0,308\n", "not a saved jaxlmm fit"),
        "bare_pickle": (body, "not a saved jaxlmm fit"),
        "empty": (b"", "not a saved jaxlmm fit"),
        "bad_header": (saving.MAGIC + b"{not json\n" + body, "damaged jaxlmm header"),
        "truncated": (good[: len(good) // 2], "cannot be read"),
        "not_a_fit": (saving.MAGIC + json.dumps({"format": saving.FORMAT_VERSION, "jaxlmm": "0.1.0",
                                                 "kind": "dict"}).encode() + b"\n" + pickle.dumps({"a": 1}),
                      "does not hold a jaxlmm fit"),
    }
    for name, (data, msg) in cases.items():
        p = tmp_path / f"{name}.bin"
        p.write_bytes(data)
        with pytest.raises(jl.DataError, match=msg):
            jl.load(p)
    future = saving.MAGIC + json.dumps({"format": 99, "jaxlmm": "9.0.0", "kind": "LmerResult"}).encode() + b"\n" + body
    (tmp_path / "future.bin").write_bytes(future)
    with pytest.raises(jl.DataError, match=r"written by jaxlmm 9\.0\.0 in save format 99; this jaxlmm "
                                           rf"\({jl.__version__}\) reads save format {saving.FORMAT_VERSION}"):
        jl.load(tmp_path / "future.bin")
    with pytest.raises(jl.DataError, match="does not exist"):
        jl.load(tmp_path / "missing.fit")
    with pytest.raises(jl.DataError, match="cannot read"):
        jl.load(tmp_path)  # a directory
    with pytest.raises(jl.ArgumentError, match="path must be a file name"):
        jl.load(42)


def test_save_refuses_what_it_cannot_write(saved, tmp_path):
    fit = saved["fits"]["glmer"][0]
    with pytest.raises(jl.ArgumentError, match="cannot write"):
        fit.save(tmp_path / "no_such_dir" / "f.fit")
    with pytest.raises(jl.ArgumentError, match="path must be a file name"):
        fit.save(None)
    with pytest.raises(jl.ArgumentError, match="only jaxlmm fits"):
        saving.save({"not": "a fit"}, tmp_path / "x.fit")
    # a user-made family with a local function cannot be pickled: a clear error, no file left
    fam = dataclasses.replace(fit.family, variance=lambda mu: mu * (1.0 - mu))
    with pytest.raises(jl.ArgumentError, match="cannot be saved"):
        dataclasses.replace(fit, family=fam).save(tmp_path / "custom.fit")
    assert list(tmp_path.iterdir()) == []


def test_families_pickle_by_name():
    for fam in (jl.binomial(), jl.binomial("probit"), jl.poisson(), jl.gamma("log")):
        back = pickle.loads(pickle.dumps(fam))
        assert repr(back) == repr(fam) and back.scale_free == fam.scale_free
        mu = np.array([0.2, 0.5, 0.7])
        with float64():
            pairs = [(back.link.link, fam.link.link), (back.link.inverse, fam.link.inverse),
                     (back.link.mu_eta, fam.link.mu_eta), (back.variance, fam.variance)]
            for f, ref in pairs:
                np.testing.assert_array_equal(np.asarray(f(mu)), np.asarray(ref(mu)))
        assert repr(copy.deepcopy(fam)) == repr(fam)


@dataclasses.dataclass(frozen=True, eq=False)
class _Record(records.PicklableRecord):
    x: np.ndarray
    info: types.MappingProxyType
    _cache: dict = dataclasses.field(default_factory=dict)
    extra: int = 7

    @functools.cached_property
    def kept(self) -> np.ndarray:
        return self.x * 2.0

    @functools.cached_property
    def on_device(self):
        import jax.numpy as jnp

        return {"a": (jnp.asarray(self.x),)}

    @functools.cached_property
    def function(self):
        return lambda: 1


def test_record_state_is_generic_over_fields():
    r = _Record(x=np.arange(3.0), info=types.MappingProxyType({"k": 1}), _cache={"arrays": object()})
    r.kept, r.on_device, r.function  # noqa: B018 - fill the caches
    for back in (pickle.loads(pickle.dumps(r)), copy.deepcopy(r)):
        assert back._cache == {} and back.extra == 7
        assert "kept" in back.__dict__ and "on_device" not in back.__dict__ and "function" not in back.__dict__
        assert isinstance(back.info, types.MappingProxyType) and dict(back.info) == {"k": 1}
        np.testing.assert_array_equal(np.asarray(back.on_device["a"][0]), r.x)  # recomputed on use
        assert back.function() == 1
    # a record saved before a field existed gets the field's default
    state = records.record_state(r)
    del state["extra"], state["_cache"]
    old = _Record.__new__(_Record)
    old.__setstate__(state)
    assert old.extra == 7 and old._cache == {}
