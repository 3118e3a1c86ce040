#!/usr/bin/env python
"""Parametric bootstrap of sleepstudy ``Reaction ~ Days + (Days | Subject)`` (REML): jaxlmm's
vmapped refits against lme4's ``bootMer`` (Rscript), timed in the same run.

jaxlmm: a fresh process fits once, then times ``fit.bootstrap(N)`` cold (first call: tracing and
XLA compilation of the batched BFGS) and warm (``--repeats`` more calls, new seeds). lme4:
``bootMer(fm, function(f) c(fixef(f), sigma(f)), nsim = N)`` timed with ``system.time`` inside R
(package loading and the original fit excluded). Writes ``results/bootstrap.{json,md}``.

Usage: python benchmarks/bench_bootstrap.py [--nsim 200] [--repeats 5]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

WORKER = r"""
import json, sys, time, warnings
import jaxlmm
from jaxlmm.datasets import load
nsim, repeats = int(sys.argv[1]), int(sys.argv[2])
fit = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", load("sleepstudy"))
t = time.perf_counter(); b = fit.bootstrap(nsim, seed=0); cold = time.perf_counter() - t
warm = []
for r in range(repeats):
    t = time.perf_counter(); b = fit.bootstrap(nsim, seed=r + 1); warm.append(time.perf_counter() - t)
sd_ratio = (b[list(fit.fixef.index)].std() / fit.se).round(4).to_dict()
print(json.dumps({"cold_s": cold, "warm_s": warm, "converged": float(b.converged.mean()), "sd_over_se": sd_ratio}))
"""

R_SCRIPT = r"""
suppressMessages(library(lme4))
args <- commandArgs(TRUE); nsim <- as.integer(args[1]); repeats <- as.integer(args[2])
fm <- lmer(Reaction ~ Days + (Days | Subject), sleepstudy)
times <- sapply(seq_len(repeats), function(r) system.time(
  bootMer(fm, function(f) c(fixef(f), sigma(f)), nsim = nsim, seed = r))[["elapsed"]])
cat(sprintf('{"times": [%s]}\n', paste(times, collapse = ",")))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nsim", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--r-repeats", type=int, default=3)
    ap.add_argument("--out", default=str(common.BENCH_DIR / "results"))
    args = ap.parse_args()

    res = subprocess.run([sys.executable, "-c", WORKER, str(args.nsim), str(args.repeats)],
                         capture_output=True, text=True, check=True)
    jx = json.loads(res.stdout.strip().splitlines()[-1])
    r = None
    if shutil.which("Rscript"):
        with tempfile.NamedTemporaryFile("w", suffix=".R", delete=False) as fh:
            fh.write(R_SCRIPT)
        out = subprocess.run(["Rscript", fh.name, str(args.nsim), str(args.r_repeats)],
                             capture_output=True, text=True)
        if out.returncode == 0:
            r = json.loads(out.stdout.strip().splitlines()[-1])
    warm = common.median(jx["warm_s"])
    r_med = common.median(r["times"]) if r else None
    result = {
        "benchmark": "bootstrap", "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": common.machine_info(), "git": common.git_state(), "nsim": args.nsim,
        "jaxlmm": jx, "lme4_bootMer": r,
        "ratio_lme4_over_jaxlmm_warm": (r_med / warm) if r_med else None,
        "ratio_lme4_over_jaxlmm_cold": (r_med / jx["cold_s"]) if r_med else None,
    }
    outdir = Path(args.out)
    m = result["machine"]
    lines = [
        f"# Parametric bootstrap, sleepstudy (Days | Subject), {args.nsim} replicates",
        "",
        f"{result['date']}, {m.get('cpu_model')} ({m.get('cpu_affinity')} cores), git {result['git']}",
        "",
        "| engine | median time (s) | ratio lme4 / engine |",
        "|---|---|---|",
        f"| jaxlmm warm (vmapped refits) | {warm:.4f} | {result['ratio_lme4_over_jaxlmm_warm'] or float('nan'):.1f}x |",
        f"| jaxlmm cold (incl. compilation) | {jx['cold_s']:.3f} | {result['ratio_lme4_over_jaxlmm_cold'] or float('nan'):.2f}x |",
        f"| lme4 bootMer | {r_med if r_med is not None else float('nan'):.3f} | 1 |",
        "",
        f"jaxlmm replicates converged: {jx['converged']:.3f}; replicate SD / Wald SE: {jx['sd_over_se']}",
    ]
    common.write_report(outdir, "bootstrap", result, lines)


if __name__ == "__main__":
    main()
