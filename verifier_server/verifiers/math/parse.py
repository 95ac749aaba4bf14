"""From answer text to a value the comparator can trust.

Plain numbers (integers, decimals, thousands separators, scientific notation, simple fractions,
with an optional sign, percent sign or degree mark) are read exactly without a parser; this is
most answers, and it avoids both the LaTeX parser's cost and its quirks (`1.5e3` read as
`1.5·e·3`). Everything else goes through math-verify's LaTeX normalisation and parser
(latex2sympy2_extended), after the text pre-screens and before the tree pre-screen.

Before either, a unit written after the answer is split off and kept (units.py), and `\\pm`
makes the answer the set of its two values (`\\frac{3 \\pm \\sqrt 5}{2}`). Mixed numbers
(`1 1/2`) are one and a half; `10,\\!000` is ten thousand (`0,500` is a list, not 500); `E'`
is a label of its own, not `E`, and `f'(x)` names `f_{prime}`, not `f`; an upright
`\\mathrm{e}` is Euler's number.

The parser must account for the whole text: a syntax error is `Unparseable`, never a prefix
(math-verify's extraction read `4\\sqrt(2)` as `4`). A value that is undefined (a division by
zero: `12:00` reads as 12/0) is `Unparseable` too, since any two undefined values would compare
equal. An equation chain (`x = 5 + 5 + 1 = 11`) is its last value when every link without a
variable holds, and no answer when one does not. `\\sqrt(2)` is rewritten as `\\sqrt{2}`,
`i` becomes the imaginary unit when the text looks complex, and parses that collapse to a bare
truth value (`x + 1 = x + 1` → True) are unparseable rather than an answer.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, NamedTuple

import sympy
from latex2sympy2_extended.latex2sympy2 import NormalizationConfig, latex2sympy, normalize_latex
from math_verify.grader import should_treat_as_complex
from sympy.core.relational import Relational

from verifier_server.verifiers.math.extract import matching_brace
from verifier_server.verifiers.math.screen import screen_tree
from verifier_server.verifiers.math.units import NotAUnit, Unit, split_unit

# latex2sympy2 logs failed parses with the whole input; answers are untrusted and unbounded.
logging.getLogger("latex2sympy2_extended").setLevel(logging.CRITICAL)

_NORMALIZATION = NormalizationConfig(
    basic_latex=True, units=False, malformed_operators=True, nits=True, boxed="all", equations=False
)  # units=False: units.py splits them off and keeps them (the normaliser dropped them unseen)
_SPACING = re.compile(r"\\\\|\\[,;:! ]|\\q?quad\b|~")  # `\\` (a row break) is kept
_PERCENT = re.compile(r"\s*(\\%|%|\\text\{\s*\\?%\s*\})\s*$")
_DEGREES = re.compile(r"\s*(\^\s*\{?\s*\\circ\s*\}?|°|\\degree)\s*$")
_SQRT_PARENS = re.compile(r"\\sqrt\s*\(([^()]*)\)")
_WRAPPER = re.compile(
    r"\\(?:text|textbf|textrm|textit|textnormal|mathrm|mathbf|mathit|mathsf|mbox|boldsymbol|bm"
    r"|underline|displaystyle|textstyle)\s*\{"
)
_WORD = re.compile(r"[A-Za-z]{3,}")
# A leading zero group is not a thousands group: `0,500` is the list (0, 500), not 500.
_THOUSANDS = re.compile(r"[+-]?[1-9]\d{0,2}(?:(?:,\d{3})+|(?: \d{3})+)(\.\d+)?")
_MIXED = re.compile(r"(?P<sign>[+-]?)(?P<whole>\d+)\s+(?P<n>\d+)\s*/\s*(?P<d>\d+)")
_ROMAN_E = re.compile(r"\\(?:mathrm|text|textrm|rm|operatorname)\s*\{\s*([ei])\s*\}")
_JOIN = re.compile(r"\\!\s*")  # a negative thin space joins: `11,\! 111` is 11,111
_PRIMED = re.compile(r"[A-Za-z]'+(?:\s*[A-Za-z]'*)*")
# A letter and its primes; not E, which the parser reads as a function with a subscript.
_PRIME_MARK = re.compile(r"(?<![A-Za-z\\])([A-DF-Za-z])('+)")
_ELLIPSIS = re.compile(r"\\(?:[lcvd]?dots[cbmio]?|hdots)(?![A-Za-z])|\.\.\.|\u2026|\u22ef")
_PLUS_MINUS = re.compile(r"\\(?:pm|mp)(?![A-Za-z])")
_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)")
_SCIENTIFIC = re.compile(
    r"(?P<m>[+-]?(\d+\.?\d*|\.\d+))\s*(?:[eE](?P<e1>[+-]?\d+)"
    r"|(?:\\times|\\cdot|\*|\u00d7)\s*10\s*\^\s*(?:\{\s*(?P<e2>[+-]?\d+)\s*\}|(?P<e3>\d)))"
)
_FRACTION = re.compile(
    r"(?P<sign>[+-]?)\s*(?:\\[dt]?frac\s*\{\s*(?P<n1>\d+)\s*\}\s*\{\s*(?P<d1>\d+)\s*\}"
    r"|\\[dt]?frac(?P<n2>\d)(?P<d2>\d)|(?P<n3>\d+)\s*/\s*(?P<d3>\d+))"
)
_NUMBER_RUN = re.compile(r"(?<![\d^_])(?<!\^\{)(?<!_\{)\d+")  # not a script (cm^2, x_{1})


class BareList(sympy.Tuple):
    """`1, 2, 3` written without brackets: matched as a set against a set, in order against a
    tuple. (A braced `\\{1, 2, 3\\}` is a set, a parenthesised `(1, 2, 3)` a tuple.)"""


class Unparseable(Exception):
    """The text is not a mathematical answer the parser can read in full."""


@dataclass(frozen=True, slots=True)
class Parsed:
    """A parsed answer: `value` is a sympy object with no float in it (decimals are exact
    Rationals); `decimal` says a decimal was written (so the value is approximate), and
    `decimals` is its last written decimal place when the answer is a plain number (2 for
    0.25, -3 for 1.2e4): one unit there is 10**-decimals. `unit` is the unit written after it."""

    value: Any
    decimal: bool = False
    decimals: int | None = None
    percent: bool = False
    degrees: bool = False
    unit: Unit | None = None


@dataclass(frozen=True, slots=True)
class ParseLimits:
    max_digits: int
    max_nodes: int
    max_symbolic_power: int


def parse_answer(text: str, limits: ParseLimits) -> Parsed:
    """Parses an (already screened) answer. Raises Unparseable or screen.Rejected."""
    text = _clean(text)
    if _ELLIPSIS.search(text):  # the normaliser drops `\ldots`: `1, 2, \ldots` would be {1, 2}
        raise Unparseable("an ellipsis: the answer is not written out")
    percent = bool(_PERCENT.search(text))
    text = _PERCENT.sub("", text) if percent else text
    degrees = bool(_DEGREES.search(text))
    text = _DEGREES.sub("", text).strip() if degrees else text
    try:
        text, unit = split_unit(text)
    except NotAUnit as exc:
        raise Unparseable(str(exc)) from None
    if not text:
        raise Unparseable("empty answer")
    parsed = _plus_minus(text, limits) if _PLUS_MINUS.search(text) else _parse_one(text, limits)
    return replace(parsed, percent=percent, degrees=degrees, unit=unit)


def _parse_one(text: str, limits: ParseLimits) -> Parsed:
    number = _plain_number(text)
    if number is not None:
        return Parsed(number.value, number.decimal, number.places)
    if _PRIMED.fullmatch(text):  # `E'`, `A'B'`: labels, compared as written
        return Parsed(sympy.Symbol(re.sub(r"\s+", "", text)))
    if "'" in text:  # `f'(x)`, `y''`: a name of its own (`f_{prime}`), never dropped
        text = _PRIME_MARK.sub(lambda m: f"{m[1]}_{{{'prime' * len(m[2])}}}", text)
        if "'" in text:
            raise Unparseable("a prime mark the parser would drop")
    if _WORD.fullmatch(text):  # a word (`yes`, `Evelyn`) is text, not a product of letters
        return Parsed(sympy.Symbol(text.lower()))
    value = _parse_latex(text, limits)
    return Parsed(exact(value), _had_float(value))


def _plus_minus(text: str, limits: ParseLimits) -> Parsed:
    """`a \\pm b` is the set {a + b, a - b} (`\\mp` takes the other sign; every ± in one item
    takes the same sign); `x = \\pm 2` is the set {2, -2}; items of a list are expanded one
    by one (`\\pm 1, \\pm 2` is {1, -1, 2, -2})."""
    values: list[Any] = []
    decimal = False
    for part in top_level_parts(text):
        variants = [part]
        if _PLUS_MINUS.search(part):
            variants = [_signs(part, "+", "-"), _signs(part, "-", "+")]
        for variant in variants:
            parsed = _parse_one(variant, limits)
            decimal = decimal or parsed.decimal
            values.append(parsed.value)
    names = {_assigned_symbol(v) for v in values}
    if len(names) == 1 and None not in names:
        values = [v.rhs for v in values]
    if any(isinstance(v, Relational | sympy.And | sympy.Or) for v in values):
        raise Unparseable("a plus-minus sign in a relation other than `x = a \\pm b`")
    unique = [v for i, v in enumerate(values) if all(v != w for w in values[:i])]
    return Parsed(sympy.FiniteSet(*unique), decimal)


def _signs(text: str, pm: str, mp: str) -> str:
    return _PLUS_MINUS.sub(lambda m: pm if m.group(0) == "\\pm" else mp, text)


def _assigned_symbol(value: Any) -> str | None:
    if isinstance(value, sympy.Eq) and isinstance(value.lhs, sympy.Symbol):
        return value.lhs.name
    return None


def top_level_parts(text: str) -> list[str]:
    """`text` split at the commas outside every bracket."""
    parts, depth, start = [], 0, 0
    for index, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:index].strip())
            start = index + 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def _clean(text: str) -> str:
    """Spacing commands, `{,}`, Markdown bold, trailing punctuation, and font or text commands
    wrapped around the whole answer (`\\text{5}`, `\\mathbf{5}`) removed; `\\!` joins
    (`10,\\!000`), and an upright `\\mathrm{e}` or `\\mathrm{i}` is the constant."""
    text = _ROMAN_E.sub(r"\1", _JOIN.sub("", text))
    text = _SPACING.sub(lambda m: m.group(0) if m.group(0) == "\\\\" else " ", text)
    text = text.replace("{,}", ",").strip().strip("€£¥").strip()  # currency, like `\\$`
    while True:
        before = text
        if len(text) > 4 and text.startswith("**") and text.endswith("**"):
            text = text[2:-2].strip()
        text = text.rstrip(",;").removesuffix("\\\\").strip()
        if text.endswith("\\") and not text.endswith("\\\\"):  # `185\`: a spacing `\ ` cut short
            text = text[:-1].strip()
        wrapper = _WRAPPER.match(text)
        if wrapper and matching_brace(text, wrapper.end() - 1) == len(text) - 1:
            text = text[wrapper.end() : -1].strip()
        if text == before:
            return text


class _Number(NamedTuple):
    value: sympy.Rational
    decimal: bool  # written as a decimal (so approximate)
    places: int | None  # its last written decimal place: 2 for 0.25, -3 for 1.2e4


def _plain_number(text: str) -> _Number | None:
    """The exact value of a plain number, and how precisely it was written; else None."""
    if _THOUSANDS.fullmatch(text):
        text = text.replace(",", "").replace(" ", "")
    if _DECIMAL.fullmatch(text):
        places = len(text.split(".", 1)[1]) if "." in text else None
        return _Number(sympy.Rational(Fraction(text)), places is not None, places)
    match = _SCIENTIFIC.fullmatch(text)
    if match:
        exponent = int(match["e1"] or match["e2"] or match["e3"])
        if abs(exponent) > 1000:
            return None  # leave it to the parser and its screens
        value = sympy.Rational(Fraction(match["m"]) * Fraction(10) ** exponent)
        if "." not in match["m"]:
            return _Number(value, False, None)
        return _Number(value, True, len(match["m"].split(".", 1)[1]) - exponent)
    match = _MIXED.fullmatch(text)
    if match:  # `1 1/2` is one and a half (the parser read it as (1 + 1)/2)
        numerator, denominator = int(match["n"]), int(match["d"])
        if not 0 < numerator < denominator:
            raise Unparseable("a whole number followed by an improper fraction")
        value = int(match["whole"]) + Fraction(numerator, denominator)
        return _Number(sympy.Rational(-value if match["sign"] == "-" else value), False, None)
    match = _FRACTION.fullmatch(text)
    if match:
        numerator = int(match["n1"] or match["n2"] or match["n3"])
        denominator = int(match["d1"] or match["d2"] or match["d3"])
        if denominator == 0:
            raise Unparseable("division by zero")
        sign = -1 if match["sign"] == "-" else 1
        return _Number(sympy.Rational(sign * numerator, denominator), False, None)
    return None


def _parse_latex(text: str, limits: ParseLimits) -> Any:
    text = _SQRT_PARENS.sub(r"\\sqrt{\1}", text)
    normalized = normalize_latex(text, _NORMALIZATION).strip()
    if not normalized:
        raise Unparseable("nothing left after normalisation")
    if len(_NUMBER_RUN.findall(normalized)) < len(_NUMBER_RUN.findall(text)):
        # Unit stripping keeps the first `<number> \\text{...}` and drops the rest, so
        # `2 \\text{ cm}, 3 \\text{ cm}` would read as 2: a hedge, not an answer.
        raise Unparseable("normalisation dropped numbers written in the answer")
    is_complex = should_treat_as_complex(normalized)
    try:
        value = _latex2sympy(normalized, not is_complex)
    except RecursionError:
        raise Unparseable("nested too deeply for the parser") from None
    except Exception as exc:  # the parser's syntax errors are plain Exceptions
        raise Unparseable(f"the LaTeX parser rejected it ({type(exc).__name__})") from None
    screen_tree(value, limits.max_digits, limits.max_nodes, limits.max_symbolic_power)
    if isinstance(value, sympy.Basic) and value.has(sympy.zoo, sympy.nan):
        raise Unparseable("undefined: a division by zero")  # else any two would be equal
    value = _collapse_chain(value)
    if isinstance(value, sympy.logic.boolalg.BooleanAtom):
        raise Unparseable("it reduces to a bare truth value")
    if is_complex and isinstance(value, sympy.Basic):
        try:
            value = value.xreplace({s: sympy.I for s in value.free_symbols if s.name == "i"})
        except TypeError:  # sympy refuses an ordering of complex numbers (`i < 2`)
            raise Unparseable("an inequality between complex numbers") from None
    return _shape(value, normalized)


def _shape(value: Any, normalized: str) -> Any:
    """Membership (`x \\in [0, 1]`, `x = \\pm 2`) is its set; `(p, q) = (3, 2)` is the system
    `p = 3, q = 2`; one variable given several values (`x = 1, x = 2`) is the set of them; an
    unbracketed list is a BareList."""
    if isinstance(value, sympy.Eq) and isinstance(value.rhs, sympy.Set) and not _pair(value.rhs):
        return value.rhs
    if isinstance(value, sympy.Eq) and _pair(value.lhs) and _pair(value.rhs):
        names, values = _pair(value.lhs), _pair(value.rhs)
        if len(names) == len(values) and all(isinstance(n, sympy.Symbol) for n in names):
            return BareList(*(sympy.Eq(n, v) for n, v in zip(names, values, strict=True)))
    if isinstance(value, sympy.FiniteSet):
        args = list(getattr(value, "_unsorted_args", None) or value.args)
        names = {_assigned_symbol(a) for a in args}
        if len(args) > 1 and len(names) == 1 and None not in names:
            return sympy.FiniteSet(*(a.rhs for a in args))
        if not normalized.startswith(("\\{", "\\lbrace")):
            return BareList(*args)
    return value


def _pair(value: Any) -> tuple[Any, ...] | None:
    """The items of a tuple `(a, b, ...)`; the parser reads `(a, b)` as an open interval."""
    if isinstance(value, sympy.Tuple):
        return tuple(value.args)
    if isinstance(value, sympy.Interval) and value.left_open and value.right_open:
        return (value.start, value.end)
    return None


def _collapse_chain(value: Any) -> Any:
    """`x = 5 + 5 + 1 = 11` is `x = 11` when every link without a variable is true, and false
    (never true: no answer, no gold) when one is not. Chains of inequalities are left as they
    are."""
    if not isinstance(value, sympy.And):
        return value
    links = list(getattr(value, "_unsorted_args", None) or value.args)
    if not all(isinstance(link, sympy.Eq) for link in links):
        return value
    constant = [link for link in links if not link.free_symbols]
    if not constant or len(constant) == len(links):
        return value
    for link in constant:
        if not _is_zero(link.lhs - link.rhs):
            return sympy.false
    variable = [link for link in links if link.free_symbols]
    if len(variable) == 1 and isinstance(variable[0].lhs, sympy.Symbol):
        return sympy.Eq(variable[0].lhs, links[-1].rhs, evaluate=False)
    return sympy.And(*variable, evaluate=False) if len(variable) > 1 else variable[0]


def _is_zero(expr: Any) -> bool:
    try:
        return bool(sympy.simplify(expr) == 0)
    except Exception:  # sympy cannot decide: not shown true
        return False


@functools.lru_cache(maxsize=4096)
def _latex2sympy(normalized: str, is_real: bool) -> Any:
    return latex2sympy(
        normalized, is_real=is_real, convert_degrees=False, normalization_config=None
    )


def _had_float(value: Any) -> bool:
    if isinstance(value, sympy.MatrixBase):
        return any(_had_float(v) for v in value)
    return isinstance(value, sympy.Basic) and bool(value.atoms(sympy.Float))


def exact(value: Any) -> Any:
    """`value` with every Float replaced by the exact decimal it was written as (1.2 -> 6/5)."""
    if isinstance(value, sympy.MatrixBase):
        return value.applyfunc(exact)
    if not isinstance(value, sympy.Basic):
        return value
    floats = value.atoms(sympy.Float)
    if not floats:
        return value
    return value.xreplace(
        {f: sympy.Rational(Fraction(sympy.sstr(f, full_prec=False))) for f in floats}
    )
