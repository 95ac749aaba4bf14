"""Tools an environment offers: async callables with a name, run with a timeout each.

`PythonTool` runs the model's code in the project's sandboxes (`sandboxes.SandboxPool`: own
namespaces, no network, memory/CPU/wall limits), never in the trainer's process. A
user-defined tool is any object with `name`, `description` and `async __call__(arguments)`
returning the text the model sees.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from rl_client.agentic.tool_calls import BadToolCall, ToolCall


class Tool(Protocol):
    name: str
    description: str

    async def __call__(self, arguments: dict[str, Any]) -> str: ...


@dataclass(frozen=True)
class ToolOutput:
    text: str  # what the model sees
    error: bool  # the call produced no tool output (counted in the run's metrics)


async def run_tool_call(
    call: ToolCall | BadToolCall, tools: dict[str, Tool], timeout_s: float, max_chars: int
) -> ToolOutput:
    """The tool's output for one call (truncated to `max_chars`), or an error message. A
    tool's exception or timeout is reported to the model, never raised: one bad call must not
    end the other episodes of the batch."""
    if isinstance(call, BadToolCall):
        return ToolOutput(f"error: {call.error}", error=True)
    tool = tools.get(call.name)
    if tool is None:
        known = ", ".join(sorted(tools))
        return ToolOutput(f"error: unknown tool {call.name!r}; tools: {known}", error=True)
    try:
        output = await asyncio.wait_for(tool(call.arguments), timeout_s)
    except TimeoutError:
        text = f"error: the tool {call.name!r} did not finish within {timeout_s:g} s"
        return ToolOutput(text, error=True)
    except (ValueError, KeyError, TypeError) as exc:  # bad arguments, by the tool's own check
        return ToolOutput(f"error: {call.name}: {exc}", error=True)
    if len(output) > max_chars:
        output = output[:max_chars] + f"\n[truncated: {len(output) - max_chars} more chars]"
    return ToolOutput(output, error=False)


class PythonTool:
    """`{"code": "..."}` -> the program's stdout (and stderr when it fails), run by the
    system's Python in a sandbox with `cpu_s` / `wall_s` / `memory_mb` limits."""

    name = "python"
    description = 'Runs Python code; arguments: {"code": str}; returns what it prints.'

    def __init__(
        self, *, slots: int = 2, cpu_s: float = 5.0, wall_s: float = 10.0, memory_mb: int = 256
    ) -> None:
        from sandboxes import Limits, SandboxPool

        self.limits = Limits(cpu_s=cpu_s, wall_s=wall_s, memory_mb=memory_mb)
        self._pool = SandboxPool(slots=slots)
        self._pool.start()
        self._lock = threading.Lock()  # the pool serves one caller at a time

    async def __call__(self, arguments: dict[str, Any]) -> str:
        code = arguments.get("code")
        if not isinstance(code, str):
            raise ValueError('arguments.code must be a string: {"code": "print(1)"}')
        return await asyncio.to_thread(self._run, code)

    def _run(self, code: str) -> str:
        from sandboxes import Outcome, Program

        program = Program(("/work/main.py",), files={"main.py": code.encode()}, runner="python")
        with self._lock:
            result = self._pool.run(program, self.limits)
        stdout = result.stdout.decode(errors="replace")
        if result.outcome is Outcome.OK:
            return stdout
        if result.outcome is Outcome.SANDBOX_ERROR:
            return f"error: the sandbox failed: {result.error}"
        stderr = result.stderr.decode(errors="replace")[-1000:]
        return f"{stdout}\n{result.outcome.value}\n{stderr}".strip()

    def close(self) -> None:
        self._pool.close()
