"""The json_schema verifier: one hostile schema or completion per test, exact outcomes."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from verifier_server.types import JSON, Item, Result, Status
from verifier_server.verifiers.json_schema import JsonSchemaVerifier, nesting_exceeds

PERSON = {
    "type": "object",
    "required": ["name", "age"],
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "additionalProperties": False,
}


def score(completion: str, schema: JSON, **params: Any) -> Result:
    item = Item(id="q", completion=completion, reference=schema)
    [result] = JsonSchemaVerifier().score([item], JsonSchemaVerifier.Params(**params))
    return result


def assert_invalid_reference(result: Result, problem: str) -> None:
    assert (result.status, result.reason) == (Status.INVALID_REQUEST, "invalid_reference")
    assert result.details["field"] == "reference"
    assert problem in result.details["error"]


@pytest.mark.parametrize(
    ("completion", "expected_score", "reason"),
    [
        ('{"name": "Ada", "age": 36}', 1.0, ""),
        ('{"name": "Ada"}', 0.0, "schema_violation"),
        ('{"name": "Ada", "age": -1}', 0.0, "schema_violation"),
        ('{"name": "Ada", "age": 36, "x": 1}', 0.0, "schema_violation"),
        ('{"name": "Ada", "age": 36.0}', 1.0, ""),  # 36.0 is an integer to JSON Schema
        ('{"name": "Ada", "age": 36', 0.0, "invalid_json"),
        ("", 0.0, "invalid_json"),
    ],
)
def test_binary_scoring(completion: str, expected_score: float, reason: str) -> None:
    result = score(completion, PERSON)
    assert (result.score, result.status, result.reason) == (expected_score, Status.OK, reason)


def test_violation_details_list_path_and_message() -> None:
    result = score('{"name": 7, "age": 36}', PERSON)
    assert result.details["errors"] == [{"path": "$.name", "message": "7 is not of type 'string'"}]
    assert result.details["extracted"] == '{"name": 7, "age": 36}'


@pytest.mark.parametrize(
    ("completion", "source"),
    [
        ('Here:\n```json\n{"name": "Ada", "age": 36}\n```', "fenced"),
        ('<answer>{"name": "Ada", "age": 36}</answer>', "answer_tag"),
        ('<answer>{"name": "B"}</answer>\n```\n{"name": "Ada", "age": 36}\n```', "fenced"),
        ('  {"name": "Ada", "age": 36}\n', "raw"),
    ],
)
def test_auto_extraction(completion: str, source: str) -> None:
    result = score(completion, PERSON)
    assert (result.score, result.details["source"]) == (1.0, source)


@pytest.mark.parametrize(
    ("extract", "reason"),
    [("fenced", "missing_fenced_block"), ("answer_tag", "missing_answer_tag")],
)
def test_requested_extraction_missing(extract: str, reason: str) -> None:
    result = score('{"name": "Ada", "age": 36}', PERSON, extract=extract)
    assert (result.score, result.status, result.reason) == (0.0, Status.OK, reason)


@pytest.mark.parametrize(
    ("completion", "expected_score"),
    [
        # requirements: "name" present and valid, "age" present and valid, instance valid
        ('{"name": "Ada", "age": 36}', 3 / 3),
        ('{"name": "Ada", "age": 36, "x": 1}', 2 / 3),  # only the whole-instance one fails
        ('{"name": "Ada", "age": -1}', 1 / 3),  # age invalid, instance invalid
        ('{"name": "Ada"}', 1 / 3),  # age missing, instance invalid
        ('{"name": 1, "age": "x"}', 0 / 3),
        ("[1, 2]", 0 / 3),  # not an object: no required property present
    ],
)
def test_fraction_scoring(completion: str, expected_score: float) -> None:
    result = score(completion, PERSON, scoring="fraction")
    assert result.score == pytest.approx(expected_score)
    assert result.details["requirements"] == 3


def test_fraction_without_required_is_binary() -> None:
    assert score('"x"', {"type": "integer"}, scoring="fraction").score == 0.0
    assert score("1", {"type": "integer"}, scoring="fraction").score == 1.0


def test_fraction_follows_refs_in_property_schemas() -> None:
    schema = {
        "$defs": {"pos": {"type": "integer", "minimum": 1}},
        "required": ["n"],
        "properties": {"n": {"$ref": "#/$defs/pos"}},
        "maxProperties": 1,
    }
    # "n" valid via the $ref (1 of 2), the instance is not (maxProperties).
    assert score('{"n": 3, "m": 1}', schema, scoring="fraction").score == 0.5


def test_hostile_pattern_runs_on_re2() -> None:
    schema = {"type": "string", "pattern": "(a+)+$"}
    assert score(json.dumps("a" * 50_000 + "!"), schema).reason == "schema_violation"
    assert score(json.dumps("a" * 50_000), schema).score == 1.0


def test_hostile_pattern_properties_with_additional_properties_runs_on_re2() -> None:
    # jsonschema's own additionalProperties matches these patterns with Python's re.
    schema = {"patternProperties": {"^(a+)+$": {"type": "integer"}}, "additionalProperties": False}
    assert score(json.dumps({"a" * 40 + "!": 1}), schema).reason == "schema_violation"
    assert score(json.dumps({"a" * 40: 1}), schema).score == 1.0
    assert score(json.dumps({"a" * 40: "x"}), schema).reason == "schema_violation"


def test_hostile_property_names_pattern_runs_on_re2() -> None:
    schema = {"propertyNames": {"pattern": "^(a+)+$"}}
    assert score(json.dumps({"a" * 40 + "!": 1}), schema).reason == "schema_violation"


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [("^(?=a)", "invalid perl operator"), (r"(x)\1", "invalid escape sequence")],
)
def test_pattern_re2_cannot_compile_is_invalid_reference(pattern: str, problem: str) -> None:
    schema = {"properties": {"deep": {"items": {"pattern": pattern}}}}
    assert_invalid_reference(score("{}", schema), problem)


def test_unevaluated_properties_with_pattern_properties_is_rejected() -> None:
    schema = {"patternProperties": {"^a": {}}, "unevaluatedProperties": False}
    assert_invalid_reference(score("{}", schema), "unevaluatedProperties together with")


def test_deep_nesting_is_too_deep_not_recursion_error() -> None:
    result = score("[" * 10_000 + "]" * 10_000, {})
    assert (result.score, result.status, result.reason) == (0.0, Status.OK, "too_deep")


@pytest.mark.parametrize(
    ("text", "max_depth", "exceeds"),
    [
        ("[[1]]", 2, False),
        ("[[[1]]]", 2, True),
        ('{"a": {"b": [1]}}', 3, False),
        ('{"a": {"b": [1]}}', 2, True),
        ('["[[[[[[", "{{{{{{"]', 1, False),  # brackets inside strings do not count
        (r'["\"[[[[[["]', 1, False),  # nor after an escaped quote
        (r'["\\", [[1]]]', 2, True),  # an escaped backslash ends the escape
        ("[]" * 1000, 1, False),  # wide, not deep
    ],
)
def test_nesting_exceeds(text: str, max_depth: int, exceeds: bool) -> None:
    assert nesting_exceeds(text, max_depth) is exceeds


def test_nesting_at_the_limit_is_validated() -> None:
    assert score("[" * 64 + "]" * 64, {"type": "array"}).score == 1.0
    assert score("[" * 65 + "]" * 65, {"type": "array"}).reason == "too_deep"


def test_invalid_schema_is_invalid_reference_naming_the_keyword() -> None:
    assert_invalid_reference(score("{}", {"type": "nonsense"}), "invalid schema at $.type")


@pytest.mark.parametrize("reference", [None, "{}", ["object"], 1.0])
def test_non_object_reference_is_invalid(reference: JSON) -> None:
    assert_invalid_reference(score("{}", reference), "must be a JSON Schema object")


def test_remote_ref_is_never_fetched(monkeypatch: pytest.MonkeyPatch) -> None:
    fetched: list[object] = []
    monkeypatch.setattr(urllib.request, "urlopen", lambda *args, **kw: fetched.append(args))
    schema = {"$ref": "https://example.com/schemas/person.json"}

    assert_invalid_reference(score("{}", schema), "cannot resolve $ref")
    assert fetched == []
    # The stock validator would have fetched it: the patch above is what we guard against.
    with pytest.raises(Exception):  # noqa: B017 - whatever the fake urlopen makes it raise
        Draft202012Validator(schema).is_valid({})
    assert len(fetched) == 1


def test_unresolvable_local_ref_is_invalid_reference() -> None:
    assert_invalid_reference(score("{}", {"$ref": "#/$defs/missing"}), "cannot resolve $ref")


def test_ref_cycle_is_invalid_reference() -> None:
    schema = {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}
    assert_invalid_reference(score("1", schema), "$ref cycle")


def test_meta_schema_refs_resolve_offline() -> None:
    schema = {"$ref": "https://json-schema.org/draft/2020-12/schema"}
    assert score('{"type": "string"}', schema).score == 1.0
    assert score('{"type": 5}', schema).reason == "schema_violation"


def test_unique_items_on_a_large_array_of_objects() -> None:
    # jsonschema compares unhashable elements pairwise: 10_000 objects would take ~5e7 compares.
    items = [{"k": i} for i in range(10_000)]
    schema = {"type": "array", "uniqueItems": True}
    assert score(json.dumps(items), schema).score == 1.0
    assert score(json.dumps([*items[:-1], {"k": 0}]), schema).reason == "schema_violation"


@pytest.mark.parametrize(
    "array",
    [
        [1, 1.0],
        [1, True],
        [0, False],
        [None, False],
        [{"a": 1, "b": 2}, {"b": 2, "a": 1}],
        [{"a": [1, {"b": True}]}, {"a": [1, {"b": 1}]}],
        [[1, 2], [2, 1]],
        ["1", 1],
        [{"a": None}, {}],
    ],
)
def test_unique_items_agrees_with_jsonschema(array: list[JSON]) -> None:
    schema = {"uniqueItems": True}
    expected = Draft202012Validator(schema).is_valid(array)
    assert (score(json.dumps(array), schema).score == 1.0) is expected


def test_array_longer_than_max_items_is_too_large() -> None:
    result = score(json.dumps({"a": [0] * 10_001}), {"uniqueItems": True})
    assert (result.score, result.reason, result.details["limit"]) == (0.0, "too_large", "max_items")
    assert score(json.dumps({"a": [0] * 10_000}), {}).score == 1.0


def test_text_longer_than_max_json_chars_is_too_large() -> None:
    result = score(json.dumps("x" * 200), {}, max_json_chars=100)
    assert (result.reason, result.details["limit"]) == ("too_large", "max_json_chars")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("NaN", "NaN is not JSON"),
        ('{"x": -Infinity}', "-Infinity is not JSON"),
        ('{"a": 1, "a": 2}', "duplicate key 'a'"),
        ("1" * 5000, "Exceeds the limit"),  # Python's int conversion limit
        ("{} trailing", "Extra data"),
        ("{'a': 1}", "Expecting property name"),
    ],
)
def test_invalid_json(text: str, error: str) -> None:
    result = score(text, {})
    assert (result.score, result.status, result.reason) == (0.0, Status.OK, "invalid_json")
    assert error in result.details["error"]


@pytest.mark.parametrize(("check_formats", "expected_score"), [(False, 1.0), (True, 0.0)])
def test_format_is_an_annotation_unless_checked(check_formats: bool, expected_score: float) -> None:
    schema = {"type": "string", "format": "ipv4"}
    assert score('"1.2.3"', schema, check_formats=check_formats).score == expected_score


def test_regex_format_means_re2_syntax() -> None:
    schema = {"format": "regex"}
    assert score(json.dumps(r"(a)\1"), schema, check_formats=True).score == 0.0
    assert score(json.dumps("(" * 3000), schema, check_formats=True).score == 0.0  # no recursion
    assert score(json.dumps(r"\d+"), schema, check_formats=True).score == 1.0


def test_schema_draft_is_honoured() -> None:
    # draft-07's array form of "items" validates by position; 2020-12 rejects it as a schema.
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", "items": [{"type": "string"}]}
    assert score('["a", 1]', draft7).score == 1.0
    assert score("[1]", draft7).reason == "schema_violation"
    assert_invalid_reference(score("[1]", {"items": [{"type": "string"}]}), "invalid schema")


def test_schema_numbers_as_floats_from_the_wire() -> None:
    schema = {"type": "array", "minItems": 2.0, "maxItems": 3.0, "items": {"multipleOf": 2.0}}
    assert score("[2, 4]", schema).score == 1.0
    assert score("[2]", schema).reason == "schema_violation"


def test_invalid_reference_does_not_depend_on_the_completion() -> None:
    schema = {"anyOf": [{"type": "integer"}, {"pattern": "(?=x)"}]}
    assert_invalid_reference(score("1", schema), "invalid perl operator")
    assert_invalid_reference(score("not json", schema), "invalid perl operator")


def test_defaults() -> None:
    params = JsonSchemaVerifier.Params()
    assert (params.timeout_s, params.extract, params.scoring) == (5.0, "auto", "binary")
    assert (params.max_depth, params.max_items, params.check_formats) == (64, 10_000, False)
    assert JsonSchemaVerifier.execution == "process"
    assert JsonSchemaVerifier.timeout_s(params) == 5.0


@pytest.mark.parametrize(
    "params",
    [
        {"scoring": "partial"},
        {"extract": "json"},
        {"max_depth": 1000},
        {"timeout_s": 0},
        {"depth": 3},
    ],
)
def test_bad_params_are_rejected(params: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as excinfo:
        JsonSchemaVerifier.Params(**params)
    assert excinfo.value.errors()[0]["loc"] == (next(iter(params)),)
