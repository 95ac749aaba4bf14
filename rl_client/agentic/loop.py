"""The tool-calling loop: G episodes per prompt, batched turn by turn through the engine.

Each turn, every unfinished episode's context goes to the engine in one call (n=1 each); the
environments then step concurrently (their tools are async). An episode ends when a turn
calls no tool (the final answer), a turn hits its token budget, the episode's token budget
`max_episode_tokens` runs out, or after `max_turns` turns; the last three are "length"
endings (truncated), which `algorithm.mask_truncated` can keep out of the loss.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from rl_client.agentic.env import Environment, EnvironmentFactory, Observation
from rl_client.agentic.tool_calls import CLOSE
from rl_client.data import PromptRow
from rl_client.engines.base import Completion, EpisodeStats, SamplingParams
from rl_client.engines.versioned import VersionedEngine


@dataclass
class Episode:
    env: Environment
    context: list[int]  # prompt + response so far: the next turn's input, as sampled
    tokens: list[int] = field(default_factory=list)  # the response: turns and observations
    logprobs: list[float] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)  # 1: sampled by the policy
    final_text: str = ""
    truncated: bool = False
    done: bool = False
    turns: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    tool_time_s: float = 0.0

    def add_turn(self, completion: Completion) -> None:
        self.context += completion.token_ids
        self.tokens += completion.token_ids
        self.logprobs += completion.logprobs
        self.loss_mask += [1] * len(completion.token_ids)
        self.final_text = completion.text
        self.truncated = completion.truncated
        self.turns += 1

    def add_observation(self, token_ids: list[int]) -> None:
        self.context += token_ids
        self.tokens += token_ids
        self.logprobs += [0.0] * len(token_ids)
        self.loss_mask += [0] * len(token_ids)

    def completion(self) -> Completion:
        return Completion(
            self.tokens,
            self.logprobs,
            self.final_text,
            "length" if self.truncated else "stop",
            loss_mask=tuple(self.loss_mask),
            episode=EpisodeStats(self.turns, self.tool_calls, self.tool_errors, self.tool_time_s),
        )

    def count_tools(self, observation: Observation) -> None:
        self.tool_calls += observation.tool_calls
        self.tool_errors += observation.tool_errors
        self.tool_time_s += observation.tool_time_s


class AgentLoop:
    def __init__(
        self,
        factory: EnvironmentFactory,
        tokenizer: Any,
        *,
        max_turns: int,
        max_episode_tokens: int,
        turn_end: str,
        observation_template: str,
    ) -> None:
        self.factory = factory
        self.tokenizer = tokenizer
        self.max_turns = max_turns
        self.max_episode_tokens = max_episode_tokens
        self.turn_end = turn_end
        self.observation_template = observation_template

    def generate(
        self,
        engine: VersionedEngine,
        rows: list[PromptRow],
        prompt_ids: list[list[int]],
        params: SamplingParams,
    ) -> tuple[list[list[Completion]], int]:
        """([B][G] episodes as completions, the oldest policy version that sampled a turn)."""
        groups = [[self._start(row, ids) for _ in range(params.n)] for row, ids in zip(
            rows, prompt_ids, strict=True
        )]  # fmt: skip
        turn_params = replace(params, n=1, stop_strings=(*params.stop_strings, CLOSE))
        versions = [engine.version]
        for turn in range(self.max_turns):
            active = [e for group in groups for e in group if not e.done]
            if not active:
                break
            budgets = [self.max_episode_tokens - len(e.tokens) for e in active]
            outputs, version = engine.generate(
                [e.context for e in active],
                replace(turn_params, max_new_tokens=max(1, min(params.max_new_tokens, *budgets))),
            )
            versions.append(version)
            for episode, out in zip(active, outputs, strict=True):
                episode.add_turn(out[0])
            observations = asyncio.run(self._step_all(active))
            for episode, observation in zip(active, observations, strict=True):
                episode.count_tools(observation)
                self._advance(episode, observation.text, observation.done, turn)
        return [[e.completion() for e in group] for group in groups], min(versions)

    def _start(self, row: PromptRow, prompt_ids: list[int]) -> Episode:
        env = self.factory()
        env.reset(row)
        return Episode(env, list(prompt_ids))

    @staticmethod
    async def _step_all(episodes: list[Episode]) -> list[Any]:
        return await asyncio.gather(*(e.env.step(e.final_text) for e in episodes))

    def _advance(self, episode: Episode, text: str | None, done: bool, turn: int) -> None:
        if done or episode.truncated:
            episode.done = True
            return
        if turn == self.max_turns - 1 or len(episode.tokens) >= self.max_episode_tokens:
            episode.done = episode.truncated = True  # still calling tools: cut off
            return
        rendered = self.observation_template.format(content=text)
        if episode.tokens[-1] != self.tokenizer.eos_token_id:  # stopped at </tool_call>
            rendered = self.turn_end + rendered
        episode.add_observation(self.tokenizer(rendered, add_special_tokens=False)["input_ids"])

    def close(self) -> None:
        close = getattr(self.factory, "close", None)
        if close is not None:
            close()


def episode_metrics(completions: Sequence[Completion]) -> dict[str, float]:
    """Means per episode of turns, tool calls, tool errors and tool time; {} for single-turn
    completions."""
    episodes = [c.episode for c in completions if c.episode is not None]
    if not episodes:
        return {}
    count = len(episodes)
    return {
        "agent_turns_mean": sum(e.turns for e in episodes) / count,
        "agent_tool_calls_mean": sum(e.tool_calls for e in episodes) / count,
        "agent_tool_errors_mean": sum(e.tool_errors for e in episodes) / count,
        "agent_tool_time_s_mean": sum(e.tool_time_s for e in episodes) / count,
    }
