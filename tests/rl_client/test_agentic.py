"""Multi-turn tool-calling rollouts: the call format, tools with timeouts, the sandboxed
Python tool, the loop's token-in token-out contexts and loss masks, the turn limit, and a
training run with the math + Python environment against a real reward server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from rl_helpers import train_settings, write_prompts

from rl_client.agentic.env import MATH_PYTHON_SYSTEM_PROMPT, MathPython, ToolEnvironment
from rl_client.agentic.loop import AgentLoop, episode_metrics
from rl_client.agentic.tool_calls import BadToolCall, ToolCall, parse_tool_calls
from rl_client.agentic.tools import ToolOutput, run_tool_call
from rl_client.batch import build_batch
from rl_client.config import TrainConfig, build_config
from rl_client.data import PromptRow
from rl_client.engines.base import Completion, SamplingParams
from rl_client.engines.versioned import VersionedEngine
from rl_client.models import load_tokenizer
from rl_client.rollout import Group
from rl_client.trainer import train
from verifier_server.types import Result, RewardSpec

ROW = PromptRow("q", (), RewardSpec("math"), "42")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('<tool_call>{"name": "python", "arguments": {"code": "1"}}</tool_call>',
         [ToolCall("python", {"code": "1"})]),
        ('a <tool_call>{"name": "f"}</tool_call> b <tool_call>{"name": "g", "arguments": {}}'
         "</tool_call>", [ToolCall("f"), ToolCall("g")]),
        ("no call here \\boxed{3}", []),
        ('<tool_call>{"name": "f"', []),  # unclosed: not a call
        ("<tool_call>{name: f}</tool_call>", [BadToolCall("the tool call is not valid JSON: "
                                                          "Expecting property name enclosed in "
                                                          "double quotes")]),
        ('<tool_call>["f"]</tool_call>',
         [BadToolCall('a tool call must be {"name": str, "arguments": {...}}')]),
        ('<tool_call>{"name": "f", "arguments": [1]}</tool_call>',
         [BadToolCall("tool call arguments must be a JSON object")]),
    ],
)  # fmt: skip
def test_parse_tool_calls(text: str, expected: list) -> None:
    assert parse_tool_calls(text) == expected


class SlowTool:
    name, description = "slow", "sleeps"

    async def __call__(self, arguments: dict[str, Any]) -> str:
        await asyncio.sleep(arguments.get("s", 10))
        return "x" * arguments.get("chars", 1)


def test_tool_errors_and_timeouts_are_told_to_the_model() -> None:
    tools = {"slow": SlowTool()}

    def call(c: ToolCall | BadToolCall, timeout_s: float = 0.2) -> ToolOutput:
        return asyncio.run(run_tool_call(c, tools, timeout_s, max_chars=10))

    began = time.monotonic()
    assert call(ToolCall("slow", {"s": 30})) == ToolOutput(
        "error: the tool 'slow' did not finish within 0.2 s", error=True
    )
    assert time.monotonic() - began < 5
    assert call(ToolCall("nope")) == ToolOutput(
        "error: unknown tool 'nope'; tools: slow", error=True
    )
    assert call(BadToolCall("bad json")) == ToolOutput("error: bad json", error=True)
    assert call(ToolCall("slow", {"s": 0, "chars": 25})) == ToolOutput(
        "x" * 10 + "\n[truncated: 15 more chars]", error=False
    )


@pytest.fixture(scope="module")
def math_python() -> Any:
    factory = MathPython(timeout_s=5.0, max_chars=200)
    yield factory
    factory.close()


def test_python_tool_runs_in_the_sandbox(math_python: MathPython) -> None:
    python = math_python.python
    assert asyncio.run(python({"code": "print(6 * 7)"})) == "42\n"
    # The sandbox has no network and its own filesystem: the host's files are not there.
    out = asyncio.run(python({"code": "import os; print(os.path.exists('/work/main.py'), "
                                      "os.path.exists('/root'))"}))  # fmt: skip
    assert out == "True False\n"
    looping = asyncio.run(python({"code": "while True: pass"}))
    assert "time_limit" in looping
    with pytest.raises(ValueError, match=r"arguments\.code must be a string"):
        asyncio.run(python({"source": "print(1)"}))


class ScriptedEngine:
    """TEST DOUBLE of a rollout engine: a real tiny model does not write tool calls on demand.
    Each call answers every context with the next scripted turn (text -> tokens) and records
    the contexts it was given."""

    def __init__(self, tokenizer: Any, turns: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.turns = list(turns)
        self.pad_token_id = tokenizer.pad_token_id
        self.contexts: list[list[list[int]]] = []

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list:
        self.contexts.append([list(p) for p in prompts])
        text = self.turns.pop(0)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not text.endswith("</tool_call>"):
            ids.append(self.tokenizer.eos_token_id)
        completion = Completion(ids, [-0.5] * len(ids), text, "stop")
        return [[completion] for _ in prompts]


def _loop(tokenizer: Any, factory: Any, max_turns: int = 4) -> AgentLoop:
    return AgentLoop(
        factory,
        tokenizer,
        max_turns=max_turns,
        max_episode_tokens=512,
        turn_end="<|im_end|>",
        observation_template="\n<|im_start|>tool\n{content}<|im_end|>\n<|im_start|>assistant\n",
    )


def test_episode_is_token_in_token_out_with_tool_outputs_masked(
    tiny_model: Path, math_python: MathPython
) -> None:
    tokenizer = load_tokenizer(tiny_model)
    call = '<tool_call>{"name": "python", "arguments": {"code": "print(6 * 7)"}}</tool_call>'
    engine = ScriptedEngine(tokenizer, ["Let me compute. " + call, "So \\boxed{42}"])
    prompt = tokenizer("What is 6*7?", add_special_tokens=False)["input_ids"]
    groups, version = _loop(tokenizer, math_python).generate(
        VersionedEngine(engine, 3), [ROW], [prompt], SamplingParams(n=2, max_new_tokens=200)
    )
    assert version == 3 and len(groups[0]) == 2
    episode = groups[0][0]
    turn1 = tokenizer("Let me compute. " + call, add_special_tokens=False)["input_ids"]
    observation = tokenizer(
        "<|im_end|>\n<|im_start|>tool\n"
        + json.dumps([{"name": "python", "output": "42\n"}])
        + "<|im_end|>\n<|im_start|>assistant\n",
        add_special_tokens=False,
    )["input_ids"]
    turn2 = [*tokenizer("So \\boxed{42}", add_special_tokens=False)["input_ids"]]
    turn2.append(tokenizer.eos_token_id)
    # The second turn's context is the first context plus exactly the sampled tokens plus
    # the observation's tokens: nothing re-tokenised.
    assert engine.contexts[0] == [prompt, prompt]
    assert engine.contexts[1][0] == prompt + turn1 + observation
    assert episode.token_ids == turn1 + observation + turn2
    assert episode.loss_mask == (1,) * len(turn1) + (0,) * len(observation) + (1,) * len(turn2)
    assert episode.logprobs == [-0.5] * len(turn1) + [0.0] * len(observation) + [-0.5] * len(turn2)
    assert episode.text == "So \\boxed{42}" and not episode.truncated
    # In the batch, the tool output takes no part in the loss.
    result = [Result(id=str(i), score=1.0) for i in range(2)]
    batch = build_batch(
        [Group(ROW, prompt, groups[0], result)], pad_token_id=0, mask_truncated=False
    )
    row_mask = batch.completion_mask[0, : len(episode.token_ids)]
    assert row_mask.tolist() == [float(m) for m in episode.loss_mask]
    assert torch.equal(batch.loss_mask, batch.completion_mask)


def test_turn_limit_cuts_an_episode_that_keeps_calling_tools(tiny_model: Path) -> None:
    tokenizer = load_tokenizer(tiny_model)
    call = '<tool_call>{"name": "echo", "arguments": {}}</tool_call>'

    class Echo:
        name, description = "echo", "echoes"

        async def __call__(self, arguments: dict[str, Any]) -> str:
            return "again"

    engine = ScriptedEngine(tokenizer, [call, call])
    factory = lambda: ToolEnvironment({"echo": Echo()}, timeout_s=1, max_chars=100)  # noqa: E731
    groups, _ = _loop(tokenizer, factory, max_turns=2).generate(
        VersionedEngine(engine, 0), [ROW], [[5, 6]], SamplingParams(n=1, max_new_tokens=100)
    )
    episode = groups[0][0]
    assert len(engine.contexts) == 2  # two turns, then cut off
    assert episode.truncated and episode.finish_reason == "length"


def test_episode_counts_turns_tool_calls_and_tool_errors(tiny_model: Path) -> None:
    tokenizer = load_tokenizer(tiny_model)

    class Echo:
        name, description = "echo", "echoes"

        async def __call__(self, arguments: dict[str, Any]) -> str:
            return "again"

    # Turn 1: one good call and one to a tool that does not exist; turn 2: two good calls
    # and a malformed one; turn 3: the answer.
    good = '<tool_call>{"name": "echo", "arguments": {}}</tool_call>'
    unknown = '<tool_call>{"name": "nope", "arguments": {}}</tool_call>'
    malformed = "<tool_call>{not json</tool_call>"
    turns = [good + unknown, good + good + malformed, "\\boxed{1}"]
    engine = ScriptedEngine(tokenizer, turns)
    factory = lambda: ToolEnvironment({"echo": Echo()}, timeout_s=1, max_chars=100)  # noqa: E731
    groups, _ = _loop(tokenizer, factory).generate(
        VersionedEngine(engine, 0), [ROW], [[5, 6]], SamplingParams(n=1, max_new_tokens=100)
    )
    [episode] = groups[0]
    assert episode.episode is not None
    assert (episode.episode.turns, episode.episode.tool_calls, episode.episode.tool_errors) == (
        3,
        5,
        2,
    )
    metrics = episode_metrics([episode, Completion([1], [0.0], "single turn")])
    # The single-turn completion has no episode: the means are over the one episode.
    assert metrics["agent_turns_mean"] == 3.0
    assert metrics["agent_tool_calls_mean"] == 5.0
    assert metrics["agent_tool_errors_mean"] == 2.0
    assert metrics["agent_tool_time_s_mean"] >= 0.0
    assert episode_metrics([Completion([1], [0.0], "single turn")]) == {}


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_training_with_the_math_python_environment(
    tiny_model: Path, tmp_path: Path, server, mode: str
) -> None:
    # The random tiny model writes no tool call: every episode ends after one turn. The run
    # goes through the whole agentic path (environment per episode, sandbox pool, final
    # answer scored by the server's math verifier) and trains.
    rows = [{"id": f"m{i}", "prompt": f"What is {i}+{i}?", "reference": str(2 * i),
             "reward": {"name": "math"}} for i in range(4)]  # fmt: skip
    data = write_prompts(tmp_path / "p.jsonl", rows)
    settings = train_settings(tiny_model, data, tmp_path / "run")
    settings["data"]["system_prompt"] = MATH_PYTHON_SYSTEM_PROMPT
    settings["rollout"]["agent"] = {"environment": "math_python", "max_turns": 2}
    settings["rollout"]["mode"] = mode
    history = train(build_config(TrainConfig, settings, [f"reward.address={server.address}"]))
    assert [m["step"] for m in history] == [1, 2]
    assert all(m["masked_items"] == 0 for m in history)
    assert all(m["policy_lag_max"] <= 1 for m in history)
    assert all(m["agent_turns_mean"] == 1.0 and m["agent_tool_calls_mean"] == 0 for m in history)
