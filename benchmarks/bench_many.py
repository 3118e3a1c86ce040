#!/usr/bin/env python
"""Many responses of one design: ``jaxlmm.lmer_many`` against looping lme4's ``lmer`` (Rscript)
and mixedlm (when installed) over the same responses, in the same run.

Responses: ``--responses`` (default 1,000) draws from the sleepstudy fit
``Reaction ~ Days + (Days | Subject)`` (REML; 180 rows, 18 subjects each), fixed seed. jaxlmm: a
fresh process calls ``lmer_many`` once (cold: XLA compilation included) and ``--repeats`` more
times (warm). The peers fit the first ``--subset`` responses one by one in a loop (lme4:
``lmer()`` each time, timed inside R; mixedlm: its ``lmer`` each time); their time for all
responses is the subset's time scaled up, and their estimates are compared with jaxlmm's.

Usage: python benchmarks/bench_many.py [--responses 1000] [--subset 100] [--repeats 3]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

WORKER = r"""
import json, sys, time
import numpy as np
import jaxlmm as jl
from jaxlmm import datasets
Y = np.load(sys.argv[1]); repeats = int(sys.argv[2])
s = datasets.load("sleepstudy")
times = []
for r in range(repeats + 1):
    t = time.perf_counter()
    res = jl.lmer_many("~ Days + (Days | Subject)", s, Y)
    times.append(time.perf_counter() - t)
print(json.dumps({"cold_s": times[0], "warm_s": times[1:], "objective": res["objective"].tolist(),
                  "beta": res[["(Intercept)", "Days"]].to_numpy().tolist(),
                  "converged": float(res["converged"].mean()), "n_evals_median": float(res["n_evals"].median()),
                  "devices": __import__("jax").device_count()}))
"""

MIXEDLM = r"""
import json, sys, time
import numpy as np, pandas as pd
import mixedlm
from jaxlmm import datasets
Y = np.load(sys.argv[1]); k = int(sys.argv[2])
s = datasets.load("sleepstudy")
obj = []
t = time.perf_counter()
for j in range(k):
    d = s.assign(yy=Y[:, j])
    m = mixedlm.lmer("yy ~ Days + (Days | Subject)", d)
    obj.append(float(m.REMLcrit()) if hasattr(m, "REMLcrit") else float("nan"))
print(json.dumps({"seconds": time.perf_counter() - t, "objective": obj}))
"""

R_SCRIPT = r"""
suppressMessages(library(lme4))
args <- commandArgs(TRUE)
Y <- as.matrix(read.csv(args[1], header = FALSE)); k <- as.integer(args[2])
s <- sleepstudy
obj <- numeric(k)
tm <- system.time(for (j in seq_len(k)) {
  s$yy <- Y[, j]
  m <- lmer(yy ~ Days + (Days | Subject), s)
  obj[j] <- m@devcomp$cmp[["REML"]]
})[["elapsed"]]
cat(sprintf('{"seconds": %.6f, "objective": [%s]}\n', tm, paste(sprintf("%.10f", obj), collapse = ",")))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--responses", type=int, default=1000)
    ap.add_argument("--subset", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(common.BENCH_DIR / "results"))
    args = ap.parse_args()

    import jaxlmm as jl
    from jaxlmm import datasets

    s = datasets.load("sleepstudy")
    fit = jl.lmer("Reaction ~ Days + (Days | Subject)", s)
    Y = fit.simulate(args.responses, seed=20261125).to_numpy()
    k = min(args.subset, args.responses)
    peers = {}
    with tempfile.TemporaryDirectory() as tmp:
        npy = Path(tmp) / "Y.npy"
        np.save(npy, Y)
        res = subprocess.run([sys.executable, "-c", WORKER, str(npy), str(args.repeats)], capture_output=True, text=True)
        if res.returncode != 0:
            sys.exit(res.stderr)
        jx = json.loads(res.stdout.strip().splitlines()[-1])
        if shutil.which("Rscript"):
            csv = Path(tmp) / "Y.csv"
            np.savetxt(csv, Y[:, :k], delimiter=",")
            script = Path(tmp) / "loop.R"
            script.write_text(R_SCRIPT)
            out = subprocess.run(["Rscript", str(script), str(csv), str(k)], capture_output=True, text=True)
            if out.returncode == 0:
                peers["lme4 lmer() loop"] = json.loads(out.stdout.strip().splitlines()[-1])
        out = subprocess.run([sys.executable, "-c", MIXEDLM, str(npy), str(k)], capture_output=True, text=True)
        if out.returncode == 0:
            peers["mixedlm lmer() loop"] = json.loads(out.stdout.strip().splitlines()[-1])
    warm = common.median(jx["warm_s"])
    ours = np.array(jx["objective"][:k])
    table = []
    for name, p in peers.items():
        total = p["seconds"] * args.responses / k
        diff = np.nanmax(np.abs(np.array(p["objective"]) - ours) / np.abs(ours))
        table.append({"engine": name, "subset_s": p["seconds"], "all_s_scaled": total,
                      "ratio_warm": total / warm, "ratio_cold": total / jx["cold_s"],
                      "max_rel_objective_diff": float(diff)})
    result = {
        "benchmark": "lmer_many_sleepstudy", "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": common.machine_info(), "git": common.git_state(), "responses": args.responses, "subset": k,
        "jaxlmm": {k2: v for k2, v in jx.items() if k2 not in ("objective", "beta")}, "peers": table,
    }
    outdir = Path(args.out)
    m = result["machine"]
    lines = [
        f"# lmer_many: {args.responses:,} sleepstudy-sized responses, `~ Days + (Days | Subject)`, REML",
        "",
        f"{result['date']}, {m.get('cpu_model')} ({m.get('cpu_affinity')} cores), git {result['git']}",
        "",
        "| engine | time for all responses (s) | ratio engine / jaxlmm warm | ratio engine / jaxlmm cold | max rel. objective diff |",
        "|---|---|---|---|---|",
        f"| jaxlmm lmer_many warm | {warm:.3f} | 1 | | |",
        f"| jaxlmm lmer_many cold (incl. compilation) | {jx['cold_s']:.3f} | | 1 | |",
    ]
    for row in table:
        lines.append(f"| {row['engine']} ({k} measured, scaled) | {row['all_s_scaled']:.1f} | "
                     f"{row['ratio_warm']:.0f}x | {row['ratio_cold']:.1f}x | {row['max_rel_objective_diff']:.1e} |")
    lines += ["", f"jaxlmm: converged {jx['converged']:.3f}, median {jx['n_evals_median']:.0f} evaluations per "
              f"response, {jx['devices']} device(s).", "",
              "Command: `python benchmarks/bench_many.py " + " ".join(sys.argv[1:]) + "`"]
    common.write_report(outdir, "many", result, lines)


if __name__ == "__main__":
    main()
