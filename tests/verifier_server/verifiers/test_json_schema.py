"""The json_schema verifier: one hostile schema or completion per test, exact outcomes."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from verifier_server.types import JSON, Item, Result, Status
from verifier_server.verifiers.json_schema.parse import nesting_exceeds
from verifier_server.verifiers.json_schema.verifier import JsonSchemaVerifier

DRAFT7 = "http://json-schema.org/draft-07/schema#"
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


@pytest.mark.parametrize(
    "schema",
    [
        {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
        {"allOf": [{"$ref": "#"}]},
        # a cycle a shallow instance reaches only for some types: refused for every completion
        {"anyOf": [{"type": "string"}, {"not": {"$ref": "#"}}]},
        {"$defs": {"a~/b": {"if": {"$ref": "#/$defs/a~0~1b"}}}, "$ref": "#/$defs/a~0~1b"},
        {"$schema": DRAFT7, "definitions": {"d": {"dependencies": {"x": {"$ref": "#"}}}},
         "allOf": [{"$ref": "#/definitions/d"}]},
    ],
)  # fmt: skip
def test_in_place_ref_cycle_is_invalid_reference(schema: dict[str, Any]) -> None:
    assert_invalid_reference(score("1", schema), "closes a cycle")
    assert_invalid_reference(score('"x"', schema), "closes a cycle")


def test_a_ref_that_descends_into_the_instance_is_no_cycle() -> None:
    tree = {"type": "array", "items": {"$ref": "#"}}
    assert score("[[[]]]", tree).score == 1.0
    assert score("[[[1]]]", tree).reason == "schema_violation"


# Several keywords per level of nesting: each level of the instance costs dozens of frames.
WRAPPED = {
    "$defs": {
        "v": {"allOf": [{"anyOf": [{"not": {"not": {"oneOf": [
            {"type": "array", "items": {"$ref": "#/$defs/w"}}, {"type": "string"}]}}}]}]},
        "w": {"$ref": "#/$defs/x"},
        "x": {"allOf": [{"$ref": "#/$defs/v"}]},
    },
    "$ref": "#/$defs/v",
}  # fmt: skip


def test_deep_instances_of_a_wrapped_recursive_schema_validate() -> None:
    # issue 13 family: this raised RecursionError at ~25 levels, reported as a $ref cycle in
    # the reference (INVALID_REQUEST, a mask a deep completion could earn).
    assert score("[" * 100 + '"x"' + "]" * 100, WRAPPED, max_depth=100).score == 1.0
    assert score("[" * 100 + "1" + "]" * 100, WRAPPED, max_depth=100).score == 0.0


def test_recursion_past_the_stack_is_a_verdict() -> None:
    # A cycle through an $anchor is not followed up front; at run time it is a verdict.
    schema = {"$defs": {"a": {"$anchor": "A", "allOf": [{"$ref": "#A"}]}}, "$ref": "#A"}
    result = score("1", schema)
    assert (result.status, result.score, result.reason) == (Status.OK, 0.0, "too_deep")
    assert result.details["limit"] == "recursion"


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


@pytest.mark.parametrize(
    ("schema", "completion", "expected_score"),
    [
        # issue 13: an array-valued draft-7 `dependencies` after an object-valued one crashed
        # the up-front subschema walk (AttributeError).
        ({"$schema": DRAFT7, "dependencies": {"a": {"required": ["x"]}, "b": ["c"]}}, "{}", 1.0),
        ({"$schema": DRAFT7, "dependencies": {"a": {"required": ["x"]}, "b": ["c"]}}, '{"b":1}', 0),
        ({"$schema": DRAFT7, "dependencies": {"b": ["c"], "a": {"required": ["x"]}}}, '{"a":1}', 0),
    ],
)
def test_draft7_dependencies_of_both_kinds(
    schema: dict[str, Any], completion: str, expected_score: float
) -> None:
    result = score(completion, schema)
    assert (result.status, result.score) == (Status.OK, expected_score)


@pytest.mark.parametrize(
    "schema",
    [
        # issue 13: in some key orders the walk skipped subschemas, so RE2-incompatible
        # patterns slipped past the up-front check; every place a subschema lives is visited.
        {"$schema": DRAFT7, "dependencies": {"b": ["c"], "a": {"pattern": "(?=x)"}}},
        {"$schema": DRAFT7, "dependencies": {"a": {"pattern": "(?=x)"}, "b": ["c"]}},
        {"$schema": DRAFT7, "items": [{"type": "string"}, {"pattern": "(?=x)"}]},
        {"$schema": DRAFT7, "additionalItems": {"pattern": "(?=x)"}, "items": [{}]},
        {"dependentSchemas": {"a": {"properties": {"b": {"pattern": "(?=x)"}}}}},
        {"prefixItems": [{}, {"not": {"pattern": "(?=x)"}}]},
        {"if": {}, "then": {}, "else": {"propertyNames": {"pattern": "(?=x)"}}},
        {"$defs": {"unused": {"contains": {"pattern": "(?=x)"}}}},
        {"$schema": DRAFT7, "definitions": {"u": {"patternProperties": {"(?=x)": {}}}}},
        {"unevaluatedItems": {"anyOf": [{"oneOf": [{"allOf": [{"pattern": "(?=x)"}]}]}]}},
        {"contentSchema": {"pattern": "(?=x)"}},
    ],
)
def test_every_subschema_pattern_is_checked_up_front(schema: dict[str, Any]) -> None:
    assert_invalid_reference(score("1", schema), "invalid perl operator")


@pytest.mark.parametrize(
    "schema",
    [
        # data, not schemas: a pattern-like object under enum/const/examples is not compiled
        {"const": {"pattern": "(?=x)"}},
        {"enum": [{"patternProperties": {"(?=x)": {}}}]},
        {"examples": [{"pattern": "(?=x)"}], "type": "integer"},
    ],
)
def test_values_that_are_data_are_not_walked(schema: dict[str, Any]) -> None:
    assert score("1", schema).status == Status.OK


@pytest.mark.parametrize(
    ("fmt", "value", "valid"),
    [
        # issue 13: formats the README says are checked let these through
        ("email", ".a@b", False),
        ("email", "a@", False),
        ("email", "a..b@example.com", False),
        ("email", "a.@example.com", False),
        ("email", "@example.com", False),
        ("email", "a b@example.com", False),
        ("email", "a@-example.com", False),
        ("email", "a@example..com", False),
        ("email", "a@[1.2.3.4.5]", False),
        ("email", "a@b@example.com", False),
        ("email", "joe.bloggs@example.com", True),
        ("email", '"a b"@example.com', True),
        ("email", "a@[IPv6:::1]", True),
        ("email", "a@[127.0.0.1]", True),
        ("idn-email", "실례@실례.테스트", True),
        ("idn-email", "실례.@실례.테스트", False),
        ("uuid", "2eb8aa08-aa98-11ea-b4aa-73b441d16380-", False),  # trailing hyphen
        ("uuid", "2eb8aa08-aa98-11ea-b4aa-73b441d1638২", False),  # a Bengali digit
        ("uuid", "2eb8aa08-aa98-11ea-b4aa-73b441d1638_", False),  # an underscore
        ("uuid", "{2eb8aa08-aa98-11ea-b4aa-73b441d16380}", False),  # braces
        ("uuid", "urn:uuid:2eb8aa08-aa98-11ea-b4aa-73b441d16380", False),
        ("uuid", "2eb8aa08aa9811eab4aa73b441d16380", False),  # no hyphens
        ("uuid", "2EB8AA08-AA98-11EA-B4AA-73B441D16380", True),
        ("idn-hostname", "example.com.", False),  # trailing dots
        ("idn-hostname", "example.com..", False),
        ("idn-hostname", "example.com\u3002", False),  # a trailing ideographic full stop
        ("idn-hostname", "\u3002example.com", False),
        ("idn-hostname", "실례.테스트", True),
        ("hostname", "example.com.", False),
        ("hostname", "-example.com", False),
        ("hostname", "exa_mple.com", False),
        ("hostname", "a" * 64 + ".com", False),
        ("hostname", "www.example.com", True),
        ("ipv4", "\uff11.2.3.4", False),  # a fullwidth digit 1
        ("ipv4", "01.2.3.4", False),
        ("ipv4", "1.2.3.4\n", False),
        ("ipv4", "1.2.3.4", True),
        ("ipv6", "::1%eth0", False),  # a zone id
        ("ipv6", "::\uff11", False),
        ("ipv6", "::1", True),
        ("date", "\uff12\uff10\uff12\uff10-01-01", False),  # fullwidth digits
        ("date", "2020-02-30", False),
        ("date", "2020-02-29\n", False),
        ("date", "2020-02-29", True),
        ("regex", "\ud800", False),  # a lone surrogate: RE2 cannot even encode it
        ("regex", "\\PL" * 30_000, False),  # took RE2 11 s to refuse: over 1,000 characters
        ("regex", "[a-z]" * 200, True),
        ("hostname", "a\ud800.com", False),
        ("idn-hostname", "a\ud800.com", False),
        ("email", "a@\ud800.com", False),
        ("idn-email", "\ud800@example.com", True),  # UTF8-non-ascii is atext: U+FFFD-like
    ],
)
def test_checked_formats_reject_what_their_rfc_rejects(fmt: str, value: str, valid: bool) -> None:
    result = score(json.dumps(value), {"format": fmt}, check_formats=True)
    assert (result.status, result.score) == (Status.OK, float(valid))


@pytest.mark.parametrize(
    ("schema", "completion", "reason"),
    [
        # issue 13: 1e400 parsed to infinity and satisfied {"minimum": 0}; a number literal
        # beyond a double's range is invalid JSON, as NaN and Infinity already are.
        ({"type": "number", "minimum": 0}, "1e400", "invalid_json"),
        ({"type": "number", "maximum": 0}, "-1e400", "invalid_json"),
        ({"multipleOf": 2.0}, "1e400", "invalid_json"),
        # issue 13: a big integer against multipleOf raised OverflowError (VERIFIER_ERROR);
        # over the wire every schema number is a float, so `multipleOf: 2` arrives as 2.0.
        ({"multipleOf": 2.0}, "1" * 400, "schema_violation"),
        ({"multipleOf": 2.0}, "2" * 400, ""),
        ({"multipleOf": 2}, "1" * 400, "schema_violation"),
        # 301 significant digits: no double holds them (attack 13, below), so invalid JSON
        ({"multipleOf": 0.5}, "1" * 300 + ".5", "invalid_json"),
        ({"multipleOf": 0.5}, "1" * 300, ""),  # an integer literal is exact: a multiple
        ({"multipleOf": 0.0001}, "0.0075", ""),  # the decimals as written, not the doubles
        ({"multipleOf": 0.01}, "19.99", ""),
        ({"multipleOf": 0.01}, "19.999", "schema_violation"),
        ({"type": "integer", "multipleOf": 0.123456789}, "1e308", "schema_violation"),
        ({"multipleOf": 3}, "true", ""),  # not a number: multipleOf does not apply
        # attack 13: a decimal literal with more digits than a double holds was rounded
        # silently, and the rounded value passed bounds the written value breaks
        ({"type": "number", "maximum": 1}, "1.0000000000000001", "invalid_json"),
        ({"type": "integer"}, "1.0000000000000001", "invalid_json"),
        ({"const": 1}, "1.00000000000000000000001", "invalid_json"),
        ({"type": "number", "maximum": 0}, "1e-400", "invalid_json"),  # underflows to 0.0
        ({"type": "integer"}, "0." + "0" * 400 + "1", "invalid_json"),
        ({"type": "number", "maximum": 1}, "1.0", ""),  # as many digits as needed: fine
        ({"type": "number", "maximum": 0.3}, "0.30000000000000004", "schema_violation"),
        ({"const": 0.1}, "0.1", ""),
        ({"type": "integer"}, "1e2", ""),
        ({"type": "number", "maximum": 0}, "-0.0", ""),
    ],
)
def test_numbers_beyond_a_double_are_verdicts(
    schema: dict[str, Any], completion: str, reason: str
) -> None:
    result = score(completion, schema)
    assert (result.status, result.reason) == (Status.OK, reason)
    assert result.score == (1.0 if reason == "" else 0.0)


@pytest.mark.parametrize(
    ("schema", "completion", "expected_score"),
    [
        # issue 13: a lone surrogate (JSON "\ud800") made RE2 raise UnicodeEncodeError, so the
        # completion earned VERIFIER_ERROR. It is matched as U+FFFD.
        ({"pattern": "^a"}, r'"\ud800"', 0.0),
        ({"pattern": "^.$"}, r'"\ud800"', 1.0),
        ({"pattern": "^a"}, r'"a\udfff"', 1.0),
        ({"patternProperties": {"^a": {"type": "integer"}}}, r'{"a\ud800": "x"}', 0.0),
        ({"patternProperties": {"^b": {}}, "additionalProperties": False}, r'{"\ud800": 1}', 0.0),
        ({"propertyNames": {"pattern": "^[a-z]+$"}}, r'{"\ud800": 1}', 0.0),
        ({"format": "regex"}, r'"\ud800"', 0.0),
        ({"enum": ["x"]}, r'"\ud800"', 0.0),
    ],
)
def test_lone_surrogates_are_verdicts(
    schema: dict[str, Any], completion: str, expected_score: float
) -> None:
    result = score(completion, schema, check_formats=True)
    assert (result.status, result.score) == (Status.OK, expected_score)
    json.dumps(result.details, ensure_ascii=False).encode("utf-8")  # protobuf must encode it


# A recursive schema whose unevaluatedItems re-evaluates both anyOf branches at every level:
# validation time doubles per level of nesting.
EXPONENTIAL = {
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


def test_exponential_validation_is_a_verdict_by_steps() -> None:
    result = score("[" * 40 + "]" * 40, EXPONENTIAL, max_validation_steps=10_000)
    assert (result.status, result.score, result.reason) == (Status.OK, 0.0, "too_complex")
    assert result.details["limit"] == "max_validation_steps"
    assert score("[[[]]]", EXPONENTIAL, max_validation_steps=10_000).score == 1.0


def test_exponential_validation_is_a_verdict_before_the_time_limit() -> None:
    # Half of timeout_s of validation, then a verdict: the worker pool's kill never comes.
    result = score("[" * 40 + "]" * 40, EXPONENTIAL, timeout_s=0.5)
    assert (result.status, result.reason, result.details["limit"]) == (
        Status.OK,
        "too_complex",
        "timeout_s",
    )


def test_the_validator_cache_is_bounded_by_schema_size_not_count() -> None:
    from verifier_server.verifiers.json_schema.schema import ValidatorCache

    cache = ValidatorCache(max_total_chars=1000, max_entry_chars=400)
    schemas = [json.dumps({"description": "x" * 300, "minimum": n}) for n in range(5)]
    compiled = [cache.get(schema, True) for schema in schemas]
    assert all(v.schema["minimum"] == n for n, v in enumerate(compiled))
    assert cache.total_chars <= 1000  # three of ~330 characters fit; the oldest went first
    huge = json.dumps({"description": "y" * 5000})
    cache.get(huge, True)  # compiled, not kept
    assert cache.total_chars <= 1000
    # A schema still cached is the same object; one pushed out is compiled anew.
    assert cache.get(schemas[-1], True) is cache.get(schemas[-1], True)
    assert cache.get(schemas[0], True) is not None
