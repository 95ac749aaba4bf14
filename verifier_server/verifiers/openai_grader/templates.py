"""OpenAI's grader templates: `{{ sample.output_text }}`, `{{ item.answer }}`,
`{{ item.a.b[0] }}` (a JSON-path-like walk). Two namespaces: `sample`, the completion
(`output_text`, and `output_json` when the completion parses as JSON nested at most 200
deep), and `item`, the item's `reference` when it is a JSON object (else
`{"reference": reference}`).

A missing `item` path is the caller's error; a missing `sample` path renders as "" (a
completion that is not the JSON the template expected must score, not fail). Strings render
as they are, other values as compact JSON; a lone surrogate renders as U+FFFD.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

from verifier_server.verifiers.text import utf8_safe

_TAG = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_PATH = re.compile(r"(sample|item)((?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])+)\Z")
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")
SAMPLE_FIELDS = ("output_text", "output_json")


class TemplateError(ValueError):
    """A template this server cannot render (a bad variable, or data missing from the item)."""


def check_template(template: str) -> None:
    """Raises TemplateError for a variable other than `sample.output_text`, `sample.output_json`
    or `item.<path>`."""
    for match in _TAG.finditer(template):
        steps = _parse(match.group(1))
        if steps[0] == "sample" and steps[1] not in SAMPLE_FIELDS:
            raise TemplateError(
                f"{{{{ {match.group(1)} }}}}: sample has only {list(SAMPLE_FIELDS)} here"
            )


def render(template: str, sample: dict[str, Any], item: dict[str, Any]) -> str:
    def value(match: re.Match[str]) -> str:
        steps = _parse(match.group(1))
        current: Any = sample if steps[0] == "sample" else item
        for step in steps[1:]:
            found = _step(current, step)
            if found is _MISSING:
                if steps[0] == "sample":
                    return ""
                raise TemplateError(f"{{{{ {match.group(1)} }}}}: the item has no {step!r} there")
            current = found
        return current if isinstance(current, str) else json.dumps(current, ensure_ascii=False)

    # A lone surrogate (JSON's "\ud800" in output_json) cannot be sent as UTF-8 to a model.
    return utf8_safe(_TAG.sub(value, template))


def sample_namespace(completion: str) -> dict[str, Any]:
    """`output_json` only for JSON nested at most _MAX_JSON_DEPTH deep: deeper JSON makes
    json.loads (or the json.dumps that renders it or hands it to a python grader) raise
    RecursionError, which must not fail the item, let alone its batch."""
    sample: dict[str, Any] = {"output_text": completion}
    with contextlib.suppress(ValueError, RecursionError):  # not JSON: output_json renders ""
        value = json.loads(completion)
        if _nested_within(value, _MAX_JSON_DEPTH):
            sample["output_json"] = value
    return sample


def item_namespace(reference: Any) -> dict[str, Any]:
    return reference if isinstance(reference, dict) else {"reference": reference}


_MISSING = object()
_MAX_JSON_DEPTH = 200  # far inside Python's recursion limit (1000), which json counts against


def _nested_within(value: Any, limit: int) -> bool:
    """Whether no list or dict in `value` is nested more than `limit` deep (iteratively)."""
    stack = [(value, 0)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, list | dict):
            if depth == limit:
                return False
            children = current.values() if isinstance(current, dict) else current
            stack.extend((child, depth + 1) for child in children)
    return True


def _parse(expression: str) -> list[str | int]:
    match = _PATH.match(expression)
    if match is None:
        raise TemplateError(
            f"{{{{ {expression} }}}}: expected {{{{ sample.<field> }}}} or {{{{ item.<path> }}}}"
        )
    steps: list[str | int] = [match.group(1)]
    for name, index in _STEP.findall(match.group(2)):
        steps.append(name if name else int(index))
    return steps


def _step(current: Any, step: str | int) -> Any:
    if isinstance(step, int):
        return current[step] if isinstance(current, list) and step < len(current) else _MISSING
    return current.get(step, _MISSING) if isinstance(current, dict) else _MISSING
