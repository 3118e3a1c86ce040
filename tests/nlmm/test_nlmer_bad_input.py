"""nlmer refuses bad input with a jaxlmm error naming the culprit, before any computation; a
failing PNLS is a jaxlmm error or the fit's one warning, never a NaN estimate."""

import warnings

import jax.numpy as jnp
import numpy as np
import pytest

import jaxlmm
from conftest import load_data
from jaxlmm.nlmm import pnls

L = "circumference ~ Asym / (1 + exp((xmid - age) / scal))"
S = {"Asym": 170, "xmid": 700, "scal": 350}


@pytest.fixture(scope="module")
def orange():
    return load_data("Orange")


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(model="circumference ~ Asym / (1 + exp((xmd - age) / scal))"), jaxlmm.FormulaError, "'xmd'.*did you mean 'xmid'"),
    (dict(model="circumference ~ Asym / (1 + foo((xmid - age) / scal))"), jaxlmm.FormulaError, "unknown function 'foo'"),
    (dict(model="circumference ~ np.exp(Asym) + xmid + scal"), jaxlmm.FormulaError, "'np.exp'"),
    (dict(model="circ ~ Asym / (1 + exp((xmid - age) / scal))"), jaxlmm.DataError, "response 'circ'"),
    (dict(model=3), jaxlmm.ArgumentError, "model must be"),
    (dict(random="(lrc | Tree)"), jaxlmm.FormulaError, "'lrc' is not a parameter"),
    (dict(random="(age | Tree)"), jaxlmm.FormulaError, "'age' is not a parameter"),
    (dict(random="(1 | Tree)"), jaxlmm.FormulaError, "name parameters"),
    (dict(random="(Asym | Tre)"), jaxlmm.FormulaError, "'Tre'.*did you mean 'Tree'"),
    (dict(random="age + (Asym | Tree)"), jaxlmm.FormulaError, "only bars"),
    (dict(random=None), jaxlmm.ArgumentError, "random must be"),
    (dict(fixed={"lrc": "age"}), jaxlmm.ArgumentError, "fixed names 'lrc'"),
    (dict(fixed={"Asym": "Typo"}), jaxlmm.FormulaError, "'Typo'"),
    (dict(fixed="Asym ~ 1"), jaxlmm.ArgumentError, "fixed must be"),
    (dict(start={"Asym": 170, "xmid": 700}), jaxlmm.FormulaError, "'scal'.*starting value in start"),
    (dict(start={**S, "foo": 1}), jaxlmm.ArgumentError, "start names 'foo'"),
    (dict(start={**S, "scal": np.nan}), jaxlmm.ArgumentError, r"start\['scal'\] must be finite"),
    (dict(start={**S, "scal": "a"}), jaxlmm.ArgumentError, r"start\['scal'\] must be a number"),
    (dict(start={**S, "scal": [1, 2]}), jaxlmm.ArgumentError, r"start\['scal'\] has 2 values"),
    (dict(start=None), jaxlmm.ArgumentError, "start must be a dict"),
    (dict(start={**S, "scal": 0}), jaxlmm.DataError, "not finite at row 0 at the start values.*scal=0"),
    (dict(model="circumference ~ Asym * log(age - xmid)", start={"Asym": 1, "xmid": 500}), jaxlmm.DataError,
     "mean is nan at row 0.*xmid=500; age=118"),
    (dict(random="(Asym + xmid | Tree)", method="agq", nagq=5), jaxlmm.ArgumentError, "one random effect per group"),
    (dict(random="(Asym + xmid | Tree)", nagq=3), jaxlmm.ArgumentError, "one random effect per group"),
    (dict(method="agq", nagq=0), jaxlmm.ArgumentError, "nagq must be"),
    (dict(method="agq", nagq=100), jaxlmm.ArgumentError, "nagq must be"),
    (dict(method="foce"), jaxlmm.ArgumentError, "method must be"),
    (dict(reml=True), jaxlmm.ArgumentError, "reml=True is for method='lb'"),
    (dict(method="lb", reml="yes"), jaxlmm.ArgumentError, "reml must be"),
    (dict(correlation=jaxlmm.AR1("Tree", "age")), jaxlmm.ArgumentError, "is fitted by method=.lb."),
    (dict(method="lb", correlation=jaxlmm.AR1("age", "Tree")), jaxlmm.ArgumentError, "nested"),
    (dict(max_iter=0), jaxlmm.ArgumentError, "max_iter"),
    (dict(weights=-np.ones(35)), jaxlmm.ArgumentError, "weights"),
])
def test_refused(orange, kwargs, error, match):
    args = dict(model=L, data=orange, start=S, random="(Asym | Tree)")
    args.update(kwargs)
    with pytest.raises(error, match=match):
        jaxlmm.nlmer(args.pop("model"), args.pop("data"), args.pop("start"), args.pop("random"), **args)


def test_lb_refuses_crossed_terms(orange):
    d = orange.assign(g2=np.arange(35) % 7)
    with pytest.raises(jaxlmm.ArgumentError, match="nested grouping only.*crossed.*method='laplace'"):
        jaxlmm.nlmer(L, d, S, "(Asym | Tree) + (xmid | g2)", method="lb")


def test_bad_columns(orange):
    with pytest.raises(jaxlmm.DataError, match="column 'age'.*numeric"):
        jaxlmm.nlmer(L, orange.assign(age=orange.age.astype(str)), S, "(Asym | Tree)")
    with pytest.raises(jaxlmm.DataError, match="column 'age'.*non-finite"):
        jaxlmm.nlmer(L, orange.assign(age=orange.age.where(orange.index != 3, np.inf)), S, "(Asym | Tree)")
    with pytest.raises(jaxlmm.FormulaError, match="'age'.*both a parameter and a column"):
        jaxlmm.nlmer("circumference ~ age / (1 + exp((xmid - age) / scal))", orange,
                     {"age": 1, "xmid": 700, "scal": 300}, "(xmid | Tree)")
    with pytest.raises(jaxlmm.DataError, match="no rows"):
        jaxlmm.nlmer(L, orange.head(0), S, "(Asym | Tree)")


def test_callables(orange):
    def logis(p, d):
        return p["Asym"] / (1 + jnp.exp((p["xmid"] - d["age"]) / p["scal"]))

    fit = jaxlmm.nlmer(("circumference", logis), orange, S, "(Asym | Tree)")
    ref = jaxlmm.nlmer(L, orange, S, "(Asym | Tree)")
    assert fit.objective == pytest.approx(ref.objective, rel=1e-12)
    assert np.allclose(fit.fixef, ref.fixef, rtol=1e-8)
    with pytest.raises(jaxlmm.ArgumentError, match="failed at the start values: KeyError"):
        jaxlmm.nlmer(("circumference", lambda p, d: p["Asym"] * d["nope"]), orange, {"Asym": 1}, "(Asym | Tree)")
    with pytest.raises(jaxlmm.ArgumentError, match="not row-wise"):
        jaxlmm.nlmer(("circumference", lambda p, d: jnp.sum(p["Asym"]) + 0 * d["age"]), orange, {"Asym": 1},
                     "(Asym | Tree)")
    with pytest.raises(jaxlmm.ArgumentError, match="not row-wise"):
        jaxlmm.nlmer(("circumference", lambda p, d: jnp.cumsum(p["Asym"]) * d["age"]), orange, {"Asym": 1},
                     "(Asym | Tree)")
    with pytest.raises(jaxlmm.FormulaError, match="both a parameter and a column"):
        jaxlmm.nlmer(("circumference", logis), orange, {**S, "age": 1}, "(Asym | Tree)")


def test_pnls_failure_is_an_error_not_nan(orange, monkeypatch):
    """PNLS that never converges (one iteration allowed) makes the objective infinite at the
    start: a FitError, never NaN estimates. (A new row count, so that the program is traced
    again with the patched limit.)"""
    monkeypatch.setattr(pnls, "PNLS_MAX_ITER", 1)
    with pytest.raises(jaxlmm.FitError, match="not finite at the starting values"):
        jaxlmm.nlmer(L, orange.head(33), S, "(Asym | Tree)")


def test_non_convergence_is_one_warning(orange):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = jaxlmm.nlmer(L, orange, {"Asym": 1e6, "xmid": -1e5, "scal": 1}, "(Asym | Tree)", max_iter=3)
    ours = [w for w in caught if issubclass(w.category, jaxlmm.FitWarning)]
    assert len(ours) == 1 and "did not converge" in str(ours[0].message)
    assert not fit.converged and fit.diagnostics["warnings"]
    assert np.all(np.isfinite(fit.fixef))
