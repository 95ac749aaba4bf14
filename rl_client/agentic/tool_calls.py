"""Parsing `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks from a model turn."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_BLOCK = re.compile(re.escape(OPEN) + r"(.*?)" + re.escape(CLOSE), re.DOTALL)


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BadToolCall:
    """A block that is not a valid call; `error` is what the model is told."""

    error: str


def parse_tool_calls(text: str) -> list[ToolCall | BadToolCall]:
    """Every complete block in `text`, in order (an unclosed `<tool_call>` is not a call)."""
    calls: list[ToolCall | BadToolCall] = []
    for body in _BLOCK.findall(text):
        try:
            value = json.loads(body)
        except json.JSONDecodeError as exc:
            calls.append(BadToolCall(f"the tool call is not valid JSON: {exc.msg}"))
            continue
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            calls.append(BadToolCall('a tool call must be {"name": str, "arguments": {...}}'))
            continue
        arguments = value.get("arguments", {})
        if not isinstance(arguments, dict):
            calls.append(BadToolCall("tool call arguments must be a JSON object"))
            continue
        calls.append(ToolCall(value["name"], arguments))
    return calls
