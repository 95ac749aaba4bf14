"""From answer text to a value the comparator can trust.

Plain numbers (integers, decimals, thousands separators, scientific notation, simple fractions,
with an optional sign, percent sign or degree mark) are read exactly without a parser; this is
most answers, and it avoids both the LaTeX parser's cost and its quirks (`1.5e3` read as
`1.5·e·3`). Everything else goes through math-verify's LaTeX normalisation and parser
(latex2sympy2_extended), after the text pre-screens and before the tree pre-screen.

The parser must account for the whole text: a syntax error is `Unparseable`, never a prefix
(math-verify's extraction read `4\\sqrt(2)` as `4`). `\\sqrt(2)` is rewritten as `\\sqrt{2}`,
`i` becomes the imaginary unit when the text looks complex, and parses that collapse to a bare
truth value (`x + 1 = x + 1` → True) are unparseable rather than an answer.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, NamedTuple

import sympy
from latex2sympy2_extended.latex2sympy2 import NormalizationConfig, latex2sympy, normalize_latex
from math_verify.grader import should_treat_as_complex

from verifier_server.verifiers.math.extract import matching_brace
from verifier_server.verifiers.math.screen import screen_tree

# latex2sympy2 logs failed parses with the whole input; answers are untrusted and unbounded.
logging.getLogger("latex2sympy2_extended").setLevel(logging.CRITICAL)

_NORMALIZATION = NormalizationConfig(
    basic_latex=True, units=True, malformed_operators=True, nits=True, boxed="all", equations=False
)
_SPACING = re.compile(r"\\\\|\\[,;:! ]|\\q?quad\b|~")  # `\\` (a row break) is kept
_PERCENT = re.compile(r"\s*(\\%|%|\\text\{\s*\\?%\s*\})\s*$")
_DEGREES = re.compile(r"\s*(\^\s*\{?\s*\\circ\s*\}?|°|\\degree)\s*$")
_SQRT_PARENS = re.compile(r"\\sqrt\s*\(([^()]*)\)")
_WRAPPER = re.compile(
    r"\\(?:text|textbf|textrm|textit|textnormal|mathrm|mathbf|mathit|mathsf|mbox|boldsymbol|bm"
    r"|underline|displaystyle|textstyle)\s*\{"
)
_WORD = re.compile(r"[A-Za-z]{3,}")
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:(?:,\d{3})+|(?: \d{3})+)(\.\d+)?")
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
    0.25, -3 for 1.2e4): one unit there is 10**-decimals."""

    value: Any
    decimal: bool = False
    decimals: int | None = None
    percent: bool = False
    degrees: bool = False


@dataclass(frozen=True, slots=True)
class ParseLimits:
    max_digits: int
    max_nodes: int
    max_symbolic_power: int


def parse_answer(text: str, limits: ParseLimits) -> Parsed:
    """Parses an (already screened) answer. Raises Unparseable or screen.Rejected."""
    text = _clean(text)
    percent = bool(_PERCENT.search(text))
    text = _PERCENT.sub("", text) if percent else text
    degrees = bool(_DEGREES.search(text))
    text = _DEGREES.sub("", text).strip() if degrees else text
    if not text:
        raise Unparseable("empty answer")
    number = _plain_number(text)
    if number is not None:
        return Parsed(number.value, number.decimal, number.places, percent, degrees)
    if _WORD.fullmatch(text):  # a word (`yes`, `Evelyn`) is text, not a product of letters
        return Parsed(sympy.Symbol(text.lower()), percent=percent, degrees=degrees)
    value = _parse_latex(text, limits)
    return Parsed(exact(value), _had_float(value), None, percent, degrees)


def _clean(text: str) -> str:
    """Spacing commands, `{,}`, Markdown bold, trailing punctuation, and font or text commands
    wrapped around the whole answer (`\\text{5}`, `\\mathbf{5}`) removed."""
    text = _SPACING.sub(lambda m: m.group(0) if m.group(0) == "\\\\" else " ", text)
    text = text.replace("{,}", ",").strip()
    while True:
        before = text
        if len(text) > 4 and text.startswith("**") and text.endswith("**"):
            text = text[2:-2].strip()
        text = text.rstrip(",;").removesuffix("\\\\").strip()
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
    if isinstance(value, sympy.logic.boolalg.BooleanAtom):
        raise Unparseable("it reduces to a bare truth value")
    if is_complex and isinstance(value, sympy.Basic):
        value = value.xreplace({s: sympy.I for s in value.free_symbols if s.name == "i"})
    return _shape(value, normalized)


def _shape(value: Any, normalized: str) -> Any:
    """Membership (`x \\in [0, 1]`, `x = \\pm 2`) is its set; an unbracketed list is a BareList."""
    if isinstance(value, sympy.Eq) and isinstance(value.rhs, sympy.Set):
        return value.rhs
    if (
        isinstance(value, sympy.FiniteSet)
        and not normalized.startswith(("\\{", "\\lbrace"))
        and "\\pm" not in normalized
    ):
        return BareList(*(getattr(value, "_unsorted_args", None) or value.args))
    return value


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
