"""Compile time of lmer against the number of crossed random-intercept terms (issue 14).

``y ~ 1 + (1|g1) + ... + (1|gk)`` on ~5,000 simulated rows, each factor with 20-50 levels.
One fresh process per k: the first fit (compilation included) minus a warm refit of the same
model on new data of the same shapes, and the number of equations in the jaxpr of the objective
and its gradient. Run: ``python benchmarks/bench_compile_terms.py 2 5 10 20 30``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd


def make_data(k: int, n: int = 5000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cols = {}
    y = rng.normal(size=n)
    for i in range(k):
        levels = int(rng.integers(20, 51))
        codes = rng.integers(0, levels, size=n)
        cols[f"g{i + 1}"] = pd.Categorical([f"l{c}" for c in codes])
        y = y + 0.5 * rng.normal(size=levels)[codes]
    cols["y"] = y
    return pd.DataFrame(cols)


def formula(k: int) -> str:
    return "y ~ 1 + " + " + ".join(f"(1 | g{i + 1})" for i in range(k))


def one(k: int) -> dict:
    import jax

    import jaxlmm

    df = make_data(k)
    t0 = time.perf_counter()
    jaxlmm.lmer(formula(k), df)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    jaxlmm.lmer(formula(k), df)
    warm = time.perf_counter() - t0
    from jaxlmm.terms.design import build_design
    from jaxlmm.lmm.model import LmerModel
    from jaxlmm.lmm.objective import objective
    from jaxlmm.precision import float64

    model = LmerModel.from_design(build_design(formula(k), df))
    with float64():
        M = model.arrays(True)
        theta = jax.numpy.ones(model.n_theta)
        eqns = len(jax.make_jaxpr(jax.value_and_grad(objective))(theta, M).jaxpr.eqns)
    return {"k": k, "first_s": first, "warm_s": warm, "compile_s": first - warm, "jaxpr_eqns": eqns}


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--one":
        print(json.dumps(one(int(sys.argv[2]))))
        sys.exit(0)
    ks = [int(a) for a in sys.argv[1:]] or [2, 5, 10, 20, 30]
    for k in ks:
        out = subprocess.run([sys.executable, __file__, "--one", str(k)], capture_output=True, text=True)
        line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-2000:]
        print(line, flush=True)
