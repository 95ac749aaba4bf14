"""Sampling G completions per prompt and scoring them, with the scoring of each generated
chunk running on the reward server while the engine generates the next chunk."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from rl_client.data import PromptRow
from rl_client.engines.base import Completion, RolloutEngine, SamplingParams
from rl_client.rewards import Overlong, RewardService, with_overlong
from verifier_server.types import Item, Result


@dataclass
class Group:
    """One prompt, its G completions and their results (same order)."""

    row: PromptRow
    prompt_ids: list[int]
    completions: list[Completion]
    results: list[Result] = field(default_factory=list)

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


def completion_items(group: Group, tag: str, overlong: Overlong | None) -> list[Item]:
    """The reward server's items for one group. `tag` must be unique per group within a request
    (a prompt can be drawn twice in one step when the dataset is smaller than the batch)."""
    spec = with_overlong(group.row.reward, overlong)
    return [
        Item(
            id=f"{tag}/{group.row.id}/{index}",
            completion=completion.text,
            reward=spec,
            messages=group.row.messages,
            reference=group.row.reference,
            completion_tokens=len(completion.token_ids),
            truncated=completion.truncated,
            group_id=group.row.id,
        )
        for index, completion in enumerate(group.completions)
    ]


def sample_and_score(
    engine: RolloutEngine,
    rewards: RewardService,
    rows: Sequence[PromptRow],
    prompt_ids: Sequence[list[int]],
    params: SamplingParams,
    *,
    chunk_prompts: int,
    overlong: Overlong | None,
    tag: str,
) -> tuple[list[Group], RolloutTimings]:
    """Generates `params.n` completions for each row, a chunk of prompts at a time, and
    submits each chunk for scoring as soon as it is generated."""
    timings = RolloutTimings()
    groups: list[Group] = []
    pending: list[tuple[list[Group], Future[list[Result]]]] = []
    for start in range(0, len(rows), chunk_prompts):
        began = time.perf_counter()
        chunk = engine.generate(prompt_ids[start : start + chunk_prompts], params)
        timings.generate_s += time.perf_counter() - began
        chunk_groups = [
            Group(row, ids, completions)
            for row, ids, completions in zip(
                rows[start : start + chunk_prompts],
                prompt_ids[start : start + chunk_prompts],
                chunk,
                strict=True,
            )
        ]
        items = [
            item
            for offset, group in enumerate(chunk_groups)
            for item in completion_items(group, f"{tag}.{start + offset}", overlong)
        ]
        pending.append((chunk_groups, rewards.submit(items)))
        groups += chunk_groups
    began = time.perf_counter()
    for chunk_groups, future in pending:
        results = future.result()
        for index, group in enumerate(chunk_groups):
            group.results = results[index * params.n : (index + 1) * params.n]
    timings.reward_wait_s = time.perf_counter() - began
    return groups, timings
