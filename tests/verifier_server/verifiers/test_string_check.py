"""The string_check verifier: one comparison property per row, invalid references, hostile input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from verifier_server.types import JSON, Item, Result, Status
from verifier_server.verifiers.string_check import StringCheckVerifier


def score(completion: str, reference: JSON, **params: Any) -> Result:
    verifier = StringCheckVerifier()
    item = Item(id="q", completion=completion, reference=reference)
    [result] = verifier.score([item], StringCheckVerifier.Params(**params))
    return result


@pytest.mark.parametrize(
    ("completion", "reference", "params", "expected_score", "reason"),
    [
        ("Paris", "Paris", {}, 1.0, ""),
        ("  Paris\n", " Paris ", {}, 1.0, ""),  # strip both sides by default
        ("  Paris\n", "Paris", {"strip": False}, 0.0, "not_equal"),
        ("paris", "Paris", {}, 0.0, "not_equal"),  # eq is case-sensitive
        ("Lyon", "Paris", {"operation": "ne"}, 1.0, ""),
        ("Paris", "Paris", {"operation": "ne"}, 0.0, "equal"),
        ("The capital is Paris.", "Paris", {"operation": "contains"}, 1.0, ""),
        ("The capital is paris.", "Paris", {"operation": "contains"}, 0.0, "not_found"),
        ("THE CAPITAL IS PARIS.", "paris", {"operation": "icontains"}, 1.0, ""),
        ("STRASSE", "straße", {"operation": "icontains"}, 1.0, ""),  # casefold, not lower
        ("anything", "", {"operation": "contains"}, 1.0, ""),  # empty needle is always found
        ("answer: 42", r"\d+", {"operation": "regex"}, 1.0, ""),
        ("answer: 42", r"\d+", {"operation": "regex", "regex_mode": "fullmatch"}, 0.0, "no_match"),
        ("42", r"\d+", {"operation": "regex", "regex_mode": "fullmatch"}, 1.0, ""),
        (" 42 ", r" 42 ", {"operation": "regex", "regex_mode": "fullmatch"}, 0.0, "no_match"),
        (
            " 42 ",
            r" 42 ",
            {"operation": "regex", "strip": False, "regex_mode": "fullmatch"},
            1.0,
            "",
        ),
    ],
)
def test_operations(
    completion: str, reference: str, params: dict[str, Any], expected_score: float, reason: str
) -> None:
    result = score(completion, reference, **params)
    assert (result.score, result.status, result.reason) == (expected_score, Status.OK, reason)


@pytest.mark.parametrize(
    ("completion", "params", "expected_score", "reason"),
    [
        ("<think>Lyon?</think><answer> Paris </answer>", {"extract": "answer_tag"}, 1.0, ""),
        ("<answer>Lyon</answer> no, <answer>Paris</answer>", {"extract": "answer_tag"}, 1.0, ""),
        ("Paris", {"extract": "answer_tag"}, 0.0, "missing_answer_tag"),
        ("Paris", {"extract": "fenced"}, 0.0, "missing_fenced_block"),
        ("<answer>Paris</answer>", {}, 0.0, "not_equal"),  # raw by default
    ],
)
def test_extract(
    completion: str, params: dict[str, Any], expected_score: float, reason: str
) -> None:
    result = score(completion, "Paris", **params)
    assert (result.score, result.reason) == (expected_score, reason)


def test_failure_details_show_the_extracted_answer() -> None:
    result = score("<answer>Lyon</answer>", "Paris", extract="answer_tag")
    assert result.details == {"answer": "Lyon", "source": "answer_tag"}


@pytest.mark.parametrize("reference", [None, 42.0, ["Paris"], {"text": "Paris"}, True])
def test_non_string_reference_is_invalid_request(reference: JSON) -> None:
    result = score("Paris", reference)
    assert (result.status, result.reason) == (Status.INVALID_REQUEST, "invalid_reference")
    assert result.details["field"] == "reference"
    assert "must be a string" in result.details["error"]


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        (r"(\w+) \1", "invalid escape sequence"),  # backreference
        (r"Paris(?=\.)", "invalid perl operator"),  # lookahead
        (r"(?<!not )Paris", "invalid perl operator"),  # negative lookbehind
        (r"[a-", "missing ]"),
    ],
)
def test_pattern_re2_cannot_compile_is_invalid_request(pattern: str, problem: str) -> None:
    result = score("Paris", pattern, operation="regex")
    assert (result.status, result.reason) == (Status.INVALID_REQUEST, "invalid_reference")
    assert problem in result.details["error"]


def test_hostile_regex_runs_in_linear_time() -> None:
    # (a+)+$ on 'a'*50000 + '!' backtracks exponentially under Python's re.
    result = score("a" * 50_000 + "!", r"(a+)+$", operation="regex")
    assert (result.score, result.reason) == (0.0, "no_match")
    assert score("a" * 50_000, r"(a+)+$", operation="regex").score == 1.0


@pytest.mark.parametrize(
    ("operation", "reference", "expected_score"),
    [
        ("contains", "needle", 1.0),
        ("icontains", "NEEDLE", 1.0),
        ("regex", r"need(le)+\s*$", 1.0),
        ("eq", "needle", 0.0),
    ],
)
def test_megabyte_completion(operation: str, reference: str, expected_score: float) -> None:
    completion = "hay " * 250_000 + "needle"
    assert score(completion, reference, operation=operation).score == expected_score


@pytest.mark.parametrize(
    "params",
    [{"operation": "startswith"}, {"regex_mode": "match"}, {"extract": "last_line"}, {"op": "eq"}],
)
def test_bad_params_are_rejected(params: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as excinfo:
        StringCheckVerifier.Params(**params)
    assert excinfo.value.errors()[0]["loc"] == (next(iter(params)),)


@pytest.mark.parametrize(
    ("completion", "reference", "params", "expected_score"),
    [
        # issue 13: RE2 raised UnicodeEncodeError on a lone surrogate (a crash a completion
        # could provoke where text reaches us without UTF-8 validation); matched as U+FFFD.
        ("a\ud800b", "^a.b$", {"operation": "regex"}, 1.0),
        ("\udfff", "^[a-z]+$", {"operation": "regex", "regex_mode": "fullmatch"}, 0.0),
        ("x\ud800", "x", {"operation": "eq"}, 0.0),
    ],
)
def test_lone_surrogates_are_verdicts(
    completion: str, reference: str, params: dict[str, Any], expected_score: float
) -> None:
    result = score(completion, reference, **params)
    assert (result.status, result.score) == (Status.OK, expected_score)
    json.dumps(result.details, ensure_ascii=False).encode("utf-8")  # protobuf must encode it
