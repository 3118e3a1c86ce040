"""R expression syntax inside formulas: a lexer, and the translation of R expressions into the
Python that formulaic evaluates.

lme4 formulas are R expressions, and jaxlmm reads them as R does:

- a name is an R name (letters, digits, ``.`` and ``_``; ``days.x``, ``Sujét``) or any text
  between backticks (`` `1` ``, `` `site:id` ``); it means the data column of that name, even
  where a function of the same name exists (a column ``C``, ``I``, ``poly`` or ``log`` is the
  column; ``C(x)`` is still the function). Such columns reach formulaic under an alias;
- ``^`` inside a function call is a power (``I(Days^2)``: Python's ``**``); outside calls it is
  R's crossing operator (``(a + b)^2``), which formulaic reads the same way. In a response
  (``log(y)^2 ~ ...``) it is always a power;
- ``TRUE``/``FALSE``/``T``/``F`` are Python's booleans, ``!`` is ``~`` and ``&&``/``||`` are
  ``&``/``|`` inside calls, ``%%`` is ``%``, ``%/%`` is ``//``, ``1L`` is ``1``;
- R's functions of one column: ``log(x, base)``, ``sqrt``, ``abs``, ``exp``, ``log1p``,
  ``expm1``, ``factor``/``as.factor`` (formulaic's ``C``), ``as.numeric``, besides formulaic's
  own transforms (``poly`` with R's orthogonal polynomials, ``scale``, ``center``, ``bs``,
  ``cr``, ``C``, ``I``, ...).

:class:`Translator` turns the R text of each part of one formula into formulaic code with one
alias table; :class:`Encoding` keeps that table to build the frame formulaic evaluates (the
used columns, integer and boolean columns as float64 so that no transform wraps around) and to
spell formulaic's column names the R way again.
"""

from __future__ import annotations

import dataclasses
import difflib
import keyword
import re
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ..errors import DataError, FormulaError


# --- the lexer -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Token:
    """One lexical token: ``kind`` is ``"name"`` (``text`` the name; ``quoted`` for backticks),
    ``"num"``, ``"str"``, ``"op"``, ``"("``, ``")"`` or ``","``; ``start``/``end`` its span in
    the source text."""

    kind: str
    text: str
    start: int
    end: int
    quoted: bool = False


_NUMBER = re.compile(r"(0[xX][0-9a-fA-F]+|(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)[Li]?")
_OPS = ("%in%", "%/%", "%%", "%o%", "||", "&&", "==", "!=", "<=", ">=", "**", "<-", "->",
        "+", "-", "*", "/", "^", ":", "~", "|", "&", "!", "<", ">", "=", "$", "@", "[", "]", "{", "}")


def _name_char(ch: str) -> bool:
    return ch.isalnum() or ch in "._"


def tokenize(text: str, formula: str | None = None) -> list[Token]:
    """The tokens of R expression ``text`` (``formula``: the whole formula, for messages)."""
    where = repr(formula if formula is not None else text)
    out: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch == "`":
            j = text.find("`", i + 1)
            if j < 0:
                raise FormulaError(f"unterminated backtick-quoted name in formula {where}")
            if j == i + 1:
                raise FormulaError(f"empty backtick-quoted name `` in formula {where}")
            out.append(Token("name", text[i + 1 : j], i, j + 1, quoted=True))
            i = j + 1
            continue
        if ch in "'\"":
            j = i + 1
            while j < n and text[j] != ch:
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                raise FormulaError(f"unterminated string in formula {where}")
            out.append(Token("str", text[i : j + 1], i, j + 1))
            i = j + 1
            continue
        if ch.isdigit() or (ch == "." and i + 1 < n and text[i + 1].isdigit()):
            m = _NUMBER.match(text, i)
            out.append(Token("num", m.group(0), i, m.end()))
            i = m.end()
            continue
        if ch.isalpha() or ch in "._":
            j = i + 1
            while j < n and _name_char(text[j]):
                j += 1
            out.append(Token("name", text[i:j], i, j))
            i = j
            continue
        if ch in "(),":
            out.append(Token(ch, ch, i, i + 1))
            i += 1
            continue
        for op in _OPS:
            if text.startswith(op, i):
                out.append(Token("op", op, i, i + len(op)))
                i += len(op)
                break
        else:
            raise FormulaError(f"unexpected character {ch!r} in formula {where}")
    return out


def check_parentheses(tokens: list[Token], formula: str) -> None:
    depth = 0
    for t in tokens:
        depth += t.kind == "("
        depth -= t.kind == ")"
        if depth < 0:
            raise FormulaError(f"unbalanced parentheses in formula {formula!r}: unexpected ')'")
    if depth:
        raise FormulaError(f"unbalanced parentheses in formula {formula!r}: missing ')'")


def depths(tokens: list[Token]) -> list[int]:
    """Parenthesis depth of each token (a parenthesis counts as outside what it encloses)."""
    out, d = [], 0
    for t in tokens:
        if t.kind == ")":
            d -= 1
        out.append(d)
        if t.kind == "(":
            d += 1
    return out


def split_top(tokens: list[Token], seps: Iterable[str]) -> list[tuple[Token | None, list[Token]]]:
    """Split ``tokens`` at depth-0 operators in ``seps``: ``[(separator or None, chunk), ...]``."""
    seps = set(seps)
    out: list[tuple[Token | None, list[Token]]] = []
    cur: list[Token] = []
    sep = None
    for t, d in zip(tokens, depths(tokens)):
        if d == 0 and (t.kind == "op" and t.text in seps or t.kind in seps):
            out.append((sep, cur))
            cur, sep = [], t
            continue
        cur.append(t)
    out.append((sep, cur))
    return out


def enclosed(tokens: list[Token]) -> list[Token] | None:
    """The tokens inside ``( ... )`` when the parentheses wrap all of ``tokens``."""
    if len(tokens) < 2 or tokens[0].kind != "(" or tokens[-1].kind != ")":
        return None
    ds = depths(tokens)
    if any(d == 0 for d in ds[1:-1]):
        return None
    return tokens[1:-1]


def call_arguments(tokens: list[Token], name: str) -> list[list[Token]] | None:
    """The arguments of ``name( ... )`` when ``tokens`` are exactly that call."""
    if len(tokens) < 3 or tokens[0].kind != "name" or tokens[0].quoted or tokens[0].text != name:
        return None
    inner = enclosed(tokens[1:])
    if inner is None:
        return None
    return [chunk for _, chunk in split_top(inner, (",",))] if inner else []


def source(text: str, tokens: list[Token]) -> str:
    """The source text spanned by ``tokens``."""
    return text[tokens[0].start : tokens[-1].end] if tokens else ""


# --- names ---------------------------------------------------------------------------------------

_R_RESERVED = {"if", "else", "repeat", "while", "function", "for", "next", "break", "TRUE", "FALSE", "NULL",
               "Inf", "NaN", "NA", "in"}


def r_syntactic(name: str) -> bool:
    """Whether R accepts ``name`` without backticks."""
    if not name or name in _R_RESERVED:
        return False
    if not (name[0].isalpha() or name[0] == "."):
        return False
    if name[0] == "." and len(name) > 1 and name[1].isdigit():
        return False
    return all(_name_char(c) for c in name)


def r_name(column: str) -> str:
    """A column's name as R prints it in a coefficient name: backticks where R needs them."""
    return column if r_syntactic(column) else f"`{column}`"


# --- R functions formulaic lacks (also given when encoding new data) ------------------------------


def _r_log(x, base=np.e):
    """R's ``log(x, base)``."""
    x = np.asarray(x, dtype=np.float64)
    return np.log(x) if base == np.e else np.log(x) / np.log(base)


def _as_numeric(x):
    return np.asarray(x, dtype=np.float64)


def _context() -> dict[str, Any]:
    from formulaic.transforms import TRANSFORMS

    factor = TRANSFORMS["C"]
    return {"log": _r_log, "sqrt": np.sqrt, "abs": np.abs, "exp": np.exp, "log1p": np.log1p, "expm1": np.expm1,
            "sin": np.sin, "cos": np.cos, "tan": np.tan, "factor": factor, "as_factor": factor,
            "as_numeric": _as_numeric, "pi": np.pi, "Inf": np.inf}


_CONTEXT: dict[str, Any] | None = None


def context() -> dict[str, Any]:
    """The functions (and constants) formulas may use beyond formulaic's own transforms."""
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = _context()
    return _CONTEXT


# R functions with a dot in their name, and the Python names they are given
_DOTTED = {"as.factor": "as_factor", "as.numeric": "as_numeric"}
_UNDOTTED = {v: k for k, v in _DOTTED.items()}
_CONSTANTS = {"TRUE": "True", "FALSE": "False", "T": "True", "F": "False", "NULL": "None"}


def _transform_names() -> set[str]:
    from formulaic.transforms import TRANSFORMS

    return set(TRANSFORMS) | set(context())


# --- translation ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Code:
    """One part of a formula as formulaic code: ``text``; the data columns it uses, in order."""

    text: str
    variables: tuple[str, ...]


def closest(name: str, columns: Iterable[str]) -> str:
    """A hint for an unknown column: the closest names, and a few of the columns there are."""
    cols = sorted(map(str, columns))
    close = difflib.get_close_matches(name, cols, n=3, cutoff=0.6)
    if not close:
        close = [c for c in cols if c.lower() == name.lower()]
    shown = str(cols) if len(cols) <= 12 else "[" + ", ".join(repr(c) for c in cols[:12]) + f", ...] ({len(cols)} in all)"
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"data has columns {shown}{hint}"


class Translator:
    """Translates the parts of one formula against the data's ``columns``, sharing one alias
    table (a column always gets the same alias)."""

    def __init__(self, columns: Iterable[str], formula: str):
        self.columns = [str(c) for c in columns]
        self._colset = set(self.columns)
        self.formula = formula
        self.aliases: dict[str, str] = {}  # column -> alias
        self._reserved = _transform_names()
        self._called: set[str] = set()

    def _alias(self, column: str) -> str:
        if column not in self.aliases:
            k = len(self.aliases)
            alias = f"jxv{k}_"
            while alias in self._colset:
                k += 1000
                alias = f"jxv{k}_"
            self.aliases[column] = alias
        return self.aliases[column]

    def _needs_alias(self, name: str, quoted: bool) -> bool:
        return (quoted or not name.isidentifier() or keyword.iskeyword(name) or "." in name or name.startswith("_")
                or name in self._reserved or name in self._called or name in _CONSTANTS)

    def code(self, text: str, what: str, *, power_everywhere: bool = False) -> Code:
        """The formulaic code of R expression ``text`` (``what`` names it in messages)."""
        tokens = tokenize(text, self.formula)
        for k, t in enumerate(tokens):
            if t.kind == "name" and not t.quoted and k + 1 < len(tokens) and tokens[k + 1].kind == "(":
                self._called.add(t.text)
        pieces: list[str] = []
        variables: list[str] = []
        stack: list[bool] = []  # per open parenthesis: whether it is a function call's
        pos = 0
        for k, t in enumerate(tokens):
            pieces.append(text[pos : t.start])
            pos = t.end
            nxt = tokens[k + 1] if k + 1 < len(tokens) else None
            in_call = any(stack)
            if t.kind == "(":
                prev = tokens[k - 1] if k else None
                stack.append(prev is not None and prev.kind == "name" and not prev.quoted)
                pieces.append("(")
            elif t.kind == ")":
                if stack:
                    stack.pop()
                pieces.append(")")
            elif t.kind == "name":
                pieces.append(self._name(t, nxt, in_call, variables, what))
            elif t.kind == "num":
                pieces.append(t.text.rstrip("Li") if t.text[-1] in "Li" else t.text)
            elif t.kind == "op":
                pieces.append(self._operator(t, in_call or power_everywhere))
            else:
                pieces.append(t.text)
        pieces.append(text[pos:])
        return Code(text="".join(pieces).strip(), variables=tuple(dict.fromkeys(variables)))

    def _name(self, t: Token, nxt: Token | None, in_call: bool, variables: list[str], what: str) -> str:
        name = t.text
        if not t.quoted and nxt is not None and nxt.kind == "(":  # a function
            if name in _DOTTED:
                return _DOTTED[name]
            return name
        if not t.quoted and in_call and nxt is not None and nxt.kind == "op" and nxt.text == "=":
            return name  # a keyword argument
        if name in self._colset:
            variables.append(name)
            return self._alias(name) if self._needs_alias(name, t.quoted) else name
        if not t.quoted:
            if name in _CONSTANTS:
                return _CONSTANTS[name]
            if name in self._reserved or name in ("True", "False", "None"):
                return name
            head = name.split(".", 1)[0]
            if "." in name and head in self._reserved:  # np.pi, contr.treatment, ...
                return name
        raise FormulaError(f"unknown column {name!r} ({what}) in formula {self.formula!r}; "
                           f"{closest(name, self.columns)}")

    @staticmethod
    def _operator(t: Token, inside: bool) -> str:
        op = t.text
        if op == "^" and inside:
            return "**"
        if inside:
            return {"!": "~", "&&": "&", "||": "|", "%%": "%", "%/%": "//"}.get(op, op)
        return op

    def encoding(self) -> "Encoding":
        return Encoding(aliases=tuple(self.aliases.items()))


# --- the frame formulaic evaluates ---------------------------------------------------------------


def _is_temporal(s: pd.Series) -> bool:
    return (pd.api.types.is_datetime64_any_dtype(s) or pd.api.types.is_timedelta64_dtype(s)
            or isinstance(s.dtype, pd.PeriodDtype))


def model_column(s: pd.Series, name: str, *, drop_unused: bool = True) -> pd.Series:
    """A data column as formulaic should see it: integers and booleans as float64 (arithmetic in
    transforms must not wrap around: ``I(Days * 100)`` on int8, ``I(Days - 5)`` on uint64);
    categorical columns without their unused levels (as R's ``drop.unused.levels``; not for
    chunks of a larger table, ``drop_unused=False``); text as it is. Dates and times are
    refused (their unit would be a guess)."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        return s.cat.remove_unused_categories() if drop_unused else s
    if _is_temporal(s):
        raise DataError(
            f"column {name!r} holds dates or times ({s.dtype}); a formula needs numbers: convert it first, "
            f"e.g. (df[{name!r}] - df[{name!r}].min()).dt.days (days) or .dt.total_seconds()"
        )
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_integer_dtype(s):
        return s.astype("float64") if not s.hasnans else s.astype("Float64").astype("float64")
    if pd.api.types.is_float_dtype(s):
        return s.astype("float64") if s.dtype != np.float64 else s
    if s.dtype == object:
        vals = s.dropna()
        kinds = {type(v) for v in vals.tolist()[:10000]}
        if kinds and all(issubclass(k, (bool, int, float, np.number, np.bool_)) for k in kinds):
            return pd.to_numeric(s).astype("float64")
        if any(issubclass(k, (pd.Timestamp, pd.Timedelta)) for k in kinds):
            raise DataError(f"column {name!r} holds dates or times; a formula needs numbers: convert it first")
        if len(kinds) > 1 and any(issubclass(k, str) for k in kinds):
            raise DataError(
                f"column {name!r} mixes values of different types ({', '.join(sorted(k.__name__ for k in kinds))}); "
                "convert it to str or to a pandas Categorical"
            )
    return s


@dataclasses.dataclass(frozen=True)
class Encoding:
    """The alias table of one formula: ``(column, alias)`` pairs."""

    aliases: tuple[tuple[str, str], ...] = ()

    def frame(self, df: pd.DataFrame, columns: Iterable[str], *, drop_unused: bool = True) -> pd.DataFrame:
        """The frame formulaic evaluates: ``columns`` of ``df`` (see :func:`model_column`), each
        under its alias where it has one."""
        amap = dict(self.aliases)
        out = {}
        for c in dict.fromkeys(columns):
            out[amap.get(c, c)] = model_column(df[c], c, drop_unused=drop_unused)
        return pd.DataFrame(out, index=df.index)

    def display(self, name: str) -> str:
        """formulaic's spelling of a column name turned back into R's: aliases replaced by the
        columns (backtick-quoted where R quotes them), ``**`` by ``^``."""
        for column, alias in self.aliases:
            if alias in name:
                name = re.sub(rf"\b{re.escape(alias)}\b", lambda _m, c=column: r_name(c), name)
        name = name.replace(" ** ", "^").replace("**", "^")
        for py, r in _UNDOTTED.items():
            name = name.replace(f"{py}(", f"{r}(")
        return name
