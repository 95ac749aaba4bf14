"""Pre-screens: hostile answers are rejected from the text alone, legitimate ones pass."""

from __future__ import annotations

import pytest
import sympy

from verifier_server.verifiers.math.screen import Rejected, screen_text, screen_tree

ISSUE_65 = r"\dfrac{5^{\left(5^{\left(5^{\left(5^5\right)}\right)} - 4\right)} - 5}{16}"
LIMITS = {"max_chars": 2000, "max_depth": 50, "max_digits": 10_000, "max_symbolic_power": 100_000}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (r"9^{9^{9^9}}", "answer_too_complex"),
        (r"(10^7)!", "answer_too_complex"),
        (ISSUE_65, "answer_too_complex"),  # the power tower of Math-Verify issue 65
        (r"10^{10^{6}}", "answer_too_complex"),
        (r"\binom{10000000}{5000000}", "answer_too_complex"),
        (r"\sqrt{9^{9^9}} + x", "answer_too_complex"),  # inside a symbolic expression
        (r"x^{10^{10}}", "answer_too_complex"),  # a symbolic base to a huge power
        ("(" * 51 + "1" + ")" * 51, "answer_too_deep"),
        ("1" * 2001, "answer_too_long"),
    ],
)
def test_hostile_text_is_rejected(text: str, reason: str) -> None:
    with pytest.raises(Rejected) as caught:
        screen_text(text, **LIMITS)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    "text",
    [r"2^{100}", r"2^{2^{2}}", r"3^{3^{3}}", r"10^{9999}", r"e^{-x^2}", r"x^{2024}", "5!",
     "3! + 4!", r"\binom{10}{3}", r"a != b", "(" * 50 + "1" + ")" * 50, r"\frac{1}{2^{98}}"],
)  # fmt: skip
def test_legitimate_text_passes(text: str) -> None:
    screen_text(text, **LIMITS)


def test_long_literals_are_rejected_before_parsing() -> None:
    with pytest.raises(Rejected) as caught:
        screen_text("1" * 1001, **{**LIMITS, "max_digits": 1000})
    assert caught.value.reason == "answer_too_complex"


def test_tree_screen_bounds_unevaluated_powers_and_factorials() -> None:
    tower = sympy.Pow(
        9, sympy.Pow(9, sympy.Pow(9, 9, evaluate=False), evaluate=False), evaluate=False
    )
    with pytest.raises(Rejected):
        screen_tree(tower, max_digits=10_000, max_nodes=2000, max_symbolic_power=100_000)
    with pytest.raises(Rejected):
        screen_tree(sympy.factorial(10**7, evaluate=False), 10_000, 2000, 100_000)
    screen_tree(sympy.Pow(2, 100, evaluate=False), 10_000, 2000, 100_000)


def test_tree_screen_caps_the_number_of_nodes() -> None:
    x = sympy.Symbol("x")
    big = sympy.Add(*[x**k for k in range(300)])
    with pytest.raises(Rejected):
        screen_tree(big, max_digits=10_000, max_nodes=100, max_symbolic_power=100_000)
