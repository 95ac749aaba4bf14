"""Is a parsed answer equivalent to a parsed gold? Strict where math-verify's defaults are loose.

Rules, in the order they apply (each verdict names the rule that decided it):
- Exact values compare exactly: integers and fractions as rationals (so `2^{100}+1` is not
  `2^{100}` and `1/2^{99}` is not `1/2^{98}`); other exact numbers (radicals, π, e, logs) by
  their difference, evaluated to 50 digits, being 0, confirmed by sympy where it can decide.
- Decimals are approximate, and the tolerance follows what was written:
  - a gold written as a decimal with d places (`0.67`) is matched by a decimal answer of the same
    value (`0.670`) and by an exact answer that rounds to it at d places (`\\frac{2}{3}`);
  - a decimal answer to an exact gold must be within `rel_tol` (relative) of it, and its written
    digits must be right (|answer - gold| < one unit in its last place), so `1234567.0` does not
    pass for 1234568 and `3.14` does not pass for π at the default rel_tol of 1e-4.
- Percent: `50\\%` is worth 50 and 0.5; either reading of either side may match.
- Expressions with variables: the same variables (by name), equal at several fixed rational
  points evaluated to 30 digits (which rejects almost every wrong answer quickly), then
  `simplify(gold - answer) == 0`; if sympy cannot decide but every point agreed, equal.
- Equations: `x = 3` matches `3` and `x = 3` (not `y = 3`); general equations match when one
  side-difference is a nonzero constant multiple of the other; a tautology (`x + 1 = 1 + x`,
  what a plain-text equation can collapse to) is never a match.
- Inequalities and intervals compare as sets (`x > 2` matches `(2, \\infty)`).
- Sets match element for element in any order, tuples in order; a 2-tuple and an open interval
  are the same text `(a, b)`. One gold value against several answers (`2 \\text{ or } 3`,
  `1, 2, 3`) is `multiple_answers`, never a match.
- Matrices: same shape, element for element.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction
from itertools import permutations
from typing import Any

import sympy
from sympy.core.function import AppliedUndef
from sympy.core.relational import Relational

from verifier_server.verifiers.math.parse import Parsed

_DIGITS = 50
_POINT_DIGITS = 30
_N_POINTS = 4
_MAX_SET_PERMUTATIONS = 5040  # 7! — larger sets are matched greedily


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
    base = _Context(Fraction(rel_tol), gold.decimal, gold.decimals, answer.decimal, answer.decimals)
    first: Verdict | None = None
    for g, g_shift in _readings(gold):
        for a, a_shift in _readings(answer):
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


def is_tautology(value: Any) -> bool:
    """A relation that holds whatever its variables are (`x + 1 = 1 + x`)."""
    if isinstance(value, sympy.And):
        return all(is_tautology(arg) for arg in _args(value))
    if isinstance(value, sympy.Eq):
        return _is_zero(value.lhs - value.rhs)
    return False


def _readings(parsed: Parsed) -> list[tuple[Any, int]]:
    """(value, decimal shift): `50%` reads as 50 and as 0.5 (two more decimal places)."""
    readings = [(parsed.value, 0)]
    if parsed.percent and isinstance(parsed.value, sympy.Expr):
        readings.append((parsed.value / 100, 2))
    return readings


def _shift(decimals: int | None, by: int) -> int | None:
    return None if decimals is None else decimals + by


# --------------------------------------------------------------------------- dispatch


def _compare(g: Any, a: Any, ctx: _Context) -> Verdict:
    if _is_relation(g) or _is_relation(a):
        return _relations(g, a, ctx)
    if isinstance(g, sympy.MatrixBase) or isinstance(a, sympy.MatrixBase):
        return _matrices(g, a, ctx)
    if _is_collection(g) or _is_collection(a):
        return _collections(g, a, ctx)
    return _scalars(g, a, ctx)


def _no(reason: str = "wrong_answer", rule: str = "mismatch") -> Verdict:
    return Verdict(False, rule, reason)


# --------------------------------------------------------------------------- scalars


def _scalars(g: Any, a: Any, ctx: _Context) -> Verdict:
    if not isinstance(g, sympy.Expr) or not isinstance(a, sympy.Expr):
        return Verdict(True, "structural") if g == a else _no()
    g, a = _unify_symbols(g), _unify_symbols(a)
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
    scale = max(abs(_numeric(g, _DIGITS) or 0), 1)
    if difference is None:
        return _symbolic_zero(g - a, "exact_symbolic")
    if abs(difference) > scale * sympy.Float(10) ** (10 - _DIGITS):
        return _no()
    decided = _decide_zero(g - a)
    if decided is False:
        return _no()
    return Verdict(True, "exact_symbolic" if decided else "numeric_50_digits")


def _decimals(g: sympy.Expr, a: sympy.Expr, ctx: _Context) -> Verdict:
    gv, av = _complex_value(g), _complex_value(a)
    if gv is None or av is None:
        return _no()
    if ctx.gold_decimals is not None and ctx.gold_decimal:
        if ctx.answer_decimal:  # both written as decimals: the same number
            return Verdict(True, "decimal_equal") if gv == av else _no()
        half_unit = Fraction(1, 2 * 10**ctx.gold_decimals)
        close = all(abs(x - y) <= half_unit for x, y in zip(av, gv, strict=True))
        return Verdict(True, "rounds_to_gold") if close else _no()
    ok = all(abs(x - y) <= ctx.rel_tol * abs(y) for x, y in zip(av, gv, strict=True))
    if ok and ctx.answer_decimals is not None and not ctx.gold_decimal:
        unit = Fraction(1, 10**ctx.answer_decimals)
        ok = all(abs(x - y) < unit for x, y in zip(av, gv, strict=True))
    return Verdict(True, "relative_tolerance") if ok else _no()


def _expressions(g: sympy.Expr, a: sympy.Expr) -> Verdict:
    if {s.name for s in g.free_symbols} != {s.name for s in a.free_symbols}:
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
        return Verdict(True, "numeric_identity")
    return _no()


def _point(point: int, symbol: int) -> sympy.Rational:
    """Fixed, irregular, nonzero rational points in (-2.5, 2.5)."""
    sign = -1 if (point + symbol) % 2 else 1
    return sympy.Rational(sign * (1 + (7 * point + 3 * symbol) % 26), 11)


# --------------------------------------------------------------------------- relations


def _relations(g: Any, a: Any, ctx: _Context) -> Verdict:
    if _is_relation(a) and is_tautology(a):
        return _no("trivial_equation", "tautology")
    g_assign, a_assign = _assignment(g), _assignment(a)
    if g_assign is not None and a_assign is not None:
        if g_assign[0] != a_assign[0]:
            return _no()
        return _compare(g_assign[1], a_assign[1], ctx)
    if g_assign is not None and not _is_relation(a):
        return _compare(g_assign[1], a, ctx)
    if a_assign is not None and not _is_relation(g):
        return _compare(g, a_assign[1], ctx)
    if isinstance(g, sympy.Eq) and isinstance(a, sympy.Eq):
        return _equations(g, a)
    g_set, a_set = _as_set(g), _as_set(a)
    if g_set is None or a_set is None:
        return _no()
    return _collections(g_set, a_set, ctx)


def _assignment(value: Any) -> tuple[str, Any] | None:
    """`x = 3` or `f(x) = x^2` -> (left side's name, right side); else None."""
    if not isinstance(value, sympy.Eq):
        return None
    lhs = value.lhs
    if isinstance(lhs, sympy.Symbol):
        return lhs.name, value.rhs
    if isinstance(lhs, AppliedUndef):
        return f"{lhs.func.__name__}({','.join(str(a) for a in lhs.args)})", value.rhs
    return None


def _equations(g: sympy.Eq, a: sympy.Eq) -> Verdict:
    dg, da = _unify_symbols(g.lhs - g.rhs), _unify_symbols(a.lhs - a.rhs)
    if {s.name for s in dg.free_symbols} != {s.name for s in da.free_symbols}:
        return _no()
    try:
        ratio = sympy.simplify(dg / da)
    except (TypeError, ValueError, ZeroDivisionError):
        return _no()
    if ratio.free_symbols or ratio == 0 or not ratio.is_finite:
        return _no()
    return Verdict(True, "equation_multiple")


def _as_set(value: Any) -> Any:
    """Inequalities (one variable) and `x \\in S` as sets; sets as themselves; else None."""
    if isinstance(value, sympy.Set | sympy.Tuple):
        return value
    if isinstance(value, sympy.Eq) and isinstance(value.rhs, sympy.Set):
        return value.rhs
    if _is_relation(value) and len(value.free_symbols) == 1:
        try:
            return value.as_set()
        except (NotImplementedError, TypeError, ValueError):
            return None
    return None


# --------------------------------------------------------------------------- collections


def _collections(g: Any, a: Any, ctx: _Context) -> Verdict:
    g_items, g_ordered = _elements(g)
    a_items, _ = _elements(a)
    if g_items is not None and a_items is not None:
        if len(g_items) == 1 and len(a_items) > 1 and not _is_collection(g):
            return _no("multiple_answers", "multiple_answers")
        if len(g_items) != len(a_items):
            return _no()
        if g_ordered:  # a bare `1, 2` answer keeps its written order too
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
    if _is_relation(a) or _is_relation(g):
        g_set, a_set = _as_set(g), _as_set(a)
        if g_set is not None and a_set is not None and not (_is_relation(g) and _is_relation(a)):
            return _collections(g_set, a_set, ctx)
    return _no()


def _elements(value: Any) -> tuple[list[Any] | None, bool]:
    """(elements, ordered?) of a finite collection; a scalar is a one-element collection."""
    if isinstance(value, sympy.Tuple):
        return list(value.args), True
    if isinstance(value, sympy.Interval) and value.left_open and value.right_open:
        return [value.start, value.end], True  # `(a, b)`: an open interval or a pair
    if isinstance(value, sympy.FiniteSet):
        return _args(value), False
    if isinstance(value, sympy.Set) or _is_relation(value):
        return None, False
    return [value], False


def _ordered(gs: list[Any], as_: list[Any], ctx: _Context, rule: str) -> Verdict:
    for g, a in zip(gs, as_, strict=True):
        verdict = _compare(g, a, _element_context(ctx))
        if not verdict.equal:
            return verdict if verdict.reason != "wrong_answer" else _no()
    return Verdict(True, rule)


def _unordered(gs: list[Any], as_: list[Any], ctx: _Context) -> Verdict:
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
    """Inside a collection the decimal places of a single literal no longer apply."""
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


def _unify_symbols(expr: sympy.Expr) -> sympy.Expr:
    """Symbols by name only: `x` parsed as real and as complex are the same variable."""
    symbols = expr.free_symbols
    return expr.xreplace({s: sympy.Symbol(s.name) for s in symbols}) if symbols else expr


def _numeric(expr: Any, digits: int) -> sympy.Expr | None:
    """expr evaluated to `digits` digits (a real or complex number), or None if it is not a
    finite number."""
    try:
        value = sympy.N(expr, digits)
    except (TypeError, ValueError, ZeroDivisionError, ArithmeticError):
        return None
    if not isinstance(value, sympy.Expr) or value.free_symbols or not value.is_number:
        return None
    if value.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo):
        return None
    return value


def _complex_value(expr: sympy.Expr) -> tuple[Fraction, Fraction] | None:
    """(real, imaginary) parts as fractions: exact for rationals, else 50-digit values."""
    if isinstance(expr, sympy.Rational):
        return Fraction(int(expr.p), int(expr.q)), Fraction(0)
    try:
        real, imag = sympy.N(expr, _DIGITS).as_real_imag()
    except (TypeError, ValueError, ArithmeticError):
        return None
    if not (isinstance(real, sympy.Number) and isinstance(imag, sympy.Number)):
        return None
    if not (real.is_finite and imag.is_finite):
        return None
    return Fraction(str(real)) if real else Fraction(0), Fraction(str(imag)) if imag else Fraction(
        0
    )


def _decide_zero(expr: sympy.Expr) -> bool | None:
    """True/False when sympy can decide expr == 0, None when it cannot."""
    try:
        if sympy.simplify(expr) == 0:
            return True
        return expr.equals(0)
    except (TypeError, ValueError, NotImplementedError, AttributeError, RecursionError):
        return None


def _is_zero(expr: Any) -> bool:
    return _decide_zero(expr) is True


def _symbolic_zero(expr: sympy.Expr, rule: str) -> Verdict:
    return Verdict(True, rule) if _decide_zero(expr) is True else _no()
