"""The mean function of a nonlinear mixed model, read from a string without ``eval``.

``"circumference ~ Asym / (1 + exp((xmid - age) / scal))"``: a response column, ``~``, and an
expression of parameters, columns and numbers. It is parsed with Python's ``ast`` after R's power
``^`` is read as ``**`` (same precedence and associativity as R: ``-x^2 = -(x^2)``,
``2^3^2 = 2^9``), and only these constructs are accepted:

- numbers; names (parameters or columns, resolved later against ``start`` and the data);
- ``+ - * / **`` and unary ``-``/``+``;
- calls of :data:`FUNCTIONS` by name with positional arguments (their arity checked).

Anything else (attributes, subscripts, comparisons, strings, keywords, lambdas, other
functions) is a :class:`jaxlmm.errors.FormulaError` naming it. The expression becomes a tree of
closures over ``jax.numpy`` (:meth:`MeanExpression.evaluate`), so it traces, differentiates and
vectorises like any JAX function: ``evaluate(values)`` with ``values[name]`` an array per row
(or a scalar) for every free name.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
from typing import Callable

import jax
import jax.numpy as jnp

from ..errors import FormulaError


def _logistic(x):
    return jax.nn.sigmoid(x)


# name -> (function, number of arguments)
FUNCTIONS: dict[str, tuple[Callable, int]] = {
    "exp": (jnp.exp, 1), "log": (jnp.log, 1), "log1p": (jnp.log1p, 1), "expm1": (jnp.expm1, 1),
    "sqrt": (jnp.sqrt, 1), "abs": (jnp.abs, 1), "sin": (jnp.sin, 1), "cos": (jnp.cos, 1),
    "tan": (jnp.tan, 1), "tanh": (jnp.tanh, 1), "arctan": (jnp.arctan, 1), "sinh": (jnp.sinh, 1),
    "cosh": (jnp.cosh, 1), "logistic": (_logistic, 1), "where": (jnp.where, 3),
    "minimum": (jnp.minimum, 2), "maximum": (jnp.maximum, 2),
}

_BINARY = {ast.Add: jnp.add, ast.Sub: jnp.subtract, ast.Mult: jnp.multiply, ast.Div: jnp.divide,
           ast.Pow: jnp.power}
_UNARY = {ast.USub: jnp.negative, ast.UAdd: lambda x: x}
_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "^"}


@dataclasses.dataclass(frozen=True)
class MeanExpression:
    """A parsed model ``response ~ expression``: ``names`` are the expression's free names in
    order of first appearance; ``evaluate(values)`` computes the mean from ``values[name]``."""

    text: str
    response: str
    expression: str
    names: tuple[str, ...]
    evaluate: Callable = dataclasses.field(repr=False, compare=False)

    def __reduce__(self):  # pickled as its text (the closures are rebuilt by parsing it again)
        return parse_model, (self.text,)

    def check_names(self, parameters, columns) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Split the free names into ``(parameters used, columns used)``; a name that is neither
        is a FormulaError naming it (with a close match among both), and a name that is both is
        ambiguous. ``parameters``/``columns``: the names known as such."""
        parameters, columns = list(parameters), [str(c) for c in columns]
        both = [n for n in self.names if n in parameters and n in columns]
        if both:
            raise FormulaError(f"{both[0]!r} in the model {self.expression!r} is both a parameter and a "
                               "column of the data; rename one of them")
        unknown = [n for n in self.names if n not in parameters and n not in columns]
        if unknown:
            n = unknown[0]
            close = difflib.get_close_matches(n, parameters + columns, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            known = ", ".join(parameters) or "none"
            raise FormulaError(f"unknown name {n!r} in the model {self.expression!r}: not a parameter "
                               f"({known}) nor a column of the data{hint} (a parameter needs its starting "
                               "value in start)")
        return (tuple(n for n in self.names if n in parameters),
                tuple(n for n in self.names if n in columns))


def parse_model(text: str) -> MeanExpression:
    """Read ``"response ~ expression"`` (module docstring)."""
    if not isinstance(text, str):
        raise FormulaError(f"the model must be a string 'response ~ expression', got {type(text).__name__}")
    if text.count("~") != 1:
        raise FormulaError(f"the model must be 'response ~ expression' with one '~', got {text!r}")
    lhs, rhs = (part.strip() for part in text.split("~"))
    if not lhs.isidentifier():
        raise FormulaError(f"the response of the model {text!r} must be one column name, got {lhs!r}")
    if not rhs:
        raise FormulaError(f"the model {text!r} has no expression after '~'")
    names: list[str] = []
    try:
        tree = ast.parse(rhs.replace("^", "**"), mode="eval")
        evaluate = _compile(tree.body, rhs, names)
    except SyntaxError as e:
        raise FormulaError(f"cannot read the model expression {rhs!r}: {e.msg}") from None
    except RecursionError:
        raise FormulaError(f"the model expression ({len(rhs)} characters) is nested too deeply to "
                           "read; write it as a JAX callable instead") from None
    return MeanExpression(text=text, response=lhs, expression=rhs, names=tuple(names), evaluate=evaluate)


def _compile(node, rhs: str, names: list) -> Callable:
    """A closure ``values -> array`` for an accepted node; FormulaError for any other."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise FormulaError(f"{node.value!r} in the model {rhs!r}: only numbers, names, + - * / ^ "
                               "and the functions " + ", ".join(FUNCTIONS) + " are allowed")
        value = float(node.value)
        return lambda values: value
    if isinstance(node, ast.Name):
        name = node.id
        if name in FUNCTIONS:
            raise FormulaError(f"the function {name!r} in the model {rhs!r} is used without arguments")
        if name not in names:
            names.append(name)
        return lambda values: values[name]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        op = _BINARY[type(node.op)]
        a, b = _compile(node.left, rhs, names), _compile(node.right, rhs, names)
        return lambda values: op(a(values), b(values))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        op = _UNARY[type(node.op)]
        a = _compile(node.operand, rhs, names)
        return lambda values: op(a(values))
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            what = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise FormulaError(f"unknown function {what!r} in the model {rhs!r}; the functions allowed are "
                               + ", ".join(FUNCTIONS))
        fn, arity = FUNCTIONS[node.func.id]
        if node.keywords or len(node.args) != arity or any(isinstance(a, ast.Starred) for a in node.args):
            raise FormulaError(f"{node.func.id}() in the model {rhs!r} takes {arity} positional "
                               f"argument{'s' if arity > 1 else ''}: {ast.unparse(node)!r}")
        args = [_compile(a, rhs, names) for a in node.args]
        return lambda values: fn(*(a(values) for a in args))
    if isinstance(node, ast.BinOp):
        raise FormulaError(f"the operator in {ast.unparse(node)!r} (model {rhs!r}) is not allowed; use "
                           + " ".join(_SYMBOL.values()))
    raise FormulaError(f"{ast.unparse(node)!r} in the model {rhs!r} is not allowed: only numbers, names, "
                       "+ - * / ^ and the functions " + ", ".join(FUNCTIONS))
