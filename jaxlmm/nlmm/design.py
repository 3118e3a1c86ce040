"""The design of a nonlinear mixed model (nlme's ``nlme(model, fixed, random, start)``): which
rows, which parameters, each parameter's fixed-effects matrix and random-effects terms, the
columns the mean function reads, all validated before any computation.

Parameter ``k`` of row ``r`` is ``phi_rk = A_k[r] beta_k + sum_i sum_c [param(i, c) = k]
Z_i[r, c] b_i[level_i(r), c]``: ``A_k (n, p_k)`` is the model matrix of the parameter's own
fixed-effects formula (one column of ones by default) and random-effects term ``i`` (lme4's bar
over parameter names, ``(Asym + xmid | Tree)``) puts column ``c`` of its level's ``b`` on parameter
``param(i, c)``. The terms' grouping factors (crossed, nested ``a/b``, interactions ``a:b``) are
read by the LMM's own design code (:func:`jaxlmm.terms.design.build_design`) on a copy of the
data with one column of ones per parameter, so that they follow exactly lmer's rules.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..errors import ArgumentError, DataError, FormulaError
from ..rside.residual import structure_columns
from ..terms.rlang import closest
from ..terms.design import Design, build_design
from ..terms.formula import ParsedFormula, RandomTerm, parse_formula
from ..terms.frames import as_frame, column_names
from .expression import MeanExpression, parse_model


@dataclasses.dataclass(frozen=True)
class MeanFunction:
    """The mean ``f(params, data) -> (n,)`` of one row set: a parsed expression or a user's JAX
    callable (``params[name]``, ``data[column]`` arrays of one value per row). Hashable (a static
    argument of the compiled programs): by the expression's text, or by the callable itself."""

    response: str
    parameters: tuple[str, ...]
    columns: tuple[str, ...]
    expression: MeanExpression | None = None
    function: Callable | None = None

    def __call__(self, params: dict, data: dict):
        if self.expression is not None:
            return self.expression.evaluate({**data, **params})
        return self.function(params, data)

    @property
    def text(self) -> str:
        if self.expression is not None:
            return self.expression.text
        name = getattr(self.function, "__name__", type(self.function).__name__)
        return f"{self.response} ~ {name}({', '.join(self.parameters)})"


@dataclasses.dataclass(frozen=True)
class NlmmDesign:
    """Everything a nonlinear mixed-model fit needs from the data (module docstring).

    ``mean``: the :class:`MeanFunction`; ``params``: parameter names in model order;
    ``A[k] (n, p_k)`` and ``a_names[k]`` each parameter's fixed-effects matrix and nlme's
    coefficient names (``Asym``, or ``Asym.(Intercept)``, ``Asym.TypeMississippi``);
    ``a_designs[k]`` the LMM design of a parameter's own formula (its encoding, for new data),
    None for a plain parameter;
    ``lmm``: the design of the random-effects terms (its ``terms`` are the bars, their columns
    the bars' per-row values, its ``y``, ``weights``, ``row_index`` the response, prior weights
    and rows used); ``term_params[i]`` the parameter index of each column of term ``i``;
    ``data`` the mean's columns for the rows used; ``correlation``, ``variance`` the residual
    structures (nlme's ``correlation=`` and ``weights=``; their columns are in ``lmm.aux``)."""

    mean: MeanFunction
    params: tuple[str, ...]
    A: tuple
    a_names: tuple
    a_designs: tuple
    lmm: Design
    term_params: tuple
    data: dict
    fixed_formulas: tuple
    correlation: Any = None
    variance: Any = None

    @property
    def n(self) -> int:
        return self.lmm.n

    @property
    def p(self) -> int:
        return sum(a.shape[1] for a in self.A)

    @property
    def x_names(self) -> tuple[str, ...]:
        return tuple(n for names in self.a_names for n in names)

    @property
    def beta_slices(self) -> tuple:
        out, o = [], 0
        for a in self.A:
            out.append((o, o + a.shape[1]))
            o += a.shape[1]
        return tuple(out)


def mean_function(model: Any, start_names) -> MeanFunction:
    """``model``: ``"response ~ expression"`` or ``(response, callable)``. The parameters are the
    names of ``start`` (in the expression's order of appearance for a string)."""
    if isinstance(model, str):
        expr = parse_model(model)
        return MeanFunction(response=expr.response, parameters=(), columns=(), expression=expr)
    if isinstance(model, tuple) and len(model) == 2 and isinstance(model[0], str) and callable(model[1]):
        return MeanFunction(response=model[0], parameters=tuple(start_names), columns=(), function=model[1])
    raise ArgumentError("model must be a string 'response ~ expression' or a pair (response column, callable "
                        f"f(params, data)), got {type(model).__name__}")


def _bar_parameters(term: RandomTerm, params: tuple[str, ...], expression: str) -> list[str]:
    parts = [p.strip() for p in term.expr.split("+")]
    out = []
    for p in parts:
        if p in ("0", "1", "-1"):
            raise FormulaError(f"random term {term}: name parameters of the model left of the bar (as nlmer's "
                               f"'(Asym | Tree)'), not {p!r}")
        if p not in params:
            raise FormulaError(f"random term {term}: {p!r} is not a parameter of the model {expression!r} "
                               f"(parameters: {', '.join(params)})")
        if p in out:
            raise FormulaError(f"random term {term} names {p!r} twice")
        out.append(p)
    return out


def parse_random(random: Any, params: tuple[str, ...], expression: str) -> tuple[RandomTerm, ...]:
    """The bars of ``random`` (``"(Asym | Tree)"``, ``"(lKa + lCl || Subject) + (Asym | Block/Plot)"``)
    with their left sides checked to be parameter names and rewritten for the LMM design as
    ``0 + Asym + ...`` (the parameters' columns of ones)."""
    if not isinstance(random, str) or not random.strip():
        raise ArgumentError(f"random must be a string of lme4 bars over parameter names such as '(Asym | Tree)', "
                            f"got {random!r}")
    pf = parse_formula(f".y ~ 1 + {random}")
    if pf.fixed.strip() not in ("1", "") or pf.offsets or not pf.random:
        raise FormulaError(f"random={random!r} must hold only bars such as '(Asym | Tree)' joined by '+'")
    out = []
    for t in pf.random:
        names = _bar_parameters(t, params, expression)
        out.append(dataclasses.replace(t, expr="0 + " + " + ".join(names)))
    return tuple(out)


def _fixed_formulas(fixed: Any, params: tuple[str, ...], expression: str) -> dict[str, str]:
    if fixed is None:
        return {}
    if not isinstance(fixed, dict):
        raise ArgumentError("fixed must be None or a dict {parameter: 'right-hand side'} such as "
                            "{'Asym': 'Type * Treatment'}")
    out = {}
    for k, v in fixed.items():
        if k not in params:
            raise ArgumentError(f"fixed names {k!r}, which is not a parameter of the model {expression!r} "
                                f"(parameters: {', '.join(params)})")
        if not isinstance(v, str) or not v.strip() or "|" in v or "~" in v:
            raise ArgumentError(f"fixed[{k!r}] must be the right-hand side of a fixed-effects formula such as "
                                f"'Type * Treatment', got {v!r}")
        if v.strip() != "1":
            out[k] = v.strip()
    return out


def _numeric_column(df: pd.DataFrame, col: str, what: str) -> np.ndarray:
    s = df[col]
    if not (pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)):
        raise DataError(f"column {col!r} ({what}) must be numeric, got dtype {s.dtype}")
    v = np.asarray(s, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        r = int(np.nonzero(~np.isfinite(v))[0][0])
        raise DataError(f"column {col!r} ({what}) has a non-finite value at row {df.index[r]!r}")
    return v


def build_nlmm_design(mean: MeanFunction, data: Any, params: tuple[str, ...], random: Any, fixed: Any,
                      weights=None, *, responses: np.ndarray | None = None, correlation=None, variance=None,
                      caller: str = "nlmer") -> NlmmDesign:
    """Validate and build the design (module docstring); every error is raised here, before any
    computation. ``responses (len(data), B)`` (``nlmer_many``): rows with a missing value in any
    of them are dropped too; they come back in ``lmm.responses`` and ``lmm.y`` is the first."""
    columns = column_names(data)
    if mean.expression is not None:
        used_params, used_cols = mean.expression.check_names(params, columns)
        missing = [p for p in params if p not in used_params]
        if missing:
            raise ArgumentError(f"start names {missing[0]!r}, which the model {mean.expression.expression!r} "
                                f"does not use (its names: {', '.join(mean.expression.names)})")
        params = used_params
    else:
        clash = [p for p in params if p in columns]
        if clash:
            raise FormulaError(f"{clash[0]!r} is both a parameter and a column of the data (start names it); rename one of them")
        used_cols = tuple(c for c in columns if c != mean.response)
    mean = dataclasses.replace(mean, parameters=tuple(params), columns=tuple(used_cols))
    expr_text = mean.expression.expression if mean.expression is not None else mean.text
    if mean.response not in columns:
        raise DataError(f"the response {mean.response!r} is not a column of the data")
    for c, who in structure_columns(correlation, variance).items():  # before the parameters join the columns
        if c not in columns:
            raise DataError(f"unknown column {c!r} ({who}); {closest(c, columns)}")
    bars = parse_random(random, params, expr_text)
    fixed_rhs = _fixed_formulas(fixed, params, expr_text)
    frame = as_frame(data)
    df = frame.copy()
    for p in params:
        df[p] = 1.0
    extra = {c: "the model's mean function" for c in used_cols if c != mean.response}
    fixed_part = " + ".join(["1"] + [f"({v})" for v in fixed_rhs.values()])
    pf = ParsedFormula(formula=f"{mean.response} ~ {fixed_part} + " + " + ".join(str(b) for b in bars),
                       response=mean.response, fixed=fixed_part, random=bars)
    columns_used = {**structure_columns(correlation, variance), **extra}
    lmm = build_design(pf, df, weights=weights, extra_columns=columns_used or None, responses=responses, caller=caller)
    aux = lmm.aux if lmm.aux is not None else pd.DataFrame(index=lmm.row_index)
    mdata = {c: _numeric_column(aux, c, "used by the model") for c in extra}
    term_params = []
    for t in lmm.terms:
        term_params.append(tuple(params.index(c) for c in t.column_names))
    sub = df.loc[lmm.row_index]
    A, names, designs = [], [], []
    for p in params:
        if p in fixed_rhs:
            d = build_design(f"{mean.response} ~ {fixed_rhs[p]}", sub, require_random=False, caller=caller)
            A.append(d.X)
            names.append(tuple(f"{p}.{x}" for x in d.x_names))
            designs.append(d)
        else:
            A.append(np.ones((lmm.n, 1)))
            names.append((p,))
            designs.append(None)
    return NlmmDesign(mean=mean, params=tuple(params), A=tuple(A), a_names=tuple(names), a_designs=tuple(designs),
                      lmm=lmm, term_params=tuple(term_params), data=mdata,
                      fixed_formulas=tuple((p, fixed_rhs.get(p, "1")) for p in params), correlation=correlation,
                      variance=variance)
