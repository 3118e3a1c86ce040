"""Gram blocks summed over row shards (jaxlmm.gram_shards) against the host's bincounts."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import jaxlmm
from jaxlmm import datasets
from jaxlmm.terms.design import build_design
from jaxlmm.errors import ArgumentError
from jaxlmm.gram.blocks import gram_blocks
from jaxlmm.gram.shards import gram_blocks_sharded, use_shards

CASES = [
    ("sleepstudy", "Reaction ~ Days + (Days | Subject)"),
    ("penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)"),
    ("pastes", "strength ~ 1 + (1 | batch/cask)"),
]


def _max_rel_diff(a, b) -> float:
    assert a.nlevels == b.nlevels and a.widths == b.widths
    assert a.off.keys() == b.off.keys() and a.pattern.keys() == b.pattern.keys()
    for k in a.pattern:
        for x, y in zip(a.pattern[k], b.pattern[k]):
            np.testing.assert_array_equal(x, y)
    worst = 0.0
    for x, y in list(zip(a.diag, b.diag)) + [(a.off[k], b.off[k]) for k in a.off]:
        assert x.shape == y.shape
        worst = max(worst, float(np.max(np.abs(x - y)) / max(1.0, np.max(np.abs(x)))))
    return worst


def _weighted_crossed(seed=0, n=503):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "y": rng.normal(size=n), "x": rng.normal(size=n), "w": rng.uniform(0.5, 2.0, n),
        "a": rng.integers(0, 37, n).astype(str), "b": rng.integers(0, 11, n).astype(str),
    })


@pytest.mark.parametrize("name,formula", CASES)
def test_one_device_equals_host(name, formula):
    design = build_design(formula, datasets.load(name))
    assert _max_rel_diff(gram_blocks(design), gram_blocks_sharded(design)) < 1e-14


def test_weights_slopes_crossed_equals_host():
    design = build_design("y ~ x + (1 + x | a) + (1 | b)", _weighted_crossed(), weights="w")
    assert _max_rel_diff(gram_blocks(design), gram_blocks_sharded(design)) < 1e-14


def test_lmer_shard_argument():
    d = datasets.load("sleepstudy")
    f = "Reaction ~ Days + (Days | Subject)"
    a, b = jaxlmm.lmer(f, d, shard=False), jaxlmm.lmer(f, d, shard=True)
    assert abs(a.objective - b.objective) < 1e-9 * abs(a.objective)
    np.testing.assert_allclose(a.fixef, b.fixef, rtol=1e-9)
    with pytest.raises(ArgumentError, match="shard"):
        jaxlmm.lmer(f, d, shard="yes")
    assert use_shards(None, 10) is False  # one device, or few rows: the host sums


SHARDED = r"""
import json, numpy as np, pandas as pd, jax, jaxlmm
from jaxlmm import datasets
from jaxlmm.terms.design import build_design
from jaxlmm.gram.blocks import gram_blocks
from jaxlmm.gram.shards import gram_blocks_sharded, use_shards
cases = %s
rng = np.random.default_rng(0); n = 503
wc = pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(size=n), "w": rng.uniform(0.5, 2.0, n),
                   "a": rng.integers(0, 37, n).astype(str), "b": rng.integers(0, 11, n).astype(str)})
worst, fits = 0.0, []
designs = [build_design(f, datasets.load(d)) for d, f in cases]
designs.append(build_design("y ~ x + (1 + x | a) + (1 | b)", wc, weights="w"))
for des in designs:
    a, b = gram_blocks(des), gram_blocks_sharded(des)
    for x, y in list(zip(a.diag, b.diag)) + [(a.off[k], b.off[k]) for k in a.off]:
        worst = max(worst, float(np.max(np.abs(x - y)) / max(1.0, np.max(np.abs(x)))))
    assert all(np.array_equal(u, v) for k in a.pattern for u, v in zip(a.pattern[k], b.pattern[k]))
for d, f in cases:
    one, many = jaxlmm.lmer(f, datasets.load(d), shard=False), jaxlmm.lmer(f, datasets.load(d), shard=True)
    fits.append(abs(one.objective - many.objective) / abs(one.objective))
print(json.dumps({"devices": len(jax.local_devices()), "gram": worst, "fits": max(fits),
                  "auto_small": use_shards(None, 10), "auto_large": use_shards(None, 10**6)}))
"""


def test_row_shards_over_eight_devices():
    """Rows split over 8 (virtual CPU) devices, sums added by psum: the host's blocks and fits
    (503 rows: shards of 63 with one padded, zero-weight row)."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    code = SHARDED % repr(CASES)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["devices"] == 8
    assert res["gram"] < 1e-13
    # the Gram blocks differ by rounding (psum order); the fits end within the optimiser's
    # tolerance of each other: Pastes' flat criterion stops 3e-11 apart in theta, 2.4e-12 apart
    # relative in the objective (2.6e-13 without shape buckets, whose programs round differently)
    assert res["fits"] < 1e-11
    assert res["auto_small"] is False and res["auto_large"] is True
