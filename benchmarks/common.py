"""Small helpers shared by the benchmark scripts in this folder.

Nothing here imports jax, jaxlmm or the peer engines: the scripts run each engine in its
own subprocess so that "cold" really means a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
DATA_DIR = BENCH_DIR / "data"

# Printed (and flushed) by a worker right after its first fit returns; the parent stamps
# the wall clock when it reads the line, giving "fresh process -> first result" time.
FIRST_FIT_MARKER = "@@FIRST_FIT_DONE"


# --------------------------------------------------------------------------- machine


def machine_info() -> dict:
    """Platform, CPU model, core counts, memory and load average at the time of the run."""
    info: dict = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "cpu_model": None,
        "cpu_count": os.cpu_count(),
    }
    try:
        info["cpu_affinity"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        info["cpu_affinity"] = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if info["cpu_model"] is None:
        info["cpu_model"] = platform.processor() or None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["mem_total_gib"] = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    try:
        info["loadavg_at_start"] = [float(x) for x in os.getloadavg()]
    except OSError:
        pass
    return info


def git_state(repo: str | os.PathLike = BENCH_DIR.parent) -> str | None:
    """`git describe --always --dirty` of the repository, or None outside git."""
    try:
        res = subprocess.run(["git", "-C", str(repo), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


# --------------------------------------------------------------------------- timing


def median(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


@dataclass
class ProcessTiming:
    returncode: int | None
    total_s: float  # Popen -> exit
    first_fit_s: float | None  # Popen -> FIRST_FIT_MARKER line read
    stdout: str
    stderr: str
    timed_out: bool = False
    extra: dict = field(default_factory=dict)


def run_timed(cmd: list[str], *, timeout: float, env: dict | None = None,
              cwd: str | os.PathLike | None = None) -> ProcessTiming:
    """Run cmd, stamping the wall clock at start, at the first-fit marker and at exit.

    stdout is read line by line (the worker must flush after the marker); stderr goes to a
    temporary file so a chatty child cannot block on a full pipe.
    """
    import tempfile
    import threading

    with tempfile.TemporaryFile(mode="w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                                env=env, cwd=cwd, bufsize=1)
        first: list[float] = []
        out_lines: list[str] = []

        def reader():
            assert proc.stdout is not None
            for line in proc.stdout:
                if not first and line.startswith(FIRST_FIT_MARKER):
                    first.append(time.perf_counter() - t0)
                out_lines.append(line)

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.kill()
            proc.wait()
        total = time.perf_counter() - t0
        th.join(timeout=5)
        err.seek(0)
        stderr = err.read()
    return ProcessTiming(proc.returncode, total, first[0] if first else None,
                         "".join(out_lines), stderr, timed_out)


# --------------------------------------------------------------------------- R


def find_rscript() -> str | None:
    env = os.environ.get("RSCRIPT")
    return shutil.which(env) if env else shutil.which("Rscript")


def r_package_versions(rscript: str, packages=("lme4", "Matrix", "minqa")) -> dict:
    """R version and package versions (missing packages map to None)."""
    pk = ", ".join(f'"{p}"' for p in packages)
    code = (
        "v <- list(R = paste(R.version$major, R.version$minor, sep = '.'));"
        f"for (p in c({pk})) v[[p]] <- tryCatch(as.character(packageVersion(p)),"
        " error = function(e) NA);"
        "cat(paste(names(v), unlist(v), sep = '=', collapse = '\\n'), '\\n')"
    )
    try:
        res = subprocess.run([rscript, "-e", code], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    out = {}
    for line in res.stdout.splitlines():
        if "=" in line:
            k, v = line.strip().split("=", 1)
            out[k] = None if v.strip() in ("NA", "") else v.strip()
    return out


def python_package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------- output


def fmt_s(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    tmp.replace(path)


def write_report(outdir: str | os.PathLike, stem: str, result: dict, lines: list[str]) -> None:
    """``OUT/stem.json`` (the result) and ``OUT/stem.md`` (the lines), and print the lines."""
    outdir = Path(outdir)
    write_json(outdir / f"{stem}.json", result)
    (outdir / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    return str(o)
