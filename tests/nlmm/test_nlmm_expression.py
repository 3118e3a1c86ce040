"""The nonlinear model's mean expression: parsed without eval, R's operator rules, JAX
derivatives, and a FormulaError naming the culprit for everything else."""

import pickle

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from jaxlmm.errors import FormulaError
from jaxlmm.nlmm import FUNCTIONS, parse_model

ORANGE = "circumference ~ Asym / (1 + exp((xmid - age) / scal))"


def test_logistic_growth_curve_values_and_gradient():
    m = parse_model(ORANGE)
    assert m.response == "circumference" and m.names == ("Asym", "xmid", "age", "scal")
    assert m.check_names(["Asym", "xmid", "scal"], ["Tree", "age", "circumference"]) == \
        (("Asym", "xmid", "scal"), ("age",))
    age = np.array([118.0, 484.0, 664.0, 1004.0, 1231.0, 1372.0, 1582.0])
    p = {"Asym": 192.7, "xmid": 727.9, "scal": 348.1}
    want = p["Asym"] / (1 + np.exp((p["xmid"] - age) / p["scal"]))
    with jax.enable_x64(True):
        got = m.evaluate({**p, "age": jnp.asarray(age)})
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-15)
        # exact derivatives through the closures: d mean / d xmid = -Asym e / (scal (1 + e)^2)
        g = jax.grad(lambda xm: jnp.sum(m.evaluate({**p, "xmid": xm, "age": jnp.asarray(age)})))(p["xmid"])
        e = np.exp((p["xmid"] - age) / p["scal"])
        np.testing.assert_allclose(float(g), np.sum(-p["Asym"] * e / (p["scal"] * (1 + e) ** 2)), rtol=1e-12)
        # per-row parameter arrays vectorise, and vmap works over them
        rows = m.evaluate({"Asym": jnp.full(7, 192.7), "xmid": p["xmid"], "scal": p["scal"], "age": jnp.asarray(age)})
        np.testing.assert_allclose(np.asarray(rows), want, rtol=1e-15)


@pytest.mark.parametrize("expr,want", [
    ("2 * x^2", 2 * 3.0 ** 2),
    ("-x^2", -(3.0 ** 2)),           # R: unary minus binds looser than ^
    ("2^3^2", 2.0 ** 9),             # right-associative
    ("x / 2 * 4", 3.0 / 2 * 4),      # left to right
    ("exp(log(x)) + sqrt(x^2) - abs(-x)", 3.0),
    ("where(x - 2, 1, 0) + minimum(x, 1) + maximum(x, 5) + logistic(0)", 1 + 1 + 5 + 0.5),
    ("expm1(0) + log1p(0) + tanh(0) + arctan(0) + sinh(0) + cosh(0) + sin(0) + cos(0) + tan(0)", 2.0),
    ("x ** 2", 9.0),
    ("+x - 1e-1", 2.9),
])
def test_operators_follow_r(expr, want):
    with jax.enable_x64(True):
        np.testing.assert_allclose(float(parse_model("y ~ " + expr).evaluate({"x": 3.0})), want, rtol=1e-15)


@pytest.mark.parametrize("text,match", [
    ("y ~ os.system('ls')", "unknown function 'os.system'"),
    ("y ~ __import__('os')", "unknown function '__import__'"),
    ("y ~ x[0]", "not allowed"),
    ("y ~ lambda: 1", "not allowed"),
    ("y ~ x if x else 1", "not allowed"),
    ("y ~ x > 1", "not allowed"),
    ("y ~ 'a'", "only numbers"),
    ("y ~ True * x", "only numbers"),
    ("y ~ x % 2", "operator"),
    ("y ~ x // 2", "operator"),
    ("y ~ gamma(x)", "unknown function 'gamma'"),
    ("y ~ exp(x, 2)", r"exp\(\) .* takes 1 positional argument"),
    ("y ~ where(x, 1)", "takes 3 positional arguments"),
    ("y ~ exp(x=1)", "takes 1 positional argument"),
    ("y ~ exp(*x)", "takes 1 positional argument"),
    ("y ~ exp + 1", "without arguments"),
    ("y ~ (x", "cannot read"),
    ("y ~ ", "no expression"),
    ("x + y", "one '~'"),
    ("y ~ a ~ b", "one '~'"),
    ("log(y) ~ x", "one column name"),
    ("y ~ x.real", "not allowed"),
    ("y ~ " + "+".join(["x"] * 5000), "nested too deeply"),
    ("y ~ " + "-" * 5000 + "x", "nested too deeply"),
])
def test_anything_else_is_a_formula_error(text, match):
    with pytest.raises(FormulaError, match=match):
        parse_model(text)


def test_names_are_checked_against_parameters_and_columns():
    m = parse_model(ORANGE)
    with pytest.raises(FormulaError, match="unknown name 'scal'.*did you mean 'scale'"):
        m.check_names(["Asym", "xmid", "scale"], ["age"])
    with pytest.raises(FormulaError, match="'age' .* both a parameter and a column"):
        m.check_names(["Asym", "xmid", "scal", "age"], ["age"])
    with pytest.raises(FormulaError, match="not a parameter"):
        parse_model("y ~ a * b").check_names([], ["a"])
    with pytest.raises(FormulaError, match="must be a string"):
        parse_model(lambda x: x)
    assert {"exp", "log", "where", "logistic"} <= set(FUNCTIONS)


def test_pickles_as_its_text():
    m = pickle.loads(pickle.dumps(parse_model(ORANGE)))
    assert m == parse_model(ORANGE) and m.names == ("Asym", "xmid", "age", "scal")
    assert float(m.evaluate({"Asym": 2.0, "xmid": 1.0, "age": 1.0, "scal": 1.0})) == 1.0
