"""A completion can never earn a non-OK status: completions built to crash each light verifier,
through a real server. Each must come back OK with its verdict (0 and a reason), because a
trainer masks non-OK items and a mask is "no penalty": a policy would learn to crash the
verifier. The caller's and the infrastructure's faults stay non-OK (last table).

The judge's version (a completion that makes the judge answer garbage or HTTP 400) is in
verifiers/test_judge_faults.py; the reward model's (NaN/inf outputs) in
verifiers/test_reward_model.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from verifier_server.client import RewardClient
from verifier_server.types import JSON, Item, Result, RewardSpec, Status

pytestmark = pytest.mark.integration

MB = 1 << 20
EXPONENTIAL_SCHEMA = {  # unevaluatedItems re-evaluates both branches at every level: 2^depth
    "$defs": {
        "n": {
            "anyOf": [
                {"type": "array", "items": {"$ref": "#/$defs/n"}},
                {"type": "object", "additionalProperties": {"$ref": "#/$defs/n"}},
            ],
            "unevaluatedItems": False,
        }
    },
    "$ref": "#/$defs/n",
}
WRAPPED = {  # several keywords per level of nesting: dozens of Python frames per level
    "$defs": {
        "v": {"allOf": [{"anyOf": [{"not": {"not": {"oneOf": [
            {"type": "array", "items": {"$ref": "#/$defs/w"}}, {"type": "string"}]}}}]}]},
        "w": {"$ref": "#/$defs/x"},
        "x": {"allOf": [{"$ref": "#/$defs/v"}]},
    },
    "$ref": "#/$defs/v",
}  # fmt: skip
PATTERNED = {
    "type": "object",
    "properties": {"s": {"type": "string", "pattern": "^[a-z]+$", "format": "email"}},
    "patternProperties": {"^k": {"type": "integer"}},
    "propertyNames": {"pattern": "^[a-z]*$"},
}
COMPOSITE = {
    "components": [
        {"name": "fmt", "verifier": "format", "gate": True},
        {"name": "json", "verifier": "json_schema", "reference_key": "schema"},
        {"name": "exact", "verifier": "string_check", "reference_key": "gold",
         "params": {"extract": "answer_tag"}},
    ]
}  # fmt: skip


def _item(name: str, completion: str, reference: JSON = None, **params: Any) -> Item:
    return Item(
        id="x",
        completion=completion,
        reward=RewardSpec(name, params),
        reference=reference,
        completion_tokens=max(1, len(completion) // 4),
    )


HOSTILE: list[tuple[str, Item, float, str]] = [
    # (row id, item, expected score, expected reason)
    ("format: 1.9 MB of opening tags", _item("format", "<think>" * 270_000), 0.0, "duplicate_tag"),
    ("format: nested tags", _item("format", "<think><answer></answer></think>"), 0.0,
     "nested_tag"),
    ("format: NUL and control bytes", _item("format", "\x00<think>\x1b</think><answer>\x7f"),
     0.0, "missing_tag"),
    ("format: noncharacters and a BOM", _item("format", "\ufeff\uffff<think>\U0010ffff</think>"),
     0.0, "missing_tag"),
    ("string_check: backtracking bait for a regex", _item(
        "string_check", "a" * MB + "!", "^(a+)+$", operation="regex"), 0.0, "no_match"),
    ("string_check: casefold that doubles the text", _item(
        "string_check", "\u00df" * (MB // 2), "SSX", operation="icontains"), 0.0, "not_found"),
    ("string_check: a million unclosed answer tags", _item(
        "string_check", "<answer>" * 200_000, "x", extract="answer_tag"), 0.0,
        "missing_answer_tag"),
    ("string_check: a fence that never closes", _item(
        "string_check", "```\n" + "x\n" * 500_000, "x", extract="fenced"), 0.0,
        "missing_fenced_block"),
    ("length: 1.9 MB completion", _item("length", "y" * (19 * MB // 10), max_tokens=100),
     -1.0, "over_max_tokens"),
    ("json_schema: a million open brackets", _item("json_schema", "[" * 900_000, {}), 0.0,
     "too_deep"),
    ("json_schema: 1e400 against minimum", _item(
        "json_schema", "1e400", {"type": "number", "minimum": 0}), 0.0, "invalid_json"),
    ("json_schema: 400 digits against multipleOf 2 (a double on the wire)", _item(
        "json_schema", "1" * 400, {"multipleOf": 2}), 0.0, "schema_violation"),
    ("json_schema: 5000 digits", _item("json_schema", "7" * 5000, {}), 0.0, "invalid_json"),
    ("json_schema: NaN", _item("json_schema", "[NaN]", {}), 0.0, "invalid_json"),
    ("json_schema: duplicate keys", _item("json_schema", '{"a":1,"a":2}', {}), 0.0,
     "invalid_json"),
    ("json_schema: lone surrogates in pattern, key and format checks", _item(
        "json_schema", r'{"s": "\ud800", "k\udc00": "x", "\ud800\ud800": 1}', PATTERNED,
        check_formats=True), 0.0, "schema_violation"),
    ("json_schema: a lone surrogate in a regex format", _item(
        "json_schema", r'"\udfff("', {"format": "regex"}, check_formats=True), 0.0,
        "schema_violation"),
    ("json_schema: a regex format value RE2 takes seconds to compile", _item(
        "json_schema", json.dumps("\\PL" * 30_000), {"format": "regex"}, check_formats=True,
        timeout_s=2), 0.0, "schema_violation"),
    ("json_schema: lone surrogates in idn formats", _item(
        "json_schema", r'["\ud800@x.com", "a@\udc00.com"]',
        {"items": {"anyOf": [{"format": "idn-email"}, {"format": "idn-hostname"}]},
         "minItems": 3}, check_formats=True), 0.0, "schema_violation"),
    ("json_schema: exponential validation, step budget", _item(
        "json_schema", "[" * 60 + "]" * 60, EXPONENTIAL_SCHEMA, max_validation_steps=20_000),
        0.0, "too_complex"),
    ("json_schema: exponential validation, clock budget", _item(
        "json_schema", "[" * 60 + "]" * 60, EXPONENTIAL_SCHEMA, timeout_s=2), 0.0,
        "too_complex"),
    ("json_schema: 100 levels against a recursive schema with several keywords per level",
     _item("json_schema", "[" * 100 + "1" + "]" * 100, WRAPPED, max_depth=100), 0.0,
     "schema_violation"),
    ("json_schema: recursion past the stack (an $anchor cycle)", _item(
        "json_schema", "1", {"$defs": {"a": {"$anchor": "A", "allOf": [{"$ref": "#A"}]}},
                             "$ref": "#A"}), 0.0, "too_deep"),
    ("json_schema: an array past max_items", _item("json_schema", "[" + "0," * 10_001 + "0]",
     {"uniqueItems": True}), 0.0, "too_large"),
    ("json_schema: text past max_json_chars", _item(
        "json_schema", json.dumps("z" * 2000), {}, max_json_chars=1000), 0.0, "too_large"),
    ("composite: a format gate fails first", Item(
        id="x", completion="[" * MB, reward=RewardSpec("composite", COMPOSITE),
        reference={"schema": {}, "gold": "x"}), 0.0, "gate_failed:fmt"),
    ("composite: each part fails on its own", Item(
        id="x", completion='<think>\ud7ff</think><answer>{"a": 1e400}</answer>',
        reward=RewardSpec("composite", COMPOSITE), reference={"schema": {}, "gold": "x"}),
        0.0, ""),
]  # fmt: skip


@pytest.mark.parametrize(
    ("item", "score", "reason"),
    [row[1:] for row in HOSTILE],
    ids=[row[0] for row in HOSTILE],
)
def test_a_hostile_completion_gets_a_verdict(
    client: RewardClient, item: Item, score: float, reason: str
) -> None:
    result = client.score([item], timeout_s=60)[0]
    assert (result.status, result.reason) == (Status.OK, reason), result.details
    assert result.score == score


def test_composite_parts_report_their_own_verdicts(client: RewardClient) -> None:
    [result] = client.score([HOSTILE[-1][1]])
    assert result.components == {"fmt": 1.0, "json": 0.0, "exact": 0.0}
    assert result.details["json"]["reason"] == "invalid_json"
    assert result.details["exact"]["reason"] == "not_equal"


NOT_THE_COMPLETIONS: list[tuple[str, Item, Status, str]] = [
    ("json_schema: a pattern RE2 cannot compile", _item(
        "json_schema", "1", {"anyOf": [{"pattern": "(?=x)"}]}), Status.INVALID_REQUEST,
        "invalid_reference"),
    ("json_schema: an unresolvable $ref", _item("json_schema", "1", {"$ref": "#/nope"}),
     Status.INVALID_REQUEST, "invalid_reference"),
    ("json_schema: a remote $ref", _item(
        "json_schema", "1", {"$ref": "https://example.com/s.json"}), Status.INVALID_REQUEST,
        "invalid_reference"),
    ("string_check: a reference that is not a string", _item("string_check", "x", 5),
     Status.INVALID_REQUEST, "invalid_reference"),
    ("string_check: a regex RE2 rejects", _item("string_check", "x", "(x)\\1", operation="regex"),
     Status.INVALID_REQUEST, "invalid_reference"),
    ("length: no token count", Item(id="x", completion="abc", reward=RewardSpec(
        "length", {"max_tokens": 10})), Status.INVALID_REQUEST, "invalid_completion_tokens"),
    ("composite: a part's reference key missing", Item(
        id="x", completion="<think></think><answer>x</answer>",
        reward=RewardSpec("composite", COMPOSITE), reference={"gold": "x"}),
        Status.INVALID_REQUEST, "invalid_reference"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("item", "status", "reason"),
    [row[1:] for row in NOT_THE_COMPLETIONS],
    ids=[row[0] for row in NOT_THE_COMPLETIONS],
)
def test_the_callers_faults_stay_non_ok(
    client: RewardClient, item: Item, status: Status, reason: str
) -> None:
    result: Result = client.score([item])[0]
    assert (result.status, result.reason) == (status, reason), result.details
