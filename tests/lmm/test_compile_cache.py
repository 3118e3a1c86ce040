"""Compiled programs reused across processes and data sets: jaxlmm's persistent compilation
cache (jaxlmm.compilation) and shape buckets (jaxlmm.kernels.buckets).

Padded programs must give the unpadded numbers (to 1e-12), and a second data set of the same
model structure whose sizes fall in the same buckets must compile nothing in a fresh process:
every program comes from the cache (counted from JAX's own log of persistent-cache misses)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jaxlmm
import jaxlmm.lmm.model as lmm_model
from jaxlmm import compilation
from jaxlmm.errors import ArgumentError
from jaxlmm.lmm.fit import conditional_estimates
from jaxlmm.lmm.objective import objective
from jaxlmm.precision import float64
import jax.numpy as jnp

REPO = Path(__file__).resolve().parents[2]


def sleep_like(G: int, n_per: int = 10, seed: int | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(G if seed is None else seed)
    g = np.repeat(np.arange(G), n_per)
    x = np.tile(np.arange(n_per), G).astype(float)
    y = 250 + 10 * x + rng.normal(0, 25, G)[g] + rng.normal(0, 6, G)[g] * x + rng.normal(0, 25, G * n_per)
    return pd.DataFrame({"y": y, "x": x, "g": [f"s{i}" for i in g]})


def crossed(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 30, n)
    b = rng.integers(0, 12, n)
    c = rng.integers(0, 3, n)
    y = rng.normal(size=30)[a] + rng.normal(size=12)[b] + 0.3 * c + rng.normal(size=n)
    return pd.DataFrame({"y": y, "a": a.astype(str), "b": b.astype(str), "c": c.astype(str)})


CHILD = textwrap.dedent("""
    import json, logging, sys
    import numpy as np
    misses = []
    class Misses(logging.Handler):
        def emit(self, record):
            msg = record.getMessage()
            if "PERSISTENT COMPILATION CACHE MISS" in msg:
                misses.append(msg.split("'")[1])
    log = logging.getLogger("jax._src.compiler")
    log.setLevel(logging.DEBUG)
    log.addHandler(Misses())
    log.propagate = False
    sys.path.insert(0, sys.argv[2])
    from test_compile_cache import sleep_like
    import jaxlmm
    fit = jaxlmm.lmer("y ~ x + (x | g)", sleep_like(int(sys.argv[1])))
    fit.coef_table()
    str(fit.summary())
    print(json.dumps({"misses": misses, "objective": fit.objective}))
""")


def run_child(G: int, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(G), str(Path(__file__).parent)], env=env,
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def child_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION", "JAXLMM_CACHE"))}
    env.update(extra)
    return env


def test_second_data_set_of_the_structure_compiles_nothing(tmp_path):
    env = child_env(JAXLMM_CACHE_DIR=str(tmp_path / "xla"))
    first = run_child(18, env)
    assert len(first["misses"]) >= 4  # the optimiser, the solve, the Hessian, ... compiled
    assert any((tmp_path / "xla").iterdir())
    second = run_child(19, env)  # 19 groups, 190 rows: the buckets of 18 groups and 180 rows
    assert second["misses"] == []
    assert second["objective"] != first["objective"]
    # another bucket compiles again (the test would notice a cache that served wrong shapes)
    third = run_child(40, env)
    assert len(third["misses"]) >= 4


def test_cache_off_writes_nothing(tmp_path):
    env = child_env(JAXLMM_CACHE_DIR=str(tmp_path / "xla"), JAXLMM_CACHE="0")
    run_child(18, env)
    assert not (tmp_path / "xla").exists() or not any((tmp_path / "xla").rglob("*"))


def test_cache_directory_rules(tmp_path, monkeypatch):
    monkeypatch.delenv("JAXLMM_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert compilation.cache_dir() == tmp_path / "xdg" / "jaxlmm" / "xla"
    monkeypatch.setenv("JAXLMM_CACHE_DIR", str(tmp_path / "mine"))
    assert compilation.cache_dir() == tmp_path / "mine"
    with pytest.raises(ArgumentError, match="True or False"):
        jaxlmm.set_cache("yes")


def test_a_cache_configured_for_jax_is_used(tmp_path):
    """The user's own JAX cache directory wins over jaxlmm's, and gets jaxlmm's programs."""
    env = child_env(JAXLMM_CACHE_DIR=str(tmp_path / "ours"), JAX_COMPILATION_CACHE_DIR=str(tmp_path / "theirs"))
    run_child(18, env)
    assert any((tmp_path / "theirs").iterdir())
    assert not (tmp_path / "ours").exists()


def test_set_cache_switches_for_the_process(monkeypatch):
    monkeypatch.setitem(compilation._state, "enabled", None)
    jaxlmm.set_cache(False)
    assert not compilation.cache_enabled()
    jaxlmm.set_cache(True)
    assert compilation.cache_enabled() == (compilation._DIR_STATE is not None)


def _fit_and_estimates(formula, data, theta=None):
    fit = jaxlmm.lmer(formula, data)
    th = np.asarray(fit.theta if theta is None else theta)
    with float64():
        M = fit._model.arrays(True)
        value = float(objective(jnp.asarray(th), M))
        cond = conditional_estimates(th, M, fit._model.pad_layout)
        cov = cond.cond_cov()
    return fit, fit._model.pad_layout, value, cond, cov, fit.coef_table().to_numpy(float)


@pytest.mark.parametrize("formula,data", [
    ("y ~ x + (x | g)", sleep_like(18)),
    ("y ~ c + (1 | a) + (1 | b) + (1 | a:c)", crossed(400, 3)),
], ids=["slope", "crossed"])
def test_padded_fits_agree_with_unpadded(formula, data, monkeypatch):
    monkeypatch.setattr(lmm_model, "BUCKET", False)
    plain, lay_u, f_u, cu, cov_u, tab_u = _fit_and_estimates(formula, data)
    monkeypatch.setattr(lmm_model, "BUCKET", True)
    padded, lay_p, f_p, cp, cov_p, tab_p = _fit_and_estimates(formula, data, theta=plain.theta)
    assert lay_p is not None and lay_u is None
    assert lay_p.padded_levels != lay_p.nlevels
    np.testing.assert_allclose(padded.objective, plain.objective, rtol=1e-12)
    np.testing.assert_allclose(padded.theta, plain.theta, rtol=1e-9, atol=1e-12)  # the optimiser's path
    # at the same theta, everything the fit reports agrees to 1e-12
    np.testing.assert_allclose(f_p, f_u, rtol=1e-13)
    np.testing.assert_allclose(cp.beta, cu.beta, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cp.vcov, cu.vcov, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(cp.sigma, cu.sigma, rtol=1e-12)
    for a, b in zip(cp.b, cu.b):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)
    for a, b in zip(cov_p, cov_u):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)
    # the reports: coefficient table (Satterthwaite df from the padded Hessian)
    np.testing.assert_allclose(tab_p, tab_u, rtol=1e-7)
    assert padded.ranef.shape == plain.ranef.shape
