"""The "json_schema" verifier: is the completion's JSON valid under the schema `item.reference`?

The reference is a JSON Schema object, validated per Draft 2020-12 unless its `$schema` names
another draft (an unknown `$schema` also means 2020-12). An invalid schema, an unresolvable or
remote `$ref`, or a `pattern` RE2 cannot compile is an invalid item; the completion's faults are
OK results scored 0.0: "missing_fenced_block"/"missing_answer_tag", "too_large", "too_deep",
"invalid_json", "too_complex", "schema_violation". Nothing a completion holds gives a non-OK
status (a masked item would be "no penalty": a reward hack).

`scoring` "binary": 1.0 if valid, else 0.0. "fraction": the share of requirements met, where the
requirements are (a) each name in the top-level `required` list, met when the instance is an
object holding it with a value valid under the top-level `properties[name]` (if any), and (b) the
whole instance being valid. So a valid instance scores 1.0, an invalid one at most n/(n+1), and
adding optional properties cannot raise the score. Without a top-level `required` it is binary.

Guarantees against hostile completions and schemas (the worker pool also kills items past
`timeout_s`):
- no network: `$ref` resolves only inside the schema and the bundled meta-schemas;
- regexes (`pattern`, `patternProperties`, and `additionalProperties`, which jsonschema matches
  against `patternProperties` with Python's `re`) run on RE2, so `(a+)+$` cannot backtrack;
  every pattern in every subschema (found by keyword, whatever the key order or draft) is
  compiled before the completion is read; a schema combining `unevaluatedProperties` with
  `patternProperties` is rejected, because jsonschema evaluates that pair with Python's `re` in
  code that cannot be swapped out; a lone surrogate in a string (JSON `"\\ud800"`), which RE2's
  UTF-8 cannot hold, is matched as U+FFFD;
- JSON text longer than `max_json_chars`, nested deeper than `max_depth` (checked by a linear
  scan before parsing, so no RecursionError) or with an array longer than `max_items` is
  scored 0.0 without validating; `uniqueItems` hashes elements instead of jsonschema's
  quadratic pairwise comparison;
- a `$ref` cycle through keywords that apply to the same instance (allOf, anyOf, not, if, …)
  would recurse forever whatever the completion: it is an invalid reference, found before
  validating; any other recursion follows the instance's nesting, so running out of stack
  (past a raised limit of 6000 frames) is "too_deep";
- validation is charged one step per keyword evaluation: past `max_validation_steps`, or past
  half of `timeout_s` spent validating (schemas whose `unevaluatedItems` or `$ref`s re-evaluate
  subschemas can take time exponential in the instance's depth), the item is "too_complex";
- NaN/Infinity, number literals beyond a double's range (`1e400`, which would otherwise be
  infinity and satisfy every `minimum`), decimal literals a double cannot hold as written
  (`1.0000000000000001` would be 1.0 and pass `maximum: 1` and `type: integer`; `1e-400`
  would be 0.0), integers over Python's 4300-digit limit and duplicate object keys are invalid
  JSON (plain json.loads accepts NaN/Infinity, makes 1e400 infinite, rounds silently and keeps
  the last duplicate); so every number the keywords see is finite and the one written;
- `multipleOf` is exact on the decimals as written (0.0075 is a multiple of 0.0001), with no
  float division to overflow on a 400-digit integer.
`format` is an annotation unless `check_formats` is set; then date, email, idn-email,
hostname, idn-hostname, ipv4, ipv6, uuid and regex (RE2 syntax) are asserted, per
`verifier_server.verifiers.json_formats`; other formats pass.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from fractions import Fraction
from typing import Any, Literal

import referencing
import referencing.exceptions
from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator
from pydantic import Field

from verifier_server.types import JSON, Item, Result, Status, truncate
from verifier_server.verifiers.base import InvalidItem, TimedParams, Verifier
from verifier_server.verifiers.json_formats import FORMAT_CHECKS
from verifier_server.verifiers.json_schema_walk import in_place_ref_cycle, subschemas
from verifier_server.verifiers.text import (
    EXTRACT_DESCRIPTION,
    ExtractMethod,
    RegexError,
    compile_re2,
    extract_answer,
    missing_reason,
    utf8_safe,
)

_ERRORS_IN_DETAILS = 3
# jsonschema spends several Python frames per keyword level: a recursive schema that wraps each
# level in a few keywords would exhaust the default limit (1000) at ~25 levels of nesting.
# 6000 fits max_depth 100 for such schemas and stays far from the C stack (8 MB; 20000 frames
# of jsonschema measured safe, main thread and worker thread alike).
_RECURSION_LIMIT = 6000
_VALIDATION_SHARE = 0.5  # of timeout_s: validation stops well in time to report a verdict


class JsonSchemaParams(TimedParams):
    timeout_s: float = Field(
        default=5.0, gt=0, le=300, description="Per-item time limit; past it the item is TIMEOUT."
    )
    extract: ExtractMethod = Field(default="auto", description=EXTRACT_DESCRIPTION)
    scoring: Literal["binary", "fraction"] = Field(
        default="binary",
        description=(
            "binary: 1.0 if valid else 0.0. fraction: (top-level required properties present "
            "and valid + 1 if the whole instance is valid) / (number required + 1)."
        ),
    )
    check_formats: bool = Field(
        default=False, description="Assert the 'format' keyword instead of ignoring it."
    )
    max_json_chars: int = Field(
        default=1_000_000, gt=0, description="Longer extracted JSON text scores 0 ('too_large')."
    )
    max_depth: int = Field(
        default=64,
        ge=1,
        le=100,
        description="Deeper array/object nesting scores 0 ('too_deep') without parsing.",
    )
    max_items: int = Field(
        default=10_000, ge=1, description="A longer array anywhere scores 0 ('too_large')."
    )
    max_validation_steps: int = Field(
        default=1_000_000,
        ge=1,
        description="Keyword evaluations allowed per item; past it the completion scores 0 "
        "('too_complex'), deterministically, before the time limit can make it TIMEOUT.",
    )


# 1. Keywords replaced so that hostile input stays cheap.


def _pattern(validator: Validator, pattern: str, instance: Any, schema: dict) -> Iterator:
    if not validator.is_type(instance, "string"):
        return
    if compile_re2(pattern).search(utf8_safe(instance)) is None:
        yield ValidationError(
            f"{truncate(instance, 80)!r} does not match {truncate(pattern, 80)!r}"
        )


def _pattern_properties(
    validator: Validator, pattern_properties: dict, instance: Any, schema: dict
) -> Iterator:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pattern_properties.items():
        regex = compile_re2(pattern)
        for key, value in instance.items():
            if regex.search(utf8_safe(key)) is not None:
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(
    validator: Validator, additional: Any, instance: Any, schema: dict
) -> Iterator:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = [compile_re2(pattern) for pattern in schema.get("patternProperties", {})]
    extras = [
        key
        for key in instance
        if key not in properties and not any(p.search(utf8_safe(key)) is not None for p in patterns)
    ]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif additional is False and extras:
        names = ", ".join(repr(truncate(extra, 80)) for extra in extras[:5])
        yield ValidationError(f"Additional properties are not allowed ({names} unexpected)")


def _equality_key(value: JSON) -> Hashable:
    """Equal for values jsonschema calls equal: 1 == 1.0, but true != 1, key order ignored."""
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, list):
        return ("array", tuple(_equality_key(element) for element in value))
    return ("object", frozenset((key, _equality_key(item)) for key, item in value.items()))


def _unique_items(validator: Validator, unique: bool, instance: Any, schema: dict) -> Iterator:
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[Hashable] = set()
    for index, element in enumerate(instance):
        key = _equality_key(element)
        if key in seen:
            yield ValidationError(f"array has non-unique elements (item {index} repeats)")
            return
        seen.add(key)


def _exact(number: int | float) -> Fraction:
    """The number as written in decimal: 0.1 is 1/10, not the double nearest to it."""
    return Fraction(number) if isinstance(number, int) else Fraction(Decimal(repr(number)))


def _multiple_of(validator: Validator, divisor: float, instance: Any, schema: dict) -> Iterator:
    # jsonschema divides as floats: OverflowError for a 400-digit integer against a float
    # divisor (and over the wire every schema number is a float: `multipleOf: 2` is 2.0).
    # Exact decimal arithmetic instead; instances are finite (see parse_json).
    if not validator.is_type(instance, "number"):
        return
    if (_exact(instance) / _exact(divisor)).denominator != 1:
        yield ValidationError(f"{truncate(repr(instance), 80)} is not a multiple of {divisor}")


_REPLACED_KEYWORDS = {
    "multipleOf": _multiple_of,
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
    "uniqueItems": _unique_items,
}

# An empty registry without `retrieve`: a `$ref` outside the schema and the meta-schemas that
# jsonschema adds is Unresolvable. (jsonschema's default registry fetches remote URLs.)
_NO_RETRIEVAL = referencing.Registry()


# 2. Compiling a schema into a validator (cached: rewards reuse a few schemas).


def _check_patterns(schema: dict) -> None:
    """Every pattern must compile under RE2; see the module docstring for the one banned pair."""
    keywords_seen: set[str] = set()
    for subschema in subschemas(schema):
        pattern_properties = subschema.get("patternProperties", {})
        patterns = list(pattern_properties) if isinstance(pattern_properties, dict) else []
        if isinstance(subschema.get("pattern"), str):
            patterns.append(subschema["pattern"])
        for pattern in patterns:
            try:
                compile_re2(pattern)
            except RegexError as exc:
                message = f"pattern {truncate(pattern, 100)!r}: {exc}"
                raise InvalidItem("reference", message) from None
        keywords_seen.update(subschema.keys() & {"patternProperties", "unevaluatedProperties"})
    if len(keywords_seen) == 2:
        raise InvalidItem(
            "reference",
            "unevaluatedProperties together with patternProperties is not supported "
            "(jsonschema matches that pair with Python's backtracking re)",
        )


def _format_check(check: Callable[[str], bool]) -> Callable[[object], bool]:
    return lambda value: not isinstance(value, str) or check(value)


@functools.cache
def _format_checker() -> FormatChecker:
    """Our own checks (verifier_server.verifiers.json_formats) for every draft."""
    checker = FormatChecker(formats=())
    for name, check in FORMAT_CHECKS.items():
        checker.checks(name)(_format_check(check))
    return checker


class TooComplex(Exception):
    """Validation used up its budget: `max_validation_steps`, or its share of `timeout_s`."""


class _StepBudget(threading.local):
    remaining: int = 0
    deadline: float = math.inf  # time.monotonic()


_budget = _StepBudget()


def _counted(keyword: Callable[..., Iterator | None]) -> Callable[..., Iterator | None]:
    """Charges one step per keyword evaluation and checks the clock. Keywords that re-evaluate
    subschemas (anyOf under unevaluatedItems, nested $refs) can make validation exponential in
    the instance's depth: the budget turns that into a verdict, not a worker-pool TIMEOUT."""

    @functools.wraps(keyword)
    def charged(validator: Validator, value: Any, instance: Any, schema: dict) -> Any:
        _budget.remaining -= 1
        if _budget.remaining < 0 or time.monotonic() > _budget.deadline:
            raise TooComplex
        return keyword(validator, value, instance, schema)

    return charged


@functools.cache
def _hardened(validator_cls: type[Validator]) -> type[Validator]:
    keywords = {**validator_cls.VALIDATORS, **_REPLACED_KEYWORDS}
    return validators.extend(
        validator_cls, {name: _counted(keyword) for name, keyword in keywords.items()}
    )


class _ValidatorCache:
    """Compiled validators by schema text, least recently used first out, bounded in the
    schemas' total size: a count bound alone let five 50 MB schemas keep 700 MB alive."""

    def __init__(self, max_total_chars: int, max_entry_chars: int) -> None:
        self._entries: OrderedDict[tuple[str, bool], Validator] = OrderedDict()
        self._total = 0
        self.max_total_chars = max_total_chars
        self.max_entry_chars = max_entry_chars

    def get(self, canonical_schema: str, check_formats: bool) -> Validator:
        key = (canonical_schema, check_formats)
        validator = self._entries.get(key)
        if validator is not None:
            self._entries.move_to_end(key)
            return validator
        validator = _compile(canonical_schema, check_formats)
        if len(canonical_schema) <= self.max_entry_chars:  # a huge schema is compiled each time
            self._entries[key] = validator
            self._total += len(canonical_schema)
            while self._total > self.max_total_chars:
                (old_schema, _), _ = self._entries.popitem(last=False)
                self._total -= len(old_schema)
        return validator

    @property
    def total_chars(self) -> int:
        return self._total


_validators = _ValidatorCache(max_total_chars=16 << 20, max_entry_chars=1 << 20)


def _compile(canonical_schema: str, check_formats: bool) -> Validator:
    schema = json.loads(canonical_schema)
    validator_cls = validators.validator_for(schema, default=Draft202012Validator)
    try:
        validator_cls.check_schema(schema)
    except SchemaError as exc:
        raise InvalidItem(
            "reference", f"invalid schema at {exc.json_path}: {truncate(exc.message, 300)}"
        ) from None
    except RecursionError:
        raise InvalidItem("reference", "schema or one of its patterns nests too deeply") from None
    _check_patterns(schema)
    cycle = in_place_ref_cycle(schema)
    if cycle is not None:
        raise InvalidItem(
            "reference",
            f"$ref {truncate(cycle, 100)!r} closes a cycle that never descends into the "
            "instance: validating would recurse forever",
        )
    format_checker = _format_checker() if check_formats else None
    return _hardened(validator_cls)(schema, registry=_NO_RETRIEVAL, format_checker=format_checker)


def compiled_validator(schema: dict, *, check_formats: bool) -> Validator:
    """A validator for `schema`; raises InvalidItem("reference", …) if the schema is unusable."""
    try:
        canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise InvalidItem("reference", "contains NaN or Infinity, which JSON has not") from None
    return _validators.get(canonical, check_formats)


# 3. Reading the completion's JSON within bounds.

_JSON_STRUCTURE = re.compile(r'[\[\]{}"\\]')  # one character class: a linear scan, no backtracking


def nesting_exceeds(text: str, max_depth: int) -> bool:
    """Whether arrays/objects in JSON `text` nest deeper than `max_depth` (strings skipped)."""
    if text.count("[") + text.count("{") <= max_depth:
        return False
    depth, in_string, escaped_at = 0, False, -1
    for match in _JSON_STRUCTURE.finditer(text):
        position, char = match.start(), match.group()
        if position == escaped_at:
            continue
        if in_string:
            if char == "\\":
                escaped_at = position + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > max_depth:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _object_without_duplicate_keys(pairs: list[tuple[str, JSON]]) -> dict[str, JSON]:
    result: dict[str, JSON] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {truncate(key, 80)!r}")
        result[key] = value
    return result


def _finite_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):  # 1e400: infinity would satisfy every `minimum`
        raise ValueError(f"number {truncate(literal, 40)} is out of range for a double")
    if Decimal(literal) != Decimal(repr(value)):
        # 1.0000000000000001 is read as 1.0 and 1e-400 as 0.0: each would then pass
        # `maximum: 1` (or `maximum: 0`), `const: 1` and `type: integer`, which its value does not
        raise ValueError(
            f"number {truncate(literal, 40)} has more digits than a double holds "
            f"(it would be compared as {value!r})"
        )
    return value


def parse_json(text: str) -> JSON:
    """json.loads, strict: no NaN/Infinity, no number literal beyond a double's range (1e400)
    or with more digits than a double holds (1.0000000000000001), no duplicate keys. Raises
    ValueError."""
    return json.loads(
        text,
        parse_constant=_reject_constant,
        parse_float=_finite_float,
        object_pairs_hook=_object_without_duplicate_keys,
    )


def largest_array_length(value: JSON) -> int:
    """The length of the longest array anywhere in `value` (iterative: depth is already bounded)."""
    largest, stack = 0, [value]
    while stack:
        current = stack.pop()
        if isinstance(current, list):
            largest = max(largest, len(current))
            stack.extend(current)
        elif isinstance(current, dict):
            stack.extend(current.values())
    return largest


# 4. Validating.


@contextmanager
def _schema_faults_as_invalid_item() -> Iterator[None]:
    """Reference problems that only show while validating are the caller's, not the model's."""
    try:
        yield
    except referencing.exceptions.Unresolvable as exc:
        raise InvalidItem("reference", f"cannot resolve $ref: {truncate(str(exc), 200)}") from None
    except RegexError as exc:  # every pattern was compiled up front; this is a safety net
        raise InvalidItem("reference", str(exc)) from None


def _fraction(validator: Validator, instance: JSON, schema: dict, valid: bool) -> tuple[int, int]:
    """(requirements met, requirements) for scoring "fraction"; see the module docstring."""
    required = schema.get("required")
    names = required if isinstance(required, list) else []  # draft 3's boolean form: ignored
    properties = schema.get("properties", {})
    met = int(valid)
    for name in names:
        if isinstance(instance, dict) and name in instance:
            subschema = properties.get(name, True) if isinstance(properties, dict) else True
            errors = validator.descend(instance[name], subschema, path=name)
            met += next(errors, None) is None
    return met, len(names) + 1


def _zero(item: Item, reason: str, **details: JSON) -> Result:
    return Result(id=item.id, score=0.0, status=Status.OK, reason=reason, details=details)


class JsonSchemaVerifier(Verifier):
    name = "json_schema"
    description = "1.0 if the completion's JSON is valid under the reference JSON Schema."
    Params = JsonSchemaParams
    execution = "process"

    def score_one(self, item: Item, params: JsonSchemaParams) -> Result:
        start = time.monotonic()
        schema = item.reference
        if not isinstance(schema, dict):
            kind = type(schema).__name__
            raise InvalidItem("reference", f"must be a JSON Schema object, got {kind}")
        validator = compiled_validator(schema, check_formats=params.check_formats)

        extraction = extract_answer(item.completion, params.extract)
        if extraction is None:
            return _zero(item, missing_reason(params.extract))
        text = extraction.text
        shown = {"extracted": truncate(text, 200), "source": extraction.source}
        if len(text) > params.max_json_chars:
            return _zero(item, "too_large", limit="max_json_chars", chars=len(text), **shown)
        if nesting_exceeds(text, params.max_depth):
            return _zero(item, "too_deep", limit="max_depth", **shown)
        try:
            instance = parse_json(text)
        except ValueError as exc:
            return _zero(item, "invalid_json", error=truncate(str(exc), 200), **shown)
        if largest_array_length(instance) > params.max_items:
            return _zero(item, "too_large", limit="max_items", **shown)

        _budget.remaining = params.max_validation_steps
        if sys.getrecursionlimit() < _RECURSION_LIMIT:
            sys.setrecursionlimit(_RECURSION_LIMIT)
        _budget.deadline = start + _VALIDATION_SHARE * params.timeout_s
        try:
            with _schema_faults_as_invalid_item():
                errors = list(itertools.islice(validator.iter_errors(instance), _ERRORS_IN_DETAILS))
                met, count = (
                    _fraction(validator, instance, schema, valid=not errors)
                    if params.scoring == "fraction"
                    else (int(not errors), 1)
                )
        except RecursionError:
            # In-place $ref cycles are refused up front, so the recursion follows the
            # instance's nesting: schemas that wrap each level in several keywords run out
            # of Python's stack before max_depth. The completion's depth, so a verdict.
            return _zero(item, "too_deep", limit="recursion", **shown)
        except TooComplex:
            limit = "max_validation_steps" if _budget.remaining < 0 else "timeout_s"
            return _zero(item, "too_complex", limit=limit, **shown)
        details: dict[str, JSON] = dict(shown)
        if errors:
            details["errors"] = [  # paths and messages may quote the completion's strings
                {
                    "path": utf8_safe(error.json_path),
                    "message": utf8_safe(truncate(error.message, 200)),
                }
                for error in errors
            ]
        if params.scoring == "fraction":
            details.update(requirements_met=met, requirements=count)
        reason = "schema_violation" if errors else ""
        return Result(
            id=item.id, score=met / count, status=Status.OK, reason=reason, details=details
        )
