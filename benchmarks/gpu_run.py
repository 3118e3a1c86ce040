#!/usr/bin/env python
"""jaxlmm on one accelerator: the suite's big workloads, timed on the default JAX backend, with
each objective checked against a CPU fit of the same data. Made to finish in under 8 minutes
on one H200 GPU.

    python benchmarks/gpu_run.py                 # full sizes -> results/gpu.{md,json} (a GPU run)
    python benchmarks/gpu_run.py --small         # reduced sizes, CPU, < 3 min on 2 cores -> gpu_small.*
    python benchmarks/gpu_run.py --tiny --out D  # seconds, for the test -> D/gpu_tiny.*
    python benchmarks/gpu_run.py --workloads W1,GLMM

Workloads (full size; ``--small`` / ``--tiny`` scale them down):

- ``W1`` InstEval (73,421 rows), ``y ~ 1 + service + (1|s) + (1|d) + (1|dept:service)``;
- ``W2`` ``y ~ 1 + x + (1 + x | g)``, 1M rows, 50,000 groups (``workloads.random_slope``);
- ``W6`` MovieLens-shaped ``y ~ 1 + (1|user) + (1|item)``, 1M ratings (``workloads.movielens``);
- ``W6_10M`` the same generator at the MovieLens 10M shape: 10M ratings, 69,878 users x 10,677
  items;
- ``GLMM`` crossed binary ``glmer("y ~ x + (1 | subj) + (1 | item)", binomial)``, 1M rows,
  5,000 x 500 (``bench_glmer.make_crossed``);
- ``MANY`` ``lmer_many("~ Days + (Days | Subject)")`` on 10,000 sleepstudy-sized responses
  (drawn with NumPy from the sleepstudy REML fit).

Each workload runs in its own fresh process (``--tiny``: all in one) with an empty jaxlmm
compilation cache (``JAXLMM_CACHE_DIR`` a new temporary folder), so the first fit compiles:
*cold* is that first fit, *warm* the median of the later fits (up to ``--repeats`` while
within the workload's budget). *compile* is the XLA backend compilation JAX reports during the
cold fit (``/jax/core/compile/backend_compile_duration`` events; tracing and lowering are
listed beside it); compilations during the warm fits are counted too (they should be none).
*per evaluation* is warm time / the fit's objective evaluations (value and gradient;
``optinfo["n_evals"]``; for ``lmer_many`` the most evaluations of any response, the batch
moving in lockstep). Peak memory is the device's ``peak_bytes_in_use`` where the backend
reports it, else the process's peak RSS. Afterwards one CPU process (``JAX_PLATFORMS=cpu``)
fits each workload once more and the objectives are compared (``MANY``: the first 1,000
responses; with ``--small`` / ``--tiny``, CPU runs, the refit runs in the worker process itself);
``W6_10M`` is not refitted on the CPU at full size (minutes on the CPU, beyond the
8-minute budget), and any CPU fit that would overrun the overall deadline is skipped with a
note. A failing workload is reported in the table; the others still run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

REPO = common.BENCH_DIR.parent
SLEEPSTUDY_CSV = REPO / "jaxlmm" / "datasets" / "sleepstudy.csv"
ML10M_SHAPE = (69_878, 10_677)  # MovieLens 10M: users x items
MANY_COMPARED = 1_000  # responses refitted on the CPU

# key -> title, kind, formula, size per mode (full, small, tiny), whether the CPU refit runs
WORKLOADS: dict[str, dict] = {
    "W1": {"title": "InstEval, crossed (1|s) + (1|d) + (1|dept:service)", "kind": "lmer",
           "formula": "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)",
           "sizes": {"full": 73_421, "small": 30_000, "tiny": 2_000}, "unit": "rows"},
    "W2": {"title": "random slope (1 + x | g), n/20 groups", "kind": "lmer",
           "formula": "y ~ 1 + x + (1 + x | g)",
           "sizes": {"full": 1_000_000, "small": 100_000, "tiny": 4_000}, "unit": "rows"},
    "W6": {"title": "MovieLens-shaped (1|user) + (1|item), 1M-ratings shape", "kind": "lmer",
           "formula": "y ~ 1 + (1 | user) + (1 | item)",
           "sizes": {"full": 1_000_000, "small": 100_000, "tiny": 30_000}, "unit": "ratings"},
    "W6_10M": {"title": "MovieLens-shaped (1|user) + (1|item), 10M shape (69,878 users x 10,677 items)",
               "kind": "lmer", "formula": "y ~ 1 + (1 | user) + (1 | item)",
               "sizes": {"full": 10_000_000, "small": 150_000, "tiny": 60_000}, "unit": "ratings",
               "cpu_max": 1_000_000},
    "GLMM": {"title": "crossed binary glmer y ~ x + (1|subj) + (1|item), binomial, Laplace", "kind": "glmer",
             "formula": "y ~ x + (1 | subj) + (1 | item)",
             "sizes": {"full": 1_000_000, "small": 50_000, "tiny": 4_000}, "unit": "rows"},
    "MANY": {"title": "lmer_many, sleepstudy-sized responses, ~ Days + (Days | Subject)", "kind": "many",
             "formula": "~ Days + (Days | Subject)",
             "sizes": {"full": 10_000, "small": 1_000, "tiny": 20}, "unit": "responses"},
}
# seconds: cap on one workload's process, and on its later (warm) fits
FULL_LIMITS = {"W1": (60, 20), "W2": (60, 20), "W6": (100, 40), "W6_10M": (180, 60), "GLMM": (120, 45),
               "MANY": (60, 20)}
DEADLINE_S = {"full": 450.0, "small": 165.0, "tiny": 240.0}  # the whole run, with the CPU refits
# (--tiny: about 45 s on 2 idle cores; the allowance is for a machine shared with other work)
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
TRACE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration")


# =========================================================================== data (no jax here)


def make_data(key: str, size: int, folder: Path) -> tuple[Path, int, str]:
    """Generate the workload's data into ``folder``; returns the file, its rows and a label."""
    import numpy as np
    import pandas as pd

    import workloads

    path = folder / f"{key}.pkl"
    if key == "W1":
        df = workloads.insteval()
        if size < len(df):  # a random subset of rows (same factors; fewer levels)
            df = df.sample(n=size, random_state=1).reset_index(drop=True)
        label = f"{len(df):,} rows"
    elif key == "W2":
        df = workloads.random_slope(size)
        label = f"{len(df):,} rows, {df['g'].nunique():,} groups"
    elif key in ("W6", "W6_10M"):
        if key == "W6_10M":
            scale = size / 10_000_000
            users, items = (max(int(round(ML10M_SHAPE[0] * scale)), 50), max(int(round(ML10M_SHAPE[1] * scale)), 20))
            df = workloads.movielens(size, n_users=users, n_items=items)
        else:
            df = workloads.movielens(size)
        label = f"{len(df):,} ratings, {df['user'].nunique():,} users x {df['item'].nunique():,} items"
    elif key == "GLMM":
        import bench_glmer

        df = bench_glmer.make_crossed(size)
        label = f"{len(df):,} rows, {df['subj'].nunique():,} x {df['item'].nunique():,}"
    elif key == "MANY":
        s = pd.read_csv(SLEEPSTUDY_CSV, dtype={"Subject": str})
        Y = simulate_sleepstudy(s, size)
        path = folder / f"{key}.npy"
        np.save(path, Y)
        return path, size, f"{size:,} responses x {len(s)} rows, {s['Subject'].nunique()} subjects"
    else:
        raise KeyError(key)
    df.to_pickle(path)
    return path, len(df), label


def simulate_sleepstudy(s, k: int, seed: int = 20261125):
    """``k`` responses from sleepstudy's REML fit (lme4: beta 251.405, 10.467; sd 24.741, 5.922,
    cor 0.066; sigma 25.592), drawn with NumPy (columns are responses)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    subj = s["Subject"].astype("category").cat.codes.to_numpy()
    days = s["Days"].to_numpy(dtype=float)
    m = int(subj.max()) + 1
    sd0, sd1, cor, sigma = 24.741, 5.922, 0.066, 25.592
    C = np.array([[sd0**2, cor * sd0 * sd1], [cor * sd0 * sd1, sd1**2]])
    b = rng.multivariate_normal(np.zeros(2), C, size=(k, m))  # (k, m, 2)
    mu = 251.405 + 10.467 * days
    Y = mu[None, :] + b[:, subj, 0] + b[:, subj, 1] * days[None, :] + sigma * rng.normal(size=(k, len(days)))
    return Y.T.copy()


# =========================================================================== workers


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _JaxEvents:
    """Sums of JAX's compile-duration events (backend compilation; tracing and lowering)."""

    def __init__(self):
        import jax.monitoring

        self.compile_s = 0.0
        self.compiles = 0
        self.trace_s = 0.0

        def listener(event, duration, **kwargs):
            if event == COMPILE_EVENT:
                self.compile_s += duration
                self.compiles += 1
            elif event in TRACE_EVENTS:
                self.trace_s += duration

        jax.monitoring.register_event_duration_secs_listener(listener)

    def snapshot(self) -> tuple[float, int, float]:
        return self.compile_s, self.compiles, self.trace_s


def _fitter(key: str, data: Path, compare_only: bool = False):
    """``fit_once() -> info`` for the workload, its data read from ``data``."""
    import numpy as np
    import pandas as pd

    import jaxlmm

    wl = WORKLOADS[key]
    if wl["kind"] == "many":
        Y = np.load(data)
        if compare_only:
            Y = Y[:, :MANY_COMPARED]
        s = pd.read_csv(SLEEPSTUDY_CSV, dtype={"Subject": str})

        def fit_once():
            res = jaxlmm.lmer_many(wl["formula"], s, Y)
            obj = res["objective"].to_numpy(dtype=float)
            return {"objective": float(obj.mean()), "objectives": obj[:MANY_COMPARED].tolist(),
                    "n_evals": int(res["n_evals"].max()), "converged": float(res["converged"].mean())}
        return fit_once

    df = pd.read_pickle(data)

    def fit_once():
        if wl["kind"] == "glmer":
            fit = jaxlmm.glmer(wl["formula"], df, "binomial")
            conv = bool(fit.converged)
        else:
            fit = jaxlmm.lmer(wl["formula"], df, reml=True)
            conv = bool(fit.optinfo["converged"])
        return {"objective": float(fit.objective), "n_evals": fit.optinfo.get("n_evals"), "converged": conv,
                "theta": np.asarray(fit.theta, dtype=float).tolist()}
    return fit_once


def _device_info() -> dict:
    import jax

    d = jax.devices()[0]
    return {"backend": jax.default_backend(), "device_kind": getattr(d, "device_kind", str(d)),
            "device_count": jax.device_count()}


def _device_peak_mib() -> float | None:
    import jax

    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - not every backend has them
        return None
    if stats and "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**20
    return None


def worker_main(keys: list[str], data: dict[str, str], repeats: int, budgets: dict[str, float],
                result_file: Path, inline_cpu: bool = False) -> int:
    """Fit each workload: a cold fit, then warm fits; the results file is rewritten after every fit."""
    out: dict = {"workloads": {}}
    t = time.perf_counter()
    events = _JaxEvents()
    import jaxlmm  # noqa: F401

    out["import_s"] = time.perf_counter() - t
    out["device"] = _device_info()
    for key in keys:
        r: dict = {"ok": False}
        out["workloads"][key] = r
        try:
            fit_once = _fitter(key, Path(data[key]))
            c0, n0, tr0 = events.snapshot()
            t = time.perf_counter()
            info = fit_once()
            r["cold_s"] = time.perf_counter() - t
            c1, n1, tr1 = events.snapshot()
            r.update(info, ok=True, compile_s=c1 - c0, compiles=n1 - n0, trace_s=tr1 - tr0, warm_times_s=[])
            print(common.FIRST_FIT_MARKER, key, flush=True)
            common.write_json(result_file, out)
            spent = 0.0
            while len(r["warm_times_s"]) < max(repeats, 1) and (
                    not r["warm_times_s"] or spent + r["warm_times_s"][-1] <= budgets[key]):
                t = time.perf_counter()
                info = fit_once()
                r["warm_times_s"].append(time.perf_counter() - t)
                spent += r["warm_times_s"][-1]
                r.update(info)
                c2, n2, _ = events.snapshot()
                r["warm_compiles"], r["warm_compile_s"] = n2 - n1, c2 - c1
                common.write_json(result_file, out)
        except Exception as e:  # reported in the table; the next workload still runs
            r.update(ok=False, error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-3000:])
        r["device_peak_mib"] = _device_peak_mib()  # cumulative over the process (one workload each)
        r["peak_rss_mib"] = _peak_rss_mib()
        common.write_json(result_file, out)
    if inline_cpu:  # --small / --tiny: the CPU refits in this process, on the CPU device
        import jax

        out["cpu_device"] = {"backend": "cpu", "device_kind": "cpu", "device_count": len(jax.devices("cpu"))}
        # on a CPU backend the refit runs as it is (under jax.default_device every program would
        # be traced and compiled again: the device is part of JAX's cache key)
        on_cpu = jax.default_backend() == "cpu"
        with contextlib.nullcontext() if on_cpu else jax.default_device(jax.devices("cpu")[0]):
            out["cpu"] = {}
            for key in keys:
                if out["workloads"][key].get("ok"):
                    out["cpu"][key] = _refit(key, data[key])
                    common.write_json(result_file, out)
    return 0


def _refit(key: str, data: str) -> dict:
    r: dict = {"ok": False}
    try:
        t = time.perf_counter()
        info = _fitter(key, Path(data), compare_only=True)()
        r.update(info, ok=True, fit_s=time.perf_counter() - t)
    except Exception as e:  # noqa: BLE001
        r.update(error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-3000:])
    return r


def compare_main(keys: list[str], data: dict[str, str], result_file: Path, deadline: float) -> int:
    """The CPU refit: one fit per workload (``JAX_PLATFORMS=cpu``), while time is left."""
    out: dict = {"workloads": {}}
    import jaxlmm  # noqa: F401

    out["device"] = _device_info()
    for key in keys:
        out["workloads"][key] = _refit(key, data[key])
        common.write_json(result_file, out)
    return 0


# =========================================================================== parent


def _probe(env: dict) -> dict:
    """The default backend and versions, from a short fresh process."""
    code = ("import json, jax, jaxlib; d = jax.devices()[0]; print(json.dumps({'backend': jax.default_backend(), "
            "'device_kind': getattr(d, 'device_kind', str(d)), 'device_count': jax.device_count(), "
            "'jax': jax.__version__, 'jaxlib': jaxlib.__version__}))")
    try:
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
        return json.loads(res.stdout.strip().splitlines()[-1])
    except Exception as e:  # noqa: BLE001
        return {"backend": None, "error": f"{type(e).__name__}: {e}"}


def _versions() -> dict:
    names = ("jaxlmm", "jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda13-plugin",
             "jax-cuda13-pjrt", "numpy", "pandas", "scipy")
    return {k: v for k in names if (v := common.python_package_version(k))}


def _gpu_name() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().replace("\n", "; ")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return None


def _worker_cmd(mode: str, keys: list[str], files: dict, result_file: Path, args, budgets=None,
                inline_cpu: bool = False) -> list[str]:
    spec = {"keys": keys, "data": {k: str(files[k]) for k in keys}, "repeats": args.repeats,
            "budgets": budgets or {}, "result_file": str(result_file), "inline_cpu": inline_cpu}
    return [sys.executable, str(Path(__file__).resolve()), f"--{mode}", json.dumps(spec)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--small", action="store_true", help="reduced sizes on the CPU (< 3 min on 2 cores)")
    size.add_argument("--tiny", action="store_true", help="tiny sizes, all workloads in one process (seconds)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma list of {', '.join(WORKLOADS)}")
    ap.add_argument("--repeats", type=int, default=None, help="warm fits per workload (default 3; --tiny 1)")
    ap.add_argument("--no-cpu-check", action="store_true", help="skip the CPU refits")
    ap.add_argument("--out", default=str(common.BENCH_DIR / "results"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--compare", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker or args.compare:
        spec = json.loads(args.worker or args.compare)
        if args.worker:
            return worker_main(spec["keys"], spec["data"], spec["repeats"], spec["budgets"], Path(spec["result_file"]),
                               spec.get("inline_cpu", False))
        return compare_main(spec["keys"], spec["data"], Path(spec["result_file"]), 0.0)

    mode = "tiny" if args.tiny else "small" if args.small else "full"
    keys = [k.strip().upper() for k in args.workloads.split(",") if k.strip()]
    bad = [k for k in keys if k not in WORKLOADS]
    if bad:
        ap.error(f"unknown workload(s) {bad}; choose from {', '.join(WORKLOADS)}")
    if args.repeats is None:
        args.repeats = {"full": 3, "small": 1, "tiny": 1}[mode]
    t0 = time.perf_counter()
    deadline = t0 + DEADLINE_S[mode]
    base_env = dict(os.environ)
    base_env.pop("JAXLMM_CACHE", None)
    if mode != "full":
        base_env["JAX_PLATFORMS"] = "cpu"  # --small / --tiny are CPU runs by definition
    probe = _probe(base_env) if mode == "full" else {"backend": "cpu"}
    stem = {"full": "gpu", "small": "gpu_small", "tiny": "gpu_tiny"}[mode]
    if mode == "full" and probe.get("backend") != "gpu":
        stem = "gpu_on_cpu"  # never overwrite GPU figures with a CPU run
        print(f"warning: the default JAX backend is {probe.get('backend')!r}, not a GPU: writing {stem}.md",
              flush=True)
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    rep = {"benchmark": "gpu_run", "mode": mode,
           "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "command": "python benchmarks/gpu_run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "machine": common.machine_info(), "gpu": _gpu_name(), "probe": probe, "git": common.git_state(),
           "versions": _versions(), "workloads": {}}

    with tempfile.TemporaryDirectory(prefix="jaxlmm-gpu-run-") as tmp:
        tmp = Path(tmp)
        files: dict[str, Path] = {}
        for key in keys:
            wl = WORKLOADS[key]
            n = wl["sizes"][mode]
            entry = {"title": wl["title"], "formula": wl["formula"], "size": n, "unit": wl["unit"], "ok": False}
            rep["workloads"][key] = entry
            try:
                t = time.perf_counter()
                files[key], entry["rows"], entry["label"] = make_data(key, n, tmp)
                entry["generate_s"] = time.perf_counter() - t
            except Exception as e:  # noqa: BLE001
                entry["error"] = f"data: {type(e).__name__}: {e}"
            print(f"{key}: {entry.get('label', entry.get('error'))}", flush=True)
        runnable = [k for k in keys if k in files]
        cache_root = tmp / "caches"
        # one fresh process per workload, each with an empty compilation cache (tiny: one process)
        groups = [runnable] if mode == "tiny" else [[k] for k in runnable]
        for group in groups:
            if not group:
                continue
            left = deadline - time.perf_counter() - {"full": 30, "small": 10, "tiny": 1}[mode]
            if left < 5:
                for k in group:
                    rep["workloads"][k]["error"] = "skipped: the run's time budget was spent"
                continue
            if mode == "full":
                budgets = {k: FULL_LIMITS[k][1] for k in group}
                limit = min(sum(FULL_LIMITS[k][0] for k in group), left)
            else:
                budgets = {k: 10.0 if mode == "small" else 2.0 for k in group}
                limit = left
            cache = cache_root / "-".join(group)
            cache.mkdir(parents=True)
            env = dict(base_env, JAXLMM_CACHE_DIR=str(cache))
            result_file = tmp / f"result-{'-'.join(group)}.json"
            print(f"  fitting {', '.join(group)} (limit {limit:.0f} s) ...", flush=True)
            inline = mode != "full" and not args.no_cpu_check
            timing = common.run_timed(_worker_cmd("worker", group, files, result_file, args, budgets, inline),
                                      timeout=limit, env=env)
            res = json.loads(result_file.read_text()) if result_file.exists() else {"workloads": {}}
            rep.setdefault("device", res.get("device"))
            for k in group:
                entry = rep["workloads"][k]
                r = res["workloads"].get(k)
                if r is None:
                    entry["error"] = (f"not reached: the process was stopped after {limit:.0f} s" if timing.timed_out else
                                      f"no result (exit {timing.returncode}): {timing.stderr[-800:].strip()}")
                    continue
                entry.update(r)
                if timing.timed_out:
                    entry["note"] = f"process stopped after {limit:.0f} s"
                if r.get("ok"):
                    entry["warm_s"] = common.median(r["warm_times_s"])
                    entry["process_first_fit_s"] = timing.first_fit_s if len(group) == 1 else None
                    entry["import_s"] = res.get("import_s")
                print(f"    {k}: " + (f"cold {entry['cold_s']:.2f} s, warm {common.fmt_s(entry.get('warm_s'), 3)} s"
                                      if r.get("ok") else f"failed: {r.get('error')}"), flush=True)
            if inline:
                rep["cpu_device"] = res.get("cpu_device")
                for k in group:
                    e, c = rep["workloads"][k], res.get("cpu", {}).get(k)
                    if e.get("ok"):
                        _take_cpu(e, c, timing.timed_out)
            rep["wall_s"] = time.perf_counter() - t0
            common.write_json(outdir / f"{stem}.json", rep)

        # the CPU refits: one process, smallest work first; skipped where they would overrun
        if not args.no_cpu_check and mode == "full":
            cmp_keys = []
            for k in runnable:
                e = rep["workloads"][k]
                cap = WORKLOADS[k].get("cpu_max")
                if not e.get("ok"):
                    continue
                if cap is not None and e["size"] > cap:
                    e["cpu_note"] = (f"CPU refit skipped: {e['size']:,} {e['unit']} takes minutes on the CPU, "
                                     "beyond the 8-minute budget")
                    continue
                cmp_keys.append(k)
            left = deadline - time.perf_counter()
            if cmp_keys and left > 10:
                result_file = tmp / "cpu.json"
                env = dict(base_env, JAX_PLATFORMS="cpu", JAXLMM_CACHE_DIR=str(cache_root / "cpu"))
                if mode != "full":  # the device is the CPU: reuse the workers' compiled programs
                    for folder in cache_root.iterdir():
                        if folder.name != "cpu":
                            shutil.copytree(folder, cache_root / "cpu", dirs_exist_ok=True)
                print(f"  CPU refits of {', '.join(cmp_keys)} (limit {left:.0f} s) ...", flush=True)
                t = time.perf_counter()
                timing = common.run_timed(_worker_cmd("compare", cmp_keys, files, result_file, args),
                                          timeout=left, env=env)
                rep["cpu_check_s"] = time.perf_counter() - t
                res = json.loads(result_file.read_text()) if result_file.exists() else {"workloads": {}}
                rep["cpu_device"] = res.get("device")
                for k in cmp_keys:
                    _take_cpu(rep["workloads"][k], res["workloads"].get(k), timing.timed_out, timing.stderr)
            else:
                for k in cmp_keys:
                    rep["workloads"][k]["cpu_note"] = "CPU refit skipped: the 8-minute budget ran out"
    rep["wall_s"] = time.perf_counter() - t0
    common.write_json(outdir / f"{stem}.json", rep)
    lines = render(rep)
    (outdir / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _take_cpu(e: dict, c: dict | None, timed_out: bool, stderr: str = "") -> None:
    if c is None:
        e["cpu_note"] = ("CPU refit skipped: the time budget ran out" if timed_out
                         else f"CPU refit gave no result: {stderr[-300:].strip()}")
    elif not c.get("ok"):
        e["cpu_note"] = f"CPU refit failed: {c.get('error')}"
    else:
        _agreement(e, c)


def _agreement(e: dict, c: dict) -> None:
    """Objective on the device vs on the CPU: |difference| within 1e-4 + 1e-7 |objective| agrees."""
    e["cpu_fit_s"] = c.get("fit_s")
    if "objectives" in c:  # lmer_many: response by response over the compared ones
        a, b = e["objectives"][:len(c["objectives"])], c["objectives"]
        diffs = [abs(x - y) for x, y in zip(a, b)]
        e["cpu_objective"] = sum(b) / len(b)
        e["cpu_compared"] = len(b)
        worst = max(range(len(diffs)), key=diffs.__getitem__)
        e["cpu_abs_diff"] = diffs[worst]
        ref = abs(b[worst])
    else:
        e["cpu_objective"] = c["objective"]
        e["cpu_abs_diff"] = abs(e["objective"] - c["objective"])
        ref = abs(c["objective"])
    e["cpu_agrees"] = bool(e["cpu_abs_diff"] <= 1e-4 + 1e-7 * ref)


def _mib(x) -> str:
    return "-" if x is None else f"{x:,.0f}"


def render(rep: dict) -> list[str]:
    m, p = rep["machine"], rep.get("probe") or {}
    dev = rep.get("device") or p
    mem_kind = "device peak_bytes_in_use" if any(
        (w.get("device_peak_mib") is not None) for w in rep["workloads"].values()) else "peak RSS (no device stats)"
    L = [f"# jaxlmm on {dev.get('backend') or '?'}: {dev.get('device_kind') or '?'}"
         f"{' x ' + str(dev['device_count']) if (dev.get('device_count') or 1) > 1 else ''}", "",
         f"Run {rep['date']} with `{rep['command']}` ({rep['mode']} sizes), {rep.get('wall_s', 0):.0f} s in all.", "",
         f"Machine: {m.get('cpu_model')}, {m.get('cpu_affinity')} of {m.get('cpu_count')} cores, "
         f"{m.get('mem_total_gib')} GiB, {m.get('platform')}; GPU: {rep.get('gpu') or 'none found (nvidia-smi)'}; "
         f"load average at start {m.get('loadavg_at_start')}; repository at `{rep.get('git')}`.", "",
         "Versions: " + ", ".join(f"{k} {v}" for k, v in rep["versions"].items()) + f"; Python {m.get('python')}.", "",
         "Each workload in a fresh process with an empty jaxlmm compilation cache. *cold*: the first fit (tracing "
         "and compilation included); *warm*: median of the later fits; *compile*: XLA backend compilation during "
         "the cold fit (JAX's `backend_compile_duration` events), with tracing + lowering beside it; *warm "
         "compiles*: compilations during the warm fits (0 expected); *per eval*: warm / evaluations (value + "
         f"gradient). Memory: {mem_kind}, MiB. CPU Δ: |objective − CPU objective| (`JAX_PLATFORMS=cpu`, "
         "same data), agreeing within 1e-4 + 1e-7 |objective|.", "",
         "| workload | size | cold s | warm s | cold − warm s | compile s (trace+lower) | warm compiles | evals "
         "| per eval ms | memory MiB | objective | CPU Δ | agrees |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    notes = []
    for key, w in rep["workloads"].items():
        size = w.get("label") or f"{w['size']:,} {w['unit']}"
        if not w.get("ok"):
            L.append(f"| {key} | {size} | failed: {str(w.get('error'))[:160].replace('|', '/')} "
                     "| | | | | | | | | | |")
            continue
        warm = w.get("warm_s")
        ev = w.get("n_evals")
        per = f"{1000 * warm / ev:.2f}" if warm and ev else "-"
        mem = w.get("device_peak_mib") if w.get("device_peak_mib") is not None else w.get("peak_rss_mib")
        if "cpu_abs_diff" in w:
            d = f"{w['cpu_abs_diff']:.1e}" + (f" (max of {w['cpu_compared']:,})" if w.get("cpu_compared") else "")
            agrees = "yes" if w["cpu_agrees"] else "**no**"
        else:
            d, agrees = "-", "not compared"
        L.append(f"| {key} | {size} | {w['cold_s']:.2f} | {common.fmt_s(warm, 3)} | "
                 f"{common.fmt_s(w['cold_s'] - warm if warm is not None else None)} | "
                 f"{w.get('compile_s', 0):.2f} ({w.get('trace_s', 0):.2f}) | {w.get('warm_compiles', '-')} | "
                 f"{ev if ev is not None else '-'} | {per} | {_mib(mem)} | {w['objective']:.6f} | {d} | {agrees} |")
        for field in ("cpu_note", "note"):
            if w.get(field):
                notes.append(f"- {key}: {w[field]}")
        if not w.get("converged", True):
            notes.append(f"- {key}: the fit reports no convergence")
    if notes:
        L += ["", "Notes:", "", *notes]
    L += ["", "| workload | title | formula | data generated s | fresh process → first fit s | CPU fit s |",
          "|---|---|---|---:|---:|---:|"]
    for key, w in rep["workloads"].items():
        L.append(f"| {key} | {w['title']} | `{w['formula']}` | {common.fmt_s(w.get('generate_s'), 1)} | "
                 f"{common.fmt_s(w.get('process_first_fit_s'))} | {common.fmt_s(w.get('cpu_fit_s'))} |")
    return L


if __name__ == "__main__":
    raise SystemExit(main())
