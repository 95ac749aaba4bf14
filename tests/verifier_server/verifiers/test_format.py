"""The format verifier: one adversarial layout per row, exact scores, reasons and details."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from verifier_server.types import Item, Result, Status
from verifier_server.verifiers.format import FormatVerifier


def score(completion: str, **params: Any) -> Result:
    verifier = FormatVerifier()
    [result] = verifier.score(
        [Item(id="q", completion=completion)], FormatVerifier.Params(**params)
    )
    return result


@pytest.mark.parametrize(
    "completion",
    [
        "<think>reason</think><answer>4</answer>",
        "\n <think>\nreason\n</think>\n\n<answer> 4 </answer>\n",
        "<think></think><answer></answer>",  # empty contents are allowed
        "<think>a < b and c > d</think><answer>x</answer>",  # stray angle brackets inside
    ],
)
def test_well_formed_scores_one(completion: str) -> None:
    result = score(completion)
    assert (result.score, result.status, result.reason) == (1.0, Status.OK, "")


@pytest.mark.parametrize(
    ("completion", "reason", "details"),
    [
        ("<think>r</think>", "missing_tag", {"tag": "answer", "marker": "<answer>"}),
        ("<think>r</think><answer>4", "missing_tag", {"tag": "answer", "marker": "</answer>"}),
        ("r</think><answer>4</answer>", "missing_tag", {"tag": "think", "marker": "<think>"}),
        ("", "missing_tag", {"tag": "think", "marker": "<think>"}),
        (
            "<think>a</think><think>b</think><answer>4</answer>",
            "duplicate_tag",
            {"tag": "think", "marker": "<think>"},
        ),
        (
            "<think>r</think><answer>1</answer><answer>2</answer>",
            "duplicate_tag",
            {"tag": "answer", "marker": "<answer>"},
        ),
        (
            "<think>r</think><answer>4</answer></answer>",
            "duplicate_tag",
            {"tag": "answer", "marker": "</answer>"},
        ),
        (
            "<answer>4</answer><think>r</think>",
            "out_of_order",
            {"tag": "answer", "before": "think"},
        ),
        (
            "</think>r<think><answer>4</answer>",
            "out_of_order",
            {"tag": "think", "marker": "</think>"},
        ),
        ("<think>r<answer>4</answer></think>", "nested_tag", {"tag": "answer", "inside": "think"}),
        ("<think>r<answer>4</think></answer>", "nested_tag", {"tag": "answer", "inside": "think"}),
        ("Sure! <think>r</think><answer>4</answer>", "text_outside_tags", {"at": 0}),
        ("<think>r</think>so<answer>4</answer>", "text_outside_tags", {"at": 16}),
        ("<think>r</think><answer>4</answer> Hope it helps", "text_outside_tags", {"at": 34}),
    ],
)
def test_malformed_scores_zero_with_reason(
    completion: str, reason: str, details: dict[str, Any]
) -> None:
    result = score(completion)
    assert (result.score, result.status, result.reason) == (0.0, Status.OK, reason)
    assert result.details == details


@pytest.mark.parametrize(
    ("completion", "expected_score", "reason"),
    [
        ("reason</think><answer>4</answer>", 1.0, ""),
        ("\nreason\n</think>\n<answer>4</answer>", 1.0, ""),
        ("<think>reason</think><answer>4</answer>", 0.0, "duplicate_tag"),  # prompt has one
        ("reason<answer>4</answer>", 0.0, "missing_tag"),
        ("reason</think>x<answer>4</answer>", 0.0, "text_outside_tags"),
    ],
)
def test_prefilled_open_tag(completion: str, expected_score: float, reason: str) -> None:
    result = score(completion, prefilled_open_tag=True)
    assert (result.score, result.reason) == (expected_score, reason)


def test_prefilled_open_tag_off_rejects_a_prefilled_completion() -> None:
    assert score("reason</think><answer>4</answer>").reason == "missing_tag"


def test_allow_text_outside_keeps_the_other_rules() -> None:
    assert (
        score("Hi <think>r</think> so <answer>4</answer> bye", allow_text_outside=True).score == 1.0
    )
    assert score("Hi <answer>4</answer>", allow_text_outside=True).reason == "missing_tag"


def test_custom_tags_in_order() -> None:
    completion = "<plan>p</plan><code>c</code><answer>a</answer>"
    assert score(completion, tags=["plan", "code", "answer"]).score == 1.0
    result = score(completion, tags=["code", "plan", "answer"])
    assert (result.reason, result.details) == ("out_of_order", {"tag": "plan", "before": "code"})


def test_megabyte_completion_scores_correctly() -> None:
    thinking = "step <thin think> " * 60_000  # ~1 MB of near-miss markers
    assert score(f"<think>{thinking}</think><answer>4</answer>").score == 1.0
    result = score(f"<think>{thinking}</think><answer>4</answer>{'x' * 1_000_000}")
    assert result.reason == "text_outside_tags"


def test_megabyte_of_repeated_tags_is_a_duplicate() -> None:
    assert score("<think>" * 150_000 + "</think><answer>4</answer>").reason == "duplicate_tag"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"tags": []}, "tags"),
        ({"tags": ["think", "think"]}, "tags"),
        ({"tags": ["<think>"]}, "tags"),
        ({"tags": ["a b"]}, "tags"),
        ({"tags": [""]}, "tags"),
        ({"prefill": True}, "prefill"),
    ],
)
def test_bad_params_name_the_field(params: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        FormatVerifier.Params(**params)
    assert excinfo.value.errors()[0]["loc"] == (field,)
