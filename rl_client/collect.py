"""Where a step's scored groups come from: stages 1-3 of the loop (rollout, score, filter).

`SyncCollector` generates the step's batch when the step asks for it, going back for fresh
prompts while dynamic sampling's budget lasts; it is the reference. `AsyncCollector`
(`async_collect.py`) hands over a batch that was generated while earlier steps trained.
Both are a `Collector`: they return a `Collected` and take the new weights through
`sync_weights`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from rl_client.data import PromptRow
from rl_client.distributed import World, all_gather_objects
from rl_client.engines.versioned import VersionedEngine
from rl_client.group_filter import DynamicSampling, FilterStats, filter_groups, trains
from rl_client.rewards import RewardService
from rl_client.rollout import Group, RolloutPlan, RolloutTimings, sample

TakePrompts = Callable[[int], tuple[list[PromptRow], list[list[int]]]]
# This process's count reduced over every process (the identity in one process): dynamic
# sampling's kept groups summed (it goes back for the global batch's missing groups, so every
# process takes the same rounds and the same prompts from the cursor), or the async pause's
# last started step maxed.
CountReduce = Callable[[int], int]


def own_count(count: int) -> int:
    """One process: its count is the whole run's."""
    return count


@dataclass
class Collected:
    sampled: list[Group]  # every group generated for the step (reward metrics)
    kept: list[Group]  # the groups that train
    stats: FilterStats
    timings: RolloutTimings
    rounds: int = 1  # generation rounds (dynamic sampling)
    wait_s: float = 0.0  # async: the trainer waited this long for its batch
    regenerated_groups: int = 0  # async on_stale=drop: too stale, generated again

    def lag_metrics(self, step: int) -> dict[str, Any]:
        """How many optimiser steps behind the updated policy (version step - 1) the sampling
        policy of the kept groups was: 0 in sync mode."""
        lags = [step - 1 - group.policy_version for group in self.kept]
        return {
            "policy_lag_mean": sum(lags) / len(lags) if lags else None,
            "policy_lag_max": max(lags) if lags else None,
        }

    def across_processes(self, world: World) -> Collected:
        """The global batch, as one process would have collected it: every process's groups
        in rank order (the cursor's order), the counts summed, the times the slowest's
        (itself in one process). What a step logs and whether it updates."""
        if not world.distributed:
            return self
        parts: list[Collected] = all_gather_objects(self)
        return Collected(
            sampled=[group for part in parts for group in part.sampled],
            kept=[group for part in parts for group in part.kept],
            stats=FilterStats(
                dropped_groups=sum(part.stats.dropped_groups for part in parts),
                filtered_groups=sum(part.stats.filtered_groups for part in parts),
            ),
            timings=RolloutTimings(
                generate_s=max(part.timings.generate_s for part in parts),
                reward_wait_s=max(part.timings.reward_wait_s for part in parts),
            ),
            rounds=self.rounds,  # the same on every process (the counts are global)
            wait_s=max(part.wait_s for part in parts),
            regenerated_groups=sum(part.regenerated_groups for part in parts),
        )


class Collector(Protocol):
    """Stages 1-3 of a step (rollout, score, filter), and the engine they sample from."""

    engine: VersionedEngine

    def collect(self, step: int) -> Collected:
        """Step `step`'s scored and filtered groups."""
        ...

    def sync_weights(self, model: torch.nn.Module, step: int) -> None:
        """The engine samples from `model`'s weights (version `step`) from now on."""
        ...

    def paused(self) -> AbstractContextManager[None]:
        """Holds any generation in the background (while a checkpoint is saved). Under
        torchrun a collective: every process pauses at the same point."""
        ...

    def buffered(self) -> list[Any]:
        """The batches generated ahead and not yet trained (saved with a checkpoint)."""
        ...

    def close(self) -> None: ...


@dataclass
class SyncCollector:
    engine: VersionedEngine
    rewards: RewardService
    take_prompts: TakePrompts
    plan: RolloutPlan
    dynamic_sampling: DynamicSampling | None  # None: off
    max_gen_rounds: int
    kept_total: CountReduce = own_count

    def collect(self, step: int) -> Collected:
        groups, timings, rounds = generate_rounds(
            self.engine,
            self.rewards,
            self.take_prompts,
            self.plan,
            step,
            dynamic_sampling=self.dynamic_sampling,
            max_gen_rounds=self.max_gen_rounds,
            kept_total=self.kept_total,
        )
        kept, stats = filter_groups(groups, dynamic=self.dynamic_sampling)
        self.engine.sleep()  # the trainer has the device until the next weight sync
        return Collected(groups, kept, stats, timings, rounds=rounds)

    def sync_weights(self, model: torch.nn.Module, step: int) -> None:
        self.engine.sync_weights(model, step)

    def paused(self) -> AbstractContextManager[None]:
        """Nothing runs in the background in sync mode."""
        return nullcontext()

    def buffered(self) -> list[Any]:
        """Nothing is generated ahead in sync mode."""
        return []

    def close(self) -> None:
        self.plan.close()
        self.engine.close()


def generate_rounds(
    engine: VersionedEngine,
    rewards: RewardService,
    take_prompts: TakePrompts,
    plan: RolloutPlan,
    step: int,
    *,
    dynamic_sampling: DynamicSampling | None,
    max_gen_rounds: int,
    kept_total: CountReduce = own_count,
) -> tuple[list[Group], RolloutTimings, int]:
    """Step `step`'s groups, scored: B prompts, then with dynamic sampling fresh prompts for
    the groups that will not train, while the budget of rounds lasts. Returns every group
    generated, the timings and the number of rounds. Several processes: `take_prompts`
    gives this process its share of the global rows, `kept_total` the global count."""
    groups: list[Group] = []
    timings = RolloutTimings()
    kept = rounds = 0
    while True:
        rows, prompt_ids = take_prompts(plan.prompts_per_step - kept)
        fresh, spent = sample(
            engine, rewards, rows, prompt_ids, plan, tag=f"{step}.{rounds}"
        ).finish()
        rounds += 1
        timings.add(spent)
        groups += fresh
        kept += kept_total(sum(trains(group, dynamic=dynamic_sampling) for group in fresh))
        full = kept >= plan.prompts_per_step
        if full or dynamic_sampling is None or rounds >= max_gen_rounds:
            return groups, timings, rounds
