"""Progress bars (tqdm, after a delay, only when enabled) and the package logger."""

import logging

import numpy as np
import pytest

import jaxlmm
from jaxlmm import datasets, progress
from jaxlmm.errors import ArgumentError


@pytest.fixture
def bars_now(monkeypatch):
    """Bars on and shown at once (no delay)."""
    pytest.importorskip("tqdm")
    monkeypatch.setattr(progress, "DELAY", 0.0)
    jaxlmm.set_progress(True)
    yield
    jaxlmm.set_progress(None)


def test_batched_fits_show_a_bar(bars_now, capsys):
    fit = jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", datasets.load("sleepstudy"))
    Y = fit.simulate(5, seed=1)
    jaxlmm.lmer_many("~ Days + (Days | Subject)", datasets.load("sleepstudy"), Y)
    err = capsys.readouterr().err
    assert "batched fits" in err and "/5 " in err


def test_profiles_show_a_bar(bars_now, capsys):
    fit = jaxlmm.lmer("Yield ~ 1 + (1 | Batch)", datasets.load("dyestuff"))
    fit.profile()
    assert "likelihood profiles" in capsys.readouterr().err


def test_out_of_core_passes_show_bars(bars_now, capsys, tmp_path):
    pytest.importorskip("pyarrow")
    datasets.load("sleepstudy").to_parquet(tmp_path / "s.parquet")
    jaxlmm.lmer("Reaction ~ Days + (Days | Subject)", str(tmp_path / "s.parquet"))
    err = capsys.readouterr().err
    assert "pass 1/2" in err and "pass 2/2" in err and "/180" in err


def test_off_when_asked_or_not_interactive(monkeypatch, capsys):
    monkeypatch.setattr(progress, "DELAY", 0.0)
    jaxlmm.set_progress(False)
    try:
        jaxlmm.lmer("Yield ~ 1 + (1 | Batch)", datasets.load("dyestuff")).profile()
    finally:
        jaxlmm.set_progress(None)
    assert "profiles" not in capsys.readouterr().err
    assert progress.progress_enabled() is False  # pytest's stderr is not a terminal
    monkeypatch.setenv("JAXLMM_PROGRESS", "1")
    assert progress.progress_enabled() is True
    with pytest.raises(ArgumentError, match="set_progress"):
        jaxlmm.set_progress("yes")


def test_logger(caplog):
    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("jaxlmm").handlers)
    with caplog.at_level(logging.INFO, logger="jaxlmm"):
        jaxlmm.lmer("Yield ~ 1 + (1 | Batch)", datasets.load("dyestuff"))
    assert any("fitted Yield ~ 1 + (1 | Batch) by REML" in r.getMessage() for r in caplog.records)


def test_diagnostics_hold_the_warning_details():
    with pytest.warns(jaxlmm.FitWarning) as rec:
        fit = jaxlmm.lmer("Yield ~ 1 + (1 | Batch)", datasets.load("dyestuff2"))
    assert len(rec) == 1 and "fit.diagnostics" in str(rec[0].message)
    d = fit.diagnostics
    assert d["singular"] is True and d["converged"] is True
    assert any("singular" in w for w in d["warnings"])
    assert np.isfinite(d["grad_norm"]) and d["n_evals"] >= 1
