"""A schema compiled into a hardened validator, after the checks that make it safe to use
(see verifier_server.verifiers.json_schema); cached, since rewards reuse a few schemas."""

from __future__ import annotations

import functools
import json
from collections import OrderedDict
from collections.abc import Callable

import referencing
from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator

from verifier_server.types import truncate
from verifier_server.verifiers.base import InvalidItem
from verifier_server.verifiers.json_schema.formats import FORMAT_CHECKS
from verifier_server.verifiers.json_schema.keywords import hardened
from verifier_server.verifiers.json_schema.walk import in_place_ref_cycle, subschemas
from verifier_server.verifiers.text import RegexError, compile_re2

# An empty registry without `retrieve`: a `$ref` outside the schema and the meta-schemas that
# jsonschema adds is Unresolvable. (jsonschema's default registry fetches remote URLs.)
_NO_RETRIEVAL = referencing.Registry()


def _check_patterns(schema: dict) -> None:
    """Every pattern must compile under RE2; see verifier_server.verifiers.json_schema for
    the one banned pair."""
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
    """Our own checks (verifier_server.verifiers.json_schema.formats) for every draft."""
    checker = FormatChecker(formats=())
    for name, check in FORMAT_CHECKS.items():
        checker.checks(name)(_format_check(check))
    return checker


class ValidatorCache:
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


_validators = ValidatorCache(max_total_chars=16 << 20, max_entry_chars=1 << 20)


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
    return hardened(validator_cls)(schema, registry=_NO_RETRIEVAL, format_checker=format_checker)


def compiled_validator(schema: dict, *, check_formats: bool) -> Validator:
    """A validator for `schema`; raises InvalidItem("reference", …) if the schema is unusable."""
    try:
        canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise InvalidItem("reference", "contains NaN or Infinity, which JSON has not") from None
    return _validators.get(canonical, check_formats)
