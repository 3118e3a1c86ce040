#!/usr/bin/env python
"""The benchmark suite: W1-W6 against every installed peer, one command.

    python benchmarks/suite.py                         # every workload, default sizes
    python benchmarks/suite.py --workloads W1,W2 --engines jaxlmm,mixedlm
    python benchmarks/suite.py --size W2=100000 --size W6=4000000
    python benchmarks/suite.py --workloads COLD,SLEEP,LOAD --engines jaxlmm,mixedlm,lme4
    python benchmarks/suite.py --workloads GLMM --size GLMM=100000

Workloads (``workloads.py``; W4 and W5 through their own scripts):

- W1 InstEval (bundled, 73,421 rows), crossed scalar terms;
- W2 ``y ~ 1 + x + (1 + x | g)``, 1M rows, 50,000 groups;
- W3 the maximal crossed model of ``maximal.py``, 8x8 templates by subject and by item;
- W4 ``lmer_many`` on 1,000 sleepstudy-sized responses (``bench_many.py``);
- W5 the blocked objective against the dense n x n solver as n grows (``bench_dense.py``);
- W6 MovieLens-shaped ``y ~ 1 + (1|user) + (1|item)``, 1M ratings by default.

And four jaxlmm-centred rows (issue 16), selectable like the workloads:

- COLD: InstEval's first fit in fresh processes, jaxlmm's compilation cache (``JAXLMM_CACHE_DIR``)
  *empty* (a new folder) and *primed* (a fresh process first fits another data set of the same
  structure, a random 90% of the rows, into the same folder); first fit and fresh process ->
  first fit; mixedlm's first fit beside them (from W1 when it ran);
- SLEEP: the whole sleepstudy script (import, ``lmer``, ``coef_table()``, ``print(summary())``)
  as a fresh process's wall clock, jaxlmm with its cache primed by an untimed run, against the
  same work in ``Rscript`` with lme4 (and mixedlm / statsmodels scripts where installed);
  median of ``--sleep-runs``;
- LOAD: W1's warm fit, jaxlmm and mixedlm, with ``--busy`` (2) ``while True: pass`` processes
  started before the engine's process and killed after it; slowdown against the quiet W1 figures;
- GLMM: ``jaxlmm.glmer`` on ``bench_glmer.py``'s 1M-row crossed binary data (5,000 x 500), cold
  and warm; peers' figures from ``results/glmer.json`` (bench_glmer.py's last run; mixedlm needs
  minutes there) unless ``--glmm-peers``.

suite.md ends with the goals table of issue 16 (met / missed per row) and the loaded variant.
jaxlmm's processes always get their own compilation cache folder (``JAXLMM_CACHE_DIR``), empty
unless a row says primed, so no figure depends on the user's ``~/.cache``.

Each engine fits in its own fresh process (Python worker or ``Rscript``), one engine at a
time: a first fit (for jaxlmm the *cold* fit, with tracing and XLA compilation) and then
more fits while ``--repeats`` and the per-engine ``--budget`` allow (their median is the
*warm* time). Peers: lme4 (``Rscript``, default ``lmerControl()``), mixedlm, statsmodels
MixedLM (W2 only: it cannot express crossed factors) and the dense solver (the full n x n V
Cholesky in JAX, scipy L-BFGS-B on its exact gradient; W3 only, where n x n fits in memory),
each when installed. Ratios are peer time / jaxlmm time (> 1: jaxlmm faster), against the
fastest peer of the same run. Writes ``OUT/suite.json`` and ``OUT/suite.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from workloads import WORKLOADS  # noqa: E402

SCRIPT_TITLES = {"W4": "many responses of one design (lmer_many), sleepstudy-sized",
                 "W5": "the dense n x n solver as n grows, crossed (1|a) + (1|b)"}
PY_ENGINES = ("jaxlmm", "mixedlm", "statsmodels", "dense")
ALL_ENGINES = PY_ENGINES + ("lme4",)


# =========================================================================== Python workers


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _fit_loop(fit_once, repeats: int, budget: float, min_repeats: int = 0) -> tuple[float, list[float], dict]:
    """First fit, the marker line, then up to ``repeats`` more while within ``budget`` s (at
    least ``min_repeats``)."""
    t = time.perf_counter()
    info = fit_once()
    first = time.perf_counter() - t
    print(common.FIRST_FIT_MARKER, flush=True)
    times: list[float] = []
    spent = 0.0
    while len(times) < repeats and (len(times) < min_repeats
                                    or spent + (times[-1] if times else first) <= budget):
        t = time.perf_counter()
        info = fit_once()
        times.append(time.perf_counter() - t)
        spent += times[-1]
    return first, times, info


def _fitter_jaxlmm(wl, df):
    import jaxlmm

    def fit_once():
        fit = jaxlmm.lmer(wl.formula, df, reml=True)
        return {"objective": fit.objective, "n_evals": fit.optinfo["n_evals"],
                "converged": bool(fit.optinfo["converged"]), "theta": list(map(float, fit.theta)),
                "fixef": {k: float(v) for k, v in fit.fixef.items()}}

    import jax

    return fit_once, {"jaxlmm": common.python_package_version("jaxlmm"), "jax": jax.__version__,
                      "backend": jax.default_backend()}


def _fitter_mixedlm(wl, df):
    import mixedlm

    def fit_once():
        res = mixedlm.lmer(wl.formula, df, REML=True)
        fixef = res.fixef() if callable(res.fixef) else res.fixef
        return {"objective": float(res.REMLcrit()), "n_evals": getattr(res, "function_evals", None),
                "converged": getattr(res, "converged", None),
                "theta": [float(t) for t in res.theta],
                "fixef": {str(k): float(v) for k, v in dict(fixef).items()}}

    return fit_once, {"mixedlm": common.python_package_version("mixedlm")}


def _fitter_statsmodels(wl, df):
    import statsmodels.formula.api as smf

    spec = wl.statsmodels

    def fit_once():
        md = smf.mixedlm(spec["formula"], df, groups=df[spec["groups"]], re_formula=spec["re_formula"])
        res = md.fit(reml=True)
        return {"objective": -2.0 * float(res.llf), "n_evals": None, "converged": bool(res.converged),
                "fixef": {str(k): float(v) for k, v in res.fe_params.items()}}

    return fit_once, {"statsmodels": common.python_package_version("statsmodels")}


def _fitter_dense(wl, df):
    """The design card's baseline: REML over the full ``n x n`` ``V = I + sum_t U_t U_t'``,
    ``U_t = Z_t (I kron T_t)``, dense Cholesky in JAX (float64), scipy L-BFGS-B on the exact
    gradient from lme4's start (identity templates, diagonal >= 0)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import scipy.optimize

    from dense_solver import reml_criterion
    from jaxlmm.terms.design import build_design

    jax.config.update("jax_enable_x64", True)  # this worker process only
    design = build_design(wl.formula, df)
    n = design.n
    if n > wl.dense_max_rows:
        raise RuntimeError(f"n = {n}: the dense n x n matrix needs {8 * n * n / 2**30:.0f} GiB")
    X, y = jnp.asarray(design.X), jnp.asarray(design.y)
    terms = []
    for t in design.terms:
        p = t.width
        rows = np.repeat(np.arange(n), p)
        colidx = (t.codes[:, None] * p + np.arange(p)[None, :]).ravel()
        tril = np.tril_indices(p)
        order = np.lexsort((tril[0], tril[1]))  # lme4: column-major lower triangle
        terms.append((jnp.asarray(t.columns), rows, colidx, t.n_levels * p, p,
                      (tril[0][order], tril[1][order])))
    sizes = [len(tr[5][0]) for tr in terms]
    lower = np.concatenate([np.where(tr[5][0] == tr[5][1], 0.0, -np.inf) for tr in terms])

    def reml(theta):
        V = jnp.eye(n)
        k = 0
        for (cols, rows, colidx, q, p, (ti, tj)), s in zip(terms, sizes):
            T = jnp.zeros((p, p)).at[ti, tj].set(theta[k:k + s])
            k += s
            U = jnp.zeros((n, q)).at[rows, colidx].set((cols @ T).ravel())
            V = V + U @ U.T
        return reml_criterion(V, X, y)

    vg = jax.jit(jax.value_and_grad(reml))
    start = np.concatenate([(tr[5][0] == tr[5][1]).astype(float) for tr in terms])

    def fit_once():
        def fg(th):
            v, g = vg(jnp.asarray(th))
            return float(v), np.asarray(g, dtype=float)

        res = scipy.optimize.minimize(fg, start, jac=True, method="L-BFGS-B",
                                      bounds=[(lo if np.isfinite(lo) else None, None) for lo in lower],
                                      options={"maxiter": 5000, "maxfun": 20000})
        return {"objective": float(res.fun), "n_evals": int(res.nfev), "converged": bool(res.success),
                "theta": [float(t) for t in res.x], "message": str(res.message)}

    return fit_once, {"jax": jax.__version__, "scipy": scipy.__version__}


FITTERS = {"jaxlmm": _fitter_jaxlmm, "mixedlm": _fitter_mixedlm, "statsmodels": _fitter_statsmodels,
           "dense": _fitter_dense}


def worker_main(engine: str, workload: str, data: str, repeats: int, budget: float, result_file: str) -> int:
    out: dict = {"engine": engine}
    try:
        import pandas as pd

        wl = WORKLOADS[workload]
        t = time.perf_counter()
        df = pd.read_csv(data, dtype={c: str for c in wl.factors})
        out["data_load_s"] = time.perf_counter() - t
        t = time.perf_counter()
        fit_once, versions = FITTERS[engine](wl, df)
        out["import_s"] = time.perf_counter() - t
        # jaxlmm's warm fit (compiled code reused) is measured even when the cold one was slow
        first, times, info = _fit_loop(fit_once, repeats, budget, min_repeats=int(engine == "jaxlmm" and repeats > 0))
        out.update(ok=True, first_fit_s=first, fit_times_s=times, versions=versions, **info)
    except Exception as e:  # reported in the table, the suite goes on
        out.update(ok=False, error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
    out["max_rss_mib"] = _peak_rss_mib()
    common.write_json(Path(result_file), out)
    return 0 if out.get("ok") else 1


# =========================================================================== lme4 worker

R_SCRIPT = r"""
args <- commandArgs(trailingOnly = TRUE)
data_file <- args[[1]]; formula <- args[[2]]; factors <- strsplit(args[[3]], ",")[[1]]
repeats <- as.integer(args[[4]]); budget <- as.numeric(args[[5]]); out_file <- args[[6]]
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
t1 <- proc.time()[["elapsed"]]
dat <- read.csv(data_file)
for (f in factors) if (f %in% names(dat)) dat[[f]] <- factor(dat[[f]])
t_data <- proc.time()[["elapsed"]] - t1
fit_once <- function() lmer(as.formula(formula), data = dat, REML = TRUE)
st <- system.time(m <- fit_once())
first <- st[["elapsed"]]
cat("@@FIRST_FIT_DONE\n"); flush(stdout())
times <- numeric(0); spent <- 0
while (length(times) < repeats && spent + (if (length(times)) times[length(times)] else first) <= budget) {
  st <- system.time(m <- fit_once()); times <- c(times, st[["elapsed"]]); spent <- spent + st[["elapsed"]]
}
hwm <- grep("^VmHWM", readLines("/proc/self/status"), value = TRUE)
rss <- as.numeric(gsub("[^0-9]", "", hwm)) / 1024
conv <- m@optinfo$conv$lme4$messages
out <- list(ok = TRUE, engine = "lme4", data_load_s = t_data, first_fit_s = first, fit_times_s = I(times),
            objective = unname(m@devcomp$cmp[["REML"]]), n_evals = m@optinfo$feval,
            converged = is.null(conv), conv_messages = I(if (is.null(conv)) character(0) else conv),
            theta = I(unname(getME(m, "theta"))), fixef = as.list(fixef(m)), max_rss_mib = rss,
            versions = list(R = paste(R.version$major, R.version$minor, sep = "."),
                            lme4 = as.character(packageVersion("lme4")),
                            Matrix = as.character(packageVersion("Matrix"))))
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA), out_file)
"""


# =========================================================================== parent


def _available(engine: str, rscript: str | None) -> str | None:
    """None when the engine can run here, else why not."""
    if engine == "lme4":
        return None if rscript else "Rscript not found"
    if engine in ("mixedlm", "statsmodels"):
        return None if common.python_package_version(engine) else f"{engine} not installed"
    return None


def engine_env(engine: str, cache: Path | None) -> dict:
    """The engine process's environment. jaxlmm: its compilation cache in ``cache`` (an empty folder
    for a cold fit), never the user's ``~/.cache`` nor a JAX cache set in the environment; the
    other engines: JAX's persistent cache off (the dense solver compiles with JAX)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("JAXLMM_CACHE", "JAXLMM_CACHE_DIR", "JAX_COMPILATION_CACHE_DIR",
                        "JAX_ENABLE_COMPILATION_CACHE")}
    if engine == "jaxlmm":
        if cache is None:
            cache = Path(tempfile.mkdtemp(prefix="jaxlmm-cache-empty-"))
        env["JAXLMM_CACHE_DIR"] = str(cache)
    else:
        env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    return env


def run_engine(engine: str, wl, data_file: Path, args, rscript: str | None, tmp: Path, *, tag: str = "",
               repeats: int | None = None, cache: Path | None = None) -> dict:
    """One engine in a fresh process on ``data_file``. jaxlmm compiles into ``cache`` (default: a
    new empty folder under ``tmp``, so that its first fit is cold whatever the user's cache holds)."""
    result_file = tmp / f"{wl.key}-{engine}{tag}.json"
    result_file.unlink(missing_ok=True)
    repeats = args.repeats if repeats is None else repeats
    if engine == "jaxlmm" and cache is None:
        cache = Path(tempfile.mkdtemp(prefix="cache-empty-", dir=tmp))
    env = engine_env(engine, cache)
    if engine == "lme4":
        script = tmp / "suite_lme4.R"
        script.write_text(R_SCRIPT)
        cmd = [rscript, "--vanilla", str(script), str(data_file), wl.formula, ",".join(wl.factors),
               str(repeats), str(args.budget), str(result_file)]
    else:
        cmd = [sys.executable, __file__, "--worker", engine, "--workload", wl.key, "--data", str(data_file),
               "--repeats", str(repeats), "--budget", str(args.budget), "--result-file", str(result_file)]
    timing = common.run_timed(cmd, timeout=args.timeout, env=env)
    if result_file.exists():
        res = json.loads(result_file.read_text())
    elif timing.timed_out:
        res = {"ok": False, "error": f"stopped after {args.timeout:.0f} s", "more_than_s": args.timeout
               if timing.first_fit_s is None else None, "first_fit_done_s": timing.first_fit_s}
    else:
        res = {"ok": False, "error": "no result", "stderr_tail": timing.stderr[-2000:]}
    res.update(engine=engine, process_s=timing.total_s, process_first_fit_s=timing.first_fit_s,
               timed_out=timing.timed_out, returncode=timing.returncode)
    if res.get("ok"):
        res["warm_s"] = common.median(res["fit_times_s"]) if res["fit_times_s"] else res["first_fit_s"]
    return res


def run_fitted(key: str, args, rscript: str | None, tmp: Path) -> dict:
    wl = WORKLOADS[key]
    size = args.sizes.get(key, wl.default_size)
    t = time.perf_counter()
    df = wl.make(size)
    gen_s = time.perf_counter() - t
    data_file = tmp / f"{key}.csv"
    df.to_csv(data_file, index=False)
    n = len(df)
    del df
    out = {"key": key, "title": wl.title, "formula": wl.formula, "size": size, "size_label": wl.size_label,
           "rows": n, "generate_s": gen_s, "engines": {}, "skipped": {}}
    for engine in ("jaxlmm",) + wl.peers:
        if engine not in args.engines:
            continue
        why = _available(engine, rscript)
        if engine == "dense" and n > wl.dense_max_rows:
            why = f"n = {n:,}: the n x n matrix would need {8 * n * n / 2**30:,.0f} GiB"
        if why:
            out["skipped"][engine] = why
            continue
        print(f"  {key} {engine} ...", flush=True)
        r = run_engine(engine, wl, data_file, args, rscript, tmp)
        out["engines"][engine] = r
        status = f"first {common.fmt_s(r.get('first_fit_s'))} s, warm {common.fmt_s(r.get('warm_s'))} s" \
            if r.get("ok") else f"failed: {r.get('error')}"
        print(f"    {status}", flush=True)
    data_file.unlink()
    return out


def run_script(key: str, script: str, extra: list[str], args, tmp: Path) -> dict:
    """W4 / W5: run the workload's own script into a scratch folder and keep its JSON."""
    sub = tmp / key
    sub.mkdir(exist_ok=True)
    cmd = [sys.executable, str(common.BENCH_DIR / script), *extra, "--out", str(sub)]
    print(f"  {key}: {' '.join(cmd[1:])}", flush=True)
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout * 4)
    except subprocess.TimeoutExpired:  # a slow machine: report the workload as stopped, keep the suite going
        return {"key": key, "title": SCRIPT_TITLES[key], "wall_s": time.perf_counter() - t, "returncode": None,
                "command": " ".join(["python", f"benchmarks/{script}", *extra]),
                "error": f"stopped after {args.timeout * 4:.0f} s"}
    out = {"key": key, "title": SCRIPT_TITLES[key], "command": " ".join(["python", f"benchmarks/{script}", *extra]),
           "wall_s": time.perf_counter() - t, "returncode": proc.returncode}
    files = list(sub.glob("*.json"))
    if files:  # kept in suite.json; the script's own result files (its full sizes) are left alone
        out["result"] = json.loads(files[0].read_text())
    else:
        out["error"] = proc.stderr[-2000:]
    return out


# =========================================================================== COLD, SLEEP, LOAD, GLMM

EXTRA_TITLES = {
    "COLD": "InstEval, first fit in a fresh process: jaxlmm's compilation cache empty, and primed by another data set",
    "SLEEP": "the sleepstudy script: import, first fit, coefficient table, summary (fresh process, wall clock)",
    "LOAD": "InstEval warm fits with two busy-loop processes beside them on the cores",
    "GLMM": "crossed binary glmer y ~ x + (1 | subj) + (1 | item), 1M rows, 5,000 x 500 (bench_glmer.py)",
}
EXTRA_KEYS = tuple(EXTRA_TITLES)
PRIME_FRACTION, PRIME_SEED = 0.9, 7  # COLD: the priming data set, 90% of the rows drawn at random

SLEEP_JAXLMM = ('import jaxlmm; from jaxlmm import datasets; '
                'fit = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", datasets.load("sleepstudy")); '
                'fit.coef_table(); print(fit.summary())')
SLEEP_LME4 = ('library(lme4); fit <- lmer(Reaction ~ Days + (Days | Subject), sleepstudy); '
              'print(coef(summary(fit))); print(summary(fit))')
SLEEP_MIXEDLM = ('import pandas as pd, mixedlm; d = pd.read_csv({csv!r}, dtype={{"Subject": str}}); '
                 'fit = mixedlm.lmer("Reaction ~ Days + (Days | Subject)", d); print(fit.summary())')
SLEEP_STATSMODELS = ('import pandas as pd, statsmodels.formula.api as smf; d = pd.read_csv({csv!r}, '
                     'dtype={{"Subject": str}}); fit = smf.mixedlm("Reaction ~ Days", d, groups=d["Subject"], '
                     're_formula="~Days").fit(reml=True); print(fit.summary())')
SLEEP_CSV = common.BENCH_DIR.parent / "jaxlmm" / "datasets" / "sleepstudy.csv"


def _write_w1(tmp: Path, args) -> Path:
    data_file = tmp / "W1-target.csv"
    if not data_file.exists():
        WORKLOADS["W1"].make(args.sizes.get("W1", WORKLOADS["W1"].default_size)).to_csv(data_file, index=False)
    return data_file


def _slim(r: dict) -> dict:
    return {k: r.get(k) for k in ("ok", "error", "first_fit_s", "warm_s", "fit_times_s", "process_first_fit_s",
                                  "process_s", "objective", "n_evals", "import_s", "max_rss_mib") if k in r}


def run_cold(args, rscript: str | None, tmp: Path, done: list[dict]) -> dict:
    """jaxlmm's first InstEval fit in fresh processes: with an empty cache, and with a cache primed
    by a fresh process fitting another data set of the same structure (90% of the rows)."""
    wl = WORKLOADS["W1"]
    target = _write_w1(tmp, args)
    import pandas as pd

    df = pd.read_csv(target, dtype={c: str for c in wl.factors})
    prime_file = tmp / "W1-prime.csv"
    df.sample(frac=PRIME_FRACTION, random_state=PRIME_SEED).to_csv(prime_file, index=False)
    out = {"key": "COLD", "title": EXTRA_TITLES["COLD"], "rows": len(df),
           "prime_rows": int(round(PRIME_FRACTION * len(df))), "runs": {}}
    del df
    print("  COLD jaxlmm, cache empty ...", flush=True)
    out["runs"]["cache empty"] = _slim(run_engine("jaxlmm", wl, target, args, rscript, tmp, tag="-cold-empty",
                                                  repeats=0))
    primed = tmp / "cache-primed-W1"
    primed.mkdir(exist_ok=True)
    print("  COLD jaxlmm, priming the cache on the other data set ...", flush=True)
    out["runs"]["priming run (other data)"] = _slim(run_engine("jaxlmm", wl, prime_file, args, rscript, tmp,
                                                               tag="-cold-prime", repeats=0, cache=primed))
    print("  COLD jaxlmm, cache primed ...", flush=True)
    out["runs"]["cache primed"] = _slim(run_engine("jaxlmm", wl, target, args, rscript, tmp, tag="-cold-primed",
                                                   repeats=0, cache=primed))
    w1 = next((w for w in done if w.get("key") == "W1"), None)
    mixed = (w1 or {}).get("engines", {}).get("mixedlm")
    if mixed and mixed.get("ok"):
        out["mixedlm"] = dict(_slim(mixed), source="this run's W1")
    elif "mixedlm" in args.engines and not _available("mixedlm", rscript):
        print("  COLD mixedlm ...", flush=True)
        out["mixedlm"] = dict(_slim(run_engine("mixedlm", wl, target, args, rscript, tmp, tag="-cold", repeats=0)),
                              source="run here")
    for r in out["runs"].values():
        print(f"    first fit {common.fmt_s(r.get('first_fit_s'))} s, fresh process -> first fit "
              f"{common.fmt_s(r.get('process_first_fit_s'))} s" if r.get("ok") else f"    failed: {r.get('error')}",
              flush=True)
    return out


def _time_script(cmd: list[str], env: dict, runs: int, timeout: float) -> dict:
    """Wall clock of ``runs`` fresh processes of ``cmd`` (after one untimed run that primes caches)."""
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if first.returncode != 0:
        return {"ok": False, "error": (first.stderr or first.stdout)[-600:].strip()}
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        times.append(time.perf_counter() - t)
        if res.returncode != 0:
            return {"ok": False, "error": (res.stderr or res.stdout)[-600:].strip()}
    return {"ok": True, "times_s": times, "median_s": common.median(times), "stdout_tail": res.stdout[-400:]}


def run_sleep(args, rscript: str | None, tmp: Path) -> dict:
    """The whole sleepstudy script as a user runs it, per engine, in fresh processes; jaxlmm with its
    cache primed by the untimed first run (a user's second run of the script)."""
    out = {"key": "SLEEP", "title": EXTRA_TITLES["SLEEP"], "runs_each": args.sleep_runs, "engines": {},
           "scripts": {"jaxlmm": SLEEP_JAXLMM, "lme4": SLEEP_LME4}}
    cache = tmp / "cache-sleep"
    cache.mkdir(exist_ok=True)
    todo = [("jaxlmm", [sys.executable, "-c", SLEEP_JAXLMM], engine_env("jaxlmm", cache))]
    rs = rscript or common.find_rscript()
    if not rs:
        out["engines"]["lme4"] = {"ok": False, "error": "Rscript not found"}
    elif subprocess.run([rs, "-e", "suppressMessages(library(lme4))"], capture_output=True).returncode != 0:
        out["engines"]["lme4"] = {"ok": False, "error": "lme4 not installed"}
    else:
        todo.append(("lme4", [rs, "-e", SLEEP_LME4], dict(os.environ)))
    for name, code in (("mixedlm", SLEEP_MIXEDLM), ("statsmodels", SLEEP_STATSMODELS)):
        if not common.python_package_version(name):
            out["engines"][name] = {"ok": False, "error": f"{name} not installed"}
        else:
            out["scripts"][name] = code.format(csv=str(SLEEP_CSV))
            todo.append((name, [sys.executable, "-c", out["scripts"][name]], dict(os.environ)))
    for name, cmd, env in todo:
        print(f"  SLEEP {name} ...", flush=True)
        try:
            out["engines"][name] = _time_script(cmd, env, args.sleep_runs, args.timeout)
        except subprocess.TimeoutExpired:
            out["engines"][name] = {"ok": False, "error": f"stopped after {args.timeout:.0f} s"}
        r = out["engines"][name]
        print(f"    {common.fmt_s(r.get('median_s'))} s" if r.get("ok") else f"    failed: {r['error']}", flush=True)
    return out


def run_load(args, rscript: str | None, tmp: Path, done: list[dict]) -> dict:
    """W1 warm fits, jaxlmm and mixedlm, each with two ``while True: pass`` processes started before
    the engine's process and killed after it; the quiet figures from this run's W1 (or run here)."""
    wl = WORKLOADS["W1"]
    target = _write_w1(tmp, args)
    w1 = next((w for w in done if w.get("key") == "W1"), None)
    out = {"key": "LOAD", "title": EXTRA_TITLES["LOAD"], "busy_processes": args.busy, "engines": {}}
    for engine in ("jaxlmm", "mixedlm"):
        if engine not in args.engines or _available(engine, rscript):
            continue
        quiet = (w1 or {}).get("engines", {}).get(engine)
        source = "this run's W1"
        if not (quiet and quiet.get("ok")):
            print(f"  LOAD {engine} quiet ...", flush=True)
            quiet, source = run_engine(engine, wl, target, args, rscript, tmp, tag="-quiet"), "run here"
        print(f"  LOAD {engine} with {args.busy} busy loops ...", flush=True)
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
        try:
            time.sleep(0.5)
            loaded = run_engine(engine, wl, target, args, rscript, tmp, tag="-loaded")
        finally:
            for p in busy:
                p.kill()
            for p in busy:
                p.wait()
        r = {"quiet": dict(_slim(quiet), source=source), "loaded": _slim(loaded)}
        if quiet.get("ok") and loaded.get("ok"):
            r["slowdown"] = loaded["warm_s"] / quiet["warm_s"]
        out["engines"][engine] = r
        print(f"    warm quiet {common.fmt_s(quiet.get('warm_s'), 3)} s, loaded {common.fmt_s(loaded.get('warm_s'), 3)} s",
              flush=True)
    return out


GLMER_RESULTS = common.BENCH_DIR / "results" / "glmer.json"


def run_glmm(args, tmp: Path) -> dict:
    """jaxlmm's glmer on bench_glmer.py's crossed_1m data: a fresh process, empty cache, cold and
    warm. Peers from ``results/glmer.json`` (bench_glmer.py's last run), or run with ``--glmm-peers``."""
    import bench_glmer

    n = args.sizes.get("GLMM", bench_glmer.WORKLOADS["crossed_1m"]["default_size"])
    t = time.perf_counter()
    data_file = tmp / "GLMM.csv"
    bench_glmer.make_crossed(n).to_csv(data_file, index=False)
    out = {"key": "GLMM", "title": EXTRA_TITLES["GLMM"], "rows": n, "levels": bench_glmer.crossed_levels(n),
           "formula": bench_glmer.WORKLOADS["crossed_1m"]["formula"], "generate_s": time.perf_counter() - t,
           "engines": {}}
    engines = ["jaxlmm"] + ([e for e in ("mixedlm", "lme4") if e in args.engines] if args.glmm_peers else [])
    for engine in engines:
        result_file = tmp / f"GLMM-{engine}.json"
        if engine == "lme4":
            rs = common.find_rscript()
            if not rs:
                out["engines"][engine] = {"ok": False, "error": "Rscript not found"}
                continue
            script = tmp / "glmm_lme4.R"
            script.write_text(bench_glmer.R_SCRIPT)
            cmd = [rs, "--vanilla", str(script), str(data_file), out["formula"],
                   json.dumps(bench_glmer.WORKLOADS["crossed_1m"]["factors"]), str(args.glmm_repeats),
                   str(args.budget), str(result_file)]
        else:
            cmd = [sys.executable, str(common.BENCH_DIR / "bench_glmer.py"), "--worker", engine, "--workload",
                   "crossed_1m", "--data", str(data_file), "--repeats", str(args.glmm_repeats), "--budget",
                   str(args.budget), "--result-file", str(result_file)]
        cache = tmp / f"cache-empty-GLMM-{engine}"
        cache.mkdir(exist_ok=True)
        print(f"  GLMM {engine} ...", flush=True)
        timing = common.run_timed(cmd, timeout=args.glmm_timeout, env=engine_env(engine, cache))
        try:
            r = json.loads(result_file.read_text())
        except (OSError, ValueError):
            r = {"ok": False, "error": ("stopped after %.0f s" % args.glmm_timeout) if timing.timed_out
                 else f"no result: {timing.stderr[-600:].strip()}"}
        if r.get("ok"):
            r["warm_s"] = common.median(r["fit_times_s"]) if r.get("fit_times_s") else r["first_fit_s"]
        r.update(process_first_fit_s=timing.first_fit_s, process_s=timing.total_s)
        out["engines"][engine] = _slim(r)
        print(f"    first {common.fmt_s(r.get('first_fit_s'))} s, warm {common.fmt_s(r.get('warm_s'))} s"
              if r.get("ok") else f"    failed: {r.get('error')}", flush=True)
    if not args.glmm_peers:
        try:
            prev = json.loads(GLMER_RESULTS.read_text())
            w = next(x for x in prev["workloads"] if x["key"] == "crossed_1m")
            out["stored_peers"] = {"file": "benchmarks/results/glmer.json", "date": prev.get("date"),
                                   "rows": w.get("rows"), "engines": {k: _slim(v) for k, v in w["engines"].items()}}
        except (OSError, ValueError, StopIteration, KeyError) as e:
            out["stored_peers"] = {"error": f"{GLMER_RESULTS.name} not readable: {e}"}
    return out


# =========================================================================== report


def _peer_summary(w: dict) -> dict:
    eng = w["engines"]
    j = eng.get("jaxlmm", {})
    peers = {k: v for k, v in eng.items() if k != "jaxlmm" and v.get("ok")}
    best = min(peers, key=lambda k: peers[k]["warm_s"]) if peers else None
    s = {"jaxlmm_cold_s": j.get("first_fit_s"), "jaxlmm_warm_s": j.get("warm_s"),
         "jaxlmm_evals": j.get("n_evals"), "jaxlmm_rss_mib": j.get("max_rss_mib"), "fastest_peer": best}
    if best and j.get("ok"):
        s["fastest_peer_s"] = peers[best]["warm_s"]
        s["ratio_warm"] = peers[best]["warm_s"] / j["warm_s"]
        s["ratio_cold"] = peers[best]["first_fit_s"] / j["first_fit_s"]
    # peers stopped by the timeout before their first fit: slower than the timeout
    s["timed_out"] = {k: v["more_than_s"] for k, v in eng.items() if v.get("more_than_s")}
    return s


def _fmt_mib(x) -> str:
    return "-" if x is None else f"{x:,.0f}"


def render(rep: dict) -> str:
    m = rep["machine"]
    L = ["# Benchmark suite", "",
         f"Run {rep['date']} with `{rep['command']}`, {rep['wall_s'] / 60:.1f} min in all.", "",
         f"Machine: {m.get('cpu_model')}, {m.get('cpu_affinity')} cores, {m.get('mem_total_gib')} GiB, "
         f"{m.get('platform')}; load average at start {m.get('loadavg_at_start')}; repository at "
         f"`{rep.get('git')}`. GPU: {rep['gpu']}.", "",
         "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(rep["versions"].items()) if v), "",
         "Times are wall-clock seconds of one fit. *cold*: the first fit in a fresh process (for jaxlmm "
         "with tracing and XLA compilation); *warm*: median of the later fits in that process. Ratios: "
         "fastest peer's time / jaxlmm's (> 1: jaxlmm faster). Peak RSS is the fitting process's.", "",
         "## Summary", "",
         "| workload | size | jaxlmm warm | jaxlmm cold | fastest peer | its warm | ratio warm | ratio cold "
         "| stopped by the timeout |",
         "|---|---|---:|---:|---|---:|---:|---:|---|"]
    for w in rep["workloads"]:
        if "engines" not in w or w["key"] in EXTRA_KEYS:
            continue
        s = _peer_summary(w)
        L.append(f"| {w['key']} | {w['rows']:,} rows | {common.fmt_s(s['jaxlmm_warm_s'], 3)} | "
                 f"{common.fmt_s(s['jaxlmm_cold_s'])} | {s['fastest_peer'] or '-'} | "
                 f"{common.fmt_s(s.get('fastest_peer_s'), 3)} | {common.fmt_ratio(s.get('ratio_warm'))} | "
                 f"{common.fmt_ratio(s.get('ratio_cold'))} | "
                 + (", ".join(f"{k} (> {t:.0f} s)" for k, t in s["timed_out"].items()) or "-") + " |")
    for w in rep["workloads"]:
        L += ["", f"## {w['key']}: {w.get('title', '')}", ""]
        if w["key"] in EXTRA_KEYS and "error" in w:
            L += ["failed:", "", "```", str(w["error"])[-1500:], "```"]
        elif w["key"] in EXTRA_KEYS:
            L += _render_extra(w)
        elif "engines" in w:
            L += [f"`{w['formula']}`, REML; {w['rows']:,} rows ({w['size_label']}: {w['size']:,}); "
                  f"data generated in {w['generate_s']:.1f} s.", "",
                  "| engine | cold (first fit) | warm (median) | fits | evals | objective | Δ objective vs jaxlmm "
                  "| peak RSS MiB | fresh process → first fit |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
            ref = w["engines"].get("jaxlmm", {}).get("objective")
            for name, r in w["engines"].items():
                if r.get("more_than_s"):
                    L.append(f"| {name} | > {r['more_than_s']:.0f} (stopped) | | | | | | | |")
                    continue
                if not r.get("ok"):
                    L.append(f"| {name} | failed: {str(r.get('error'))[:120]} | | | | | | | |")
                    continue
                d = "-" if name == "jaxlmm" or ref is None else f"{r['objective'] - ref:+.2e}"
                L.append(f"| {name} | {common.fmt_s(r['first_fit_s'], 3)} | {common.fmt_s(r['warm_s'], 3)} | "
                         f"{1 + len(r['fit_times_s'])} | {r.get('n_evals') if r.get('n_evals') is not None else '-'} | "
                         f"{r['objective']:.6f} | {d} | {_fmt_mib(r.get('max_rss_mib'))} | "
                         f"{common.fmt_s(r.get('process_first_fit_s'))} |")
            for name, why in w["skipped"].items():
                L.append(f"| {name} | skipped: {why} | | | | | | | |")
        elif "result" in w:
            L += _render_script(w)
        else:
            L += [f"failed: `{w.get('command')}`", "", "```", str(w.get("error", ""))[-1500:], "```"]
    L += render_goals(rep)
    return "\n".join(L) + "\n"


def _render_script(w: dict) -> list[str]:
    r = w["result"]
    L = [f"`{w['command']}` ({w['wall_s']:.0f} s); the script alone writes `{'many' if w['key'] == 'W4' else 'dense'}.md` "
         "(larger sizes there).", ""]
    if w["key"] == "W4":
        j = r["jaxlmm"]
        warm = common.median(j["warm_s"])
        L += [f"{r['responses']:,} responses: jaxlmm `lmer_many` {warm:.3f} s warm, {j['cold_s']:.2f} s cold.", "",
              "| peer | loop over subset | all responses (scaled) | ratio warm | ratio cold |",
              "|---|---:|---:|---:|---:|"]
        for p in r["peers"]:
            L.append(f"| {p['engine']} | {common.fmt_s(p.get('subset_s'))} | {common.fmt_s(p.get('all_s_scaled'))} | "
                     f"{common.fmt_ratio(p.get('ratio_warm'))} | {common.fmt_ratio(p.get('ratio_cold'))} |")
    else:
        L += ["| n | jaxlmm s / value+grad | dense s / value+grad | ratio | dense matrix GiB | peak RSS MiB |",
              "|---:|---:|---:|---:|---:|---:|"]
        for row in r["rows"]:
            if "sparse_eval_s" not in row:
                L.append(f"| {row.get('n'):,} | | failed: {str(row.get('error', ''))[:80]} | | | |")
                continue
            L.append(f"| {row['n']:,} | {row['sparse_eval_s']:.5f} | {row['dense_eval_s']:.3f} | "
                     f"{row['dense_eval_s'] / row['sparse_eval_s']:,.0f}x | {row['dense_matrix_gib']:.2f} | "
                     f"{_fmt_mib(row.get('max_rss_mib'))} |")
    return L


def _first(r: dict | None) -> str:
    return "-" if not r else (common.fmt_s(r.get("first_fit_s")) if r.get("ok") else f"failed: {str(r.get('error'))[:80]}")


def _render_extra(w: dict) -> list[str]:
    key = w["key"]
    if key == "COLD":
        L = [f"InstEval ({w['rows']:,} rows), jaxlmm in fresh processes with `JAXLMM_CACHE_DIR` set: *cache empty* "
             "a new empty folder; *cache primed* a folder filled by a fresh process fitting another data set of "
             f"the same structure first (a random {PRIME_FRACTION:.0%} of the rows, {w['prime_rows']:,}, seed "
             f"{PRIME_SEED}). No later fits.", "",
             "| run | first fit s | fresh process → first fit s | import s | objective |", "|---|---:|---:|---:|---:|"]
        rows = list(w["runs"].items()) + ([(f"mixedlm ({w['mixedlm'].get('source')})", w["mixedlm"])]
                                          if w.get("mixedlm") else [])
        for name, r in rows:
            if not r.get("ok"):
                L.append(f"| {name} | failed: {str(r.get('error'))[:120]} | | | |")
                continue
            L.append(f"| {name} | {common.fmt_s(r.get('first_fit_s'))} | {common.fmt_s(r.get('process_first_fit_s'))} "
                     f"| {common.fmt_s(r.get('import_s'))} | {r['objective']:.6f} |")
        return L
    if key == "SLEEP":
        L = [f"Wall clock of a fresh process running the whole script, median of {w['runs_each']} runs after one "
             "untimed run (for jaxlmm: the run that primes its compilation cache).", "",
             "| engine | script wall s (median) | runs s |", "|---|---:|---|"]
        for name, r in w["engines"].items():
            L.append(f"| {name} | {common.fmt_s(r.get('median_s'))} | "
                     + (", ".join(f"{t:.2f}" for t in r["times_s"]) if r.get("ok") else str(r.get("error"))[:120]) + " |")
        L += ["", "Scripts:", ""] + [f"- {k}: `{v}`" for k, v in w["scripts"].items()]
        return L
    if key == "LOAD":
        L = [f"InstEval warm fits (median of the later fits in a fresh process) with {w['busy_processes']} "
             "`python -c 'while True: pass'` processes running beside the engine's process (started before it, "
             "killed after it).", "",
             "| engine | warm quiet s | warm loaded s | slowdown loaded / quiet | quiet from |", "|---|---:|---:|---:|---|"]
        for name, r in w["engines"].items():
            L.append(f"| {name} | {common.fmt_s(r['quiet'].get('warm_s'), 3)} | {common.fmt_s(r['loaded'].get('warm_s'), 3)} "
                     f"| {common.fmt_ratio(r.get('slowdown'))} | {r['quiet'].get('source')} |")
        return L
    if key == "GLMM":
        L = [f"`{w['formula']}`, binomial, Laplace; {w['rows']:,} rows, {w['levels'][0]:,} x {w['levels'][1]:,} "
             f"levels (bench_glmer.py's crossed_1m generator); data generated in {w['generate_s']:.1f} s. Each engine "
             "in a fresh process, jaxlmm with an empty compilation cache.", "",
             "| engine | cold (first fit) s | warm s | fresh process → first fit s | objective | source |",
             "|---|---:|---:|---:|---:|---|"]
        for name, r in w["engines"].items():
            L.append(_glmm_row(name, r, "this run"))
        sp = w.get("stored_peers")
        if sp and "engines" in sp:
            for name, r in sp["engines"].items():
                if name != "jaxlmm":
                    L.append(_glmm_row(name, r, f"`{sp['file']}` ({sp.get('date')}, {sp.get('rows'):,} rows)"))
            L += ["", "Peers were not rerun (mixedlm's glmer takes minutes here); their figures are bench_glmer.py's "
                  "last results, on the same generator; `--glmm-peers` runs them in this run."]
        elif sp:
            L += ["", f"Stored peers: {sp.get('error')}"]
        return L
    return []


def _glmm_row(name: str, r: dict, source: str) -> str:
    if not r.get("ok"):
        return f"| {name} | failed: {str(r.get('error'))[:120]} | | | | {source} |"
    return (f"| {name} | {common.fmt_s(r.get('first_fit_s'))} | {common.fmt_s(r.get('warm_s'))} | "
            f"{common.fmt_s(r.get('process_first_fit_s'))} | {r.get('objective', float('nan')):.4f} | {source} |")


def _goal_rows(rep: dict) -> list[tuple[str, str, str, str, bool | None]]:
    """(workload, today, goal, this run, met) for the goals table of issue 16."""
    by = {w["key"]: w for w in rep["workloads"]}

    def eng(key, name):
        r = by.get(key, {}).get("engines", {}).get(name)
        return r if r and r.get("ok") else None

    rows = []
    cold = by.get("COLD")
    mixed = (cold or {}).get("mixedlm") or eng("W1", "mixedlm")
    mixed_first = mixed.get("first_fit_s") if mixed and mixed.get("ok") else None
    empty = (cold or {}).get("runs", {}).get("cache empty", {})
    if empty.get("ok"):
        text = f"{empty['first_fit_s']:.2f} s (process {common.fmt_s(empty.get('process_first_fit_s'))} s)" + (
            f"; mixedlm {mixed_first:.2f} s" if mixed_first else "; mixedlm not run")
        met = empty["first_fit_s"] <= mixed_first if mixed_first else None
    else:
        text, met = ("not run" if not cold else f"failed: {str(empty.get('error'))[:60]}"), None
    rows.append(("InstEval, first fit in a fresh process, cache empty", "5.2–6.5 s (mixedlm 2.8 s)",
                 "≤ mixedlm's first fit", text, met))
    primed = (cold or {}).get("runs", {}).get("cache primed", {})
    if primed.get("ok"):
        text = (f"{primed['first_fit_s']:.2f} s (fresh process → first fit "
                f"{common.fmt_s(primed.get('process_first_fit_s'))} s)")
        met = primed["first_fit_s"] <= 1.2
    else:
        text, met = ("not run" if not cold else f"failed: {str(primed.get('error'))[:60]}"), None
    rows.append(("InstEval, first fit in a fresh process, cache primed by another data set of the same structure",
                 "–", "≤ 1.2 s", text, met))
    sleep = by.get("SLEEP", {}).get("engines", {})
    j, r = sleep.get("jaxlmm", {}), sleep.get("lme4", {})
    if j.get("ok"):
        text = f"{j['median_s']:.2f} s" + (f"; lme4 Rscript {r['median_s']:.2f} s" if r.get("ok")
                                          else f"; lme4: {r.get('error', 'not run')}")
        met = j["median_s"] <= r["median_s"] if r.get("ok") else None
    else:
        text, met = ("not run" if "SLEEP" not in by else f"failed: {str(j.get('error'))[:60]}"), None
    rows.append(("sleepstudy script (import + first fit + coef_table + summary), cache primed", "4–7 s",
                 "≤ lme4's Rscript for the same work", text, met))
    for key, label, today, goal, limit, ratio in (
            ("W1", "InstEval warm", "1.5–1.7 s (1.2–1.4× mixedlm)", "≤ 0.6 s (≥ 3.5× mixedlm)", 0.6, 3.5),
            ("W2", "(1 + x | g), 1M rows, 50,000 groups, warm", "0.38–0.6 s (2.2–2.7× mixedlm)",
             "≤ 0.1 s (≥ 10× mixedlm)", 0.1, 10.0),
            ("W6", "MovieLens-shaped (1|user) + (1|item), 1M ratings, warm", "25–33 s (2.5–2.9× mixedlm)",
             "≤ 8 s (≥ 10× mixedlm)", 8.0, 10.0)):
        jx, mx = eng(key, "jaxlmm"), eng(key, "mixedlm")
        if jx:
            rat = mx["warm_s"] / jx["warm_s"] if mx else None
            text = f"{jx['warm_s']:.3f} s" + (f" ({rat:.2f}× mixedlm)" if rat else " (mixedlm not run)")
            size = by[key].get("rows")
            if size is not None and by[key].get("size") != WORKLOADS[key].default_size:
                text += f", {size:,} rows (not the goal's size)"
            met = jx["warm_s"] <= limit and (rat is None or rat >= ratio)
            if rat is None:
                met = None if jx["warm_s"] <= limit else False
        else:
            text, met = ("not run" if key not in by else "failed"), None
        rows.append((label, today, goal, text, met))
    g = by.get("GLMM", {}).get("engines", {}).get("jaxlmm", {})
    if g.get("ok"):
        text, met = f"{g['warm_s']:.2f} s (cold {g['first_fit_s']:.2f} s)", g["warm_s"] <= 15.0
        if by["GLMM"]["rows"] != 1_000_000:
            text += f", {by['GLMM']['rows']:,} rows (not the goal's size)"
    else:
        text, met = ("not run" if "GLMM" not in by else f"failed: {str(g.get('error'))[:60]}"), None
    rows.append(("glmer, 1M rows, 5,000 × 500 crossed binary, warm", "29 s (9× mixedlm)", "≤ 15 s", text, met))
    return rows


def render_goals(rep: dict) -> list[str]:
    L = ["", "## Goals (issue 16)", "", "| workload | today (2 cores) | goal | this run | |", "|---|---|---|---|---|"]
    for label, today, goal, text, met in _goal_rows(rep):
        mark = "met" if met else "missed" if met is False else "–"
        L.append(f"| {label.replace('|', '&#124;')} | {today} | {goal} | {text} | {mark} |")
    load = next((w for w in rep["workloads"] if w["key"] == "LOAD"), None)
    if load:
        L += ["", f"Loaded variant (InstEval warm, {load['busy_processes']} busy loops beside the fit):", "",
              "| engine | warm quiet s | warm loaded s | slowdown |", "|---|---:|---:|---:|"]
        for name, r in load["engines"].items():
            L.append(f"| {name} | {common.fmt_s(r['quiet'].get('warm_s'), 3)} | "
                     f"{common.fmt_s(r['loaded'].get('warm_s'), 3)} | {common.fmt_ratio(r.get('slowdown'))} |")
    return L


# =========================================================================== main


def _versions(rscript: str | None) -> dict:
    v = {k: common.python_package_version(k) for k in ("jaxlmm", "jax", "jaxlib", "numpy", "pandas",
                                                       "mixedlm", "statsmodels")}
    if rscript:
        v.update({k: x for k, x in common.r_package_versions(rscript, ("lme4", "Matrix")).items()})
    return v


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default="W1,W2,W3,W4,W5,W6," + ",".join(EXTRA_KEYS),
                    help="comma list of W1..W6, COLD, SLEEP, LOAD, GLMM (default: all)")
    ap.add_argument("--engines", default=",".join(ALL_ENGINES))
    ap.add_argument("--size", action="append", default=[], metavar="W=N",
                    help="workload size, e.g. W2=100000 (rows), W3=30 (subjects), W6=4000000 (ratings)")
    ap.add_argument("--repeats", type=int, default=3, help="fits after the first, per engine (default 3)")
    ap.add_argument("--budget", type=float, default=30.0,
                    help="seconds per engine for the later fits; fewer repeats when a fit is slow")
    ap.add_argument("--timeout", type=float, default=120.0,
                    help="seconds per engine process; a peer stopped before its first fit is reported as slower")
    ap.add_argument("--w4", default="--responses 1000 --subset 50 --repeats 3", help="bench_many.py arguments")
    ap.add_argument("--w5", default="--sizes 1000,2000,4000 --repeats 3",
                    help="bench_dense.py arguments (8,000 and 16,000: minutes each; run bench_dense.py alone)")
    ap.add_argument("--sleep-runs", type=int, default=3, help="SLEEP: timed runs of each script (default 3)")
    ap.add_argument("--busy", type=int, default=2, help="LOAD: busy-loop processes beside the fit (default 2)")
    ap.add_argument("--glmm-peers", action="store_true",
                    help="GLMM: run mixedlm / lme4 too (minutes; default: their figures from results/glmer.json)")
    ap.add_argument("--glmm-repeats", type=int, default=1, help="GLMM: jaxlmm fits after the first (default 1)")
    ap.add_argument("--glmm-timeout", type=float, default=600.0, help="GLMM: seconds per engine process")
    ap.add_argument("--out", default=str(common.BENCH_DIR / "results"))
    ap.add_argument("--worker", choices=PY_ENGINES, help=argparse.SUPPRESS)
    ap.add_argument("--workload", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--result-file", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.workload, args.data, args.repeats, args.budget, args.result_file)

    keys = [k.strip().upper() for k in args.workloads.split(",") if k.strip()]
    unknown = [k for k in keys if k not in (*WORKLOADS, "W4", "W5", *EXTRA_KEYS)]
    if unknown:
        ap.error(f"unknown workload(s) {unknown}; choose from W1..W6, {', '.join(EXTRA_KEYS)}")
    args.engines = {e.strip() for e in args.engines.split(",") if e.strip()}
    bad = args.engines - set(ALL_ENGINES)
    if bad:
        ap.error(f"unknown engine(s) {sorted(bad)}; choose from {', '.join(ALL_ENGINES)}")
    args.engines.add("jaxlmm")
    try:
        args.sizes = {k.upper(): int(float(v)) for k, v in (s.split("=", 1) for s in args.size)}
    except ValueError:
        ap.error("--size takes WORKLOAD=N, e.g. W2=100000")
    args.out = Path(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    rscript = common.find_rscript() if "lme4" in args.engines else None

    t0 = time.perf_counter()
    rep = {"benchmark": "suite", "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "command": "python benchmarks/suite.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "machine": common.machine_info(), "git": common.git_state(), "versions": _versions(rscript),
           "gpu": _gpu_note(), "workloads": []}
    with tempfile.TemporaryDirectory(prefix="jaxlmm-suite-") as tmp:
        tmp = Path(tmp)
        for key in keys:
            print(f"{key} ...", flush=True)
            if key == "W4":
                rep["workloads"].append(run_script("W4", "bench_many.py", args.w4.split(), args, tmp))
            elif key == "W5":
                rep["workloads"].append(run_script("W5", "bench_dense.py", args.w5.split(), args, tmp))
            elif key in EXTRA_KEYS:
                try:
                    if key == "COLD":
                        w = run_cold(args, rscript, tmp, rep["workloads"])
                    elif key == "SLEEP":
                        w = run_sleep(args, rscript, tmp)
                    elif key == "LOAD":
                        w = run_load(args, rscript, tmp, rep["workloads"])
                    else:
                        w = run_glmm(args, tmp)
                except Exception as e:  # reported, the suite goes on
                    w = {"key": key, "title": EXTRA_TITLES[key], "command": key,
                         "error": f"{type(e).__name__}: {e}\n{traceback.format_exc()[-1500:]}"}
                rep["workloads"].append(w)
            else:
                rep["workloads"].append(run_fitted(key, args, rscript, tmp))
            rep["wall_s"] = time.perf_counter() - t0
            common.write_json(args.out / "suite.json", rep)  # partial results survive an interruption
    rep["wall_s"] = time.perf_counter() - t0
    rep["summary"] = {w["key"]: _peer_summary(w) for w in rep["workloads"]
                      if "engines" in w and w["key"] not in EXTRA_KEYS}
    common.write_json(args.out / "suite.json", rep)
    md = render(rep)
    (args.out / "suite.md").write_text(md)
    print(md)
    return 0


def _gpu_note() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().replace("\n", "; ")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "none on this machine (CPU only)"


if __name__ == "__main__":
    raise SystemExit(main())
