"""Everything a training run holds, built (or restored from a checkpoint) before the loop."""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rl_client.agentic.env import environment_factory
from rl_client.agentic.loop import AgentLoop
from rl_client.async_collect import AsyncCollector
from rl_client.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    policy_dir,
    save_checkpoint,
    set_rng_state,
    truncate_log,
)
from rl_client.collect import Collector, CountReduce, SyncCollector, TakePrompts, own_count
from rl_client.config import (
    AgentSettings,
    DataConfig,
    RewardConfig,
    RolloutConfig,
    TrainConfig,
    dump_config,
)
from rl_client.data import DataError, PromptCursor, PromptRow, load_prompts, render_prompt
from rl_client.data_sources import LazySequence
from rl_client.distributed import (
    SINGLE,
    World,
    all_gather_objects,
    all_reduce,
    full_state_dict,
    new_group,
    shard_flat,
    shard_model,
    share,
)
from rl_client.engines.base import SamplingParams
from rl_client.engines.factory import build_engine
from rl_client.engines.versioned import VersionedEngine
from rl_client.export import export_policy
from rl_client.group_filter import DynamicSampling
from rl_client.learner import Learner
from rl_client.models import load_policy, load_reference, load_tokenizer, new_value_head
from rl_client.rewards import Overlong, RewardService
from rl_client.rollout import RolloutPlan
from rl_client.run_log import RunLog
from rl_client.trackers import build_trackers


@dataclass
class Run:
    config: TrainConfig
    output_dir: Path
    tokenizer: Any
    rows: Sequence[PromptRow]
    prompt_ids: Sequence[list[int]]
    cursor: PromptCursor
    learner: Learner
    collector: Collector  # stages 1-3: rollout, score, filter
    rewards: RewardService
    log: RunLog
    start_step: int  # the last step already done (0 for a fresh run)
    # The periodic eval's prompts (the first eval.limit) and token ids; empty when eval.every=0.
    eval_rows: list[PromptRow] = field(default_factory=list)
    eval_prompt_ids: list[list[int]] = field(default_factory=list)
    world: World = SINGLE
    # What the engine samples from: the learner's model in one process; with several, an
    # unsharded copy of it (an FSDP-sharded model cannot run `generate` on its own).
    sampler: torch.nn.Module | None = None

    @property
    def engine(self) -> VersionedEngine:
        return self.collector.engine

    def sync_weights(self, step: int) -> None:
        """The engine samples from the weights of `step` from now on. Several processes: the
        sharded policy is gathered once into the unsharded copy every engine loads from."""
        model = self.learner.model
        if self.sampler is not None and self.sampler is not model:
            self.sampler.load_state_dict(full_state_dict(model))
            model = self.sampler
        self.collector.sync_weights(model, step)

    def save(self, step: int) -> Path | None:
        """Async mode: the rollout thread finishes its batch and waits; the batches generated
        ahead are saved with the cursor that stands right after them (lossless resume).
        Under torchrun every process calls it. The last step's checkpoint is also exported
        as a plain Hugging Face model to `<output.dir>/final/` (by rank 0)."""
        with self.collector.paused():
            path = save_checkpoint(
                self.output_dir,
                step=step,
                learner=self.learner,
                tokenizer=self.tokenizer,
                rollout_buffer=self.collector.buffered(),
                cursor=self.cursor.state_dict(),
                config_yaml=dump_config(self.config),
                keep=self.config.output.keep_checkpoints,
            )
        if step == self.config.train.steps and self.world.is_main:
            export_policy(path, self.output_dir / "final")
        return path

    def close(self) -> None:
        self.log.close()
        try:
            self.collector.close()
        finally:
            self.rewards.close()


def tokenize_prompts(
    tokenizer: Any, rows: Sequence[PromptRow], max_prompt_tokens: int
) -> list[list[int]]:
    texts = [render_prompt(tokenizer, row.messages) for row in rows]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    for row, prompt in zip(rows, ids, strict=True):
        if len(prompt) > max_prompt_tokens:
            raise DataError(
                f"prompt {row.id!r} has {len(prompt)} tokens, over data.max_prompt_tokens "
                f"({max_prompt_tokens})"
            )
    return ids


class LazyPromptIds(LazySequence[list[int]]):
    """The token ids of `data.lazy` rows, each tokenised when drawn."""

    def __init__(self, tokenizer: Any, rows: Sequence[PromptRow], max_prompt_tokens: int):
        self._tokenizer = tokenizer
        self._rows = rows
        self._max = max_prompt_tokens

    def __len__(self) -> int:
        return len(self._rows)

    def _read(self, index: int) -> list[int]:
        return tokenize_prompts(self._tokenizer, [self._rows[index]], self._max)[0]


# With data.lazy, the rows whose reward names are checked at start (the rest when drawn:
# an unknown name there masks that row's items, counted as masked_<STATUS>).
LAZY_CHECKED_ROWS = 1000


def prompts_from_config(data: DataConfig, path: str, split: str) -> Sequence[PromptRow]:
    return load_prompts(
        path,
        format=data.format,
        split=split,
        columns=data.column_map,
        default_reward=data.reward,
        system_prompt=data.system_prompt,
        lazy=data.lazy,
    )


def eval_rows(config: TrainConfig) -> Sequence[PromptRow]:
    """The rows of `data.eval_path` (default `data.path`), split `data.eval_split` (default
    `data.split`): what `rl-client eval` and the periodic eval (`eval.every`) score."""
    data = config.data
    return prompts_from_config(data, data.eval_path or data.path, data.eval_split or data.split)


def rollout_plan(
    rollout: RolloutConfig, overlong: Overlong | None, agent: AgentLoop | None = None
) -> RolloutPlan:
    sampling = SamplingParams(
        n=rollout.group_size,
        temperature=rollout.temperature,
        top_p=rollout.top_p,
        max_new_tokens=rollout.max_new_tokens,
        stop_strings=tuple(rollout.stop_strings),
    )
    return RolloutPlan(
        prompts_per_step=rollout.prompts_per_step,
        sampling=sampling,
        chunk_prompts=max(1, rollout.batch_size // sampling.n),
        overlong=overlong,
        agent=agent,
    )


def reward_service(reward: RewardConfig, world: World = SINGLE) -> RewardService:
    """Connects to `reward.address`, or starts the sidecar server. Several processes and no
    address: one sidecar per machine, started by its first process (local rank 0; torchrun
    numbers a machine's processes contiguously, so that is rank - local_rank), which the
    machine's other processes connect to."""
    if not world.distributed or reward.address is not None:
        return _reward_client(reward, reward.address)
    started = _reward_client(reward, None) if world.local_rank == 0 else None
    addresses = all_gather_objects(started.address if started is not None else None)
    return started or _reward_client(reward, addresses[world.rank - world.local_rank])


def _reward_client(reward: RewardConfig, address: str | list[str] | None) -> RewardService:
    return RewardService(
        address,
        sidecar_config=reward.sidecar_config,
        sidecar_workers=reward.sidecar_workers,
        timeout_s=reward.timeout_s,
    )


def check_reward_names(rows: Sequence[PromptRow], available: set[str]) -> None:
    """Every row's reward must exist on the server: a typo would otherwise mask every item."""
    unknown: dict[str, str] = {}
    for row in rows:
        if row.reward.name not in available:
            unknown.setdefault(row.reward.name, row.id)
    if unknown:
        listed = ", ".join(
            f"{name!r} (first in row {row_id!r})" for name, row_id in unknown.items()
        )
        raise DataError(f"unknown reward {listed}; the server has: {', '.join(sorted(available))}")


def start_run(config: TrainConfig, device: torch.device, world: World = SINGLE) -> Run:
    """Loads and checks the data, starts the reward service (and checks that every row's
    reward exists there), then loads the models, resuming from the latest checkpoint in the
    output dir when there is one (and `output.resume`). `world`: this process's place in a
    torchrun launch (`init_world`); only its main process writes files."""
    output_dir = Path(config.output.dir)
    if world.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(dump_config(config))
    data = config.data
    rows = prompts_from_config(data, data.path, data.split)
    tokenizer = load_tokenizer(config.model.path)
    prompt_ids: Sequence[list[int]] = (
        LazyPromptIds(tokenizer, rows, data.max_prompt_tokens)
        if data.lazy
        else tokenize_prompts(tokenizer, rows, data.max_prompt_tokens)
    )
    cursor = PromptCursor(len(rows), seed=config.train.seed, shuffle=data.shuffle)
    held_out = list(eval_rows(config)[: config.eval.limit]) if config.eval.every > 0 else []
    held_out_ids = tokenize_prompts(tokenizer, held_out, data.max_prompt_tokens) if held_out else []
    rewards = reward_service(config.reward, world)
    try:  # a failure from here on must not leave the sidecar running
        checked = rows[:LAZY_CHECKED_ROWS] if data.lazy else rows
        check_reward_names([*checked, *held_out], rewards.verifier_names())
        run = _build_run(
            config, device, output_dir, rows, tokenizer, prompt_ids, cursor, rewards, world
        )
    except BaseException:
        rewards.close()
        raise
    run.eval_rows, run.eval_prompt_ids = held_out, held_out_ids
    return run


def _build_run(
    config: TrainConfig,
    device: torch.device,
    output_dir: Path,
    rows: Sequence[PromptRow],
    tokenizer: Any,
    prompt_ids: Sequence[list[int]],
    cursor: PromptCursor,
    rewards: RewardService,
    world: World,
) -> Run:
    """Models, learner, engine and log; restored from the latest checkpoint if any."""

    checkpoint = latest_checkpoint(output_dir) if config.output.resume else None
    random.seed(config.train.seed)
    torch.manual_seed(config.train.seed)  # the same initial weights on every process
    model = load_policy(
        config.model, device, checkpoint=policy_dir(checkpoint) if checkpoint else None
    )
    # Several processes: the engine samples from an unsharded copy, taken before sharding.
    sampler = copy.deepcopy(model) if world.distributed else model
    learner = _learner(config, model, device, world)
    start_step, trainer_state = _restore(checkpoint, output_dir, learner, cursor, world)
    if checkpoint is not None and sampler is not model:  # restored in place, after the copy
        sampler.load_state_dict(full_state_dict(model))
    rng = trainer_state["rng"] if checkpoint is not None else None

    overlong = overlong_shaping(config)
    log = RunLog(
        output_dir,
        total_steps=config.train.steps,
        first_step=start_step,
        trackers=build_trackers(
            config.output, config.model_dump(mode="json"), first_step=start_step
        )
        if world.is_main
        else [],
        progress=config.output.progress and world.is_main,
        log_rollouts=config.output.log_rollouts,
        write=world.is_main,
    )
    if rng is not None:  # last but the engine: nothing above consumes the restored streams
        set_rng_state(rng)
    elif world.distributed:  # each process samples its own prompts with its own stream
        torch.manual_seed(config.train.seed + world.rank)
    # Batches an async run had generated ahead (checkpoints older than async mode have none).
    buffered = trainer_state.get("rollout_buffer", [])
    engine = VersionedEngine(
        build_engine(config, sampler, tokenizer, world=world), version=start_step
    )
    try:  # a failure from here on must not leave vLLM's processes running
        take = prompt_taker(cursor, rows, prompt_ids, world)
        collector = _collector(
            config,
            tokenizer,
            engine,
            rewards,
            take,
            overlong,
            buffered,
            kept_total(config, world),
            highest(world),
        )
    except BaseException:
        engine.close()
        raise
    return Run(
        config=config,
        output_dir=output_dir,
        tokenizer=tokenizer,
        rows=rows,
        prompt_ids=prompt_ids,
        cursor=cursor,
        learner=learner,
        collector=collector,
        rewards=rewards,
        log=log,
        start_step=start_step,
        world=world,
        sampler=sampler,
    )


def _learner(
    config: TrainConfig, model: torch.nn.Module, device: torch.device, world: World
) -> Learner:
    """The learner over `model`, with a frozen reference (KL, or DPO's initial reference;
    without LoRA) and a value head (gae) when the algorithm needs them. Several processes:
    all three FSDP2-sharded (the value head too: its gradient is then averaged like the
    policy's, and the gradient clipping sees one kind of parameter)."""
    algo = config.algorithm
    reference = None
    if algo.needs_reference_model and config.model.lora_r == 0:
        reference = load_reference(config.model, device)
    value_head = new_value_head(model, device) if algo.uses_critic else None
    if world.distributed:
        bf16 = config.train.bf16 and device.type == "cuda"
        for module in (model, reference):
            if module is not None:
                shard_model(module, bf16=bf16)
        if value_head is not None:
            shard_flat(value_head)
    return Learner(
        model,
        algo=algo,
        train=config.train,
        # The policy gradient's ratio is of the sampler's (tempered) distribution; the SFT
        # and DPO losses are of the model's own.
        temperature=config.rollout.temperature if algo.objective == "policy_gradient" else 1.0,
        seq_len_norm=float(config.response_budget),
        device=device,
        reference=reference,
        value_head=value_head,
        world=world,
    )


def _restore(
    checkpoint: Path | None,
    output_dir: Path,
    learner: Learner,
    cursor: PromptCursor,
    world: World = SINGLE,
) -> tuple[int, dict[str, Any]]:
    """(the step the checkpoint holds, this process's {"rng", "rollout_buffer"}); (0, {})
    for a fresh run. The learner is restored in place. The logs are cut back to that step,
    so an earlier run's lines never mix with this one's."""
    start_step = 0
    rank_state: dict[str, Any] = {}
    if checkpoint is not None:
        start_step, cursor_state, rank_state = load_checkpoint(
            checkpoint, learner=learner, seed=learner.settings.seed
        )
        cursor.load_state_dict(cursor_state)
        if world.is_main:
            print(f"resuming from {checkpoint} (step {start_step})")
    if world.is_main:
        for name in ("metrics.jsonl", "rollouts.jsonl"):
            truncate_log(output_dir / name, start_step)
    return start_step, rank_state


def overlong_shaping(config: TrainConfig) -> Overlong | None:
    """DAPO's soft overlong penalty over the response budget (an agentic episode's policy
    tokens against max_episode_tokens, not one turn's max_new_tokens); None when off."""
    algo = config.algorithm
    if algo.overlong_weight == 0:
        return None
    budget = config.response_budget
    return Overlong(algo.overlong_weight, budget, int(budget * algo.overlong_cache_fraction))


def prompt_taker(
    cursor: PromptCursor,
    rows: Sequence[PromptRow],
    prompt_ids: Sequence[list[int]],
    world: World = SINGLE,
) -> TakePrompts:
    """The next `count` rows and their token ids, in the cursor's order. Several processes:
    every one draws the same `count` rows (the cursors move in step) and keeps its
    contiguous share, so whole groups stay on one process."""

    def take(count: int) -> tuple[list[PromptRow], list[list[int]]]:
        indices = share(cursor.take(count), world)
        return [rows[i] for i in indices], [prompt_ids[i] for i in indices]

    return take


def kept_total(config: TrainConfig, world: World) -> CountReduce:
    """Dynamic sampling's count of kept groups over every process; async mode reduces on a
    process group of its own (the rollout thread runs beside the trainer's collectives)."""
    if not world.distributed:
        return own_count
    group = new_group() if config.rollout.mode == "async" else None

    def total(kept: int) -> int:
        return int(all_reduce([float(kept)], group=group)[0])

    return total


def highest(world: World) -> CountReduce:
    """The largest of a count over every process, reduced on the default group by the main
    thread (the async collector's pause for a checkpoint: where its threads stop)."""
    if not world.distributed:
        return own_count
    return lambda value: int(all_reduce([float(value)], "max")[0])


def agent_loop(settings: AgentSettings, tokenizer: Any) -> AgentLoop:
    factory = environment_factory(
        settings.environment,
        timeout_s=settings.tool_timeout_s,
        max_chars=settings.max_tool_output_chars,
    )
    return AgentLoop(
        factory,
        tokenizer,
        max_turns=settings.max_turns,
        max_episode_tokens=settings.max_episode_tokens,
        turn_end=settings.turn_end,
        observation_template=settings.observation_template,
    )


def _collector(
    config: TrainConfig,
    tokenizer: Any,
    engine: VersionedEngine,
    rewards: RewardService,
    take_prompts: TakePrompts,
    overlong: Overlong | None,
    buffered: list[Any],
    kept_total: CountReduce = own_count,
    last_started: CountReduce = own_count,
) -> Collector:
    rollout, algo = config.rollout, config.algorithm
    dynamic = (
        DynamicSampling(algo.dynamic_sampling_signal, algo.overlong_weight)
        if algo.dynamic_sampling
        else None
    )
    agent = agent_loop(rollout.agent, tokenizer) if rollout.agent is not None else None
    plan = rollout_plan(rollout, overlong, agent)
    if rollout.mode == "sync":
        if buffered:
            raise ValueError(
                f"the checkpoint holds {len(buffered)} batches generated ahead in async mode: "
                "resume it with rollout.mode=async, or its prompts would be skipped"
            )
        return SyncCollector(
            engine,
            rewards,
            take_prompts,
            plan,
            dynamic_sampling=dynamic,
            max_gen_rounds=algo.max_gen_rounds,
            kept_total=kept_total,
        )
    return AsyncCollector(
        engine,
        rewards,
        take_prompts,
        plan,
        first_step=engine.version + 1,
        last_step=config.train.steps,
        max_staleness=rollout.max_staleness,
        on_stale=rollout.on_stale,
        dynamic_sampling=dynamic,
        max_gen_rounds=algo.max_gen_rounds,
        buffered=buffered,
        kept_total=kept_total,
        last_started=last_started,
    )
