"""The lme4 formula parser: response, fixed part and random-effects bars."""

import pytest

from jaxlmm.errors import FormulaError
from jaxlmm.terms.formula import ParsedFormula, RandomTerm, parse_formula


def terms(formula):
    return [(t.expr, t.factors, t.uncorrelated) for t in parse_formula(formula).random]


def names(formula):
    return [t.name for t in parse_formula(formula).random]


def test_parts():
    pf = parse_formula("Reaction ~ Days + (Days | Subject)")
    assert isinstance(pf, ParsedFormula)
    assert pf.formula == "Reaction ~ Days + (Days | Subject)"
    assert pf.response == "Reaction"
    assert pf.fixed == "Days"
    assert pf.random == (RandomTerm(expr="Days", factors=("Subject",), uncorrelated=False),)


def test_several_terms_in_order():
    assert terms("y ~ x + (1 | g) + (0 + x | h) + (1 + x | k)") == [
        ("1", ("g",), False),
        ("0 + x", ("h",), False),
        ("1 + x", ("k",), False),
    ]
    assert parse_formula("y ~ x + (1 | g) + z + (1 | h) + w").fixed == "x + z + w"


def test_same_grouping_factor_twice():
    assert names("y ~ (x | g) + (1 | g)") == ["g", "g"]


def test_whitespace_is_irrelevant():
    a, b = parse_formula("y~x+(1|g)"), parse_formula("  y ~  x +  ( 1 |  g )  ")
    assert (a.response, a.fixed, a.random) == (b.response, b.fixed, b.random)


def test_double_bar_is_uncorrelated():
    assert terms("y ~ x + (x || g)") == [("x", ("g",), True)]
    assert terms("y ~ x + (x | g)") == [("x", ("g",), False)]
    t = parse_formula("y ~ (1 + x || g)").random[0]
    assert str(t) == "(1 + x || g)"


def test_double_bar_with_nesting_applies_to_every_term():
    assert terms("y ~ (x || a/b)") == [("x", ("a",), True), ("x", ("b", "a"), True)]


def test_nesting_slash():
    # lme4: (1 | a/b) is (1 | a) + (1 | b:a)
    assert terms("y ~ (1 | a/b)") == [("1", ("a",), False), ("1", ("b", "a"), False)]
    assert names("y ~ (1 | a/b)") == ["a", "b:a"]
    assert names("strength ~ 1 + (1 | batch/cask)") == ["batch", "cask:batch"]


def test_nesting_three_levels():
    assert names("y ~ (1 | a/b/c)") == ["a", "b:a", "c:b:a"]
    assert [t.factors for t in parse_formula("y ~ (1 | a/b/c)").random] == [
        ("a",), ("b", "a"), ("c", "b", "a")
    ]


def test_nesting_with_interaction():
    # ':' binds tighter than '/': a/b:c is a + (b:c):a ; a:b/c is a:b + c:(a:b)
    assert names("y ~ (1 | a/b:c)") == ["a", "b:c:a"]
    assert names("y ~ (1 | a:b/c)") == ["a:b", "c:a:b"]


def test_redundant_parentheses_around_grouping():
    assert names("y ~ (1 | (a/b))") == ["a", "b:a"]
    assert names("y ~ (1 | (g))") == ["g"]


def test_interaction_grouping():
    assert terms("y ~ (1 | a:b)") == [("1", ("a", "b"), False)]
    assert names("y ~ (1 | a:b)") == ["a:b"]
    assert names("y ~ (1 | a : b : c)") == ["a:b:c"]


def test_backticked_grouping_name():
    assert terms("y ~ (1 | `my group`)") == [("1", ("my group",), False)]


def test_no_intercept_inside_bar():
    assert terms("y ~ x + (0 + x | g)") == [("0 + x", ("g",), False)]
    assert terms("y ~ x + (x - 1 | g)") == [("x - 1", ("g",), False)]
    assert terms("y ~ x + (-1 + x | g)") == [("-1 + x", ("g",), False)]


def test_no_intercept_in_fixed_part():
    assert parse_formula("y ~ 0 + x + (1 | g)").fixed == "0 + x"
    assert parse_formula("y ~ x - 1 + (1 | g)").fixed == "x - 1"
    assert parse_formula("y ~ x + (1 | g) + 0").fixed == "x + 0"
    # a leading '-1' keeps its meaning (formulaic needs something to subtract from)
    assert parse_formula("y ~ -1 + x + (1 | g)").fixed == "1 - 1 + x"
    assert parse_formula("y ~ 0 + (1 | g)").fixed == "0"


def test_fixed_part_defaults_to_intercept():
    assert parse_formula("y ~ (1 | g)").fixed == "1"
    assert parse_formula("y ~ (1 | g) + (1 | h)").fixed == "1"
    assert parse_formula("y ~ 1 + (1 | g)").fixed == "1"


def test_fixed_part_keeps_formulaic_syntax():
    pf = parse_formula("np.log(y) ~ x * z + I(x - 1) + C(f) + (1 | g)")
    assert pf.response == "np.log(y)"
    assert pf.fixed == "x * z + I(x - 1) + C(f)"
    assert names("np.log(y) ~ x * z + I(x - 1) + C(f) + (1 | g)") == ["g"]


def test_subtraction_inside_function_is_not_split():
    assert parse_formula("y ~ I(x - 1) + (1 | g)").fixed == "I(x - 1)"


def test_no_random_terms_parses():
    # the parser accepts it; lmer rejects it (see test_bad_input)
    pf = parse_formula("y ~ x")
    assert pf.random == () and pf.fixed == "x"


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "formula, match",
    [
        ("y x + (1 | g)", "'~'"),
        ("y ~ x ~ (1 | g)", "'~'"),
        ("~ x + (1 | g)", "no response"),
        ("y ~ ", "no predictors"),
        ("y ~ x + (1 | g", r"unbalanced parentheses.*missing '\)'"),
        ("y ~ x + 1 | g)", r"unbalanced parentheses.*unexpected '\)'"),
        ("y ~ x + ((1 | g)", "unbalanced parentheses"),
        ("y ~ x + ( | g)", r"empty bar in '\( \| g\)'"),
        ("y ~ x + (|| g)", "empty bar"),
        ("y ~ x + (1 | )", "empty grouping factor"),
        ("y ~ x + (1 | a/)", "grouping factor"),
        ("y ~ x + (1 | g:)", "grouping factor 'g:'"),
        ("y ~ x + (1 | a*b)", "grouping factor 'a\\*b'"),
        ("y ~ x + (1 | g | h)", "grouping factor 'g | h'"),
        ("y ~ x + (1 | log(g))", "grouping factor 'log\\(g\\)'"),
        ("y ~ x + + (1 | g)", "empty term"),
        ("y ~ x + (1 + x | g) - (1 | g)", "cannot subtract the random-effects term"),
    ],
)
def test_errors(formula, match):
    with pytest.raises(FormulaError, match=match):
        parse_formula(formula)


@pytest.mark.parametrize(
    "formula, culprit",
    [
        ("y ~ x + 1 | g", "1 | g"),
        ("y ~ x + ((1 | g))", r"\(\(1 \| g\)\)"),
        ("y ~ x + (x + (1 | g))", r"\(x \+ \(1 \| g\)\)"),
        ("y ~ x + I((1 | g))", r"I\(\(1 \| g\)\)"),
        ("y ~ x * (1 | g)", r"x \* \(1 \| g\)"),
    ],
)
def test_bar_not_at_top_level_is_an_error(formula, culprit):
    with pytest.raises(FormulaError, match=f"misplaced '\\|' in '{culprit}'"):
        parse_formula(formula)


def test_formula_must_be_a_string():
    with pytest.raises(FormulaError, match="formula must be a string"):
        parse_formula(None)


def test_errors_are_value_errors():
    with pytest.raises(ValueError):
        parse_formula("y ~ (1 | g")
