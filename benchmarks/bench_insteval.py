#!/usr/bin/env python
"""InstEval benchmark: jaxlmm against mixedlm (PyPI) and lme4 (R), timed in the same run.

Model (REML), 73,421 observations, three crossed/nested scalar random intercepts:

    y ~ 1 + service + (1|s) + (1|d) + (1|dept:service)

Every engine runs in its own fresh subprocess which loads the data, fits once (the "first"
or cold fit), prints a marker line, then fits ``--repeats`` more times in the same process.
For jaxlmm the first fit includes tracing and XLA compilation and the later ones reuse the
compiled code ("warm").  See benchmarks/README.md for what every number means.

Usage:
    python benchmarks/bench_insteval.py [--repeats N] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

FORMULA = "y ~ 1 + service + (1|s) + (1|d) + (1|dept:service)"
DATA_FILE = common.DATA_DIR / "InstEval.csv.gz"
FACTOR_COLUMNS = ["s", "d", "studage", "lectage", "service", "dept"]
ENGINES = ("jaxlmm", "mixedlm", "lme4")

# lme4 1.1.31 fit of the same model (REML, default optimizer settings), recorded once in
# the project's reference fits; used only as a fixed yardstick in the output.
LME4_REFERENCE = {
    "objective": 237661.535719744,
    "theta": [0.275903086855951, 0.435414250825174, 0.0931796257942482],
    "fixef": {"(Intercept)": 3.28067247441877, "service1": -0.0534952794638216},
}


# =========================================================================== workers
# These run inside the child process (python bench_insteval.py --worker ENGINE ...).


def load_data():
    import pandas as pd

    # All grouping columns (and service) are factors in R; read them as strings so that
    # `service` is categorical (coefficient service1), not numeric.
    return pd.read_csv(DATA_FILE, dtype={c: str for c in FACTOR_COLUMNS})


def _jsonable(v):
    """optinfo values may be numpy / jax scalars or arrays; make them plain JSON."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if hasattr(v, "tolist") or hasattr(v, "__array__"):
        import numpy as np

        try:
            return np.asarray(v).tolist()
        except Exception:
            pass
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return repr(v)


def _time_fits(fit_once, repeats: int):
    """First fit, marker line, then ``repeats`` more: (first seconds, later seconds, last result)."""
    first_s, *result = fit_once()
    print(common.FIRST_FIT_MARKER, flush=True)
    times = []
    for _ in range(repeats):
        dt, *result = fit_once()
        times.append(dt)
    return first_s, times, result


def _worker_jaxlmm(repeats: int) -> dict:
    t0 = time.perf_counter()
    df = load_data()
    t_data = time.perf_counter() - t0

    t = time.perf_counter()
    import jax
    import jaxlmm
    import numpy as np
    t_import = time.perf_counter() - t

    def fit_once():
        t = time.perf_counter()
        fit = jaxlmm.lmer(FORMULA, df, reml=True)
        # Pull results to the host inside the timed region, in case anything is still
        # pending on the device (async dispatch).
        obj = float(fit.objective)
        theta = np.asarray(fit.theta, dtype=float)
        fixef = {str(k): float(v) for k, v in fit.fixef.items()}
        return time.perf_counter() - t, fit, obj, theta, fixef

    first_s, times, (fit, obj, theta, fixef) = _time_fits(fit_once, repeats)

    optinfo = {str(k): _jsonable(v) for k, v in dict(getattr(fit, "optinfo", {}) or {}).items()}
    return {
        "data_load_s": t_data,
        "import_s": t_import,
        "first_fit_s": first_s,
        "fit_times_s": times,
        "objective": obj,
        "theta": theta.tolist(),
        "fixef": fixef,
        "optinfo": optinfo,
        "versions": {
            "jaxlmm": getattr(jaxlmm, "__version__", None) or common.python_package_version("jaxlmm"),
            "jax": jax.__version__,
            "jaxlib": common.python_package_version("jaxlib"),
            "numpy": np.__version__,
            "pandas": sys.modules["pandas"].__version__,
        },
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        # jaxlmm computes in float64 inside a local enable_x64 context; this is only the
        # global flag as the user left it.
        "jax_x64_global": bool(jax.config.jax_enable_x64),
        "jax_compilation_cache": {
            "enabled": bool(jax.config.jax_enable_compilation_cache),
            "dir": jax.config.jax_compilation_cache_dir,
        },
    }


def _worker_mixedlm(repeats: int) -> dict:
    t0 = time.perf_counter()
    df = load_data()
    t_data = time.perf_counter() - t0

    t = time.perf_counter()
    import mixedlm
    import numpy as np
    t_import = time.perf_counter() - t

    def fit_once():
        t = time.perf_counter()
        res = mixedlm.lmer(FORMULA, df, REML=True)
        obj = float(res.REMLcrit())
        return time.perf_counter() - t, res, obj

    first_s, times, (res, obj) = _time_fits(fit_once, repeats)
    fixef = res.fixef() if callable(res.fixef) else res.fixef
    return {
        "data_load_s": t_data,
        "import_s": t_import,
        "first_fit_s": first_s,
        "fit_times_s": times,
        "objective": obj,
        "theta": np.asarray(res.theta, dtype=float).tolist(),
        "fixef": {str(k): float(v) for k, v in dict(fixef).items()},
        "optinfo": {
            "optimizer": getattr(res, "optimizer", None),
            "n_evals": getattr(res, "function_evals", None),
            "n_iter": getattr(res, "n_iter", None),
            "grad_norm": getattr(res, "gradient_norm", None),
            "converged": getattr(res, "converged", None),
            "message": str(getattr(res, "message", "")),
        },
        "versions": {"mixedlm": getattr(mixedlm, "__version__", None)
                     or common.python_package_version("mixedlm")},
    }


def worker_main(engine: str, repeats: int, result_file: str) -> int:
    try:
        fn = {"jaxlmm": _worker_jaxlmm, "mixedlm": _worker_mixedlm}[engine]
        out = {"ok": True, **fn(repeats)}
    except Exception as e:  # report, don't crash: the parent prints the note
        import traceback

        out = {"ok": False, "error": f"{type(e).__name__}: {e}",
               "traceback": traceback.format_exc()}
    common.write_json(Path(result_file), out)
    return 0 if out["ok"] else 1


# =========================================================================== lme4 (R)

R_SCRIPT = r"""
args <- commandArgs(trailingOnly = TRUE)
data_file <- args[[1]]; repeats <- as.integer(args[[2]]); out_file <- args[[3]]
t0 <- proc.time()[["elapsed"]]
suppressPackageStartupMessages(library(lme4))
t_lib <- proc.time()[["elapsed"]] - t0
t1 <- proc.time()[["elapsed"]]
cc <- c(s = "factor", d = "factor", studage = "factor", lectage = "factor",
        service = "factor", dept = "factor", y = "numeric")
dat <- read.csv(gzfile(data_file), colClasses = cc)
t_data <- proc.time()[["elapsed"]] - t1
f <- y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)
ctrl <- lmerControl(optimizer = "bobyqa")
times <- numeric(0)
for (i in seq_len(repeats + 1L)) {
  st <- system.time(m <- lmer(f, data = dat, REML = TRUE, control = ctrl))
  times[i] <- st[["elapsed"]]
  if (i == 1L) { cat("@@FIRST_FIT_DONE\n"); flush(stdout()) }
}
num <- function(x) formatC(as.numeric(x), digits = 17, format = "g")
vec <- function(x) paste0("[", paste(num(x), collapse = ", "), "]")
obj <- function(x) paste0("{", paste(sprintf('"%s": %s', names(x), num(x)), collapse = ", "), "}")
str1 <- function(x) if (is.null(x) || length(x) == 0) "null" else
  paste0('"', gsub('"', "'", paste(x, collapse = "; ")), '"')
conv <- m@optinfo$conv$lme4$messages
feval <- m@optinfo$feval
json <- paste0("{",
  '"ok": true, ',
  '"library_load_s": ', num(t_lib), ", ",
  '"data_load_s": ', num(t_data), ", ",
  '"first_fit_s": ', num(times[1]), ", ",
  '"fit_times_s": ', if (repeats > 0) vec(times[-1]) else "[]", ", ",
  '"objective": ', num(m@devcomp$cmp[["REML"]]), ", ",
  '"theta": ', vec(getME(m, "theta")), ", ",
  '"fixef": ', obj(fixef(m)), ", ",
  '"optinfo": {"optimizer": ', str1(m@optinfo$optimizer),
  ', "n_evals": ', if (is.null(feval)) "null" else num(feval),
  ', "conv_messages": ', str1(conv), "}, ",
  '"versions": {"R": ', str1(paste(R.version$major, R.version$minor, sep = ".")),
  ', "lme4": ', str1(as.character(packageVersion("lme4"))),
  ', "Matrix": ', str1(as.character(packageVersion("Matrix"))),
  ', "minqa": ', str1(as.character(packageVersion("minqa"))),
  ', "blas": ', str1(tryCatch(extSoftVersion()[["BLAS"]], error = function(e) NULL)), "}",
  "}")
writeLines(json, out_file)
"""


# =========================================================================== parent


def run_python_engine(engine: str, repeats: int, timeout: float, jax_cache: bool) -> dict:
    with tempfile.TemporaryDirectory() as td:
        result_file = os.path.join(td, "result.json")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", engine,
               "--repeats", str(repeats), "--result-file", result_file]
        env = dict(os.environ)
        if engine == "jaxlmm" and not jax_cache:
            # A cold fit must compile; don't let a persistent XLA cache hide that.
            env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
        pt = common.run_timed(cmd, timeout=timeout, env=env)
        return _collect(pt, result_file)


def run_lme4(rscript: str, repeats: int, timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as td:
        script = os.path.join(td, "bench_insteval_lme4.R")
        Path(script).write_text(R_SCRIPT)
        result_file = os.path.join(td, "result.json")
        cmd = [rscript, "--vanilla", script, str(DATA_FILE), str(repeats), result_file]
        pt = common.run_timed(cmd, timeout=timeout)
        return _collect(pt, result_file)


def _collect(pt: common.ProcessTiming, result_file: str) -> dict:
    res: dict
    try:
        res = json.loads(Path(result_file).read_text())
    except (OSError, ValueError):
        tail = (pt.stderr or pt.stdout)[-2000:]
        why = "timed out" if pt.timed_out else f"exit code {pt.returncode}"
        res = {"ok": False, "error": f"no result ({why}): {tail.strip()}"}
    res["process_total_s"] = pt.total_s
    res["process_first_fit_s"] = pt.first_fit_s
    res["returncode"] = pt.returncode
    if pt.stderr.strip():
        res["stderr_tail"] = pt.stderr.strip()[-1500:]
    if res.get("ok"):
        res["fit_median_s"] = common.median(res.get("fit_times_s") or [])
    return res


def _norm(name: str) -> str:
    # lme4 / jaxlmm say service1, mixedlm says service.1
    return re.sub(r"[.\s]", "", name)


def compare(a: dict, b: dict) -> dict:
    """Differences of fit b relative to fit a (objective, theta, fixed effects)."""
    out = {"objective_diff": b["objective"] - a["objective"]}
    ta, tb = a.get("theta") or [], b.get("theta") or []
    if len(ta) == len(tb) and ta:
        out["theta_max_abs_diff"] = max(abs(x - y) for x, y in zip(ta, tb))
    fa = {_norm(k): v for k, v in (a.get("fixef") or {}).items()}
    fb = {_norm(k): v for k, v in (b.get("fixef") or {}).items()}
    common_names = sorted(set(fa) & set(fb))
    if common_names:
        out["fixef_max_abs_diff"] = max(abs(fa[k] - fb[k]) for k in common_names)
    if set(fa) != set(fb):
        out["fixef_name_mismatch"] = {"a": sorted(fa), "b": sorted(fb)}
    return out


def _ratio(num, den):
    return None if (num is None or den is None or den <= 0) else num / den


def build_report(results: dict, meta: dict) -> tuple[dict, str]:
    jx = results.get("jaxlmm", {})
    jx_ok = bool(jx.get("ok"))
    ref = {"objective": LME4_REFERENCE["objective"], "theta": LME4_REFERENCE["theta"],
           "fixef": LME4_REFERENCE["fixef"]}

    comparisons, ratios = {}, {}
    for name, r in results.items():
        if not r.get("ok"):
            continue
        c = {"vs_lme4_reference": compare(ref, r)}
        if jx_ok and name != "jaxlmm":
            c["vs_jaxlmm"] = compare(jx, r)
        comparisons[name] = c
        if jx_ok and name != "jaxlmm":
            ratios[name] = {
                "peer_median_over_jaxlmm_warm": _ratio(r.get("fit_median_s"), jx.get("fit_median_s")),
                "peer_median_over_jaxlmm_cold": _ratio(r.get("fit_median_s"), jx.get("first_fit_s")),
                "peer_first_over_jaxlmm_cold": _ratio(r.get("first_fit_s"), jx.get("first_fit_s")),
                "peer_process_over_jaxlmm_process": _ratio(r.get("process_first_fit_s"),
                                                           jx.get("process_first_fit_s")),
            }

    report = {**meta, "results": results, "comparisons": comparisons, "ratios": ratios}
    return report, render_markdown(report)


def _short(x):
    return f"{x:.3g}" if isinstance(x, float) else x


def render_markdown(rep: dict) -> str:
    res, cmp_, rat = rep["results"], rep["comparisons"], rep["ratios"]
    m, v = rep["machine"], rep["versions"]
    n = rep["repeats"]
    L = []
    L.append("# InstEval benchmark\n")
    L.append(f"`{rep['formula']}`, REML, n = 73,421 — run {rep['date']}\n")
    L.append(f"Machine: {m.get('cpu_model')}, {m.get('cpu_count')} cores "
             f"(affinity {m.get('cpu_affinity')}), {m.get('mem_total_gib')} GiB, "
             f"{m.get('platform')}; load average at start {m.get('loadavg_at_start')}\n")
    L.append("Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val)
             + (f"; repository at `{rep['git']}`" if rep.get("git") else "") + "\n")
    L.append("## Times (seconds, wall clock)\n")
    L.append(f"| engine | first fit | later fits, median of {n} | fresh process → first fit done "
             "| whole process | objective (REML crit.) | Δ objective vs jaxlmm | evals |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in ENGINES:
        r = res.get(name)
        if r is None:
            continue
        if not r.get("ok"):
            L.append(f"| {name} | skipped | | | | | | |")
            continue
        d = cmp_.get(name, {}).get("vs_jaxlmm", {}).get("objective_diff")
        ev = (r.get("optinfo") or {}).get("n_evals")
        L.append(f"| {name} | {common.fmt_s(r.get('first_fit_s'))} | {common.fmt_s(r.get('fit_median_s'))} "
                 f"| {common.fmt_s(r.get('process_first_fit_s'))} | {common.fmt_s(r.get('process_total_s'))} "
                 f"| {r['objective']:.6f} | {'-' if d is None else f'{d:+.3g}'} | {'-' if ev is None else ev} |")
    L.append("")
    if rat:
        L.append("## Ratios (peer time / jaxlmm time; > 1 means jaxlmm is faster)\n")
        L.append("| peer | median / jaxlmm warm | median / jaxlmm cold | first / jaxlmm cold "
                 "| fresh process → first fit, peer / jaxlmm |")
        L.append("|---|---:|---:|---:|---:|")
        for name, q in rat.items():
            L.append(f"| {name} | {common.fmt_ratio(q['peer_median_over_jaxlmm_warm'])} "
                     f"| {common.fmt_ratio(q['peer_median_over_jaxlmm_cold'])} "
                     f"| {common.fmt_ratio(q['peer_first_over_jaxlmm_cold'])} "
                     f"| {common.fmt_ratio(q['peer_process_over_jaxlmm_process'])} |")
        L.append("")
    L.append("## Agreement\n")
    L.append("| engine | vs | Δ objective | max abs Δθ | max abs Δβ |")
    L.append("|---|---|---:|---:|---:|")
    for name, c in cmp_.items():
        for against, key in (("jaxlmm", "vs_jaxlmm"), ("lme4 1.1.31 reference", "vs_lme4_reference")):
            if key in c:
                q = c[key]
                L.append(f"| {name} | {against} | {q['objective_diff']:+.3g} "
                         f"| {q.get('theta_max_abs_diff', float('nan')):.2g} "
                         f"| {q.get('fixef_max_abs_diff', float('nan')):.2g} |")
    L.append("")
    notes = []
    for name in ENGINES:
        r = res.get(name)
        if r is None:
            continue
        if not r.get("ok"):
            notes.append(f"- {name}: skipped — {r.get('error', 'unavailable')}")
        else:
            oi = r.get("optinfo") or {}
            extra = ", ".join(f"{k}={_short(oi[k])}" for k in ("optimizer", "n_evals", "n_iter", "grad_norm",
                                                       "converged", "conv_messages") if oi.get(k) is not None)
            if extra:
                notes.append(f"- {name}: {extra}")
            if r.get("loadavg_before") is not None:
                notes.append(f"- {name}: 1-min load average {r['loadavg_before'][0]} before, "
                             f"{r['loadavg_after'][0]} after (cores: {m.get('cpu_count')})")
            if name == "jaxlmm":
                notes.append(f"- jaxlmm: import {common.fmt_s(r.get('import_s'))} s, backend "
                             f"{r.get('jax_backend')}, persistent compilation cache "
                             f"{'on' if r.get('jax_compilation_cache', {}).get('enabled') else 'off'}")
            if name == "lme4":
                notes.append(f"- lme4: `lmerControl(optimizer = \"bobyqa\")`; library load "
                             f"{common.fmt_s(r.get('library_load_s'))} s, read.csv "
                             f"{common.fmt_s(r.get('data_load_s'))} s")
    if notes:
        L.append("## Notes\n")
        L.extend(notes)
        L.append("")
    return "\n".join(L)


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3,
                    help="fits after the first one, per engine (median reported; default 3)")
    ap.add_argument("--out", default=str(common.BENCH_DIR / "results"),
                    help="folder for insteval.json and insteval.md (default benchmarks/results)")
    ap.add_argument("--engines", default=",".join(ENGINES),
                    help=f"comma-separated subset of {','.join(ENGINES)}")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per engine process")
    ap.add_argument("--jax-cache", action="store_true",
                    help="allow JAX's persistent compilation cache (default: disabled, so cold = compile)")
    ap.add_argument("--worker", choices=["jaxlmm", "mixedlm"], help=argparse.SUPPRESS)
    ap.add_argument("--result-file", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        return worker_main(args.worker, args.repeats, args.result_file)

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    bad = set(engines) - set(ENGINES)
    if bad:
        ap.error(f"unknown engine(s): {', '.join(sorted(bad))}")
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    if not DATA_FILE.exists():
        print(f"missing data file {DATA_FILE}", file=sys.stderr)
        return 2

    machine = common.machine_info()
    versions = {"python": machine["python"]}
    results: dict = {}
    rscript = common.find_rscript()

    for engine in engines:
        load_before = _loadavg()
        print(f"[{engine}] ", end="", flush=True)
        if engine == "jaxlmm":
            if importlib.util.find_spec("jaxlmm") is None:
                results[engine] = {"ok": False, "error": "jaxlmm is not importable "
                                   "(pip install -e . from the repository root)"}
            else:
                results[engine] = run_python_engine("jaxlmm", args.repeats, args.timeout, args.jax_cache)
        elif engine == "mixedlm":
            if importlib.util.find_spec("mixedlm") is None:
                results[engine] = {"ok": False, "error": "mixedlm is not installed (pip install mixedlm)"}
            else:
                results[engine] = run_python_engine("mixedlm", args.repeats, args.timeout, False)
        elif engine == "lme4":
            rv = common.r_package_versions(rscript) if rscript else {}
            if not rscript:
                results[engine] = {"ok": False, "error": "Rscript not found on PATH (or $RSCRIPT)"}
            elif not rv.get("lme4"):
                results[engine] = {"ok": False, "error": f"R package lme4 not installed ({rscript})"}
            else:
                results[engine] = run_lme4(rscript, args.repeats, args.timeout)
        r = results[engine]
        r["loadavg_before"] = load_before
        r["loadavg_after"] = _loadavg()
        if r.get("ok"):
            versions.update({k: val for k, val in (r.get("versions") or {}).items() if val})
            print(f"first fit {common.fmt_s(r.get('first_fit_s'))} s, median of later fits "
                  f"{common.fmt_s(r.get('fit_median_s'))} s, objective {r['objective']:.6f}", flush=True)
        else:
            print(f"skipped: {r.get('error', '')[:500]}", flush=True)

    meta = {
        "benchmark": "insteval",
        "formula": FORMULA,
        "reml": True,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "repeats": args.repeats,
        "git": common.git_state(),
        "machine": machine,
        "versions": versions,
        "lme4_reference": LME4_REFERENCE,
        "jax_persistent_cache_allowed": args.jax_cache,
    }
    report, md = build_report(results, meta)
    print()
    print(md)
    out = Path(args.out)
    common.write_json(out / "insteval.json", report)
    (out / "insteval.md").write_text(md + "\n")
    print(f"wrote {out / 'insteval.json'} and {out / 'insteval.md'}")
    ok = [e for e in engines if results[e].get("ok")]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
