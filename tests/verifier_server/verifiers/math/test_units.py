"""Units after an answer: split off, converted when sympy knows them, never silently dropped."""

from __future__ import annotations

from fractions import Fraction

import pytest

from verifier_server.verifiers.math.units import NotAUnit, conversion, split_unit


@pytest.mark.parametrize(
    ("text", "magnitude", "name"),
    [
        (r"5 \text{ kg}", "5", "kg"),
        (r"9.8\,\mathrm{m/s^2}", "9.8", "m/s^2"),
        (r"12 \text{ cm}^2", "12", "cm^2"),
        ("12 cm", "12", "cm"),  # a bare word sympy knows
        ("10weeks", "10", "weeks"),
        (r"\frac{1}{3} \textbf{meters}", r"\frac{1}{3}", "meters"),
        (r"42 \text{ apples}", "42", "apple"),  # unknown: kept by name
        ("2ab", "2ab", None),  # a bare word sympy does not know is math, not a unit
        (r"x \text{ kg}", "x", "kg"),
        ("5", "5", None),
    ],
)
def test_split_unit(text: str, magnitude: str, name: str | None) -> None:
    rest, unit = split_unit(text)
    assert rest == magnitude
    assert (unit.name if unit else None) == name


@pytest.mark.parametrize(
    "text", [r"5 \text{ or more}", r"2 \text{ (or 3)}", r"5 \text{ kg or more}"]
)
def test_a_qualifier_is_not_a_unit(text: str) -> None:
    with pytest.raises(NotAUnit):
        split_unit(text)


@pytest.mark.parametrize(
    ("gold", "answer", "factor"),
    [
        (r"1 \text{ kg}", r"1 \text{ g}", Fraction(1, 1000)),  # grams to kilograms
        (r"1 \text{ m}", r"1 \text{ cm}", Fraction(1, 100)),
        (r"1 \text{ hours}", r"1 \text{ minutes}", Fraction(1, 60)),
        (r"1 \text{ km/h}", r"1 \text{ km/hr}", Fraction(1)),
        (r"1 \text{ m}^2", r"1 \text{ cm}^2", Fraction(1, 10_000)),
        (r"1 \text{ m}", r"1 \text{ s}", None),  # a length is not a time
        (r"1 \text{ apples}", r"1 \text{ oranges}", None),  # unknown units: by name
        (r"1 \text{ apples}", r"1 \text{ apple}", Fraction(1)),
    ],
)
def test_conversion(gold: str, answer: str, factor: Fraction | None) -> None:
    gold_unit, answer_unit = split_unit(gold)[1], split_unit(answer)[1]
    assert gold_unit is not None and answer_unit is not None
    assert conversion(gold_unit, answer_unit) == factor
