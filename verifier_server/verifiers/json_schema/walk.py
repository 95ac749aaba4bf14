"""Walking a JSON Schema's subschemas by keyword, for the checks made before validating.

- `subschemas`: every object subschema, found by the keywords that hold schemas in any draft
  jsonschema supports (3 to 2020-12), whatever the key order; values under other keywords
  (enum, const, examples, unknown keywords) are data and are not visited.
- `in_place_ref_cycle`: a `$ref` cycle through keywords that apply to the *same* instance
  (allOf, anyOf, oneOf, not, if/then/else, dependentSchemas, $ref), which would recurse forever
  whatever the instance. Only local refs (`#`, `#/json/pointer`) are followed: the check is for
  the caller's feedback, and validation itself turns any recursion into a verdict.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import unquote

# Where subschemas live, in any draft jsonschema supports (3 to 2020-12). Values under other
# keywords (enum, const, examples, unknown keywords) are data, never evaluated as schemas.
_SCHEMA_KEYWORDS = frozenset(
    {
        "additionalItems", "additionalProperties", "contains", "contentSchema", "else", "if",
        "items", "not", "propertyNames", "then", "unevaluatedItems", "unevaluatedProperties",
        "extends",
    }
)  # fmt: skip
_SCHEMA_LIST_KEYWORDS = frozenset(
    {"allOf", "anyOf", "oneOf", "prefixItems", "items", "extends", "type", "disallow"}
)  # `items` as an array before 2020-12; `type`/`disallow` may hold schemas in draft 3
_SCHEMA_MAP_KEYWORDS = frozenset(
    {"$defs", "definitions", "dependentSchemas", "dependencies", "patternProperties", "properties"}
)  # `dependencies` values may also be arrays of names (draft 4-7): skipped, not schemas


def subschemas(schema: dict) -> Iterator[dict]:
    """Every object subschema of `schema` (itself included), whatever the key order."""
    stack: list[object] = [schema]
    while stack:
        current = stack.pop()
        if not isinstance(current, dict):
            continue  # a boolean schema, or an array of names under `dependencies`
        yield current
        for keyword, value in current.items():
            if keyword in _SCHEMA_KEYWORDS and isinstance(value, dict):
                stack.append(value)
            elif keyword in _SCHEMA_LIST_KEYWORDS and isinstance(value, list):
                stack.extend(value)
            elif keyword in _SCHEMA_MAP_KEYWORDS and isinstance(value, dict):
                stack.extend(value.values())


_IN_PLACE = frozenset({"not", "if", "then", "else"})
_IN_PLACE_LISTS = frozenset({"allOf", "anyOf", "oneOf"})
_IN_PLACE_MAPS = frozenset({"dependentSchemas", "dependencies"})


def _resolve_local(root: dict, ref: str) -> object:
    """The target of a local `$ref` ("#" or "#/a/b"), or None when it is not one or is missing."""
    if ref == "#":
        return root
    if not ref.startswith("#/"):
        return None
    target: object = root
    for token in ref[2:].split("/"):
        token = unquote(token).replace("~1", "/").replace("~0", "~")
        if isinstance(target, dict) and token in target:
            target = target[token]
        elif isinstance(target, list) and token.isdigit() and int(token) < len(target):
            target = target[int(token)]
        else:
            return None
    return target


def _in_place_edges(root: dict, schema: dict) -> Iterator[tuple[dict, str | None]]:
    """(subschema applied to the same instance, the $ref that leads there or None)."""
    for keyword, value in schema.items():
        if keyword in _IN_PLACE and isinstance(value, dict):
            yield value, None
        elif keyword in _IN_PLACE_LISTS and isinstance(value, list):
            yield from ((element, None) for element in value if isinstance(element, dict))
        elif keyword in _IN_PLACE_MAPS and isinstance(value, dict):
            yield from ((v, None) for v in value.values() if isinstance(v, dict))
        elif keyword == "$ref" and isinstance(value, str):
            target = _resolve_local(root, value)
            if isinstance(target, dict):
                yield target, value


def in_place_ref_cycle(root: dict) -> str | None:
    """The `$ref` that closes an in-place cycle (see the module docstring), or None."""
    state: dict[int, int] = {}  # id(subschema) -> 1 while on the DFS path, 2 when done
    for start in subschemas(root):
        if id(start) in state:
            continue
        state[id(start)] = 1
        stack = [(start, _in_place_edges(root, start))]
        while stack:
            node, edges = stack[-1]
            for child, ref in edges:
                seen = state.get(id(child))
                if seen == 1:
                    return ref if ref is not None else "#"
                if seen is None:
                    state[id(child)] = 1
                    stack.append((child, _in_place_edges(root, child)))
                    break
            else:
                state[id(node)] = 2
                stack.pop()
    return None
