"""The math verifier's contract: gold errors are invalid items, details explain the verdict,
verdicts are memoised, parameters are validated."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from verifier_server.types import JSON, Item, Status
from verifier_server.verifiers.math.verifier import MathParams, MathVerifier


def score(reference: JSON, completion: str, **params: object):
    [result] = MathVerifier().score(
        [Item(id="m", completion=completion, reference=reference)], MathParams(**params)
    )
    return result


@pytest.mark.parametrize(
    ("reference", "field"),
    [
        (None, "reference"),
        ("", "reference"),
        (True, "reference"),
        ({"answer": 3}, "reference"),
        (r"\frac{1}{", "reference"),  # unparseable: never a free 1.0
        ("x = x", "reference"),  # a gold that is always true
        (float("nan"), "reference"),
        ([], "reference"),
        (["3", r"\sqrt{"], "reference[1]"),
        (r"9^{9^{9^9}}", "reference"),
        ("12:00", "reference"),  # 12/0: undefined (any two were equal as complex infinity)
        ("1/0", "reference"),
        ("x = 2 + 3 = 6", "reference"),  # a chain with a false link is never true
        ("x < 1 + i", "reference"),  # complex numbers are not ordered (sympy raised TypeError)
        (r"5 \text{ or more}", "reference"),  # a qualifier, not a unit
    ],
)
def test_a_bad_gold_is_an_invalid_item_naming_the_field(reference: JSON, field: str) -> None:
    result = score(reference, r"\boxed{3}")
    assert result.status == Status.INVALID_REQUEST
    assert result.reason == "invalid_reference"
    assert result.details["field"] == field


def test_json_numbers_are_golds() -> None:
    assert score(3.0, r"\boxed{3}").score == 1.0  # JSON numbers arrive as doubles
    assert score(0.5, r"\boxed{\frac{1}{2}}").score == 1.0
    assert score(7, r"\boxed{7.5}").score == 0.0


def test_a_list_of_golds_accepts_any_of_them() -> None:
    assert score(["2", "-2"], r"\boxed{-2}").score == 1.0
    assert score(["2", "-2"], r"\boxed{3}").score == 0.0


def test_a_boxed_gold_is_unwrapped() -> None:
    assert score(r"$\boxed{\frac{1}{2}}$", r"\boxed{0.5}").score == 1.0


def test_details_explain_the_verdict() -> None:
    result = score(r"\frac{1}{2}", r"<think>hmm</think> so \boxed{\dfrac{2}{4}}")
    assert result.status == Status.OK and result.score == 1.0
    assert result.details["extracted_answer"] == r"\dfrac{2}{4}"
    assert result.details["anchor"] == "boxed"
    assert result.details["parsed_gold"] == "1/2"
    assert result.details["parsed_answer"] == "1/2"
    assert result.details["rule"] == "exact_rational"


@pytest.mark.parametrize(
    ("completion", "reason"),
    [
        ("5", "no_answer_found"),
        (r"\boxed{\frac{1}{}", "no_answer_found"),
        (r"\boxed{2+}", "unparseable_answer"),
        (r"\boxed{" + "1" * 3000 + "}", "answer_too_long"),
        (r"\boxed{9^{9^{9^9}}}", "answer_too_complex"),
        (r"\boxed{" + "(" * 60 + "1" + ")" * 60 + "}", "answer_too_deep"),
        (r"\boxed{2, 3}", "multiple_answers"),
        (r"\boxed{x + 1 = 1 + x}", "trivial_equation"),
        (r"\boxed{4}", "wrong_answer"),
    ],
)
def test_wrong_answers_are_ok_zero_with_a_reason(completion: str, reason: str) -> None:
    result = score("2", completion)
    assert result.status == Status.OK
    assert (result.score, result.reason) == (0.0, reason)


def test_lenient_extraction_is_opt_in() -> None:
    assert score("12", "so the answer is 12").reason == "no_answer_found"
    assert score("12", "so the answer is 12", extract="lenient").score == 1.0


def test_rel_tol_is_a_parameter() -> None:
    assert score(r"\pi", r"\boxed{3.14}").score == 0.0
    assert score(r"\pi", r"\boxed{3.14}", rel_tol=1e-3).score == 1.0


def test_verdicts_and_golds_are_memoised() -> None:
    verifier = MathVerifier()
    batch = [
        Item(id=f"s{n}", completion=r"\boxed{\frac{2}{4}}", reference="0.5") for n in range(20)
    ]
    results = verifier.score(batch, MathParams())
    assert all(r.score == 1.0 for r in results)
    assert len(verifier._verdicts) == 1 and len(verifier._golds) == 1


@pytest.mark.parametrize(
    "params", [{"rel_tol": 1.0}, {"rel_tol": -1}, {"extract": "anywhere"}, {"max_depth": 0}]
)
def test_bad_params_are_rejected(params: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        MathParams(**params)


@pytest.mark.parametrize(
    "answer",
    [
        "\ud800",
        "1\x00",
        "x < 1 + i",
        r"f(x)1/2\!\%^\circ<i\%",
        r"\frac{x}{0} \cdot 0",
        r"\{1, 2\} \text{ kg}",
        r"x \pm 1 > 2",
        r"\pm",
    ],
)
def test_an_answer_that_breaks_parsing_is_ok_zero(answer: str) -> None:
    # In-process too (a lone surrogate cannot cross the wire): never VERIFIER_ERROR.
    result = score("5 \\text{ kg}", f"\\boxed{{{answer}}}")
    assert result.status == Status.OK and result.score == 0.0 and result.reason
