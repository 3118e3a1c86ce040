#!/usr/bin/env python
"""AR(1) errors within a random intercept: jaxlmm ``lmer(..., correlation=AR1)`` against nlme's
``lme(..., correlation = corAR1())`` (Rscript), on the same generated data in the same run.

Data (fixed seed): ``G`` groups x ``T`` occasions, ``y = 1 + 0.5 x + b_g + e``,
``b_g ~ N(0, 1)``, ``e`` AR(1) within group with ``phi = 0.5`` and unit variance; a fraction
``--drop`` of the rows is removed at random (missed occasions: gaps in time, unbalanced groups).

jaxlmm: a fresh process builds and fits the model once (cold: includes XLA compilation), then
``--repeats`` more times (warm: the whole ``lmer`` call, design building included). nlme: the
``lme`` call timed with ``system.time`` inside R (reading the CSV excluded). Both report the REML
log-likelihood, phi and the fixed effects; the script checks they agree.

Usage: python benchmarks/bench_rside.py [--groups 100000] [--occasions 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

WORKER = r"""
import json, resource, sys, time
import pandas as pd
import jaxlmm as jl
df = pd.read_parquet(sys.argv[1]); repeats = int(sys.argv[2])
times = []
for r in range(repeats + 1):
    t = time.perf_counter()
    fit = jl.lmer("y ~ x + (1 | g)", df, correlation=jl.AR1("g", "occasion"))
    times.append(time.perf_counter() - t)
print(json.dumps({"cold_s": times[0], "warm_s": times[1:], "loglik": fit.loglik,
                  "phi": float(fit.correlation_params.iloc[0]), "beta": fit.fixef.tolist(),
                  "sd_g": float(fit.varcorr.sdcor.iloc[0]), "sigma": fit.sigma,
                  "n_evals": fit.optinfo["n_evals"], "converged": fit.converged,
                  "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

R_SCRIPT = r"""
suppressMessages(library(nlme))
args <- commandArgs(TRUE); repeats <- as.integer(args[2])
d <- read.csv(args[1]); d$g <- factor(d$g)
times <- c()
for (r in seq_len(repeats)) {
  tm <- system.time(f <- lme(y ~ x, random = ~ 1 | g, correlation = corAR1(form = ~ occasion | g),
                            data = d, method = "REML"))[["elapsed"]]
  times <- c(times, tm)
}
cat(sprintf('{"times": [%s], "loglik": %.12f, "phi": %.10f, "beta": [%s], "sd_g": %.10f, "sigma": %.10f, "nlme": "%s"}\n',
            paste(times, collapse = ","), as.numeric(logLik(f)),
            coef(f$modelStruct$corStruct, unconstrained = FALSE), paste(sprintf("%.10f", fixef(f)), collapse = ","),
            as.numeric(VarCorr(f)[1, 2]), f$sigma, as.character(packageVersion("nlme"))))
"""


def make_data(groups: int, occasions: int, drop: float, seed: int = 20261125) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    phi = 0.5
    e = np.empty((groups, occasions))
    e[:, 0] = rng.normal(size=groups)
    for t in range(1, occasions):
        e[:, t] = phi * e[:, t - 1] + np.sqrt(1 - phi**2) * rng.normal(size=groups)
    df = pd.DataFrame({"g": np.repeat(np.arange(groups), occasions),
                       "occasion": np.tile(np.arange(1, occasions + 1), groups),
                       "x": rng.normal(size=groups * occasions)})
    df["y"] = 1 + 0.5 * df["x"] + np.repeat(rng.normal(size=groups), occasions) + e.ravel()
    keep = rng.uniform(size=len(df)) >= drop
    return df.loc[keep].reset_index(drop=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", type=int, default=100_000)
    ap.add_argument("--occasions", type=int, default=10)
    ap.add_argument("--drop", type=float, default=0.05)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--r-repeats", type=int, default=1)
    ap.add_argument("--no-r", action="store_true")
    ap.add_argument("--out", default=str(common.BENCH_DIR / "results"))
    args = ap.parse_args()

    df = make_data(args.groups, args.occasions, args.drop)
    with tempfile.TemporaryDirectory() as tmp:
        pq = Path(tmp) / "ar1.parquet"
        df.to_parquet(pq)
        res = subprocess.run([sys.executable, "-c", WORKER, str(pq), str(args.repeats)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            sys.exit(res.stderr)
        jx = json.loads(res.stdout.strip().splitlines()[-1])
        r = None
        if not args.no_r and shutil.which("Rscript"):
            csv = Path(tmp) / "ar1.csv"
            df.to_csv(csv, index=False)
            script = Path(tmp) / "lme.R"
            script.write_text(R_SCRIPT)
            out = subprocess.run(["Rscript", str(script), str(csv), str(args.r_repeats)],
                                 capture_output=True, text=True)
            if out.returncode == 0:
                r = json.loads(out.stdout.strip().splitlines()[-1])
            else:
                print("nlme failed:", out.stderr[-2000:], file=sys.stderr)
    warm = common.median(jx["warm_s"])
    r_med = common.median(r["times"]) if r else None
    result = {
        "benchmark": "rside_ar1_random_intercept",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": common.machine_info(), "git": common.git_state(),
        "groups": args.groups, "occasions": args.occasions, "drop": args.drop, "rows": len(df),
        "jaxlmm": jx, "nlme": r,
        "ratio_nlme_over_jaxlmm_warm": (r_med / warm) if r_med else None,
        "ratio_nlme_over_jaxlmm_cold": (r_med / jx["cold_s"]) if r_med else None,
        "loglik_rel_diff": abs(jx["loglik"] / r["loglik"] - 1) if r else None,
    }
    outdir = Path(args.out)
    m = result["machine"]
    nan = float("nan")
    lines = [
        f"# AR(1) within a random intercept: {args.groups:,} groups x {args.occasions} occasions "
        f"({len(df):,} rows, {args.drop:.0%} occasions missed)",
        "",
        f"{result['date']}, {m.get('cpu_model')} ({m.get('cpu_affinity')} cores), git {result['git']}",
        "",
        "| engine | median time (s) | ratio nlme / engine | REML logLik | phi |",
        "|---|---|---|---|---|",
        f"| jaxlmm warm | {warm:.3f} | {result['ratio_nlme_over_jaxlmm_warm'] or nan:.1f}x | {jx['loglik']:.6f} | {jx['phi']:.6f} |",
        f"| jaxlmm cold (incl. compilation) | {jx['cold_s']:.3f} | {result['ratio_nlme_over_jaxlmm_cold'] or nan:.1f}x | | |",
        f"| nlme lme | {r_med if r_med is not None else nan:.2f} | 1 | {r['loglik'] if r else nan:.6f} | {r['phi'] if r else nan:.6f} |",
        "",
        f"jaxlmm: {jx['n_evals']} objective evaluations, converged {jx['converged']}, peak RSS "
        f"{jx['max_rss_mib']:.0f} MiB. logLik relative difference: {result['loglik_rel_diff']}",
        "",
        "Command: `python benchmarks/bench_rside.py " + " ".join(sys.argv[1:]) + "`",
    ]
    common.write_report(outdir, "rside", result, lines)


if __name__ == "__main__":
    main()
