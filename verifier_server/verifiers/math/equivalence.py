"""Is a parsed answer equivalent to a parsed gold? Strict where math-verify's defaults are loose.

Rules, in the order they apply (each verdict names the rule that decided it):
- Units (units.py): when both sides carry one, the answer is converted to the gold's unit
  (`5000 g` for `5 kg`); units of different kinds, or unknown units with different names,
  are `wrong_unit`. A unit on one side only is the unit the question asked for.
- `i` is the imaginary unit on both sides when either side was read as complex.
- Exact values compare exactly: integers and fractions as rationals (so `2^{100}+1` is not
  `2^{100}` and `1/2^{99}` is not `1/2^{98}`); other exact numbers (radicals, π, e, logs) by
  their difference, evaluated to 50 digits, being 0, confirmed by sympy where it can decide.
- Decimals are approximate, and the tolerance follows what was written:
  - a gold written as a decimal is matched by a decimal answer of the same value (`0.670` for
    `0.67`), and, when it has at least two decimal places and two significant digits, by an
    exact answer that rounds to it (`\\frac{2}{3}` for `0.67`; nothing rounds to `2.5` or
    `0.05`, which could be the rounding of too many things);
  - a decimal inside a larger gold (`1.732` in a list, `x = 0.67`) has its places read from
    its value, with the same rounding rule;
  - an integer gold is matched only by an answer of exactly its value (`42.0`, not `4.2e1`
    for 42.01's sake: `1.0e4` does not pass for 10001);
  - a decimal answer to any other exact gold must be within `rel_tol` (relative) of it and have
    its written digits right (|answer - gold| < one unit in its last written place, also for
    scientific notation; read from its value when it is not a plain number: `3.1413 + 0`), so
    `3.14` does not pass for π at the default rel_tol of 1e-4.
- Percent: `50\\%` is worth 50 and 0.5 against a plain gold (and a `50\\%` gold accepts 50 and
  0.5); when both sides carry a percent sign they compare as written.
- Expressions with variables: the same variables (by name), equal at several fixed rational
  points evaluated to 30 digits (which rejects almost every wrong answer quickly), then
  `simplify(gold - answer) == 0`; if sympy cannot decide but every point agreed, equal when
  both are built from arithmetic and analytic functions (`_ANALYTIC`); with a floor, Min, Max
  or Abs in them, only when sympy shows it for real variables. The same for an exact
  difference that vanishes to 50 digits.
- Equations: an assignment gold `x = 3` (or a named quantity: `|AB| = 1`, `A:B = 2:3`) is
  matched by `3` or the same assignment only (not `y = 3`, and not a restated equation such as
  `2x = 6`); general equations match when one side-difference is a nonzero constant multiple of
  the other. Systems (`x = 2, y = 3`, `(p, q) = (3, 2)`) match by name; unnamed values against
  a named gold follow the order the gold wrote its names in, and a named answer against an
  unnamed gold is read in alphabetical order (so the answer cannot choose the order). A name
  given twice in a system matches nothing; one variable given several values (`x = 1, x = 2`)
  is the set of them (parse.py). An answer relation that is always true or never true
  (`x + 1 = 1 + x`, `x > x`) is `trivial_equation`, never a match.
- Relations that are not the solution set of one variable (`f(2) < f(1) < f(4)`,
  `a_1 < a_2 < a_3`) match link for link, `>` read as a reversed `<`.
- Inequalities and intervals compare as sets of the same variable (`x > 2` matches
  `(2, \\infty)`, not `[2, \\infty)` and not `y > 2`).
- Collections: a set (`\\{1, 2\\}`, `\\pm 2`, `\\frac{3 \\pm \\sqrt 5}{2}`) matches a set or a
  bare list (`1, 2`) in any order;
  a tuple `(1, 2)` matches a tuple or a bare list in order, and an open interval with finite
  ends reads as a pair too; a set never matches a tuple. Duplicates in sets and lists collapse.
  One gold value against several answers (`2 \\text{ or } 3`, `1, 2, 3`) is
  `multiple_answers`, never a match.
- Matrices: same shape, element for element.
- An answer with an integral, sum, product, limit or derivative left in it (`\\int_0^1 x^2 dx`
  for 1/3) is `unevaluated_answer` unless the gold has one too: it restates the question.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction
from itertools import permutations
from typing import Any

import sympy
from sympy.core.function import AppliedUndef
from sympy.core.numbers import ImaginaryUnit
from sympy.core.relational import Relational
from sympy.functions.elementary.hyperbolic import HyperbolicFunction, InverseHyperbolicFunction
from sympy.functions.elementary.trigonometric import (
    InverseTrigonometricFunction,
    TrigonometricFunction,
)

from verifier_server.verifiers.math.parse import BareList, Parsed
from verifier_server.verifiers.math.units import conversion

_DIGITS = 50
_POINT_DIGITS = 30
_N_POINTS = 4
_ROUNDING_MIN_PLACES = 2  # decimal places, and significant digits, of a gold others round to


@dataclass(frozen=True, slots=True)
class Verdict:
    equal: bool
    rule: str
    reason: str = ""  # for a mismatch: "wrong_answer", "multiple_answers", "trivial_equation"


@dataclass(frozen=True, slots=True)
class _Context:
    rel_tol: Fraction
    gold_decimal: bool = False
    gold_decimals: int | None = None
    answer_decimal: bool = False
    answer_decimals: int | None = None


def equivalent(gold: Parsed, answer: Parsed, rel_tol: float) -> Verdict:
    """The verdict on `answer` against `gold`; both already screened and parsed."""
    if _has_operator(answer.value) and not _has_operator(gold.value):
        return _no("unevaluated_answer", "unevaluated")  # the question restated as its answer
    if gold.unit is not None and answer.unit is not None:
        factor = conversion(gold.unit, answer.unit)
        if factor is None:
            return _no("wrong_unit", "unit")
        if factor != 1 and not isinstance(answer.value, sympy.Expr):
            return _no("wrong_unit", "unit")  # a list in another unit: not converted
        if factor != 1:  # the answer in the gold's unit; its written places no longer apply
            scaled = answer.value * sympy.Rational(factor.numerator, factor.denominator)
            answer = replace(answer, value=scaled, decimals=None)
    gold, answer = _same_imaginary_unit(gold, answer)
    base = _Context(Fraction(rel_tol), gold.decimal, gold.decimals, answer.decimal, answer.decimals)
    both_percent = gold.percent and answer.percent
    first: Verdict | None = None
    for g, g_shift in _readings(gold, both_percent):
        for a, a_shift in _readings(answer, both_percent):
            context = replace(
                base,
                gold_decimals=_shift(gold.decimals, g_shift),
                answer_decimals=_shift(answer.decimals, a_shift),
            )
            verdict = _compare(g, a, context)
            if verdict.equal:
                return verdict if not (g_shift or a_shift) else replace(verdict, rule="percent")
            first = first or verdict
    assert first is not None
    return first


# `\int_0^1 x^2 dx`, `\sum_{k=1}^{100} k`, `\lim_{x \to 0} \frac{\sin x}{x}`: sympy evaluates
# them, so an answer that restates the question would pass for its value.
_OPERATORS = (sympy.Integral, sympy.Sum, sympy.Product, sympy.Limit, sympy.Derivative)


def _has_operator(value: Any) -> bool:
    if isinstance(value, sympy.MatrixBase):
        return any(_has_operator(element) for element in value)
    return isinstance(value, sympy.Basic) and value.has(*_OPERATORS)


def is_several(value: Any) -> bool:
    """Whether a parsed gold holds more than one value (a list, set, tuple or system)."""
    items, kind = _elements(value)
    return items is not None and kind != "scalar" and len(items) > 1


def _same_imaginary_unit(gold: Parsed, answer: Parsed) -> tuple[Parsed, Parsed]:
    """`i` is the imaginary unit on both sides when either side was read as complex: `i(2-i)`
    alone does not look complex to the parser, but against `1+2i` it is."""
    g, a = gold.value, answer.value
    if not (isinstance(g, sympy.Basic) and isinstance(a, sympy.Basic)):
        return gold, answer
    if g.has(sympy.I) and _has_symbol_i(a):
        return gold, replace(answer, value=_imaginary(a))
    if a.has(sympy.I) and _has_symbol_i(g):
        return replace(gold, value=_imaginary(g)), answer
    return gold, answer


def _imaginary(value: sympy.Basic) -> Any:
    """`value` with the symbol `i` as the imaginary unit; as it was where sympy refuses that
    (an ordering of complex numbers: `i < 2`)."""
    replaced = _decided(
        lambda: value.xreplace({s: sympy.I for s in value.free_symbols if s.name == "i"})
    )
    return value if replaced is None else replaced


def _has_symbol_i(value: sympy.Basic) -> bool:
    return any(s.name == "i" for s in value.free_symbols)


def is_trivial(value: Any) -> bool:
    """A relation that is always true (`x + 1 = 1 + x`) or never true (`x > x`, `x = x + 1`)."""
    if isinstance(value, sympy.And):
        return any(is_trivial(arg) for arg in _args(value))
    if not isinstance(value, Relational):
        return False
    if not (isinstance(value.lhs, sympy.Expr) and isinstance(value.rhs, sympy.Expr)):
        return False
    difference = _decided(lambda: sympy.simplify(value.lhs - value.rhs))
    if difference is None:
        return False
    if not difference.free_symbols and not difference.atoms(AppliedUndef):
        return True  # the relation compares two numbers (`f(2) < f(1)` compares unknowns)
    if len(difference.free_symbols) == 1 and not isinstance(value, sympy.Eq):
        solutions = _decided(value.as_set)
        return solutions in (sympy.S.EmptySet, sympy.S.Reals)
    return False


def _readings(parsed: Parsed, both_percent: bool) -> list[tuple[Any, int]]:
    """(value, decimal shift): `50%` reads as 50 and as 0.5 (two more decimal places)."""
    readings = [(parsed.value, 0)]
    if parsed.percent and not both_percent and isinstance(parsed.value, sympy.Expr):
        readings.append((parsed.value / 100, 2))
    return readings


def _shift(decimals: int | None, by: int) -> int | None:
    return None if decimals is None else decimals + by


# --------------------------------------------------------------------------- dispatch


def _compare(g: Any, a: Any, ctx: _Context) -> Verdict:
    g, a = _concrete(g), _concrete(a)
    if g is None or a is None:
        return _no()
    if _is_relation(g) or _is_relation(a):
        return _relations(g, a, ctx)
    if isinstance(g, sympy.MatrixBase) or isinstance(a, sympy.MatrixBase):
        return _matrices(g, a, ctx)
    if _is_collection(g) or _is_collection(a):
        return _collections(g, a, ctx)
    return _scalars(g, a, ctx)


def _no(reason: str = "wrong_answer", rule: str = "mismatch") -> Verdict:
    return Verdict(False, rule, reason)


def _concrete(value: Any) -> Any:
    """Matrix expressions (`2 M`, `M^T`) evaluated to a matrix; None if they do not evaluate."""
    if isinstance(value, sympy.MatrixExpr) and not isinstance(value, sympy.MatrixBase):
        done = _decided(value.doit)
        return done if isinstance(done, sympy.MatrixBase) else None
    return value


# --------------------------------------------------------------------------- scalars


def _scalars(g: Any, a: Any, ctx: _Context) -> Verdict:
    if not isinstance(g, sympy.Expr) or not isinstance(a, sympy.Expr):
        return Verdict(True, "structural") if g == a else _no()
    g, a = _decided(lambda: _unify_symbols(g)), _decided(lambda: _unify_symbols(a))
    if g is None or a is None:  # rebuilding failed: not a well-formed expression (M^x, ...)
        return _no()
    if g.free_symbols or a.free_symbols:
        return _expressions(g, a)
    if g.has(sympy.oo, -sympy.oo, sympy.zoo) or a.has(sympy.oo, -sympy.oo, sympy.zoo):
        return Verdict(True, "infinity") if g == a else _no()
    if ctx.gold_decimal or ctx.answer_decimal:
        return _decimals(g, a, ctx)
    return _exact(g, a)


def _exact(g: sympy.Expr, a: sympy.Expr) -> Verdict:
    if isinstance(g, sympy.Rational) and isinstance(a, sympy.Rational):
        return Verdict(True, "exact_rational") if g == a else _no()
    difference = _numeric(g - a, _DIGITS)
    if difference is None:  # not a finite number (unevaluated functions, undefined values)
        return Verdict(True, "exact_symbolic") if _decide_zero(g - a) is True else _no()
    scale = max(abs(_numeric(g, _DIGITS) or 0), 1)
    if abs(difference) > scale * sympy.Float(10) ** (10 - _DIGITS):
        return _no()
    decided = _decide_zero(g - a)
    if decided is False or (decided is None and not (_analytic(g) and _analytic(a))):
        return _no()
    return Verdict(True, "exact_symbolic" if decided else "numeric_50_digits")


def _decimals(g: sympy.Expr, a: sympy.Expr, ctx: _Context) -> Verdict:
    gv, av = _complex_value(g), _complex_value(a)
    if gv is None or av is None:
        return _no()
    if gv == av:
        return Verdict(True, "decimal_equal")
    if ctx.gold_decimal:  # the gold was rounded when written: only an exact value may round to it
        places = ctx.gold_decimals if ctx.gold_decimals is not None else _written_places(g)
        if ctx.answer_decimal or places is None or places < _ROUNDING_MIN_PLACES:
            return _no()
        if _significant_digits(gv[0], places) < _ROUNDING_MIN_PLACES or gv[1]:
            return _no()  # 0.05 could be the rounding of too many things
        close = abs(av[0] - gv[0]) < Fraction(1, 2 * 10**places) and not av[1]
        return Verdict(True, "rounds_to_gold") if close else _no()
    if isinstance(g, sympy.Integer):
        return _no()  # an integer is matched exactly or not at all
    ok = all(abs(x - y) <= ctx.rel_tol * abs(y) for x, y in zip(av, gv, strict=True))
    # The digits written must be right; an answer that is not a plain number (`3.1413 + 0`,
    # a list element) has its places read from its value, so `+ 0` cannot skip this check.
    places = ctx.answer_decimals if ctx.answer_decimals is not None else _written_places(a)
    if ok and places is not None:
        unit = Fraction(10) ** -places
        ok = all(abs(x - y) < unit for x, y in zip(av, gv, strict=True))
    return Verdict(True, "relative_tolerance") if ok else _no()


def _written_places(value: sympy.Expr) -> int | None:
    """Decimal places of a decimal inside a larger gold (`1.732` in a list: 3), read from its
    exact value (1732/1000 = 433/250); None unless it is a finite decimal fraction."""
    if not isinstance(value, sympy.Rational) or value.q == 1:
        return None
    q, twos, fives = int(value.q), 0, 0
    while q % 2 == 0:
        q, twos = q // 2, twos + 1
    while q % 5 == 0:
        q, fives = q // 5, fives + 1
    return max(twos, fives) if q == 1 else None


def _significant_digits(value: Fraction, places: int) -> int:
    """Significant digits of `value` written with `places` decimal places (0.05, 2 -> 1)."""
    if value == 0:
        return 0
    return places + math.floor(math.log10(abs(value))) + 1


def _expressions(g: sympy.Expr, a: sympy.Expr) -> Verdict:
    if _names(g) != _names(a):
        return _no()
    if isinstance(g, sympy.Symbol) and isinstance(a, sympy.Symbol):
        return Verdict(True, "same_symbol")  # same name (checked above)
    agreed = 0
    symbols = sorted(g.free_symbols | a.free_symbols, key=lambda s: s.name)
    for point in range(_N_POINTS):
        values = {s: _point(point, j) for j, s in enumerate(symbols)}
        gv = _numeric(g.xreplace(values), _POINT_DIGITS)
        av = _numeric(a.xreplace(values), _POINT_DIGITS)
        if gv is None or av is None:
            continue
        if abs(gv - av) > max(abs(gv), 1) * sympy.Float(10) ** (5 - _POINT_DIGITS):
            return _no()
        agreed += 1
    decided = _decide_zero(g - a)
    if decided is True:
        return Verdict(True, "symbolic")
    if decided is None and agreed == _N_POINTS:
        if _analytic(g) and _analytic(a):
            return Verdict(True, "numeric_identity")
        if _decide_zero(_real_symbols(g - a)) is True:  # `|x|^2` is `x^2` for real x
            return Verdict(True, "symbolic_real")
    return _no()


# Arithmetic and the functions analytic where they are defined. Two such expressions that
# agree at several points, or to 40 digits, are equal (sympy cannot always show it); with a
# floor, Min, Abs or Piecewise in them, agreement is easy to build (`\min(x, 3)` against x at
# points below 3, `\lceil 10^{45}\pi \rceil / 10^{45}` against pi), so those need a proof.
_ANALYTIC = (
    sympy.Add, sympy.Mul, sympy.Pow, sympy.Symbol, sympy.Number, sympy.NumberSymbol,
    ImaginaryUnit, sympy.exp, sympy.log, TrigonometricFunction, InverseTrigonometricFunction,
    HyperbolicFunction, InverseHyperbolicFunction, sympy.gamma, sympy.factorial, sympy.binomial,
)  # fmt: skip


def _analytic(expr: sympy.Expr) -> bool:
    """Whether `expr` is built from `_ANALYTIC` parts only (a numeric agreement means equal)."""
    return all(isinstance(node, _ANALYTIC) for node in sympy.preorder_traversal(expr))


def _real_symbols(expr: sympy.Expr) -> sympy.Expr:
    """`expr` with its symbols real, as at the sample points."""
    return expr.xreplace({s: sympy.Symbol(s.name, real=True) for s in expr.free_symbols})


def _point(point: int, symbol: int) -> sympy.Rational:
    """Fixed, irregular, nonzero rational points in (-2.4, 2.4) (screen.py bounds them by 3)."""
    sign = -1 if (point + symbol) % 2 else 1
    return sympy.Rational(sign * (1 + (7 * point + 3 * symbol) % 26), 11)


# --------------------------------------------------------------------------- relations


def _relations(g: Any, a: Any, ctx: _Context) -> Verdict:
    if _is_relation(a) and is_trivial(a):
        return _no("trivial_equation", "tautology")
    g_assign, a_assign = _assignment(g), _assignment(a)
    if g_assign is not None and a_assign is not None and g_assign[0] == a_assign[0]:
        return _compare(g_assign[1], a_assign[1], ctx)
    if g_assign is not None and not _is_relation(a):
        return _compare(g_assign[1], a, ctx)
    if a_assign is not None and not _is_relation(g):
        return _compare(g, a_assign[1], ctx)
    if _is_value_assignment(g_assign) or _is_value_assignment(a_assign):
        return _no()  # `x = 3` is matched by 3 or `x = 3`, not by `y = 3` or `2x = 6`
    if _is_relation(g) and _is_relation(a) and _names(g) != _names(a):
        return _no()
    if isinstance(g, sympy.Eq) and isinstance(a, sympy.Eq):
        return _equations(g, a)
    if (
        _is_relation(g)
        and _is_relation(a)
        and (len(g.free_symbols) != 1 or len(a.free_symbols) != 1)
    ):
        return _links(g, a, ctx)  # not a solution set of one variable: compare the links
    g_set, a_set = _as_set(g), _as_set(a)
    if g_set is None or a_set is None:
        return _no()
    return _collections(g_set, a_set, ctx)


def _links(g: Any, a: Any, ctx: _Context) -> Verdict:
    """Relations that are not a solution set of one variable (`f(2) < f(1) < f(4)`,
    `a_1 < a_2 < a_3`): the same links, each
    read left to right with `>` turned round (`f(4) > f(1) > f(2)` is the same chain)."""
    g_links, a_links = _oriented(g), _oriented(a)
    if len(g_links) != len(a_links):
        return _no()
    element_ctx = _element_context(ctx)

    def same(x: tuple[type, Any, Any], y: tuple[type, Any, Any]) -> bool:
        return (
            x[0] is y[0]
            and _compare(x[1], y[1], element_ctx).equal
            and _compare(x[2], y[2], element_ctx).equal
        )

    unmatched = list(a_links)
    for link in g_links:
        match = next((other for other in unmatched if same(link, other)), None)
        if match is None:
            return _no()
        unmatched.remove(match)
    return Verdict(True, "relation_chain")


def _oriented(value: Any) -> list[tuple[type, Any, Any]]:
    links = _args(value) if isinstance(value, sympy.And) else [value]
    flipped = {sympy.StrictGreaterThan: sympy.StrictLessThan, sympy.GreaterThan: sympy.LessThan}
    return [
        (flipped[type(r)], r.rhs, r.lhs) if type(r) in flipped else (type(r), r.lhs, r.rhs)
        for r in links
    ]


def _assignment(value: Any) -> tuple[str, Any] | None:
    """`x = 3`, `f(x) = x^2`, or a named quantity given a value (`|AB| = 1`, `A:B = 2:3`,
    `\\frac{NO}{BO} = \\frac{1}{\\sqrt 6}`) -> (left side's name, right side); else None."""
    if not isinstance(value, sympy.Eq):
        return None
    lhs = value.lhs
    if isinstance(lhs, sympy.Symbol):
        return lhs.name, value.rhs
    if isinstance(lhs, AppliedUndef):
        return f"{lhs.func.__name__}({','.join(str(a) for a in lhs.args)})", value.rhs
    if _named_quantity(lhs) and isinstance(value.rhs, sympy.Expr) and not value.rhs.free_symbols:
        return sympy.srepr(_unify_symbols(lhs)), value.rhs
    return None


def _named_quantity(expr: Any) -> bool:
    """Letters only: products, ratios and absolute values of symbols (`AB`, `A/B`, `|AB|`),
    never a number, so `2x = 6` is an equation, not "2x" named 6."""
    if isinstance(expr, sympy.Symbol | AppliedUndef):
        return True
    if isinstance(expr, sympy.Abs | sympy.Mul):
        return all(_named_quantity(arg) for arg in expr.args)
    if isinstance(expr, sympy.Pow):
        return expr.exp in (1, -1) and _named_quantity(expr.base)
    return False


def _is_value_assignment(assignment: tuple[str, Any] | None) -> bool:
    return assignment is not None and not assignment[1].free_symbols


def _equations(g: sympy.Eq, a: sympy.Eq) -> Verdict:
    dg, da = _unify_symbols(g.lhs - g.rhs), _unify_symbols(a.lhs - a.rhs)
    ratio = _decided(lambda: sympy.simplify(dg / da))
    if ratio is None or ratio.free_symbols or ratio == 0 or not ratio.is_finite:
        return _no()
    return Verdict(True, "equation_multiple")


def _as_set(value: Any) -> Any:
    """Inequalities of one variable as sets; sets as themselves; else None."""
    if isinstance(value, sympy.Set | sympy.Tuple):
        return value
    if _is_relation(value) and len(value.free_symbols) == 1:
        solutions = _decided(value.as_set)
        return solutions if isinstance(solutions, sympy.Set) else None
    return None


# --------------------------------------------------------------------------- collections


def _collections(g: Any, a: Any, ctx: _Context) -> Verdict:
    g_items, g_kind = _elements(g)
    a_items, a_kind = _elements(a)
    if g_items is not None and a_items is not None:
        if _is_system(g_items) or _is_system(a_items):
            return _systems(g_items, g_kind, a_items, a_kind, ctx)
        if g_kind == "scalar" and len(a_items) > 1:
            return _no("multiple_answers", "multiple_answers")
        if {g_kind, a_kind} == {"set", "tuple"} or {g_kind, a_kind} == {"set", "pair"}:
            return _no()  # a set is not a tuple
        if len(g_items) != len(a_items):
            return _no()
        if "tuple" in (g_kind, a_kind) or "pair" in (g_kind, a_kind):
            return _ordered(g_items, a_items, ctx, "tuple")
        return _unordered(g_items, a_items, ctx)
    if isinstance(g, sympy.Interval) and isinstance(a, sympy.Interval):
        if (g.left_open, g.right_open) != (a.left_open, a.right_open):
            return _no()
        return _ordered([g.start, g.end], [a.start, a.end], ctx, "interval")
    if isinstance(g, sympy.Union) and isinstance(a, sympy.Union):
        verdict = _unordered(list(g.args), list(a.args), ctx)
        return replace(verdict, rule="union") if verdict.equal else verdict
    if isinstance(g, sympy.Set) and isinstance(a, sympy.Set) and g == a:
        return Verdict(True, "same_set")
    if (_is_relation(a) or _is_relation(g)) and not (_is_relation(g) and _is_relation(a)):
        g_set, a_set = _as_set(g), _as_set(a)
        if g_set is not None and a_set is not None:
            return _collections(g_set, a_set, ctx)
    return _no()


def _elements(value: Any) -> tuple[list[Any] | None, str]:
    """(elements, kind) of a finite collection: kind "set" (unordered), "list" (a bare list:
    either), "tuple" (ordered), "pair" (an open interval with finite ends, or a 2-tuple), or
    "scalar" (one element). (None, "") for other sets and relations."""
    if isinstance(value, BareList):
        return _dedupe(list(value.args)), "list"
    if isinstance(value, sympy.Tuple):
        return list(value.args), "tuple"
    if isinstance(value, sympy.Interval) and value.left_open and value.right_open:
        if value.start.is_finite and value.end.is_finite:
            return [value.start, value.end], "pair"
        return None, ""
    if isinstance(value, sympy.FiniteSet):
        return _dedupe(_args(value)), "set"
    if isinstance(value, sympy.Set) or _is_relation(value):
        return None, ""
    return [value], "scalar"


def _dedupe(items: list[Any]) -> list[Any]:
    unique: list[Any] = []
    for item in items:
        if not any(item == seen for seen in unique):
            unique.append(item)
    return unique


def _is_system(items: list[Any]) -> bool:
    return len(items) > 1 and all(_assignment(item) is not None for item in items)


def _systems(gs: list[Any], g_kind: str, as_: list[Any], a_kind: str, ctx: _Context) -> Verdict:
    """Assignments by name. Unnamed values (a tuple or bare list, not a set) against a named
    gold follow the order the gold wrote its variables in (`(p, q) = (3, 2)` is `(3, 2)`;
    `y = 3, x = 2` is `(3, 2)`); against a named answer, the answer's variables in alphabetical
    order (the order a tuple gold lists them in), so the answer cannot pick the order. A
    variable named twice (`x = 1, y = 2, x = 3`) matches nothing."""
    g_named, a_named = _named(gs), _named(as_)
    if (_is_system(gs) and g_named is None) or (_is_system(as_) and a_named is None):
        return _no()
    if g_named is not None and a_named is not None:
        if set(g_named) != set(a_named):
            return _no()
        names = list(g_named)
        return _ordered([g_named[n] for n in names], [a_named[n] for n in names], ctx, "system")
    named, values, kind = (g_named, as_, a_kind) if g_named is not None else (a_named, gs, g_kind)
    assert named is not None
    if kind == "set" or len(values) != len(named):
        return _no()
    order = list(named) if g_named is not None else sorted(named)
    by_name = [named[name] for name in order]
    golds, answers = (by_name, values) if g_named is not None else (values, by_name)
    return _ordered(golds, answers, ctx, "system")


def _named(items: list[Any]) -> dict[str, Any] | None:
    """{name: value} in written order; None unless every item is an assignment to a distinct
    name."""
    if not _is_system(items):
        return None
    pairs = [_assignment(item) for item in items]
    named = dict(pairs)  # type: ignore[arg-type]
    return named if len(named) == len(pairs) else None


def _ordered(gs: list[Any], as_: list[Any], ctx: _Context, rule: str) -> Verdict:
    for g, a in zip(gs, as_, strict=True):
        verdict = _compare(g, a, _element_context(ctx))
        if not verdict.equal:
            return _no()
    return Verdict(True, rule)


def _unordered(gs: list[Any], as_: list[Any], ctx: _Context) -> Verdict:
    if len(gs) != len(as_):
        return _no()
    element_ctx = _element_context(ctx)
    matches = [[_compare(g, a, element_ctx).equal for a in as_] for g in gs]
    n = len(gs)
    if n <= 7:
        found = any(all(matches[i][p[i]] for i in range(n)) for p in permutations(range(n)))
    else:  # greedy: equivalence is transitive here, so a greedy matching is a perfect one
        free = set(range(n))
        found = True
        for row in matches:
            pick = next((j for j in sorted(free) if row[j]), None)
            if pick is None:
                found = False
                break
            free.discard(pick)
    return Verdict(True, "set") if found else _no()


def _element_context(ctx: _Context) -> _Context:
    """Inside a collection the places written for the whole answer no longer apply (a gold
    element's own places are read from its value: `_written_places`)."""
    return replace(ctx, gold_decimals=None, answer_decimals=None)


def _matrices(g: Any, a: Any, ctx: _Context) -> Verdict:
    if not (isinstance(g, sympy.MatrixBase) and isinstance(a, sympy.MatrixBase)):
        return _no()
    if g.shape != a.shape:
        return _no()
    return _ordered(list(g), list(a), ctx, "matrix")


# --------------------------------------------------------------------------- helpers


def _is_relation(value: Any) -> bool:
    if isinstance(value, Relational):
        return True
    return isinstance(value, sympy.And) and all(isinstance(x, Relational) for x in _args(value))


def _is_collection(value: Any) -> bool:
    return isinstance(value, sympy.Set | sympy.Tuple)


def _args(value: Any) -> list[Any]:
    """Arguments in written order (latex2sympy's sets and And keep it in `_unsorted_args`)."""
    return list(getattr(value, "_unsorted_args", None) or value.args)


def _names(value: Any) -> set[str]:
    return {s.name for s in value.free_symbols}


def _unify_symbols(expr: sympy.Expr) -> sympy.Expr:
    """Symbols by name only: `x` parsed as real and as complex are the same variable."""
    symbols = expr.free_symbols
    return expr.xreplace({s: sympy.Symbol(s.name) for s in symbols}) if symbols else expr


def _numeric(expr: Any, digits: int) -> sympy.Expr | None:
    """expr evaluated to `digits` digits: a finite real or complex number, else None."""
    value = _decided(
        lambda: sympy.N(expr.doit() if isinstance(expr, sympy.Basic) else expr, digits)
    )
    if not isinstance(value, sympy.Expr) or value.free_symbols:
        return None
    if value.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo):
        return None
    if isinstance(value, sympy.Number):
        return value
    parts = _decided(value.as_real_imag)
    if parts is None or not all(isinstance(p, sympy.Number) for p in parts):
        return None
    return value


def _complex_value(expr: sympy.Expr) -> tuple[Fraction, Fraction] | None:
    """(real, imaginary) parts as fractions: exact for rationals, else 50-digit values."""
    if isinstance(expr, sympy.Rational):
        return Fraction(int(expr.p), int(expr.q)), Fraction(0)
    value = _numeric(expr, _DIGITS)
    if value is None:
        return None
    real, imag = value.as_real_imag()
    return Fraction(str(real)) if real else Fraction(0), Fraction(str(imag)) if imag else Fraction(
        0
    )


def _decide_zero(expr: sympy.Expr) -> bool | None:
    """True/False when sympy can decide expr == 0, None when it cannot."""
    evaluated = _decided(expr.doit)  # cheap: `sqrt(2)^2000 - 2^1000` is 0 once evaluated
    if evaluated is not None and evaluated == 0:
        return True
    simplified = _decided(lambda: sympy.simplify(expr))
    if simplified is not None and simplified == 0:
        return True
    return _decided(lambda: expr.equals(0))


def _decided(compute: Any) -> Any:
    """`compute()`, or None when sympy gives up on it. sympy raises a wide range of exceptions
    on odd but legitimate input (mpmath's ZeroDivisionError for `\\cot 0`, PolynomialError,
    NotImplementedError, TypeError on undecidable comparisons); for a comparison they all mean
    "cannot decide", which the callers treat as not shown equal."""
    try:
        return compute()
    except Exception:  # RecursionError included
        return None
