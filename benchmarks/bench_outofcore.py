#!/usr/bin/env python
"""Out-of-core fit: ``y ~ x + (1 + x | g)`` from a generated Parquet dataset of ``--rows`` rows
(default 50M, ``--groups`` 50,000 groups), written file by file so that neither generation nor
the fit ever holds the table. The fit runs in a fresh process; its peak resident memory
(``ru_maxrss``) is reported. A sample that fits in memory (the first ``--sample`` rows, as one
more Parquet dataset) is fitted both ways and the estimates compared.

Usage: python benchmarks/bench_outofcore.py [--rows 50000000] [--groups 50000] [--sample 2000000]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

FORMULA = "y ~ x + (1 + x | g)"

WORKER = r"""
import json, resource, sys, time
import jaxlmm as jl
t = time.perf_counter()
fit = jl.lmer(sys.argv[1], sys.argv[2])
secs = time.perf_counter() - t
print(json.dumps({"seconds": secs, "objective": fit.objective, "fixef": fit.fixef.tolist(), "se": fit.se.tolist(),
                  "theta": fit.theta.tolist(), "sigma": fit.sigma, "nobs": fit.nobs, "converged": fit.converged,
                  "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

IN_MEMORY = r"""
import json, resource, sys
import pandas as pd, jaxlmm as jl
df = pd.read_parquet(sys.argv[2])
fit = jl.lmer(sys.argv[1], df)
print(json.dumps({"objective": fit.objective, "fixef": fit.fixef.tolist(), "se": fit.se.tolist(),
                  "theta": fit.theta.tolist(), "sigma": fit.sigma, "nobs": fit.nobs,
                  "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def generate(folder: Path, rows: int, groups: int, per_file: int = 1_000_000, seed: int = 20261125) -> None:
    """``y = 1 + 0.5 x + b0_g + b1_g x + e``; ``b ~ N(0, diag(1, 0.25))``, ``e ~ N(0, 1)``."""
    rng = np.random.default_rng(seed)
    b0 = rng.normal(size=groups)
    b1 = 0.5 * rng.normal(size=groups)
    folder.mkdir(parents=True, exist_ok=True)
    for k, start in enumerate(range(0, rows, per_file)):
        m = min(per_file, rows - start)
        g = rng.integers(0, groups, size=m).astype(np.int32)
        x = rng.normal(size=m)
        y = 1 + 0.5 * x + b0[g] + b1[g] * x + rng.normal(size=m)
        pd.DataFrame({"y": y, "x": x, "g": g}).to_parquet(folder / f"part{k:05d}.parquet")


def run(script: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=50_000_000)
    ap.add_argument("--groups", type=int, default=50_000)
    ap.add_argument("--sample", type=int, default=2_000_000)
    ap.add_argument("--out", default=str(common.BENCH_DIR / "results"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        big, small = Path(tmp) / "big", Path(tmp) / "sample"
        t = time.perf_counter()
        generate(big, args.rows, args.groups)
        gen_s = time.perf_counter() - t
        generate(small, min(args.sample, args.rows), args.groups)
        ooc = run(WORKER, FORMULA, str(big / "*.parquet"))
        ooc_small = run(WORKER, FORMULA, str(small / "*.parquet"))
        mem_small = run(IN_MEMORY, FORMULA, str(small))
    rel = {k: float(np.max(np.abs(np.array(ooc_small[k]) - np.array(mem_small[k])) /
                           np.maximum(np.abs(np.array(mem_small[k])), 1e-12)))
           for k in ("objective", "fixef", "se", "sigma")}
    result = {"benchmark": "out_of_core", "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": common.machine_info(), "git": common.git_state(), "rows": args.rows, "groups": args.groups,
              "generate_s": gen_s, "out_of_core": ooc, "sample_rows": min(args.sample, args.rows),
              "sample_out_of_core": ooc_small, "sample_in_memory": mem_small, "sample_max_rel_diff": rel}
    outdir = Path(args.out)
    m = result["machine"]
    lines = [
        f"# Out-of-core fit: `{FORMULA}`, {args.rows:,} rows, {args.groups:,} groups (Parquet, 1M-row files)",
        "",
        f"{result['date']}, {m.get('cpu_model')} ({m.get('cpu_affinity')} cores, {m.get('mem_total_gib')} GiB), "
        f"git {result['git']}",
        "",
        "| fit | rows | wall time (s) | peak RSS (MiB) | objective |",
        "|---|---|---|---|---|",
        f"| out of core | {ooc['nobs']:,} | {ooc['seconds']:.1f} | {ooc['max_rss_mib']:.0f} | {ooc['objective']:.4f} |",
        f"| out of core, sample | {ooc_small['nobs']:,} | {ooc_small['seconds']:.1f} | {ooc_small['max_rss_mib']:.0f} | "
        f"{ooc_small['objective']:.6f} |",
        f"| in memory, same sample | {mem_small['nobs']:,} | | {mem_small['max_rss_mib']:.0f} | {mem_small['objective']:.6f} |",
        "",
        f"Sample, out of core vs in memory, max relative difference: {rel}. Estimates (50M): fixef "
        f"{np.round(ooc['fixef'], 4).tolist()}, sigma {ooc['sigma']:.4f}, theta {np.round(ooc['theta'], 4).tolist()}.",
        "",
        "Command: `python benchmarks/bench_outofcore.py " + " ".join(sys.argv[1:]) + "`",
    ]
    common.write_report(outdir, "outofcore", result, lines)


if __name__ == "__main__":
    main()
