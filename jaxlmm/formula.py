"""lme4 formula syntax: split ``y ~ fixed + (expr | g) + ...`` into its parts.

The random-effects bars are parsed here; the fixed part and the expression inside each bar
are left as strings for formulaic. ``(e || g)`` is an uncorrelated term; ``g`` may be
``a:b`` (interaction over observed combinations) or ``a/b`` (nesting: ``(e|a) + (e|b:a)``).
"""

from __future__ import annotations

import dataclasses
import re

from .errors import FormulaError

_NAME = re.compile(r"^[A-Za-z_.][A-Za-z0-9_.]*$|^`[^`]+`$")


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
    """A parsed mixed-model formula: response, fixed-effects RHS (formulaic syntax), terms."""

    formula: str
    response: str
    fixed: str
    random: tuple[RandomTerm, ...]


def _check_parentheses(s: str, formula: str) -> None:
    depth = 0
    for ch in s:
        depth += ch == "("
        depth -= ch == ")"
        if depth < 0:
            raise FormulaError(f"unbalanced parentheses in formula {formula!r}: unexpected ')'")
    if depth:
        raise FormulaError(f"unbalanced parentheses in formula {formula!r}: missing ')'")


def _split_top(s: str) -> list[tuple[str, str]]:
    """Split on '+' / '-' at parenthesis depth 0: [(sign, chunk), ...]."""
    out, depth, cur, sign = [], 0, [], "+"
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if depth == 0 and ch in "+-":
            out.append((sign, "".join(cur).strip()))
            cur, sign = [], ch
            continue
        cur.append(ch)
    out.append((sign, "".join(cur).strip()))
    return out


def _find_bar(inner: str) -> tuple[int, int] | None:
    depth = 0
    for k, ch in enumerate(inner):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            return (k, 2) if inner[k + 1 : k + 2] == "|" else (k, 1)
    return None


def _strip_outer(chunk: str) -> str | None:
    """Return the inside of ``( ... )`` if the parentheses wrap the whole chunk."""
    if not (chunk.startswith("(") and chunk.endswith(")")):
        return None
    depth = 0
    for k, ch in enumerate(chunk):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and k < len(chunk) - 1:
            return None
    return chunk[1:-1]


def _grouping_terms(group: str, formula: str) -> list[tuple[str, ...]]:
    group = group.strip()
    if not group:
        raise FormulaError(f"empty grouping factor after '|' in formula {formula!r}")
    while (inner := _strip_outer(group)) is not None:
        group = inner.strip()
    if "/" in group:
        parts = [p.strip() for p in group.split("/")]
        out = []
        for k in range(len(parts)):
            factors = []
            for p in reversed(parts[: k + 1]):
                factors.extend(_factor_names(p, formula))
            out.append(tuple(factors))
        return out
    return [tuple(_factor_names(group, formula))]


def _factor_names(s: str, formula: str) -> list[str]:
    names = [x.strip() for x in s.split(":")]
    for n in names:
        if not n or not _NAME.match(n):
            raise FormulaError(
                f"grouping factor {s!r} in formula {formula!r} must be a column name or an "
                "interaction of column names (a:b, a/b)"
            )
    return [n.strip("`") for n in names]


def parse_formula(formula: str) -> ParsedFormula:
    """Parse an lme4-style formula ``response ~ fixed + (expr | group) + ...``."""
    if not isinstance(formula, str):
        raise FormulaError(f"formula must be a string, got {type(formula).__name__}")
    _check_parentheses(formula, formula)
    if formula.count("~") != 1:
        raise FormulaError(
            f"formula {formula!r} must have exactly one '~' separating response and predictors"
        )
    lhs, rhs = (x.strip() for x in formula.split("~"))
    if not lhs:
        raise FormulaError(f"formula {formula!r} has no response left of '~'")
    if not rhs:
        raise FormulaError(f"formula {formula!r} has no predictors right of '~'")
    fixed, random = [], []
    for sign, chunk in _split_top(rhs):
        if not chunk:
            if sign == "-" or fixed or random:
                raise FormulaError(f"empty term in formula {formula!r}")
            continue
        inner = _strip_outer(chunk)
        bar = _find_bar(inner) if inner is not None else None
        if bar is None:
            if "|" in chunk:
                raise FormulaError(
                    f"misplaced '|' in {chunk!r} in formula {formula!r}: a random-effects term "
                    "must be written (expr | group) and added at the top level with '+', not "
                    "nested in other parentheses or a function"
                )
            fixed.append(f"{sign} {chunk}")
            continue
        if sign == "-":
            raise FormulaError(f"cannot subtract the random-effects term {chunk!r}")
        k, width = bar
        expr, group = inner[:k].strip(), inner[k + width :].strip()
        if not expr:
            raise FormulaError(f"empty bar in {chunk!r}: write (1 | g) for a random intercept")
        for factors in _grouping_terms(group, formula):
            random.append(RandomTerm(expr=expr, factors=factors, uncorrelated=width == 2))
    fixed_str = " ".join(fixed).strip()
    if fixed_str.startswith("+"):
        fixed_str = fixed_str[1:].strip()
    if not fixed_str:
        fixed_str = "1"
    elif fixed_str.startswith("-"):
        fixed_str = "1 " + fixed_str
    return ParsedFormula(formula=formula, response=lhs, fixed=fixed_str, random=tuple(random))
