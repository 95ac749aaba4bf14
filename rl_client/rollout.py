"""Sampling G completions per prompt and scoring them; rewards are requested while the engine
is still generating (per completion with a streaming engine, else per chunk)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from rl_client.agentic.loop import AgentLoop
from rl_client.data import PromptRow
from rl_client.engines.base import Completion, SamplingParams
from rl_client.engines.versioned import VersionedEngine
from rl_client.rewards import Overlong, RewardService, with_overlong
from verifier_server.types import Item, Result


@dataclass
class Group:
    """One prompt, its G completions and their results (same order)."""

    row: PromptRow
    prompt_ids: list[int]
    completions: list[Completion]
    results: list[Result] = field(default_factory=list)
    policy_version: int = 0  # optimiser steps behind the weights that sampled it

    @property
    def valid(self) -> list[bool]:
        """False where the reward could not be verified (non-OK status): masked, not 0."""
        return [r.ok for r in self.results]

    @property
    def rewards(self) -> list[float]:
        """Scores; NaN where not valid, so a masked item can never pass for a real 0."""
        return [r.score if r.ok else math.nan for r in self.results]


@dataclass
class RolloutTimings:
    generate_s: float = 0.0
    reward_wait_s: float = 0.0  # scoring time not hidden behind generation

    def add(self, other: RolloutTimings) -> None:
        self.generate_s += other.generate_s
        self.reward_wait_s += other.reward_wait_s


def policy_tokens(completion: Completion) -> int:
    """Tokens the policy sampled: an agentic episode's tool outputs are not its length."""
    if completion.loss_mask is None:
        return len(completion.token_ids)
    return sum(completion.loss_mask)


def completion_item(
    row: PromptRow, completion: Completion, item_id: str, overlong: Overlong | None
) -> Item:
    """The reward server's item for one completion. `item_id` must be unique within a request
    (a prompt can be drawn twice in one step when the dataset is smaller than the batch).
    Its length (`completion_tokens`, what overlong shaping measures) counts policy tokens."""
    return Item(
        id=item_id,
        completion=completion.text,
        reward=with_overlong(row.reward, overlong),
        messages=row.messages,
        reference=row.reference,
        completion_tokens=policy_tokens(completion),
        truncated=completion.truncated,
        group_id=row.id,
    )


@dataclass(frozen=True)
class RolloutPlan:
    """What one batch of rollouts is: B prompts, G samples each, how they are generated."""

    prompts_per_step: int
    sampling: SamplingParams
    chunk_prompts: int  # prompts per engine call
    overlong: Overlong | None
    agent: AgentLoop | None = None  # multi-turn tool-calling episodes

    def close(self) -> None:
        if self.agent is not None:
            self.agent.close()


@dataclass
class PendingRewards:
    """A generated batch whose rewards are on their way: `finish` waits for them."""

    rows: Sequence[PromptRow]
    prompt_ids: Sequence[list[int]]
    completions: list[list[Completion]]  # [B][G]
    versions: list[int]  # [B] the policy version that sampled each group
    pending: list[tuple[list[tuple[int, int]], Future[list[Result]]]]  # (prompt, sample) keys
    timings: RolloutTimings

    def finish(self) -> tuple[list[Group], RolloutTimings]:
        began = time.perf_counter()
        results: dict[tuple[int, int], Result] = {}
        for keys, future in self.pending:
            results.update(zip(keys, future.result(), strict=True))
        groups = [
            Group(
                row,
                ids,
                samples,
                [results[index, sample] for sample in range(len(samples))],
                policy_version=self.versions[index],
            )
            for index, (row, ids, samples) in enumerate(
                zip(self.rows, self.prompt_ids, self.completions, strict=True)
            )
        ]
        self.timings.reward_wait_s += time.perf_counter() - began
        return groups, self.timings


def sample(
    engine: VersionedEngine,
    rewards: RewardService,
    rows: Sequence[PromptRow],
    prompt_ids: Sequence[list[int]],
    plan: RolloutPlan,
    *,
    tag: str,
) -> PendingRewards:
    """Generates `plan.sampling.n` completions for each row, requesting rewards while it goes:
    a streaming engine has each completion's reward requested the moment it finishes;
    otherwise each chunk of `plan.chunk_prompts` prompts is submitted as soon as it is
    generated, while the next chunk generates. With `plan.agent`, each sample is a multi-turn
    episode. Returns without waiting for the rewards."""
    params, chunk_prompts, agent = plan.sampling, plan.chunk_prompts, plan.agent
    completions: list[list[Completion | None]] = [[None] * params.n for _ in rows]
    versions = [0] * len(rows)
    pending: list[tuple[list[tuple[int, int]], Future[list[Result]]]] = []

    def submit(finished: list[tuple[int, int, Completion, int]]) -> None:
        """One scoring request for these (prompt, sample, completion, version)."""
        items = []
        for prompt, sample, completion, version in finished:
            completions[prompt][sample] = completion
            versions[prompt] = version
            items.append(
                completion_item(rows[prompt], completion, f"{tag}.{prompt}/{sample}", plan.overlong)
            )
        pending.append(([(p, s) for p, s, _, _ in finished], rewards.submit(items)))

    began = time.perf_counter()
    for start in range(0, len(rows), chunk_prompts):
        chunk = prompt_ids[start : start + chunk_prompts]
        if agent is None and engine.streams:
            for prompt, sample_index, completion, version in engine.stream(chunk, params):
                submit([(start + prompt, sample_index, completion, version)])
        else:
            if agent is None:
                generated, version = engine.generate(chunk, params)
            else:
                chunk_rows = list(rows[start : start + chunk_prompts])
                generated, version = agent.generate(engine, chunk_rows, list(chunk), params)
            submit(
                [
                    (start + prompt, sample_index, completion, version)
                    for prompt, group in enumerate(generated)
                    for sample_index, completion in enumerate(group)
                ]
            )
    timings = RolloutTimings(generate_s=time.perf_counter() - began)
    done = [[c for c in samples if c is not None] for samples in completions]
    return PendingRewards(rows, prompt_ids, done, versions, pending, timings)
