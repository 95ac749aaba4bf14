"""Completions built to score 1.0 without being right, found by attacking the math verifier
after issue 13, each beside the honest form that must still pass. (gold, boxed answer,
expected score); every row marked "hack" scored 1.0 before its fix."""

from __future__ import annotations

import pytest

from verifier_server.types import Item, Status
from verifier_server.verifiers.math.verifier import MathParams, MathVerifier

Y, N = 1.0, 0.0

# fmt: off
TABLE: list[tuple[str, str, float]] = [
    # --- agreement at the fixed sample points (all in (-2.4, 2.4)) built with non-analytic
    # functions: sympy cannot decide, so only a proof may pass them
    ("x", r"\min(x, 3)", N),  # hack: Min(x, 3) = x at every point below 3
    ("x", r"\max(x, -5)", N),  # hack
    ("x", r"x + |x - 100| + x - 100", N),  # hack: |x - 100| = 100 - x below 100
    ("x^2", "|x|^2", Y), ("x", r"\max(x, x)", Y), (r"|x|", r"\sqrt{x^2}", Y),  # honest: proven
    ("x", r"\ln(e^x)", Y), (r"\sin(2x)", r"2\sin(x)\cos(x)", Y),  # analytic: points suffice
    # --- agreement to 50 digits built with a ceiling: a rational approximation is not pi
    (r"\pi", r"\frac{\lceil 10^{45} \pi \rceil}{10^{45}}", N),  # hack
    (r"\pi", r"\frac{\lfloor 10^{60} \pi \rfloor}{10^{60}}", N), (r"\pi", "3.1416", Y),
    # --- a unit sympy does not know is never the same as one it knows, nor matched without
    # case when it is a symbol (a prefix's case is a factor of 10^9)
    (r"5 \text{ m}", r"5 \text{ M}", N),  # hack: unknown `M` was folded to `m`
    (r"5 \text{ mm}", r"5 \text{ Mm}", N),  # hack: megametres for millimetres
    (r"5 \text{ mW}", r"5 \text{ MW}", N), (r"5 \text{ mHz}", r"5 \text{ MHz}", N),  # hack
    (r"5 \text{ kW}", r"5 \text{ kW}", Y), (r"5 \text{ hours}", r"5 \text{ Hours}", Y),
    (r"5 \text{ m}", r"5 \text{ Meters}", Y), (r"5 \text{ apples}", r"5 \text{ Apples}", Y),
    (r"5 \text{ cups}", r"5 \text{ cup}", Y), (r"5 \text{ kg}", r"5 \text{ Kg}", N),
    # --- an ellipsis is an answer not written out; the normaliser dropped `\ldots`
    (r"\{1,2\}", r"1, 2 \ldots", N),  # hack: 1, 2, ... (every positive integer) read as {1, 2}
    ("0.3", r"0.3\ldots", N),  # hack: 0.3... read as 0.3
    ("11", r"5 \ldots 6", N), (r"\{1,2\}", "1, 2, ...", N), ("0.3", "0.3…", N),
    ("5", r"5 \cdot 1", Y), (r"\{1,2\}", "1, 2", Y),
    # --- a decimal that is not a plain number skipped the written-digits rule (rel_tol only)
    (r"\pi", "3.1413 + 0", N),  # hack: 3.1413 alone fails (its last digit is wrong)
    (r"\frac{1}{3}", "0.33331 + 0", N),  # hack
    (r"\{\pi, 1\}", r"\{3.1413, 1\}", N),  # hack: inside a set too
    (r"\pi", "3.1416 + 0", Y), (r"\{\pi, 1\}", r"\{3.1416, 1\}", Y),
    (r"\sqrt{2}", r"1.41421 \cdot 1", Y),
    # --- the question restated as its answer: sympy evaluates it, so it passed for the value
    (r"\frac{1}{3}", r"\int_0^1 x^2 dx", N),  # hack
    ("5050", r"\sum_{k=1}^{100} k", N),  # hack
    ("1", r"\lim_{x \to 0} \frac{\sin x}{x}", N),  # hack
    ("120", r"\prod_{k=1}^{5} k", N), ("x", r"\int_0^x 1 dt", N),  # hack
    ("120", "5!", Y), ("120", r"\binom{10}{3}", Y), ("2", r"\gcd(4, 6)", Y),  # closed forms
    (r"\int_0^1 f(x) dx", r"\int_0^1 f(x) dx", Y),  # a gold with the operator in it
]
# fmt: on


@pytest.fixture(scope="module")
def verifier() -> MathVerifier:
    return MathVerifier()


@pytest.mark.parametrize(("gold", "answer", "expected"), TABLE)
def test_built_answers_score_as_they_are(
    verifier: MathVerifier, gold: str, answer: str, expected: float
) -> None:
    item = Item(id="h", completion=f"\\boxed{{{answer}}}", reference=gold)
    [result] = verifier.score([item], MathParams())
    assert result.status == Status.OK, result.details
    assert result.score == expected, (result.reason, result.details)
