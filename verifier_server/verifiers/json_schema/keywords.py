"""JSON Schema keywords replaced so that hostile input stays cheap, and the step budget that
every keyword evaluation is charged to (see verifier_server.verifiers.json_schema)."""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from decimal import Decimal
from fractions import Fraction
from typing import Any

from jsonschema import ValidationError, validators
from jsonschema.protocols import Validator

from verifier_server.types import JSON, truncate
from verifier_server.verifiers.text import compile_re2, utf8_safe


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


REPLACED_KEYWORDS = {
    "multipleOf": _multiple_of,
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
    "uniqueItems": _unique_items,
}


class TooComplex(Exception):
    """Validation used up its budget: `max_validation_steps`, or its share of `timeout_s`."""


class StepBudget(threading.local):
    remaining: int = 0
    deadline: float = math.inf  # time.monotonic()


budget = StepBudget()


def _counted(keyword: Callable[..., Iterator | None]) -> Callable[..., Iterator | None]:
    """Charges one step per keyword evaluation and checks the clock. Keywords that re-evaluate
    subschemas (anyOf under unevaluatedItems, nested $refs) can make validation exponential in
    the instance's depth: the budget turns that into a verdict, not a worker-pool TIMEOUT."""

    @functools.wraps(keyword)
    def charged(validator: Validator, value: Any, instance: Any, schema: dict) -> Any:
        budget.remaining -= 1
        if budget.remaining < 0 or time.monotonic() > budget.deadline:
            raise TooComplex
        return keyword(validator, value, instance, schema)

    return charged


@functools.cache
def hardened(validator_cls: type[Validator]) -> type[Validator]:
    keywords = {**validator_cls.VALIDATORS, **REPLACED_KEYWORDS}
    return validators.extend(
        validator_cls, {name: _counted(keyword) for name, keyword in keywords.items()}
    )
