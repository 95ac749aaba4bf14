"""The json_schema Verifier: extract the completion's JSON, check its bounds, validate it
under the reference schema within a step budget, and score it (see
verifier_server.verifiers.json_schema for the rules)."""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import referencing.exceptions
from jsonschema.protocols import Validator

from verifier_server.types import JSON, Item, Result, Status, truncate
from verifier_server.verifiers.base import InvalidItem, Verifier
from verifier_server.verifiers.json_schema.keywords import TooComplex, budget
from verifier_server.verifiers.json_schema.params import JsonSchemaParams
from verifier_server.verifiers.json_schema.parse import (
    largest_array_length,
    nesting_exceeds,
    parse_json,
)
from verifier_server.verifiers.json_schema.schema import compiled_validator
from verifier_server.verifiers.text import RegexError, extract_answer, missing_reason, utf8_safe

_ERRORS_IN_DETAILS = 3
# jsonschema spends several Python frames per keyword level: a recursive schema that wraps each
# level in a few keywords would exhaust the default limit (1000) at ~25 levels of nesting.
# 6000 fits max_depth 100 for such schemas and stays far from the C stack (8 MB; 20000 frames
# of jsonschema measured safe, main thread and worker thread alike).
_RECURSION_LIMIT = 6000
_VALIDATION_SHARE = 0.5  # of timeout_s: validation stops well in time to report a verdict


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
    """(requirements met, requirements) for scoring "fraction"; see the package docstring."""
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

        return _validated(item, schema, validator, instance, params, shown, start)


def _validated(
    item: Item,
    schema: dict,
    validator: Validator,
    instance: JSON,
    params: JsonSchemaParams,
    shown: dict[str, JSON],
    start: float,
) -> Result:
    """Validates the parsed `instance` within the step budget (from `start`) and scores it."""
    budget.remaining = params.max_validation_steps
    if sys.getrecursionlimit() < _RECURSION_LIMIT:
        sys.setrecursionlimit(_RECURSION_LIMIT)
    budget.deadline = start + _VALIDATION_SHARE * params.timeout_s
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
        limit = "max_validation_steps" if budget.remaining < 0 else "timeout_s"
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
    return Result(id=item.id, score=met / count, status=Status.OK, reason=reason, details=details)
