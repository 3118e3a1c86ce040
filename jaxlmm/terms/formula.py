"""lme4 formula syntax: split ``y ~ fixed + (expr | g) + ...`` into its parts.

The random-effects bars are parsed here; the fixed part and the expression inside each bar
are left as strings for formulaic. ``(e || g)`` is an uncorrelated term; ``g`` may be
``a:b`` (interaction over observed combinations) or ``a/b`` (nesting: ``(e|a) + (e|b:a)``).
"""

from __future__ import annotations

import dataclasses

from ..errors import FormulaError
from .rlang import Token, call_arguments, check_parentheses, depths, enclosed, source, split_top, tokenize

@dataclasses.dataclass(frozen=True)
class RandomTerm:
    """One random-effects term ``(expr | factors[0]:factors[1]:...)``.

    ``factors`` are column names combined by interaction; ``name`` is lme4's grouping name.
    """

    expr: str
    factors: tuple[str, ...]
    uncorrelated: bool = False

    @property
    def name(self) -> str:
        return ":".join(self.factors)

    def __str__(self) -> str:
        return f"({self.expr} {'||' if self.uncorrelated else '|'} {self.name})"


@dataclasses.dataclass(frozen=True)
class ParsedFormula:
    """A parsed mixed-model formula: the response, the fixed-effects part and the bars' left
    sides as R text (translated for formulaic by :mod:`jaxlmm.rlang` once the data's columns
    are known), the random-effects terms; ``offsets``: the R text inside each ``offset(...)``
    term of the right-hand side; ``cbind``: the successes and failures of a
    ``cbind(successes, failures)`` response (binomial GLMMs), else None. ``response`` is None
    for a formula without one (``"~ x + (1 | g)"``, :func:`jaxlmm.lmer_many`)."""

    formula: str
    response: str | None
    fixed: str
    random: tuple[RandomTerm, ...]
    offsets: tuple[str, ...] = ()
    cbind: tuple[str, str] | None = None

    @property
    def rhs(self) -> str:
        """The formula's text right of ``~``."""
        tokens = tokenize(self.formula)
        k = next(t.end for t in tokens if t.kind == "op" and t.text == "~")
        return self.formula[k:].strip()


def _chunk_text(formula: str, chunk: list[Token]) -> str:
    return source(formula, chunk)


def _grouping_terms(formula: str, tokens: list[Token]) -> list[tuple[str, ...]]:
    """The factors of each term a bar's right side stands for: ``a`` -> ``[(a,)]``; ``a:b`` ->
    ``[(a, b)]``; ``a/b`` -> ``[(a,), (b, a)]`` (lme4's nesting: ``(e|a) + (e|b:a)``)."""
    text = _chunk_text(formula, tokens).strip()
    if not tokens:
        raise FormulaError(f"empty grouping factor after '|' in formula {formula!r}")
    while (inner := enclosed(tokens)) is not None:
        tokens = inner
        if not tokens:
            raise FormulaError(f"empty grouping factor after '|' in formula {formula!r}")
    parts = [chunk for _, chunk in split_top(tokens, ("/",))]
    out = []
    for k in range(len(parts)):
        factors: list[str] = []
        for p in reversed(parts[: k + 1]):
            factors.extend(_factor_names(formula, p, text))
        out.append(tuple(factors))
    return out


def _factor_names(formula: str, tokens: list[Token], text: str) -> list[str]:
    while (inner := enclosed(tokens)) is not None:
        tokens = inner
    names = []
    for _, chunk in split_top(tokens, (":",)):
        if len(chunk) != 1 or chunk[0].kind != "name":
            raise FormulaError(
                f"grouping factor {text!r} in formula {formula!r} must be a column name or an "
                "interaction of column names (a:b, a/b); quote other names with backticks: `my group`"
            )
        names.append(chunk[0].text)
    return names


def _bar(tokens: list[Token]) -> tuple[int, int] | None:
    """Index and width (1: ``|``, 2: ``||``) of the first depth-0 bar in ``tokens``."""
    for k, (t, d) in enumerate(zip(tokens, depths(tokens))):
        if d == 0 and t.kind == "op" and t.text in ("|", "||"):
            return k, len(t.text)
    return None


def parse_formula(formula: str, response_required: bool = True) -> ParsedFormula:
    """Parse an lme4-style formula ``response ~ fixed + (expr | group) + offset(...) + ...``
    (R syntax: see :mod:`jaxlmm.rlang`). ``response_required=False`` accepts ``"~ rhs"``."""
    if not isinstance(formula, str):
        raise FormulaError(f"formula must be a string, got {type(formula).__name__}")
    tokens = tokenize(formula)
    check_parentheses(tokens, formula)
    tildes = [k for k, t in enumerate(tokens) if t.kind == "op" and t.text == "~"]
    if len(tildes) != 1:
        raise FormulaError(
            f"formula {formula!r} must have exactly one '~' separating response and predictors"
        )
    lhs, rhs = tokens[: tildes[0]], tokens[tildes[0] + 1 :]
    if not lhs and response_required:
        raise FormulaError(f"formula {formula!r} has no response left of '~'")
    if not rhs:
        raise FormulaError(f"formula {formula!r} has no predictors right of '~'")
    fixed: list[str] = []
    random: list[RandomTerm] = []
    offsets: list[str] = []
    for sep, chunk in split_top(rhs, ("+", "-")):
        sign = "-" if sep is not None and sep.text == "-" else "+"
        text = _chunk_text(formula, chunk)
        if not chunk:
            if sign == "-" or fixed or random or offsets:
                raise FormulaError(f"empty term in formula {formula!r}")
            continue
        off = call_arguments(chunk, "offset")
        if off is not None:
            if sign == "-" or len(off) != 1 or not off[0]:
                raise FormulaError(f"{text!r} in formula {formula!r}: write an offset as + offset(expression)")
            offsets.append(_chunk_text(formula, off[0]))
            continue
        inner = enclosed(chunk)
        bar = _bar(inner) if inner is not None else None
        if bar is None:
            if any(t.kind == "op" and t.text in ("|", "||") for t in chunk):
                raise FormulaError(
                    f"misplaced '|' in {text!r} in formula {formula!r}: a random-effects term "
                    "must be written (expr | group) and added at the top level with '+', not "
                    "nested in other parentheses or a function"
                )
            fixed.append(f"{sign} {text}")
            continue
        if sign == "-":
            raise FormulaError(f"cannot subtract the random-effects term {text!r}")
        k, width = bar
        left, right = inner[:k], inner[k + 1 :]
        if not left:
            raise FormulaError(f"empty bar in {text!r}: write (1 | g) for a random intercept")
        expr = _chunk_text(formula, left)
        for factors in _grouping_terms(formula, right):
            random.append(RandomTerm(expr=expr, factors=factors, uncorrelated=width == 2))
    fixed_str = " ".join(fixed).strip()
    if fixed_str.startswith("+"):
        fixed_str = fixed_str[1:].strip()
    if not fixed_str:
        fixed_str = "1"
    elif fixed_str.startswith("-"):
        fixed_str = "1 " + fixed_str
    response = _chunk_text(formula, lhs).strip() or None
    cb = None
    args = call_arguments(lhs, "cbind")
    if args is not None:
        if len(args) != 2 or not all(args):
            raise FormulaError(f"cbind() in {formula!r} needs two arguments: successes and failures")
        cb = (_chunk_text(formula, args[0]), _chunk_text(formula, args[1]))
    return ParsedFormula(formula=formula, response=response, fixed=fixed_str, random=tuple(random),
                         offsets=tuple(offsets), cbind=cb)
