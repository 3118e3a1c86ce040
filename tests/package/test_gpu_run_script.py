"""``benchmarks/gpu_run.py --tiny`` runs end to end on the CPU: the Markdown report is written,
every workload has its row, each fitted, and the objectives agree with the CPU refits."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "benchmarks" / "gpu_run.py"
WORKLOADS = ("W1", "W2", "W6", "W6_10M", "GLMM", "MANY")


def test_gpu_run_tiny(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("JAXLMM_CACHE", None)
    # about 45 s on 2 idle cores; the timeout leaves room for a machine shared with other work
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--out", str(tmp_path)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (tmp_path / "gpu_tiny.md").read_text()
    rep = json.loads((tmp_path / "gpu_tiny.json").read_text())
    assert md.startswith("# jaxlmm on cpu")
    assert "Versions: " in md and "jax " in md
    results = md.split("\n\n| workload | title |")[0]  # the results table, before the workloads' titles
    rows = {line.split("|")[1].strip(): line for line in results.splitlines()
            if line.startswith("| ") and line.split("|")[1].strip() in WORKLOADS}
    assert set(rows) == set(WORKLOADS), md
    for key in WORKLOADS:
        w = rep["workloads"][key]
        assert w["ok"], (key, w.get("error"))
        assert w["cold_s"] > 0 and w["warm_s"] > 0 and w["n_evals"] > 0
        assert "failed" not in rows[key]
        if "cpu_abs_diff" in w:  # compared with the CPU: they agree, and the table says so
            assert w["cpu_agrees"], (key, w["cpu_abs_diff"])
            assert rows[key].rstrip().endswith("| yes |")
    assert any("cpu_abs_diff" in rep["workloads"][k] for k in WORKLOADS)
