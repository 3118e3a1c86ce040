"""The ``jaxlmm`` command line: argument handling, exit codes, and real fits.

Tests marked ``needs_core`` run a real ``jaxlmm.lmer`` fit; the others use a stub
``lmer`` (or stop before fitting) so they test the CLI alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import jaxlmm
from jaxlmm import cli, datasets

REPO_ROOT = Path(__file__).resolve().parents[2]

needs_core = pytest.mark.skipif(
    not hasattr(jaxlmm, "lmer"), reason="jaxlmm.lmer is not available"
)


# --------------------------------------------------------------------------- helpers


class _StubFit:
    def summary(self) -> str:
        return "STUB SUMMARY"


@pytest.fixture
def stub_lmer(monkeypatch):
    """Replace ``jaxlmm.lmer`` with a recorder; returns the list of recorded calls."""
    calls: list[dict] = []

    def lmer(formula, data, *, reml=True, weights=None, offset=None):
        calls.append(
            dict(formula=formula, data=data, reml=reml, weights=weights, offset=offset)
        )
        return _StubFit()

    monkeypatch.setattr(jaxlmm, "lmer", lmer, raising=False)
    return calls


@pytest.fixture
def sleep_csv(tmp_path):
    path = tmp_path / "sleep.csv"
    datasets.load("sleepstudy").to_csv(path, index=False)
    return path


def _run_module(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
    )
    return subprocess.run(
        [sys.executable, "-m", "jaxlmm.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=timeout,
    )


# ------------------------------------------------------------- usage and bad input


def test_no_command_is_usage_error(capsys):
    assert cli.main([]) == 2
    assert "usage" in capsys.readouterr().err.lower()


def test_help_exits_zero(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "fit" in out and "datasets" in out
    assert cli.main(["fit", "--help"]) == 0
    assert "--example" in capsys.readouterr().out


def test_unknown_option_is_usage_error(capsys):
    assert cli.main(["fit", "--example", "sleepstudy", "--bogus"]) == 2
    assert "--bogus" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["fit"],
        ["fit", "only-one-arg.csv"],
        ["fit", "a.csv", "y ~ x", "extra"],
        ["fit", "--example", "sleepstudy", "Reaction ~ Days", "extra"],
    ],
)
def test_wrong_number_of_positionals(argv, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "error" in err
    assert "Traceback" not in err


def test_missing_file_exits_2(tmp_path, capsys, stub_lmer):
    missing = tmp_path / "nope.csv"
    assert cli.main(["fit", str(missing), "y ~ x + (1 | g)"]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "nope.csv" in err
    assert "Traceback" not in err
    assert stub_lmer == []


def test_directory_instead_of_file_exits_2(tmp_path, capsys):
    assert cli.main(["fit", str(tmp_path), "y ~ x + (1 | g)"]) == 2
    assert "directory" in capsys.readouterr().err


def test_unreadable_data_exits_2(tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert cli.main(["fit", str(empty), "y ~ x + (1 | g)"]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_unknown_example_exits_2(capsys):
    assert cli.main(["fit", "--example", "nosuchdata"]) == 2
    err = capsys.readouterr().err
    assert "nosuchdata" in err and "sleepstudy" in err
    assert "Traceback" not in err


def test_jaxlmm_error_from_fit_exits_2(monkeypatch, capsys):
    from jaxlmm.errors import FormulaError

    def lmer(formula, data, **kw):
        raise FormulaError("no such column 'Nope'")

    monkeypatch.setattr(jaxlmm, "lmer", lmer, raising=False)
    assert cli.main(["fit", "--example", "sleepstudy", "Reaction ~ Nope"]) == 2
    err = capsys.readouterr().err
    assert "no such column 'Nope'" in err and "Traceback" not in err


def test_unexpected_failure_exits_1(monkeypatch, capsys):
    def lmer(formula, data, **kw):
        raise RuntimeError("boom")

    monkeypatch.setattr(jaxlmm, "lmer", lmer, raising=False)
    monkeypatch.delenv("JAXLMM_DEBUG", raising=False)
    assert cli.main(["fit", "--example", "dyestuff"]) == 1
    err = capsys.readouterr().err
    assert "boom" in err and "Traceback" not in err


def test_parquet_without_pyarrow_is_clear(tmp_path, monkeypatch, capsys, stub_lmer):
    path = tmp_path / "data.parquet"
    path.write_bytes(b"PAR1")  # never read: the pyarrow check comes first
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` fail
    assert cli.main(["fit", str(path), "y ~ x + (1 | g)"]) == 1
    err = capsys.readouterr().err
    assert "pyarrow" in err and "Traceback" not in err
    assert stub_lmer == []


# ------------------------------------------------------------ plumbing (stub lmer)


def test_example_uses_bundled_data_and_formula(stub_lmer, capsys):
    assert cli.main(["fit", "--example", "SleepStudy"]) == 0
    assert capsys.readouterr().out.strip() == "STUB SUMMARY"
    (call,) = stub_lmer
    assert call["formula"] == datasets.EXAMPLES["sleepstudy"]
    assert call["data"].shape == (180, 3)
    assert call["reml"] is True
    assert call["weights"] is None and call["offset"] is None


def test_example_with_explicit_formula_and_options(stub_lmer):
    argv = ["fit", "--example", "sleepstudy", "Reaction ~ 1 + (1 | Subject)", "--ml",
            "--weights", "Days", "--offset", "Days"]
    assert cli.main(argv) == 0
    (call,) = stub_lmer
    assert call["formula"] == "Reaction ~ 1 + (1 | Subject)"
    assert call["reml"] is False
    assert call["weights"] == "Days" and call["offset"] == "Days"


def test_csv_read_with_default_inference(stub_lmer, sleep_csv):
    assert cli.main(["fit", str(sleep_csv), "Reaction ~ Days + (Days | Subject)"]) == 0
    (call,) = stub_lmer
    df = call["data"]
    assert df.shape == (180, 3)
    # pandas' default inference: Subject comes back numeric; jaxlmm treats it as a factor
    assert df["Subject"].dtype.kind == "i"


def test_parquet_is_read(stub_lmer, tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "sleep.pq"
    datasets.load("sleepstudy").to_parquet(path)
    assert cli.main(["fit", str(path), "Reaction ~ Days + (Days | Subject)"]) == 0
    (call,) = stub_lmer
    assert call["data"].shape == (180, 3)
    assert call["data"]["Subject"].iloc[0] == "308"


def test_stdin_csv(stub_lmer, monkeypatch, sleep_csv):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(sleep_csv.read_text()))
    assert cli.main(["fit", "-", "Reaction ~ Days + (Days | Subject)"]) == 0
    assert stub_lmer[0]["data"].shape == (180, 3)


def test_jaxlmm_warnings_are_one_plain_line(monkeypatch, capsys):
    import warnings

    from jaxlmm.errors import FitWarning

    def lmer(formula, data, **kw):
        warnings.warn("boundary (singular) fit", FitWarning, stacklevel=2)
        return _StubFit()

    monkeypatch.setattr(jaxlmm, "lmer", lmer, raising=False)
    assert cli.main(["fit", "--example", "dyestuff2"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == "STUB SUMMARY"
    assert captured.err.strip() == "jaxlmm: warning: boundary (singular) fit"


def test_datasets_command_lists_all(capsys):
    assert cli.main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name, formula in datasets.EXAMPLES.items():
        line = next(ln for ln in out.splitlines() if ln.startswith(name + " "))
        assert formula in line
    assert "180 x 3" in out


def test_module_entry_point_datasets():
    proc = _run_module("datasets")
    assert proc.returncode == 0, proc.stderr
    assert "sleepstudy" in proc.stdout and "classroom" in proc.stdout


def test_module_entry_point_missing_file(tmp_path):
    proc = _run_module("fit", str(tmp_path / "nope.csv"), "y ~ x + (1 | g)")
    assert proc.returncode == 2
    assert "not found" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------ real fits


@needs_core
def test_fit_example_sleepstudy(capsys):
    assert cli.main(["fit", "--example", "sleepstudy"]) == 0
    out = capsys.readouterr().out
    assert "REML criterion" in out
    assert "Fixed effects" in out


@needs_core
@pytest.mark.parametrize("name", list(datasets.EXAMPLES))
def test_fit_every_example(name, capsys):
    assert cli.main(["fit", "--example", name]) == 0
    assert "Fixed effects" in capsys.readouterr().out


@needs_core
def test_fit_singular_example_warns_on_stderr(capsys):
    assert cli.main(["fit", "--example", "dyestuff2"]) == 0
    captured = capsys.readouterr()
    assert "Fixed effects" in captured.out
    assert "jaxlmm: warning:" in captured.err and "singular" in captured.err


@needs_core
def test_fit_csv_file(sleep_csv, capsys):
    assert cli.main(["fit", str(sleep_csv), "Reaction ~ Days + (Days | Subject)"]) == 0
    out = capsys.readouterr().out
    assert "REML criterion" in out and "Fixed effects" in out


@needs_core
def test_fit_ml(capsys):
    assert cli.main(["fit", "--example", "sleepstudy", "--ml"]) == 0
    out = capsys.readouterr().out
    assert "Fixed effects" in out
    assert "REML criterion" not in out


@needs_core
def test_bad_formula_without_tilde_exits_2(capsys):
    assert cli.main(["fit", "--example", "sleepstudy", "Reaction Days"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxlmm: error:") and "Traceback" not in err


@needs_core
def test_unknown_column_exits_2(capsys):
    argv = ["fit", "--example", "sleepstudy", "Reaction ~ Nope + (1 | Subject)"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Nope" in err and "Traceback" not in err


@needs_core
def test_unknown_column_in_csv_exits_2(sleep_csv, capsys):
    assert cli.main(["fit", str(sleep_csv), "Reaction ~ Days + (1 | Nope)"]) == 2
    err = capsys.readouterr().err
    assert "Nope" in err and "Traceback" not in err


@needs_core
def test_unknown_weights_column_exits_2(capsys):
    argv = ["fit", "--example", "sleepstudy", "--weights", "nope_w"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "nope_w" in err and "Traceback" not in err


@needs_core
def test_module_entry_point_fit():
    proc = _run_module("fit", "--example", "sleepstudy")
    assert proc.returncode == 0, proc.stderr
    assert "REML criterion" in proc.stdout and "Fixed effects" in proc.stdout


@needs_core
def test_module_entry_point_bad_formula():
    proc = _run_module("fit", "--example", "sleepstudy", "Reaction Days")
    assert proc.returncode == 2
    assert proc.stderr.startswith("jaxlmm: error:") and "Traceback" not in proc.stderr


@needs_core
def test_installed_console_script():
    exe = shutil.which("jaxlmm")
    if exe is None:
        pytest.skip("the `jaxlmm` console script is not installed")
    proc = subprocess.run(
        [exe, "fit", "--example", "dyestuff"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    assert "Fixed effects" in proc.stdout


# ------------------------------------------------- --ddf, --output, --device, convergence


@needs_core
def test_fit_ddf_and_json_output(tmp_path, capsys):
    out = tmp_path / "fit.json"
    assert cli.main(["fit", "--example", "sleepstudy", "--ddf", "satterthwaite", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "t tests (satterthwaite df)" in printed and "17.0000" in printed
    import json

    res = json.loads(out.read_text())
    assert res["converged"] is True and res["glance"]["nobs"] == 180
    fixed = [r for r in res["coefficients"] if r["effect"] == "fixed"]
    assert [r["term"] for r in fixed] == ["(Intercept)", "Days"]
    assert abs(fixed[1]["df"] - 17.0) < 1e-3 and fixed[1]["p.value"] < 1e-5
    assert res["glance"]["logLik"] == pytest.approx(-871.814135979246, rel=1e-8)  # lme4


def test_bad_ddf_is_usage_error(capsys):
    assert cli.main(["fit", "--example", "sleepstudy", "--ddf", "satterwaite"]) == 2
    assert "invalid choice" in capsys.readouterr().err


@needs_core
def test_unwritable_output_exits_2(tmp_path, capsys):
    target = tmp_path / "no_such_dir" / "fit.json"
    assert cli.main(["fit", "--example", "dyestuff", "--output", str(target)]) == 2
    assert "cannot write --output" in capsys.readouterr().err


@needs_core
def test_console_failed_convergence_exits_3():
    """The console command: an iteration limit that stops the optimiser gives exit status 3,
    the summary on stdout and one warning line on stderr."""
    proc = _run_module("fit", "--example", "sleepstudy", "--max-iter", "2")
    assert proc.returncode == 3, proc.stderr
    assert "Fixed effects" in proc.stdout
    assert "jaxlmm: warning: the optimiser did not converge" in proc.stderr
    assert "Traceback" not in proc.stderr


@needs_core
def test_console_device_cpu_and_missing_gpu():
    proc = _run_module("fit", "--example", "dyestuff", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    import jax

    if any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("this machine has a GPU")
    proc = _run_module("fit", "--example", "dyestuff", "--device", "gpu")
    assert proc.returncode == 2
    assert "--device gpu: JAX has no GPU backend" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("value, message", [
    ("0", "--max-iter must be a positive integer, got 0"),
    ("-5", "--max-iter must be a positive integer, got -5"),
    ("abc", "--max-iter must be an integer, got 'abc'"),
    ("1.5", "--max-iter must be an integer, got '1.5'"),
])
def test_max_iter_must_be_a_positive_integer(value, message, capsys, stub_lmer):
    assert cli.main(["fit", "--example", "dyestuff", "--max-iter", value]) == 2
    assert capsys.readouterr().err == f"jaxlmm: error: {message}\n"  # one line, no usage, no traceback
    assert not stub_lmer


def test_nagq_must_be_an_integer(capsys):
    assert cli.main(["fit", "--example", "cbpp", "--nagq", "two"]) == 2
    assert capsys.readouterr().err == "jaxlmm: error: --nagq must be an integer, got 'two'\n"


@needs_core
def test_fit_glmer_family_and_json(tmp_path, capsys):
    out = tmp_path / "cbpp.json"
    assert cli.main(["fit", "--example", "cbpp", "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Family: binomial  ( logit )" in text and "Pr(>|z|)" in text
    js = json.loads(out.read_text())
    assert js["family"] == ["binomial", "logit"]
    assert js["glance"]["logLik"] == pytest.approx(-92.026281874509, rel=1e-8)  # lme4, tolPwrss 1e-12
    assert [c["term"] for c in js["coefficients"]][:4] == ["(Intercept)", "period2", "period3", "period4"]


def test_glmer_options_need_family(capsys):
    assert cli.main(["fit", "--example", "sleepstudy", "--link", "probit"]) == 2
    assert "--family" in capsys.readouterr().err
    assert cli.main(["fit", "--example", "cbpp", "--ddf", "satterthwaite"]) == 2
    assert cli.main(["fit", "--example", "sleepstudy", "--family", "negbin"]) == 2
    assert "unknown family" in capsys.readouterr().err
