"""Self-starting models: their starting rules land near the truth on generated data (so that
the fit needs no start), and a self-started fit equals the one from explicit start values."""

import warnings

import numpy as np
import pandas as pd
import pytest

import jaxlmm
from conftest import load_data

nl = jaxlmm.nonlinear


def curve(kind, rng, n_groups=8, n_per=12):
    g = np.repeat(np.arange(n_groups), n_per)
    x = np.tile(np.linspace(0.5, 12, n_per), n_groups)
    u = rng.normal(0, 1, n_groups)[g]
    if kind == "logistic":
        truth = {"Asym": 20.0, "xmid": 5.0, "scal": 1.5}
        mu = (truth["Asym"] + 2 * u) / (1 + np.exp((truth["xmid"] - x) / truth["scal"]))
    elif kind == "asymptotic":
        truth = {"Asym": 10.0, "R0": 2.0, "lrc": -1.5}
        mu = truth["Asym"] + u + (truth["R0"] - truth["Asym"] - u) * np.exp(-np.exp(truth["lrc"]) * x)
    elif kind == "asymptotic_offset":
        truth = {"Asym": 10.0, "lrc": -1.5, "c0": 0.3}
        mu = (truth["Asym"] + u) * (1 - np.exp(-np.exp(truth["lrc"]) * (x - truth["c0"])))
    elif kind == "biexponential":
        truth = {"A1": 8.0, "lrc1": 0.0, "A2": 3.0, "lrc2": -2.0}
        mu = (truth["A1"] + u) * np.exp(-np.exp(truth["lrc1"]) * x) + truth["A2"] * np.exp(-np.exp(truth["lrc2"]) * x)
    else:
        truth = {"Vm": 200.0, "K": 2.0}
        mu = (truth["Vm"] + 10 * u) * x / (truth["K"] + x)
    y = mu + rng.normal(0, 0.02 * np.std(mu), len(x))
    return pd.DataFrame({"y": y, "x": x, "g": [f"g{v}" for v in g]}), truth, list(truth)[0]


@pytest.mark.parametrize("kind", ["logistic", "asymptotic", "asymptotic_offset", "biexponential", "michaelis_menten"])
def test_self_start_recovers_the_truth(kind):
    df, truth, first = curve(kind, np.random.default_rng(7))
    model = getattr(nl, kind)("y", "x")
    assert set(model.params) == set(truth)
    s = model.start(df.y.to_numpy(), {"x": df.x.to_numpy()})
    assert set(s) == set(truth) and all(np.isfinite(v) for v in s.values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jaxlmm.FitWarning)
        fit = jaxlmm.nlmer(model, df, random=f"({first} | g)")
    for k, v in truth.items():
        assert fit.fixef[k] == pytest.approx(v, rel=0.1, abs=0.15)


def test_self_started_fits_equal_explicit_ones():
    org, th = load_data("Orange"), load_data("Theoph")
    a = jaxlmm.nlmer(nl.logistic("circumference", "age"), org, random="(Asym | Tree)")
    b = jaxlmm.nlmer("circumference ~ Asym / (1 + exp((xmid - age) / scal))", org,
                     {"Asym": 170, "xmid": 700, "scal": 350}, "(Asym | Tree)")
    assert a.objective == pytest.approx(b.objective, rel=1e-10) and np.allclose(a.fixef, b.fixef, rtol=1e-6)
    model = nl.first_order_absorption("conc", "Dose", "Time")
    c = jaxlmm.nlmer(model, th, random="(lKa + lCl || Subject)", method="lb")
    d = jaxlmm.nlmer(model.text, th, {"lKe": -2.5, "lKa": 0.5, "lCl": -3.0}, "(lKa + lCl || Subject)", method="lb")
    assert c.objective == pytest.approx(d.objective, rel=1e-9) and np.allclose(c.fixef, d.fixef, rtol=1e-5)
    # explicit start values still win over the rule
    e = jaxlmm.nlmer(model, th, {"lKe": -2.5, "lKa": 0.5, "lCl": -3.0}, "(lKa + lCl || Subject)", method="lb")
    assert e.objective == pytest.approx(d.objective, rel=1e-12)


def test_self_start_bad_input():
    with pytest.raises(jaxlmm.ArgumentError, match="x must be a column name"):
        nl.logistic("y", 3)
    org = load_data("Orange")
    with pytest.raises(jaxlmm.FormulaError, match="unknown name 'agee'.*did you mean 'age'"):
        jaxlmm.nlmer(nl.logistic("circumference", "agee"), org, random="(Asym | Tree)")
    with pytest.raises(jaxlmm.ArgumentError, match="random must be"):
        jaxlmm.nlmer(nl.logistic("circumference", "age"), org)
    with pytest.raises(jaxlmm.ArgumentError, match="start must be a dict"):
        jaxlmm.nlmer("circumference ~ Asym * age", org, random="(Asym | Tree)")
