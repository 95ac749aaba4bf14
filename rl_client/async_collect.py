"""Asynchronous rollouts with bounded staleness: a background thread generates the batches of
the next steps while the current step trains. Each completion's reward is requested as soon as
it is generated, and the thread goes on to the next batch without waiting for the scores; the
trainer collects them when it takes the batch, so reward latency hides behind both generation
and training.

- Step t's batch is B prompts taken from the data cursor in step order, so which prompts a
  step trains on does not depend on timing (and a resumed run draws the same ones).
- Versions: the engine's weights after the update of step v are version v; every group
  records the version that sampled it. Step t updates the policy of version t - 1, so a group
  of version v is t - 1 - v steps stale; `max_staleness` bounds that.
- `on_stale="wait"`: step t's batch starts generating only once the engine holds version
  >= t - 1 - max_staleness, so no sample is ever too stale (generation waits for weights).
  `on_stale="drop"`: generation runs up to max_staleness + 1 batches ahead of the trainer and
  never waits for weights; a group that turns out too stale when its step comes is dropped
  and generated again with the current weights (`regenerated_groups`).
- The loss corrects for the lag with the behaviour policy's logprobs (the sampler's): see
  `algorithm.tis_cap`.
- Dynamic sampling (DAPO): the thread waits for each round's scores before deciding how many
  fresh prompts to go back for, up to `max_gen_rounds` rounds per step, so a batch holds B
  informative groups (or says the budget ran out) before it is handed over. Its prompts still
  come from the cursor in order, so none is skipped or drawn twice, but how many a step uses
  now depends on the rewards. Under 'drop', a regenerated group that no longer carries signal
  is filtered and the step trains on fewer groups.
- Checkpoints are lossless: `paused()` lets the batch in progress finish and holds the
  thread; the finished batches not yet trained (`buffered()`) are saved with the data cursor,
  which then stands right after them. A resumed run trains those batches first, so no prompt
  is skipped or drawn twice.
- Several processes (torchrun): each has its own thread, and a pause (a checkpoint, the
  main process's periodic eval) holds them all after the same step (`last_started`: the
  step any of them had started), so every process saves the same batches and rank 0's
  cursor stands after them. Under dynamic sampling the threads reduce their kept counts
  together: a thread held one step earlier than another would leave that one waiting in its
  reduction, and both trainers in the pause.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from rl_client.collect import Collected, CountReduce, TakePrompts, generate_rounds, own_count
from rl_client.engines.versioned import VersionedEngine
from rl_client.group_filter import DynamicSampling, filter_groups, trains
from rl_client.rewards import RewardService
from rl_client.rollout import Group, PendingRewards, RolloutPlan, RolloutTimings, sample


class RolloutThreadError(RuntimeError):
    """The background rollout thread failed; the cause is chained."""


@dataclass
class StepBatch:
    """A step's batch: generated; scored once `finish` ran (checkpoints hold finished ones)."""

    step: int
    scoring: PendingRewards | None  # rewards on their way
    groups: list[Group] = field(default_factory=list)
    timings: RolloutTimings = field(default_factory=RolloutTimings)
    rounds: int = 1  # generation rounds (dynamic sampling goes back for more prompts)

    def finish(self) -> StepBatch:
        if self.scoring is not None:
            self.groups, self.timings = self.scoring.finish()
            self.scoring = None
        return self


class AsyncCollector:
    def __init__(
        self,
        engine: VersionedEngine,
        rewards: RewardService,
        take_prompts: TakePrompts,
        plan: RolloutPlan,
        *,
        first_step: int,
        last_step: int,
        max_staleness: int,
        on_stale: str,
        dynamic_sampling: DynamicSampling | None = None,
        max_gen_rounds: int = 1,
        buffered: Sequence[StepBatch] = (),
        kept_total: CountReduce = own_count,
        last_started: CountReduce = own_count,
    ) -> None:
        """`kept_total`: dynamic sampling's global count of kept groups; with several
        processes it reduces over a process group of its own (this thread's collectives run
        while the trainer's FSDP collectives do). `last_started`: the largest over every
        process of the step whose batch its thread has started, reduced by the trainer (on
        the default group: every process pauses at the same point)."""
        self.engine = engine
        self.rewards = rewards
        self.take_prompts = take_prompts
        self.plan = plan
        self.last_step = last_step
        self.max_staleness = max_staleness
        self.on_stale = on_stale
        self.dynamic_sampling = dynamic_sampling
        self.max_gen_rounds = max_gen_rounds
        self.kept_total = kept_total
        self.last_started = last_started
        self._cond = threading.Condition()
        self._ready: deque[StepBatch] = deque(buffered)
        self._next_step = buffered[-1].step + 1 if buffered else first_step
        self._taken = first_step - 1  # the last step handed to the trainer
        self._busy = False  # a batch is being generated
        self._paused = False
        self._hold_after = 0  # while paused, the thread still starts the steps up to this one
        self._closed = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._produce, name="rl-rollouts", daemon=True)
        self._thread.start()

    # ---- the background thread

    def _may_start(self, step: int) -> bool:
        if step > self.last_step or (self._paused and step > self._hold_after):
            return False
        if self.on_stale == "wait":
            return self.engine.version >= step - 1 - self.max_staleness
        return step - self._taken <= self.max_staleness + 1

    def _produce(self) -> None:
        try:
            while True:
                with self._cond:
                    while not (self._closed or self._may_start(self._next_step)):
                        self._cond.wait()
                    if self._closed:
                        return
                    step, self._busy = self._next_step, True
                batch = self._generate(step)
                with self._cond:
                    self._ready.append(batch)
                    self._next_step, self._busy = step + 1, False
                    self._cond.notify_all()
        except BaseException as exc:
            with self._cond:
                self._error, self._busy = exc, False
                self._cond.notify_all()

    def _generate(self, step: int) -> StepBatch:
        """Step `step`'s batch. `_busy` is set, so no checkpoint reads the cursor meanwhile."""
        if self.dynamic_sampling is not None:
            # It needs the scores to know how many prompts to go back for.
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
            return StepBatch(step, None, groups, timings, rounds)
        # Not waiting for the rewards: the next batch can start generating while this one is
        # scored (the trainer waits for them when it takes the batch).
        rows, prompt_ids = self.take_prompts(self.plan.prompts_per_step)
        return StepBatch(
            step,
            sample(self.engine, self.rewards, rows, prompt_ids, self.plan, tag=f"{step}.0"),
        )

    # ---- the trainer's side

    def _take(self, step: int) -> StepBatch:
        with self._cond:
            self._taken = step - 1  # the trainer is ready for `step`: the window moves on
            self._cond.notify_all()
            while not self._ready and self._error is None:
                self._cond.wait()
            if not self._ready:
                raise RolloutThreadError("the rollout thread failed") from self._error
            batch = self._ready.popleft()
            if batch.step != step:
                raise RuntimeError(f"step {step} was handed the batch of step {batch.step}")
            self._taken = step
            self._cond.notify_all()
        return batch.finish()

    def collect(self, step: int) -> Collected:
        began = time.perf_counter()
        batch = self._take(step)
        wait_s = time.perf_counter() - began
        regenerated = self._regenerate_stale(batch, step)
        kept, stats = filter_groups(batch.groups, dynamic=self.dynamic_sampling)
        return Collected(
            batch.groups,
            kept,
            stats,
            batch.timings,
            rounds=batch.rounds,
            wait_s=wait_s,
            regenerated_groups=regenerated,
        )

    def _regenerate_stale(self, batch: StepBatch, step: int) -> int:
        """on_stale='drop': groups that would train but were sampled more than max_staleness
        versions before the policy being updated (step - 1) are generated again with the
        engine's current weights."""
        oldest = step - 1 - self.max_staleness
        stale = [
            i
            for i, g in enumerate(batch.groups)
            if g.policy_version < oldest and trains(g, dynamic=self.dynamic_sampling)
        ]
        if not stale:
            return 0
        if self.on_stale == "wait":  # the thread waited for weights: this cannot happen
            raise RuntimeError(f"step {step}: a group older than max_staleness under 'wait'")
        fresh, timings = sample(
            self.engine,
            self.rewards,
            [batch.groups[i].row for i in stale],
            [batch.groups[i].prompt_ids for i in stale],
            self.plan,
            tag=f"{step}.1",
        ).finish()
        for index, group in zip(stale, fresh, strict=True):
            batch.groups[index] = group
        batch.timings.add(timings)
        return len(stale)

    def sync_weights(self, model: torch.nn.Module, step: int) -> None:
        """Waits for the engine call in progress (one chunk), loads the new weights."""
        self.engine.sync_weights(model, step)
        with self._cond:
            self._cond.notify_all()  # under 'wait', the next batch may start now

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Lets the batch in progress finish and holds the thread, e.g. while saving.
        Under torchrun every process pauses at the same point (collective), and the threads
        all stop after the same step."""
        with self._cond:
            self._paused = True
            started = self._next_step - (0 if self._busy else 1)
        hold_after = self.last_started(started)
        with self._cond:
            self._hold_after = hold_after
            self._cond.notify_all()
            while self._error is None and (self._busy or self._next_step <= self._hold_after):
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._paused = False
                self._cond.notify_all()

    def buffered(self) -> list[StepBatch]:
        """The batches generated and not yet trained, scored (call inside `paused()`)."""
        with self._cond:
            return [batch.finish() for batch in self._ready]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=600)
        self.plan.close()
        self.engine.close()
