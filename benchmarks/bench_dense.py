#!/usr/bin/env python
"""W5: jaxlmm against the dense solver as n grows: the REML criterion of
``y ~ x + (1 | a) + (1 | b)`` (crossed, ``a`` with n/10 levels, ``b`` with n/50) computed
(i) by jaxlmm's blocked sparse Cholesky and (ii) the obvious way, the full ``n x n`` matrix
``V = Z Lambda Lambda' Z' + I`` factored by a dense Cholesky in JAX (float64, jitted).

For each n: seconds per value-and-gradient evaluation (median of ``--repeats`` after a compiling
call; one timed call for the dense solver from n = 8,000), the dense matrix's memory (8 n^2 bytes), and the two criteria at the same theta (they must
agree). jaxlmm's whole fit time is reported too. Each size runs in its own process so peak RSS
is per size.

Usage: python benchmarks/bench_dense.py [--sizes 1000,2000,4000,8000,16000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

WORKER = r"""
import json, resource, sys, time
import numpy as np, pandas as pd, jax, jax.numpy as jnp
import jaxlmm as jl
from jaxlmm.terms.design import build_design
from jaxlmm.lmm.model import LmerModel
from jaxlmm.lmm.objective import objective
from jaxlmm.precision import float64
n, repeats = int(sys.argv[1]), int(sys.argv[2])
sys.path.insert(0, sys.argv[3])
from dense_solver import reml_criterion
rng = np.random.default_rng(n)
na, nb = max(n // 10, 2), max(n // 50, 2)
a, b = rng.integers(0, na, n), rng.integers(0, nb, n)
x = rng.normal(size=n)
y = 1 + 0.5 * x + rng.normal(size=na)[a] + 0.7 * rng.normal(size=nb)[b] + rng.normal(size=n)
df = pd.DataFrame({"y": y, "x": x, "a": a, "b": b})
formula = "y ~ x + (1 | a) + (1 | b)"
t = time.perf_counter(); fit = jl.lmer(formula, df); fit_cold = time.perf_counter() - t
t = time.perf_counter(); fit = jl.lmer(formula, df); fit_warm = time.perf_counter() - t
theta = jnp.asarray(fit.theta)
design = build_design(formula, df)
model = LmerModel.from_design(design)

def timed(f, *args, repeats=repeats):
    jax.block_until_ready(f(*args))
    ts = []
    for _ in range(repeats):
        t = time.perf_counter(); jax.block_until_ready(f(*args)); ts.append(time.perf_counter() - t)
    return float(np.median(ts))

with float64():
    M = model.arrays(True)
    vg = jax.jit(jax.value_and_grad(objective))
    sparse_s = timed(vg, theta, M)
    sparse_val = float(vg(theta, M)[0])
    X = jnp.asarray(design.X); yv = jnp.asarray(design.y)
    Zs = []
    for term in design.terms:
        Z = np.zeros((n, term.n_levels)); Z[np.arange(n), term.codes] = term.columns[:, 0]; Zs.append(jnp.asarray(Z))

    def dense(th):
        V = jnp.eye(n)
        for Z, t in zip(Zs, th):
            V = V + (t * t) * (Z @ Z.T)
        return reml_criterion(V, X, yv)

    dvg = jax.jit(jax.value_and_grad(dense))
    dense_s = timed(dvg, theta, repeats=repeats if n < 8000 else 1)  # minutes per call beyond 8k
    dense_val = float(dvg(theta)[0])
print(json.dumps({"n": n, "levels": [na, nb], "sparse_eval_s": sparse_s, "dense_eval_s": dense_s,
                  "dense_matrix_gib": 8 * n * n / 2**30, "sparse_value": sparse_val, "dense_value": dense_val,
                  "fit_cold_s": fit_cold, "fit_warm_s": fit_warm, "fit_evals": fit.optinfo["n_evals"],
                  "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,2000,4000,8000,16000")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(common.BENCH_DIR / "results"))
    args = ap.parse_args()
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        out = subprocess.run([sys.executable, "-c", WORKER, str(n), str(args.repeats), str(common.BENCH_DIR)], capture_output=True, text=True)
        if out.returncode != 0:
            why = {-9: "killed (SIGKILL: out of memory)", 137: "killed (out of memory)",
                   -11: "crashed (SIGSEGV)"}.get(out.returncode, f"exit {out.returncode}")
            print(f"n={n} failed ({why}): {out.stderr[-1500:]}", file=sys.stderr)
            rows.append({"n": n, "failed": why})
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    result = {"benchmark": "W5_dense_solver", "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": common.machine_info(), "git": common.git_state(), "rows": rows}
    outdir = Path(args.out)
    m = result["machine"]
    lines = [
        "# W5: blocked sparse Cholesky vs the dense n x n solver, `y ~ x + (1 | a) + (1 | b)` (REML)",
        "",
        f"{result['date']}, {m.get('cpu_model')} ({m.get('cpu_affinity')} cores), git {result['git']}",
        "",
        "| n | levels a, b | dense V (GiB) | dense value+grad (s) | jaxlmm value+grad (s) | ratio | jaxlmm fit warm (s) | "
        "criteria rel. diff | peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['n']:,} | | {8 * r['n'] ** 2 / 2**30:.3f} | {r['failed']} | | | | | |")
            continue
        lines.append(
            f"| {r['n']:,} | {r['levels'][0]:,}, {r['levels'][1]:,} | {r['dense_matrix_gib']:.3f} | {r['dense_eval_s']:.4f} | "
            f"{r['sparse_eval_s']:.5f} | {r['dense_eval_s'] / r['sparse_eval_s']:.0f}x | {r['fit_warm_s']:.3f} | "
            f"{abs(r['sparse_value'] / r['dense_value'] - 1):.1e} | {r['max_rss_mib']:.0f} |")
    lines += ["", "Command: `python benchmarks/bench_dense.py " + " ".join(sys.argv[1:]) + "`"]
    common.write_report(outdir, "dense", result, lines)


if __name__ == "__main__":
    main()
