#!/usr/bin/env python
"""Nonlinear mixed models: ``jaxlmm.nlmer`` (Laplace and Lindstrom-Bates) against nlme's ``nlme``
(Lindstrom-Bates) and lme4's ``nlmer`` (Laplace), timed in the same run.

Workloads:

- ``pk1000``: a simulated Theoph-like one-compartment model with first-order absorption,
  ``conc ~ Dose exp(lKe + lKa - lCl) (exp(-exp(lKe) t) - exp(-exp(lKa) t)) / (exp(lKa) - exp(lKe))``,
  ``--subjects`` subjects (1,000) x 11 samples, three uncorrelated random effects (log ke, log ka,
  log Cl; SDs 0.15, 0.5, 0.2), residual SD 0.3, seed 20261202;
- ``orange``: R's Orange trees, the logistic growth curve with a random asymptote per tree.

Every engine fits in its own fresh process (Python worker or ``Rscript``), one at a time: a first
fit, a marker line, then ``--repeats`` more fits. *cold* is the parent's wall clock from starting
the process to the marker (imports, reading the data and the first fit, jaxlmm's tracing and
compilation included); *warm* the median of the later fits. Ratios are peer time / jaxlmm time
of the same method (nlme vs ``lb``, nlmer vs ``laplace``; > 1: jaxlmm faster). Each result
carries its ``-2 log L`` so that equal likelihoods can be checked. Writes ``OUT/nlmm.json`` and
``OUT/nlmm.md``.

Usage:
    python benchmarks/bench_nlmm.py                       # both workloads, all engines
    python benchmarks/bench_nlmm.py --workloads orange --repeats 5
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

FOL = "conc ~ Dose * exp(lKe + lKa - lCl) * (exp(-exp(lKe) * Time) - exp(-exp(lKa) * Time)) / (exp(lKa) - exp(lKe))"
LOGIS = "circumference ~ Asym / (1 + exp((xmid - age) / scal))"
ENGINES = ("jaxlmm-laplace", "jaxlmm-lb", "nlme", "nlmer")
PEER = {"nlme": "jaxlmm-lb", "nlmer": "jaxlmm-laplace"}
WORKLOADS = {
    "pk1000": dict(title="simulated one-compartment PK, 3 uncorrelated random effects", model=FOL,
                   start={"lKe": -2.5, "lKa": 0.5, "lCl": -3.0}, random="(lKe + lKa + lCl || Subject)",
                   group="Subject",
                   r_nlme="random = pdDiag(lKe + lKa + lCl ~ 1), groups = ~ Subject",
                   r_nlmer="(lKe | Subject) + (lKa | Subject) + (lCl | Subject)",
                   r_deriv=("Dose * exp(lKe + lKa - lCl) * (exp(-exp(lKe) * Time) - exp(-exp(lKa) * Time)) / "
                            "(exp(lKa) - exp(lKe))", ["Dose", "Time"])),
    "orange": dict(title="R's Orange, logistic growth, (Asym | Tree)", model=LOGIS,
                   start={"Asym": 170.0, "xmid": 700.0, "scal": 350.0}, random="(Asym | Tree)", group="Tree",
                   r_nlme="random = Asym ~ 1 | Tree", r_nlmer="Asym | Tree",
                   r_deriv=("Asym / (1 + exp((xmid - age) / scal))", ["age"])),
}
SEED = 20261202


def make_pk(n_subj: int, seed: int = SEED):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    times = np.array([0.25, 0.5, 1, 2, 3.5, 5, 7, 9, 12, 24, 36])
    beta, sd = np.array([-2.5, 0.5, -3.2]), np.array([0.15, 0.5, 0.2])
    lke, lka, lcl = (beta + rng.normal(size=(n_subj, 3)) * sd).T
    dose = rng.uniform(3, 6, n_subj)
    s = np.repeat(np.arange(n_subj), len(times))
    t = np.tile(times, n_subj) * np.exp(rng.normal(0, 0.05, len(s)))
    ke, ka = np.exp(lke[s]), np.exp(lka[s])
    mu = dose[s] * np.exp(lke[s] + lka[s] - lcl[s]) * (np.exp(-ke * t) - np.exp(-ka * t)) / (ka - ke)
    return pd.DataFrame({"Subject": np.char.add("s", s.astype(str)), "Time": np.round(t, 4),
                         "Dose": np.round(dose[s], 4), "conc": np.round(mu + rng.normal(0, 0.3, len(s)), 5)})


def orange_csv() -> Path:
    return Path(__file__).resolve().parent.parent / "tests" / "data" / "Orange.csv"


# =========================================================================== workers


def worker_main(engine: str, workload: str, data: str, repeats: int, out_file: str) -> int:
    import numpy as np
    import pandas as pd

    import jaxlmm

    w = WORKLOADS[workload]
    df = pd.read_csv(data, dtype={w["group"]: str})
    method = engine.split("-")[1]

    def fit_once():
        f = jaxlmm.nlmer(w["model"], df, w["start"], w["random"], method=method)
        return {"objective": float(f.objective), "fixef": [float(v) for v in f.fixef], "converged": bool(f.converged),
                "theta": np.asarray(f.theta).tolist(), "sigma": float(f.sigma)}

    t = time.perf_counter()
    res = fit_once()
    first = time.perf_counter() - t
    print(common.FIRST_FIT_MARKER, flush=True)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        res = fit_once()
        times.append(time.perf_counter() - t)
    Path(out_file).write_text(json.dumps({"ok": True, "first_fit_s": first, "warm_s": times, **res,
                                          "versions": {"jaxlmm": jaxlmm.__version__}}))
    return 0


def r_script(engine: str, workload: str, data: str, repeats: int, out_file: str) -> str:
    w = WORKLOADS[workload]
    expr, cols = w["r_deriv"]
    params = list(w["start"])
    args = ", ".join(cols + params)
    start = ", ".join(f"{k} = {v}" for k, v in w["start"].items())
    resp = w["model"].split("~")[0].strip()
    call = (f"nlme({resp} ~ mf(...), data = d, fixed = {' + '.join(params)} ~ 1, {w['r_nlme']}, start = c({start}), method = 'ML')"
            if engine == "nlme" else
            f"nlmer({resp} ~ mf(...) ~ {w['r_nlmer']}, data = d, start = c({start}))")
    call = call.replace("mf(...)", f"mf({args})")
    obj = "-2 * as.numeric(logLik(fm))" if engine == "nlme" else "deviance(fm)"
    lib = "nlme" if engine == "nlme" else "lme4"
    return f"""
suppressPackageStartupMessages(library({lib}))
d <- read.csv("{data}"); d${w['group']} <- factor(d${w['group']})
mf <- deriv(~ {expr}, c({', '.join(repr(p) for p in params)}), function({args}) NULL)
fit <- function() {call}
t <- system.time(fm <- fit())[["elapsed"]]
cat("{common.FIRST_FIT_MARKER}\\n"); flush(stdout())
warm <- c()
for (i in seq_len({repeats})) warm <- c(warm, system.time(fm <- fit())[["elapsed"]])
o <- sprintf('{{"ok": true, "first_fit_s": %.6f, "warm_s": [%s], "objective": %.10f, "fixef": [%s], "versions": {{"{lib}": "%s"}}}}',
             t, paste(sprintf("%.6f", warm), collapse = ", "), {obj}, paste(sprintf("%.10f", fixef(fm)), collapse = ", "),
             as.character(packageVersion("{lib}")))
writeLines(o, "{out_file}")
"""


# =========================================================================== parent


def run_engine(engine: str, workload: str, data: Path, repeats: int, timeout: float, rscript: str | None) -> dict:
    with tempfile.TemporaryDirectory() as td:
        out = Path(td) / "result.json"
        if engine.startswith("jaxlmm"):
            cmd = [sys.executable, __file__, "--worker", engine, workload, str(data), str(repeats), str(out)]
        else:
            if not rscript:
                return {"ok": False, "error": "Rscript not found"}
            script = Path(td) / "fit.R"
            script.write_text(r_script(engine, workload, str(data), repeats, str(out)))
            cmd = [rscript, "--vanilla", str(script)]
        p = common.run_timed(cmd, timeout=timeout)
        if not out.exists():
            return {"ok": False, "error": (p.stderr or p.stdout)[-800:], "timed_out": p.timed_out}
        r = json.loads(out.read_text())
    r["cold_s"] = p.first_fit_s
    r["warm_median_s"] = common.median(r["warm_s"])
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    ap.add_argument("--subjects", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args(argv)
    rscript = common.find_rscript()
    result = {"benchmark": "nlmm", "date": _dt.datetime.now().isoformat(timespec="seconds"),
              "machine": common.machine_info(), "git": common.git_state(), "subjects": args.subjects,
              "repeats": args.repeats, "workloads": {}}
    lines = [f"# Nonlinear mixed models ({result['date']}, {result['machine'].get('cpu_model')}, "
             f"{result['machine'].get('cpu_affinity')} cores, git {result['git']})", "",
             "Command: `python benchmarks/bench_nlmm.py" + (f" --subjects {args.subjects}" if args.subjects != 1000 else "")
             + (f" --repeats {args.repeats}" if args.repeats != 3 else "") + "`", ""]
    with tempfile.TemporaryDirectory() as td:
        for wl in args.workloads:
            if wl == "pk1000":
                data = Path(td) / "pk.csv"
                make_pk(args.subjects).to_csv(data, index=False)
            else:
                data = orange_csv()
            rows = {}
            for eng in args.engines:
                print(f"[{wl}] {eng} ...", flush=True)
                rows[eng] = run_engine(eng, wl, data, args.repeats, args.timeout, rscript)
            result["workloads"][wl] = rows
            lines += [f"## {wl}: {WORKLOADS[wl]['title']}", "",
                      "| engine | -2 log L | cold (s) | warm (s) | cold ratio | warm ratio |", "|---|---|---|---|---|---|"]
            for eng, r in rows.items():
                if not r.get("ok"):
                    lines.append(f"| {eng} | failed: {str(r.get('error'))[:80]} | | | | |")
                    continue
                ours = rows.get(PEER.get(eng, ""), {})
                cr = r["cold_s"] / ours["cold_s"] if ours.get("ok") and r.get("cold_s") and ours.get("cold_s") else None
                wr = (r["warm_median_s"] / ours["warm_median_s"]
                      if ours.get("ok") and r.get("warm_median_s") and ours.get("warm_median_s") else None)
                lines.append(f"| {eng} | {r['objective']:.6f} | {common.fmt_s(r.get('cold_s'))} | "
                             f"{common.fmt_s(r.get('warm_median_s'), 3)} | {common.fmt_ratio(cr)} | {common.fmt_ratio(wr)} |")
            lines.append("")
    lines.append("Ratios: the peer's time over jaxlmm's for the same method (nlme vs lb, nlmer vs laplace).")
    common.write_report(args.out, "nlmm", result, lines)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        sys.exit(worker_main(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6]))
    sys.exit(main())
