"""Reading the completion's JSON within bounds: nesting checked before parsing, strict
numbers, no duplicate keys, and the longest array measured."""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal

from verifier_server.types import JSON, truncate

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
