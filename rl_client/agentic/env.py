"""The environment interface of a multi-turn episode, and the tool-calling environment.

An episode: `reset(row)`, then for each model turn `await step(turn_text)`, which answers
with the text the model sees next (tool outputs), or says the episode is done. The final
reward comes from the reward server, for the row's reward spec and the final turn's text.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from rl_client.agentic.tool_calls import parse_tool_calls
from rl_client.agentic.tools import PythonTool, Tool, run_tool_call
from rl_client.data import PromptRow


@dataclass(frozen=True)
class Observation:
    text: str | None  # what the model sees next; None when done
    done: bool
    # What the step's tools did, for the run's metrics (an environment without tools: 0).
    tool_calls: int = 0
    tool_errors: int = 0
    tool_time_s: float = 0.0


class Environment(Protocol):
    def reset(self, row: PromptRow) -> None:
        """Starts an episode for the prompt `row`."""
        ...

    async def step(self, turn_text: str) -> Observation:
        """The model's turn -> the next observation, or done."""
        ...


class ToolEnvironment:
    """Runs the tool calls of each turn (concurrently, `timeout_s` each); a turn with no tool
    call is the final answer and ends the episode. The outputs of a turn's calls come back
    as one observation: a JSON list of {"name", "output"}."""

    def __init__(self, tools: dict[str, Tool], *, timeout_s: float, max_chars: int) -> None:
        self.tools = tools
        self.timeout_s = timeout_s
        self.max_chars = max_chars
        self.row: PromptRow | None = None
        self.calls = 0

    def reset(self, row: PromptRow) -> None:
        self.row, self.calls = row, 0

    async def step(self, turn_text: str) -> Observation:
        calls = parse_tool_calls(turn_text)
        if not calls:
            return Observation(None, done=True)
        self.calls += len(calls)
        began = time.perf_counter()
        outputs = await asyncio.gather(
            *(run_tool_call(c, self.tools, self.timeout_s, self.max_chars) for c in calls)
        )
        names = [getattr(c, "name", "?") for c in calls]
        shown = [{"name": n, "output": o.text} for n, o in zip(names, outputs, strict=True)]
        return Observation(
            json.dumps(shown),
            done=False,
            tool_calls=len(calls),
            tool_errors=sum(o.error for o in outputs),
            tool_time_s=time.perf_counter() - began,
        )


EnvironmentFactory = Callable[[], Environment]


class MathPython:
    """The example environment: math questions, a sandboxed Python tool, the final answer in
    \\boxed{} scored by the row's reward (the `math` verifier). Call it for each episode's
    environment; one sandbox pool serves them all."""

    def __init__(self, *, timeout_s: float, max_chars: int) -> None:
        self.timeout_s, self.max_chars = timeout_s, max_chars
        self.python = PythonTool(slots=2, wall_s=min(timeout_s, 10.0))

    def __call__(self) -> Environment:
        return ToolEnvironment(
            {"python": self.python}, timeout_s=self.timeout_s, max_chars=self.max_chars
        )

    def close(self) -> None:
        self.python.close()


MATH_PYTHON_SYSTEM_PROMPT = (
    "Solve the problem. You may run Python by writing "
    '<tool_call>{"name": "python", "arguments": {"code": "print(2 + 3)"}}</tool_call>; '
    "its output comes back as a tool message. Give the final answer in \\boxed{}."
)

BUILTIN: dict[str, Callable[..., EnvironmentFactory]] = {"math_python": MathPython}


def environment_factory(name: str, *, timeout_s: float, max_chars: int) -> EnvironmentFactory:
    """A built-in environment by name, or `package.module:function` returning a factory
    (called with timeout_s and max_chars)."""
    if name in BUILTIN:
        return BUILTIN[name](timeout_s=timeout_s, max_chars=max_chars)
    module, sep, attribute = name.partition(":")
    if not sep:
        raise ValueError(
            f"rollout.agent.environment: unknown {name!r}; built-in: {', '.join(BUILTIN)}, "
            "or 'package.module:function'"
        )
    make = getattr(importlib.import_module(module), attribute)
    return make(timeout_s=timeout_s, max_chars=max_chars)
