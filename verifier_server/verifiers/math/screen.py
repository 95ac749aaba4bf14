"""Cheap pre-screens that reject hostile math before anything expensive touches it.

Two stages:
- `screen_text`, before parsing, in well under a millisecond for any answer the length cap
  admits: the answer's length, its bracket nesting depth (deep nesting makes the LaTeX parser
  recurse), integer literals longer than the digit cap, and the size of every numeric power,
  factorial and binomial written in it (`9^{9^{9^9}}`, `(10^7)!`, the power tower of Math-Verify
  issue 65), bounded in log space from the text alone (see `_TextBounds`).
- `screen_tree`, after parsing and before any evaluation, simplification or printing: walks the
  unevaluated sympy tree and bounds, in log space, how many digits each numeric node would have
  once evaluated (`9^{9^{9^9}}`, `(10^7)!`, the power tower of Math-Verify issue 65), how large a
  power of a symbolic base gets, and how many nodes the tree has.

These only decide quickly; the worker pool's hard time limit stays the bound for anything that
slips past them. Nothing here calls `str()` on a sympy object.
"""

from __future__ import annotations

import math
from typing import Any

import sympy

_LOG10_2 = math.log10(2)
_DIGITS = frozenset("0123456789")  # ASCII only: str.isdigit() also accepts "²" and "①"
# Symbols are evaluated at sample points below 3 by the comparator (equivalence._point).
_SYMBOL_LOG10 = math.log10(3)
_OPEN = "([{"
_CLOSE = ")]}"


class Rejected(Exception):
    """The input is too large or too complex to evaluate safely; `reason` is the result reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def screen_text(
    text: str, max_chars: int, max_depth: int, max_digits: int, max_symbolic_power: int
) -> None:
    """Raises Rejected for text longer than `max_chars`, brackets nested deeper than
    `max_depth`, a number of more than `max_digits` digits written or implied by a power,
    factorial or binomial, or a power above `max_symbolic_power` of a symbolic base."""
    if len(text) > max_chars:
        raise Rejected("answer_too_long", f"{len(text)} characters, over the cap of {max_chars}")
    depth = deepest = digits = 0
    for ch in text:
        if ch in _OPEN:
            depth += 1
            deepest = max(deepest, depth)
        elif ch in _CLOSE:
            depth -= 1
        if ch in _DIGITS:
            digits += 1
            if digits > max_digits:
                raise Rejected("answer_too_complex", f"a number with over {max_digits} digits")
        else:
            digits = 0
    if deepest > max_depth:
        raise Rejected("answer_too_deep", f"brackets nested {deepest} deep, over {max_depth}")
    if "^" in text or "!" in text or "binom" in text:
        _TextBounds(text, max_digits, max_symbolic_power).check()
    if "^" in text or "_" in text:
        _check_double_scripts(text)


def screen_tree(expr: Any, max_digits: int, max_nodes: int, max_symbolic_power: int) -> None:
    """Raises Rejected when evaluating `expr` could produce a number of more than `max_digits`
    digits, raise a symbolic base to a power above `max_symbolic_power`, or when the tree has
    more than `max_nodes` nodes. `expr` is never evaluated."""
    _Bounder(max_digits, max_nodes, max_symbolic_power).digits(expr)


class _Bounder:
    """Upper bounds on log10 of |value| (≈ digits) of unevaluated sympy trees. Symbols count as
    3, the bound on the comparator's sample points, so a symbolic tower (`y^{y^{y^y}}`) that
    would explode when evaluated at those points is caught too. None: not a number (sets,
    relations, matrices are walked for their elements)."""

    def __init__(self, max_digits: int, max_nodes: int, max_symbolic_power: int) -> None:
        self.max_digits = max_digits
        self.max_nodes = max_nodes
        self.max_symbolic_power = max_symbolic_power
        self.nodes = 0

    def digits(self, expr: Any) -> float | None:
        self.nodes += 1
        if self.nodes > self.max_nodes:
            raise Rejected("answer_too_complex", f"more than {self.max_nodes} terms")
        if isinstance(expr, sympy.MatrixBase):
            for element in expr:
                self.digits(element)
            return None
        if not isinstance(expr, sympy.Basic):
            return None
        if isinstance(expr, sympy.Rational):  # Integer included; math.log10 takes any int
            return self._check(math.log10(max(abs(int(expr.p)), int(expr.q), 1)))
        if isinstance(expr, sympy.Float):
            mpf = expr._mpf_  # (sign, mantissa, exponent, bitcount): |x| < 2**(exponent+bitcount)
            return self._check(max(0, mpf[2] + mpf[3]) * _LOG10_2) if mpf[1] else 0.0
        if isinstance(expr, sympy.Symbol):
            return _SYMBOL_LOG10
        if isinstance(expr, sympy.NumberSymbol) or expr is sympy.I:
            return 1.0  # pi, E, EulerGamma, ..., I: all below 10
        if isinstance(expr, sympy.Pow):
            return self._pow(expr)
        if isinstance(expr, sympy.factorial | sympy.factorial2 | sympy.gamma):
            return self._factorial(expr)
        parts = [self.digits(arg) for arg in expr.args]
        if not parts or any(p is None for p in parts):
            return None if parts else 1.0
        if isinstance(expr, sympy.Mul):
            return self._check(sum(parts))  # type: ignore[arg-type]
        if isinstance(expr, sympy.exp):
            return self._check(_value(parts[0]) * math.log10(math.e))  # type: ignore[arg-type]
        return self._check(max(parts) + 1)  # type: ignore[type-var]

    def _pow(self, expr: sympy.Pow) -> float | None:
        base, exponent = (self.digits(arg) for arg in expr.args)
        if exponent is None or base is None:
            return None
        raw = expr.args[1]  # an exact exponent is its own bound (sqrt: 1/2, not 10**log10(2))
        power = abs(float(raw)) if isinstance(raw, sympy.Rational) else _value(exponent)
        if expr.args[0].free_symbols and power > self.max_symbolic_power:
            raise Rejected(
                "answer_too_complex",
                f"a power above {self.max_symbolic_power} of a symbolic expression",
            )
        return self._check(power * max(base, _LOG10_2))

    def _factorial(self, expr: Any) -> float | None:
        inner = self.digits(expr.args[0])
        if inner is None:
            return None
        return self._check(_log10_factorial(_value(inner)))

    def _check(self, digits: float) -> float:
        if digits > self.max_digits:
            raise Rejected(
                "answer_too_complex", f"evaluates to a number of over {self.max_digits} digits"
            )
        return digits


def _log10_factorial(n: float) -> float:
    """log10(n!) by Stirling (an upper bound to well under one digit for n >= 1)."""
    if n < 2:
        return 0.0
    if math.isinf(n):
        return math.inf
    return n * math.log10(n / math.e) + 0.5 * math.log10(2 * math.pi * n) + 0.01


def _check_double_scripts(text: str) -> None:
    """`x^a^b` and `x_a_b` are not LaTeX (a double superscript), and the parser takes
    exponential time on chains of them: reject before parsing."""
    for index, ch in enumerate(text):
        if ch in "^_":
            end = _group_end(text, index + 1)
            while end < len(text) and text[end] == " ":
                end += 1
            if end < len(text) and text[end] == ch:
                raise Rejected(
                    "unparseable_answer", f"a double {'super' if ch == '^' else 'sub'}script"
                )


def _group_end(text: str, index: int) -> int:
    """The index just after the script operand starting at `index`."""
    while index < len(text) and text[index] == " ":
        index += 1
    if index >= len(text):
        return index
    if text[index] == "{":
        depth = 0
        for end in range(index, len(text)):
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            if depth == 0:
                return end + 1
        return len(text)
    if text[index] == "\\":
        end = index + 1
        while end < len(text) and text[end].isalpha():
            end += 1
        return end
    return index + 1


def _value(digits: float) -> float:
    """An upper bound on |x| from an upper bound on log10|x| (inf when it would overflow)."""
    return math.inf if digits > 300 else 10.0**digits


class _TextBounds:
    """Bounds, from the LaTeX text alone, the digits of every numeric `a^b`, `n!` and
    `\\binom{n}{k}`: each operator's operands are read with a small log-space evaluator that
    knows numbers, + - * / ^ !, brackets, `\\left`/`\\right`, `\\cdot`, `\\times` and
    `\\frac`; an operand with anything else in it is symbolic and left to the tree screen."""

    def __init__(self, text: str, max_digits: int, max_symbolic_power: int) -> None:
        self.text = text
        self.max_digits = max_digits
        self.max_symbolic_power = max_symbolic_power

    def check(self) -> None:
        text = self.text
        for index, ch in enumerate(text):
            if ch == "^":
                exponent = _log_bound(_group_after(text, index + 1))
                base = _log_bound(_operand_before(text, index))
                if exponent is not None and base is not None:
                    self._check(_value(exponent) * max(base, _LOG10_2))
                elif exponent is not None and _value(exponent) > self.max_symbolic_power:
                    raise Rejected(
                        "answer_too_complex",
                        f"a power above {self.max_symbolic_power} of a symbolic expression",
                    )
            elif ch == "!" and not text.startswith("!=", index):
                n = _log_bound(_operand_before(text, index))
                if n is not None:
                    self._check(_log10_factorial(_value(n)))
        start = text.find("binom")
        while start >= 0:
            n = _log_bound(_group_after(text, start + len("binom")))
            if n is not None:
                self._check(_value(n) * _LOG10_2)  # C(n, k) < 2^n
            start = text.find("binom", start + 1)

    def _check(self, digits: float) -> None:
        if digits > self.max_digits:
            raise Rejected(
                "answer_too_complex", f"evaluates to a number of over {self.max_digits} digits"
            )


def _group_after(text: str, index: int) -> str:
    """The operand starting at `index`: a braced group's content, a `\\command`, or one char."""
    while index < len(text) and text[index] == " ":
        index += 1
    end = _group_end(text, index)
    if index < len(text) and text[index] == "{":
        return text[index + 1 : end - 1 if text[end - 1] == "}" else end]
    return text[index:end]


def _operand_before(text: str, index: int) -> str:
    """The operand ending just before `index`: a number, or a bracketed group."""
    end = index
    while end > 0 and text[end - 1] == " ":
        end -= 1
    if end == 0:
        return ""
    last = text[end - 1]
    if last in _DIGITS or last == ".":
        start = end
        while start > 0 and (text[start - 1] in _DIGITS or text[start - 1] == "."):
            start -= 1
        return text[start:end]
    pairs = {")": "(", "}": "{", "]": "["}
    if last in pairs:
        depth = 0
        for start in range(end - 1, -1, -1):
            if text[start] in pairs:
                depth += 1
            elif text[start] in "({[":
                depth -= 1
                if depth == 0:
                    return text[start:end]
    return last


class _Symbolic(Exception):
    """The operand is not purely numeric."""


def _log_bound(operand: str) -> float | None:
    """An upper bound on log10|value| of a numeric operand, or None if it is not numeric."""
    if not operand:
        return None
    try:
        tokens = _tokens(operand)
        parser = _BoundParser(tokens)
        bound = parser.expression()
        if parser.position != len(tokens):
            return None
        return bound
    except (_Symbolic, IndexError, ValueError):
        return None


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in _DIGITS or ch == ".":
            j = i
            while j < len(text) and (text[j] in _DIGITS or text[j] == "."):
                j += 1
            tokens.append(text[i:j])
            i = j
        elif ch == "\\":
            j = i + 1
            while j < len(text) and text[j].isalpha():
                j += 1
            command = text[i + 1 : j]
            if command in ("left", "right", "big", "Big", "bigg", "Bigg", ""):
                pass
            elif command in ("cdot", "times"):
                tokens.append("*")
            elif command in ("frac", "dfrac", "tfrac"):
                tokens.append("frac")
            else:
                raise _Symbolic
            i = j
        elif ch in "+-*/^!(){}[]":
            tokens.append("(" if ch in "{[" else ")" if ch in "}]" else ch)
            i += 1
        elif ch.isspace():
            i += 1
        else:
            raise _Symbolic
    return tokens


class _BoundParser:
    """Recursive descent over numeric tokens; every method returns a bound on log10|value|."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.position = 0

    def _peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _take(self) -> str:
        token = self.tokens[self.position]
        self.position += 1
        return token

    def expression(self) -> float:
        bound = self.term()
        while self._peek() in ("+", "-"):
            self._take()
            bound = max(bound, self.term()) + _LOG10_2
        return bound

    def term(self) -> float:
        bound = self.factor()
        while self._peek() in ("*", "/", "(", "frac") or (self._peek() or "x")[0] in _DIGITS:
            if self._peek() in ("*", "/"):
                self._take()
            bound += self.factor()  # |a/b| is not bounded by a*b, but the digits written are
        return bound

    def factor(self) -> float:
        while self._peek() in ("+", "-"):
            self._take()
        bound = self.atom()
        if self._peek() == "^":
            self._take()
            exponent = self.factor()
            bound = _value(exponent) * max(bound, _LOG10_2)
        while self._peek() == "!":
            self._take()
            bound = _value(bound) * max(bound, 1.0)
        return bound

    def atom(self) -> float:
        token = self._take()
        if token == "(":
            bound = self.expression()
            if self._take() != ")":
                raise _Symbolic
            return bound
        if token == "frac":
            return self.atom() + self.atom()
        if token[0] in _DIGITS or token[0] == ".":
            digits = token.split(".", 1)[0].lstrip("0")
            if len(digits) > 15:
                return float(len(digits))
            return math.log10(max(float(digits or 0), 1.0))
        raise _Symbolic
