#!/usr/bin/env python
"""Generalized linear mixed models: ``jaxlmm.glmer`` against lme4's ``glmer`` (Rscript) and
mixedlm's ``glmer`` (PyPI), binomial logit, Laplace (``nAGQ = 1``), timed in the same run.

Workloads (fixed data; ``--size W=N`` changes a generated one):

- ``verbagg``: lme4's VerbAgg (7,584 rows, 316 subjects ``id`` x 24 items),
  ``r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)``; read from
  ``data/VerbAgg.csv.gz`` (exported once from R when missing);
- ``crossed_1m``: generated crossed binary data, ``y ~ x + (1 | subj) + (1 | item)``, 1M rows
  by default over n/200 subjects x n/2000 items (5,000 x 500 at 1M), rows drawn at random,
  true fixed effects (-0.5, 0.7) and random-effect SDs (theta) (0.8, 0.5), seed 20261126.

Every engine fits in its own fresh process (Python worker or ``Rscript``), one engine at a
time: a first fit (jaxlmm's includes tracing and XLA compilation), a marker line, then up to
``--repeats`` more fits while their total stays within ``--budget`` seconds (jaxlmm always
gets one). *cold* is the parent's wall clock from starting the process to the marker (imports,
reading the data and the first fit); *warm* the median of the later fits. A process still
running after ``--timeout`` seconds is stopped; a peer stopped before its first fit is reported
as slower than the timeout. Ratios are peer time / jaxlmm time (> 1: jaxlmm faster). Writes
``OUT/glmer.json`` and ``OUT/glmer.md``.

Usage:
    python benchmarks/bench_glmer.py                                  # both workloads, all engines
    python benchmarks/bench_glmer.py --workloads verbagg --repeats 5
    python benchmarks/bench_glmer.py --workloads crossed_1m --size crossed_1m=20000 --repeats 1
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

ENGINES = ("jaxlmm", "lme4", "mixedlm", "jaxlmm-cache")
# jaxlmm again with JAX's persistent compilation cache (JAX_COMPILATION_CACHE_DIR), primed by one
# untimed process first: what a user's second script pays. Not a peer (left out of "fastest peer").
VARIANTS = {"jaxlmm-cache": "jaxlmm"}
VERBAGG_FILE = common.DATA_DIR / "VerbAgg.csv.gz"
CROSSED_SEED = 20261126
CROSSED_TRUTH = {"beta": (-0.5, 0.7), "theta": (0.8, 0.5)}

WORKLOADS = {
    "verbagg": {
        "title": "lme4's VerbAgg, crossed (1 | id) + (1 | item)",
        "formula": "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)",
        "default_size": 7584,  # fixed: the data set's rows
        # factor columns and, where the order matters (contrasts), lme4's level order
        "factors": {"id": None, "item": None, "Gender": ["F", "M"], "btype": ["curse", "scold", "shout"],
                    "situ": ["other", "self"]},
    },
    "crossed_1m": {
        "title": "generated crossed binary data, (1 | subj) + (1 | item)",
        "formula": "y ~ x + (1 | subj) + (1 | item)",
        "default_size": 1_000_000,
        "factors": {"subj": None, "item": None},
    },
}

# lme4's VerbAgg, written once as a small gzip CSV (strings for the factors, r2 as 0/1).
EXPORT_VERBAGG_R = r"""
args <- commandArgs(trailingOnly = TRUE)
data(VerbAgg, package = "lme4")
d <- data.frame(r2 = as.integer(VerbAgg$r2 == "Y"), id = as.character(VerbAgg$id),
                item = as.character(VerbAgg$item), Anger = VerbAgg$Anger,
                Gender = as.character(VerbAgg$Gender), btype = as.character(VerbAgg$btype),
                situ = as.character(VerbAgg$situ))
con <- gzfile(args[[1]], "w"); write.csv(d, con, row.names = FALSE); close(con)
"""


# =========================================================================== data


def ensure_verbagg(rscript: str | None) -> Path:
    """``data/VerbAgg.csv.gz``, exported from R's lme4 when it is not there yet."""
    if VERBAGG_FILE.exists():
        return VERBAGG_FILE
    if not rscript:
        raise RuntimeError(f"{VERBAGG_FILE} is missing and Rscript (to export it from lme4) was not found")
    with tempfile.TemporaryDirectory() as td:
        script, tmp = Path(td) / "export.R", Path(td) / "VerbAgg.csv.gz"
        script.write_text(EXPORT_VERBAGG_R)
        res = subprocess.run([rscript, "--vanilla", str(script), str(tmp)], capture_output=True, text=True,
                             timeout=300)
        if res.returncode != 0 or not tmp.exists():
            raise RuntimeError(f"exporting VerbAgg from R failed: {res.stderr[-1000:]}")
        VERBAGG_FILE.parent.mkdir(parents=True, exist_ok=True)
        tmp.replace(VERBAGG_FILE)
    return VERBAGG_FILE


def crossed_levels(n: int) -> tuple[int, int]:
    """Subjects and items for ``n`` rows: n/200 and n/2000 (5,000 x 500 at 1M)."""
    return max(n // 200, 20), max(n // 2000, 10)


def make_crossed(n: int, seed: int = CROSSED_SEED):
    """``y ~ Bernoulli(logit^-1(-0.5 + 0.7 x + u[subj] + v[item]))``, ``u ~ N(0, 0.8^2)``,
    ``v ~ N(0, 0.5^2)``, ``x ~ N(0, 1)``; subject and item of each row drawn at random."""
    import numpy as np
    import pandas as pd

    n_subj, n_item = crossed_levels(n)
    rng = np.random.default_rng(seed)
    u = rng.normal(0.0, CROSSED_TRUTH["theta"][0], n_subj)
    v = rng.normal(0.0, CROSSED_TRUTH["theta"][1], n_item)
    subj = rng.integers(0, n_subj, n)
    item = rng.integers(0, n_item, n)
    x = rng.normal(size=n)
    eta = CROSSED_TRUTH["beta"][0] + CROSSED_TRUTH["beta"][1] * x + u[subj] + v[item]
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(np.int8)
    return pd.DataFrame({"y": y, "x": np.round(x, 8),
                         "subj": np.char.add("s", subj.astype(str)),
                         "item": np.char.add("i", item.astype(str))})


def load_data(workload: str, path: str):
    """The worker's data frame: factor columns as strings, or pandas Categoricals where lme4's
    level order matters (VerbAgg's Gender, btype, situ)."""
    import pandas as pd

    factors = WORKLOADS[workload]["factors"]
    df = pd.read_csv(path, dtype={c: str for c in factors})
    for col, levels in factors.items():
        if levels is not None:
            df[col] = pd.Categorical(df[col], categories=levels)
    return df


# =========================================================================== Python workers


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _fitter_jaxlmm(formula: str, df):
    import jax
    import numpy as np

    import jaxlmm

    def fit_once():
        fit = jaxlmm.glmer(formula, df, "binomial")
        # pulled to the host inside the timed region
        return {"objective": float(fit.objective), "theta": np.asarray(fit.theta, dtype=float).tolist(),
                "fixef": {str(k): float(v) for k, v in fit.fixef.items()},
                "converged": bool(fit.converged), "n_evals": fit.optinfo.get("n_evals"),
                "optimizer": fit.optinfo.get("optimizer"),
                "warnings": list(fit.optinfo.get("warnings") or ())}

    return fit_once, {"jaxlmm": getattr(jaxlmm, "__version__", None) or common.python_package_version("jaxlmm"),
                      "jax": jax.__version__, "jaxlib": common.python_package_version("jaxlib"),
                      "jax_backend": jax.default_backend()}


def _fitter_mixedlm(formula: str, df):
    import numpy as np

    import mixedlm

    family = mixedlm.families.Binomial()

    def fit_once():
        res = mixedlm.glmer(formula, df, family=family, nAGQ=1)
        fixef = res.fixef() if callable(res.fixef) else res.fixef
        return {"objective": -2.0 * float(res.logLik()), "theta": np.asarray(res.theta, dtype=float).tolist(),
                "fixef": {str(k): float(v) for k, v in dict(fixef).items()},
                "converged": getattr(res, "converged", None), "n_evals": getattr(res, "n_iter", None),
                "optimizer": str(getattr(res, "optimizer", "")), "message": str(getattr(res, "message", ""))}

    return fit_once, {"mixedlm": common.python_package_version("mixedlm")}


FITTERS = {"jaxlmm": _fitter_jaxlmm, "mixedlm": _fitter_mixedlm}


def worker_main(engine: str, workload: str, data: str, repeats: int, budget: float, result_file: str) -> int:
    """Fit in this fresh process; the result file is rewritten after every fit, so a process
    stopped by the parent's timeout still leaves the fits it finished."""
    out: dict = {"engine": engine, "ok": False}
    path = Path(result_file)
    try:
        t = time.perf_counter()
        df = load_data(workload, data)
        out["data_load_s"] = time.perf_counter() - t
        t = time.perf_counter()
        fit_once, versions = FITTERS[engine](WORKLOADS[workload]["formula"], df)
        out["import_s"] = time.perf_counter() - t
        out["versions"] = versions
        t = time.perf_counter()
        info = fit_once()
        first = time.perf_counter() - t
        print(common.FIRST_FIT_MARKER, flush=True)
        out.update(ok=True, first_fit_s=first, fit_times_s=[], **info)
        out["max_rss_mib"] = _peak_rss_mib()
        common.write_json(path, out)
        min_repeats = 1 if engine == "jaxlmm" else 0  # jaxlmm's warm time even after a slow cold fit
        spent = 0.0
        times = out["fit_times_s"]
        while len(times) < repeats and (len(times) < min_repeats or spent + (times[-1] if times else first) <= budget):
            t = time.perf_counter()
            info = fit_once()
            times.append(time.perf_counter() - t)
            spent += times[-1]
            out.update(info)
            out["max_rss_mib"] = _peak_rss_mib()
            common.write_json(path, out)
    except Exception as e:  # reported in the table; the other engines still run
        out.update(ok=False, error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
        out["max_rss_mib"] = _peak_rss_mib()
        common.write_json(path, out)
    return 0 if out.get("ok") else 1


# =========================================================================== lme4 worker

R_SCRIPT = r"""
args <- commandArgs(trailingOnly = TRUE)
data_file <- args[[1]]; formula <- args[[2]]; factors <- jsonlite::fromJSON(args[[3]], simplifyVector = FALSE)
repeats <- as.integer(args[[4]]); budget <- as.numeric(args[[5]]); out_file <- args[[6]]
t0 <- proc.time()[["elapsed"]]
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
t_lib <- proc.time()[["elapsed"]] - t0
t1 <- proc.time()[["elapsed"]]
if (!grepl("\\.gz$", data_file) && requireNamespace("data.table", quietly = TRUE)) {
  dat <- as.data.frame(data.table::fread(data_file)); reader <- "data.table::fread"
} else {
  dat <- read.csv(if (grepl("\\.gz$", data_file)) gzfile(data_file) else data_file); reader <- "read.csv"
}
for (f in names(factors)) {
  lev <- factors[[f]]
  dat[[f]] <- if (is.null(lev)) factor(dat[[f]]) else factor(dat[[f]], levels = unlist(lev))
}
t_data <- proc.time()[["elapsed"]] - t1
form <- as.formula(formula)
warns <- character(0)
fit_once <- function() withCallingHandlers(glmer(form, data = dat, family = binomial),
  warning = function(w) { warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning") })
hwm <- function() as.numeric(gsub("[^0-9]", "", grep("^VmHWM", readLines("/proc/self/status"), value = TRUE))) / 1024
write_out <- function(m, first, times) {
  conv <- m@optinfo$conv$lme4$messages
  out <- list(ok = TRUE, engine = "lme4", library_load_s = t_lib, data_load_s = t_data, reader = reader,
              first_fit_s = first, fit_times_s = I(times),
              objective = -2 * as.numeric(logLik(m)), theta = I(unname(getME(m, "theta"))),
              fixef = as.list(fixef(m)), n_evals = m@optinfo$feval, optimizer = m@optinfo$optimizer,
              converged = is.null(conv) && isTRUE(m@optinfo$conv$opt == 0),
              conv_messages = I(if (is.null(conv)) character(0) else conv), warnings = I(unique(warns)),
              max_rss_mib = hwm(),
              versions = list(R = paste(R.version$major, R.version$minor, sep = "."),
                              lme4 = as.character(packageVersion("lme4")),
                              Matrix = as.character(packageVersion("Matrix"))))
  writeLines(toJSON(out, auto_unbox = TRUE, digits = NA), out_file)
}
st <- system.time(m <- fit_once())
first <- st[["elapsed"]]
cat("@@FIRST_FIT_DONE\n"); flush(stdout())
times <- numeric(0); spent <- 0
write_out(m, first, times)
while (length(times) < repeats && spent + (if (length(times)) times[length(times)] else first) <= budget) {
  st <- system.time(m <- fit_once()); times <- c(times, st[["elapsed"]]); spent <- spent + st[["elapsed"]]
  write_out(m, first, times)
}
"""


# =========================================================================== parent


def _available(engine: str, rscript: str | None) -> str | None:
    """None when the engine can run here, else why not."""
    if engine == "lme4":
        if not rscript:
            return "Rscript not found on PATH (or $RSCRIPT)"
        return None
    engine = VARIANTS.get(engine, engine)
    if not common.python_package_version(engine):
        return f"{engine} is not installed" + (" (pip install -e . from the repository root)"
                                               if engine == "jaxlmm" else " (pip install mixedlm)")
    return None


def run_engine(engine: str, workload: str, data_file: Path, args, rscript: str | None, tmp: Path) -> dict:
    wl = WORKLOADS[workload]
    result_file = tmp / f"{workload}-{engine}.json"
    result_file.unlink(missing_ok=True)
    # a cold fit must compile: no persistent XLA cache (except for the cached variant)
    env = dict(os.environ, JAX_ENABLE_COMPILATION_CACHE="false")
    if engine in VARIANTS:
        cache = tmp / f"jax-cache-{workload}"
        env = dict(os.environ, JAX_ENABLE_COMPILATION_CACHE="true", JAX_COMPILATION_CACHE_DIR=str(cache))
    if engine == "lme4":
        script = tmp / "bench_glmer_lme4.R"
        script.write_text(R_SCRIPT)
        cmd = [rscript, "--vanilla", str(script), str(data_file), wl["formula"], json.dumps(wl["factors"]),
               str(args.repeats), str(args.budget), str(result_file)]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", engine, "--workload", workload,
               "--data", str(data_file), "--repeats", str(args.repeats), "--budget", str(args.budget),
               "--result-file", str(result_file)]
    if engine in VARIANTS:
        cmd[cmd.index(engine)] = VARIANTS[engine]
        common.run_timed(cmd, timeout=args.timeout, env=env)  # primes the cache, not timed
        result_file.unlink(missing_ok=True)
    timing = common.run_timed(cmd, timeout=args.timeout, env=env)
    res: dict
    try:
        res = json.loads(result_file.read_text())
    except (OSError, ValueError):
        res = {"ok": False}
        if timing.timed_out:
            res["error"] = f"stopped after {args.timeout:.0f} s before its first fit"
            res["more_than_s"] = args.timeout
        else:
            res["error"] = f"no result (exit code {timing.returncode}): {(timing.stderr or timing.stdout)[-1500:].strip()}"
    if timing.timed_out and res.get("ok"):
        res["stopped_during_repeats"] = f"stopped by the {args.timeout:.0f} s timeout after " \
                                        f"{1 + len(res.get('fit_times_s') or [])} fit(s)"
    res.update(engine=engine, process_total_s=timing.total_s, cold_s=timing.first_fit_s,
               timed_out=timing.timed_out, returncode=timing.returncode)
    if timing.stderr.strip():
        res["stderr_tail"] = timing.stderr.strip()[-1500:]
    if res.get("ok"):
        res["n_fits"] = 1 + len(res.get("fit_times_s") or [])
        # no later fit (the budget ran out): the first fit stands in (the peers compile nothing)
        res["warm_s"] = common.median(res["fit_times_s"]) if res.get("fit_times_s") else res["first_fit_s"]
    return res


def _norm(name: str) -> str:
    return re.sub(r"[\s.:\[\]]", "", name)


def compare(ref: dict, r: dict) -> dict:
    """Differences of fit r relative to fit ref: objective, theta, fixed effects. Fixed effects
    are matched by name (lme4 and jaxlmm: GenderM, btypescold, ...); where the names differ but
    the counts agree (mixedlm: Gender.1, btype.1, ...) by position (same model-matrix order)."""
    out: dict = {"objective_diff": r["objective"] - ref["objective"]}
    ta, tb = ref.get("theta") or [], r.get("theta") or []
    if ta and len(ta) == len(tb):
        out["theta_max_abs_diff"] = max(abs(a - b) for a, b in zip(ta, tb))
    fa, fb = ref.get("fixef") or {}, r.get("fixef") or {}
    na, nb = {_norm(k): v for k, v in fa.items()}, {_norm(k): v for k, v in fb.items()}
    if na and set(na) == set(nb):
        out["fixef_max_abs_diff"] = max(abs(na[k] - nb[k]) for k in na)
        out["fixef_matched_by"] = "name"
    elif fa and len(fa) == len(fb):
        out["fixef_max_abs_diff"] = max(abs(a - b) for a, b in zip(fa.values(), fb.values()))
        out["fixef_matched_by"] = "position"
        out["fixef_names"] = {"jaxlmm": list(fa), r.get("engine", "peer"): list(fb)}
    return out


def _ratio(num, den):
    return None if (num is None or den is None or den <= 0) else num / den


def summarise(w: dict) -> None:
    """Comparisons with jaxlmm, per-peer ratios and the fastest peer (warm and cold), in place."""
    eng = w["engines"]
    j = eng.get("jaxlmm", {})
    jok = bool(j.get("ok"))
    for name, r in eng.items():
        if name == "jaxlmm":
            continue
        if jok and r.get("ok"):
            r["vs_jaxlmm"] = compare(j, r)
            r["ratio_warm"] = _ratio(r.get("warm_s"), j.get("warm_s"))
            r["ratio_cold"] = _ratio(r.get("cold_s"), j.get("cold_s"))
        elif jok and r.get("more_than_s"):  # stopped before its first fit: a lower bound
            r["ratio_cold_more_than"] = _ratio(r["more_than_s"], j.get("cold_s"))
            r["ratio_warm_more_than"] = _ratio(r["more_than_s"], j.get("warm_s"))
    peers = {k: v for k, v in eng.items() if k != "jaxlmm" and k not in VARIANTS and v.get("ok")}
    s: dict = {"jaxlmm_warm_s": j.get("warm_s"), "jaxlmm_cold_s": j.get("cold_s"),
               "timed_out": {k: v["more_than_s"] for k, v in eng.items() if v.get("more_than_s")}}
    for kind in ("warm", "cold"):
        cand = {k: v for k, v in peers.items() if v.get(f"{kind}_s") is not None}
        if cand:
            best = min(cand, key=lambda k: cand[k][f"{kind}_s"])
            s[f"fastest_peer_{kind}"] = best
            s[f"fastest_peer_{kind}_s"] = cand[best][f"{kind}_s"]
            s[f"ratio_{kind}"] = _ratio(cand[best][f"{kind}_s"], j.get(f"{kind}_s")) if jok else None
    w["summary"] = s


def run_workload(key: str, args, rscript: str | None, tmp: Path) -> dict:
    wl = WORKLOADS[key]
    out: dict = {"key": key, "title": wl["title"], "formula": wl["formula"], "family": "binomial (logit)",
                 "nagq": 1, "engines": {}, "skipped": {}}
    t = time.perf_counter()
    try:
        if key == "verbagg":
            data_file = ensure_verbagg(rscript)
            import pandas as pd

            out["rows"] = len(pd.read_csv(data_file))
            out["data"] = str(data_file.relative_to(common.BENCH_DIR.parent))
        else:
            n = args.sizes.get(key, wl["default_size"])
            df = make_crossed(n)
            data_file = tmp / f"{key}.csv"
            df.to_csv(data_file, index=False)
            n_subj, n_item = crossed_levels(n)
            out.update(rows=n, subjects=int(df["subj"].nunique()), items=int(df["item"].nunique()),
                       seed=CROSSED_SEED, truth=CROSSED_TRUTH, mean_y=float(df["y"].mean()),
                       data=f"generated ({n_subj:,} x {n_item:,} levels drawn), temporary CSV")
            del df
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
        print(f"  {key}: no data: {out['error']}", flush=True)
        return out
    out["data_s"] = time.perf_counter() - t
    for engine in ENGINES:
        if engine not in args.engines:
            continue
        why = _available(engine, rscript)
        if why:
            out["skipped"][engine] = why
            print(f"  {key} {engine}: skipped ({why})", flush=True)
            continue
        print(f"  {key} {engine} ...", flush=True)
        r = run_engine(engine, key, data_file, args, rscript, tmp)
        out["engines"][engine] = r
        if r.get("ok"):
            print(f"    cold {common.fmt_s(r.get('cold_s'))} s, first fit {common.fmt_s(r.get('first_fit_s'))} s, "
                  f"warm {common.fmt_s(r.get('warm_s'), 3)} s, -2 log L {r['objective']:.6f}"
                  + (f" ({r['stopped_during_repeats']})" if r.get("stopped_during_repeats") else ""), flush=True)
        else:
            print(f"    failed: {r.get('error')}", flush=True)
            if r.get("traceback"):
                print(r["traceback"], flush=True)
    summarise(out)
    if key != "verbagg":
        data_file.unlink(missing_ok=True)
    return out


# =========================================================================== report


def _fmt_diff(x, fmt="+.2e") -> str:
    return "-" if x is None else format(x, fmt)


def _gt(bound) -> str:
    return "-" if bound is None else f"> {bound:.2f}x"


def render(rep: dict) -> list[str]:
    m = rep["machine"]
    L = ["# GLMM benchmark: `glmer`, binomial logit, Laplace", "",
         f"Run {rep['date']} with `{rep['command']}`, {rep['wall_s'] / 60:.1f} min in all.", "",
         f"Machine: {m.get('cpu_model')}, {m.get('cpu_affinity')} cores, {m.get('mem_total_gib')} GiB, "
         f"{m.get('platform')}; load average at start {m.get('loadavg_at_start')}; repository at "
         f"`{rep.get('git')}`.", "",
         "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(rep["versions"].items()) if v), "",
         "Every engine fits in its own fresh process. *cold*: wall clock from starting that process to its "
         "first result (interpreter or R start, imports / `library(lme4)`, reading the data, the first fit; "
         "for jaxlmm with tracing and XLA compilation, no persistent compilation cache). *first fit*: the first "
         "fit alone, timed inside the process. *warm*: median of the later fits in the same process. "
         "*evals*: objective evaluations (mixedlm: its `n_iter`). Objective: -2 log L (Laplace). Δ: peer - jaxlmm. Ratios: peer time / jaxlmm time (> 1: jaxlmm "
         "faster).", "",
         "Engines: `jaxlmm.glmer(formula, data, \"binomial\")`; lme4 `glmer(formula, data, family = binomial)` "
         "with the default `glmerControl()`; mixedlm `glmer(formula, data, family=Binomial(), nAGQ=1)` with its "
         "defaults.", "",
         "## Summary", "",
         "| workload | rows | jaxlmm warm | jaxlmm cold | fastest peer, warm | its warm | ratio warm "
         "| fastest peer, cold | its cold | ratio cold | stopped by the timeout |",
         "|---|---:|---:|---:|---|---:|---:|---|---:|---:|---|"]
    for w in rep["workloads"]:
        if "summary" not in w:
            L.append(f"| {w['key']} | failed: {w.get('error', '')[:100]} | | | | | | | | | |")
            continue
        s = w["summary"]
        L.append(f"| {w['key']} | {w['rows']:,} | {common.fmt_s(s.get('jaxlmm_warm_s'), 3)} | "
                 f"{common.fmt_s(s.get('jaxlmm_cold_s'))} | {s.get('fastest_peer_warm') or '-'} | "
                 f"{common.fmt_s(s.get('fastest_peer_warm_s'), 3)} | {common.fmt_ratio(s.get('ratio_warm'))} | "
                 f"{s.get('fastest_peer_cold') or '-'} | {common.fmt_s(s.get('fastest_peer_cold_s'))} | "
                 f"{common.fmt_ratio(s.get('ratio_cold'))} | "
                 + (", ".join(f"{k} (> {t:.0f} s)" for k, t in s["timed_out"].items()) or "-") + " |")
    for w in rep["workloads"]:
        L += ["", f"## {w['key']}: {w['title']}", ""]
        if "summary" not in w:
            L.append(f"failed: {w.get('error')}")
            continue
        desc = f"`{w['formula']}`, binomial logit, Laplace; {w['rows']:,} rows"
        if w["key"] == "verbagg":
            desc += f" (`{w['data']}`)."
        else:
            desc += (f", {w['subjects']:,} subjects x {w['items']:,} items, mean(y) {w['mean_y']:.3f}; true "
                     f"beta {w['truth']['beta']}, theta {w['truth']['theta']}; seed {w['seed']}; "
                     f"generated in {w['data_s']:.1f} s.")
        L += [desc, "",
              "| engine | cold | first fit | warm (median) | fits | evals | -2 log L | Δ -2 log L | max \\|Δβ\\| "
              "| max \\|Δθ\\| | converged | warm / jaxlmm warm | cold / jaxlmm cold | peak RSS MiB |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
        for name, r in w["engines"].items():
            if r.get("more_than_s"):
                L.append(f"| {name} | > {r['more_than_s']:.0f} (stopped) | | | | | | | | | | "
                         f"{_gt(r.get('ratio_warm_more_than'))} | {_gt(r.get('ratio_cold_more_than'))} | |")
                continue
            if not r.get("ok"):
                L.append(f"| {name} | failed: {str(r.get('error'))[:150]} | | | | | | | | | | | | |")
                continue
            c = r.get("vs_jaxlmm", {})
            ev = r.get("n_evals")
            L.append(f"| {name} | {common.fmt_s(r.get('cold_s'))} | {common.fmt_s(r.get('first_fit_s'))} | "
                     f"{common.fmt_s(r.get('warm_s'), 3)} | {r['n_fits']} | {'-' if ev is None else ev} | "
                     f"{r['objective']:.6f} | {_fmt_diff(c.get('objective_diff'))} | "
                     f"{_fmt_diff(c.get('fixef_max_abs_diff'), '.2e')} | "
                     f"{_fmt_diff(c.get('theta_max_abs_diff'), '.2e')} | {r.get('converged')} | "
                     f"{common.fmt_ratio(r.get('ratio_warm'))} | {common.fmt_ratio(r.get('ratio_cold'))} | "
                     f"{common.fmt_s(r.get('max_rss_mib'), 0)} |")
        for name, why in w["skipped"].items():
            L.append(f"| {name} | skipped: {why} | | | | | | | | | | | | |")
        notes = []
        for name, r in w["engines"].items():
            if not r.get("ok"):
                continue
            bits = []
            if name == "lme4":
                bits.append(f"last optimizer {r.get('optimizer')} (default `glmerControl()`: bobyqa, then Nelder_Mead), `library(lme4)` {common.fmt_s(r.get('library_load_s'))} s, "
                            f"{r.get('reader')} {common.fmt_s(r.get('data_load_s'))} s")
            else:
                bits.append(f"import {common.fmt_s(r.get('import_s'))} s, read_csv {common.fmt_s(r.get('data_load_s'))} s")
                if r.get("optimizer"):
                    bits.append(f"optimizer {r['optimizer']}")
            if r.get("stopped_during_repeats"):
                bits.append(r["stopped_during_repeats"])
            if r.get("vs_jaxlmm", {}).get("fixef_matched_by") == "position":
                bits.append("fixed effects matched to jaxlmm's by position (its names: "
                            + ", ".join(r["vs_jaxlmm"]["fixef_names"][name]) + ")")
            msgs = list(r.get("warnings") or []) + list(r.get("conv_messages") or [])
            if msgs:
                bits.append("warnings: " + "; ".join(dict.fromkeys(str(x) for x in msgs)))
            notes.append(f"- {name}: " + "; ".join(bits))
        if notes:
            L += [""] + notes
    L += ["", "Per-fit times, θ, β and the engines' messages: `glmer.json`."]
    return L


# =========================================================================== main


def _versions(rscript: str | None) -> dict:
    v = {k: common.python_package_version(k) for k in ("jaxlmm", "jax", "jaxlib", "numpy", "pandas", "mixedlm")}
    v["python"] = sys.version.split()[0]
    if rscript:
        v.update(common.r_package_versions(rscript, ("lme4", "Matrix", "data.table")))
    return v


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma list of {', '.join(WORKLOADS)}")
    ap.add_argument("--engines", default=",".join(ENGINES), help=f"comma list of {', '.join(ENGINES)}")
    ap.add_argument("--size", action="append", default=[], metavar="W=N",
                    help="rows of a generated workload, e.g. crossed_1m=20000")
    ap.add_argument("--repeats", type=int, default=3, help="fits after the first, per engine (default 3)")
    ap.add_argument("--budget", type=float, default=120.0,
                    help="seconds per engine for the later fits; fewer repeats when a fit is slow (default 120)")
    ap.add_argument("--timeout", type=float, default=300.0,
                    help="seconds per engine process (default 300); a peer stopped before its first fit is "
                         "reported as slower than this")
    ap.add_argument("--out", default=str(common.BENCH_DIR / "results"))
    ap.add_argument("--worker", choices=sorted(FITTERS), help=argparse.SUPPRESS)
    ap.add_argument("--workload", choices=sorted(WORKLOADS), help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--result-file", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.workload, args.data, args.repeats, args.budget, args.result_file)

    keys = [k.strip() for k in args.workloads.split(",") if k.strip()]
    unknown = [k for k in keys if k not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workload(s) {unknown}; choose from {', '.join(WORKLOADS)}")
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    bad = set(engines) - set(ENGINES)
    if bad:
        ap.error(f"unknown engine(s) {sorted(bad)}; choose from {', '.join(ENGINES)}")
    args.engines = set(engines) | {"jaxlmm"}  # the reference for every difference and ratio
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    try:
        args.sizes = {k.strip(): int(float(v)) for k, v in (s.split("=", 1) for s in args.size)}
    except ValueError:
        ap.error("--size takes WORKLOAD=N, e.g. crossed_1m=20000")
    if set(args.sizes) - {"crossed_1m"}:
        ap.error("--size applies to crossed_1m only (verbagg is a fixed data set)")
    rscript = common.find_rscript()

    t0 = time.perf_counter()
    rep = {"benchmark": "glmer", "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "command": "python benchmarks/bench_glmer.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "machine": common.machine_info(), "git": common.git_state(), "versions": _versions(rscript),
           "repeats": args.repeats, "budget_s": args.budget, "timeout_s": args.timeout, "workloads": []}
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="jaxlmm-glmer-") as tmp:
        for key in keys:
            print(f"{key} ...", flush=True)
            rep["workloads"].append(run_workload(key, args, rscript, Path(tmp)))
            rep["wall_s"] = time.perf_counter() - t0
            common.write_json(out / "glmer.json", rep)  # partial results survive an interruption
    rep["wall_s"] = time.perf_counter() - t0
    print()
    common.write_report(out, "glmer", rep, render(rep))
    jx = [w["engines"].get("jaxlmm", {}).get("ok") for w in rep["workloads"] if "engines" in w]
    return 0 if jx and all(jx) else 1


if __name__ == "__main__":
    raise SystemExit(main())
