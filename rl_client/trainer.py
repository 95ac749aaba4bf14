"""The online RL loop. Each step, as in the algorithm box of GRPO / DAPO / PPO:

1. rollout     sample G completions for each of B prompts (the policy's own engine)
2. score       rewards from verifier_server; items that could not be verified are masked
3. filter      drop fully masked groups; with dynamic sampling also groups with no signal,
               and go back to 1 for fresh prompts while the budget of rounds lasts
4. advantages  reference / value passes, KL-in-reward, the advantage estimator
5. update      mu passes of the clipped policy loss (+ KL term, + value loss)
6. sync        the engine samples from the new weights
7. log         metrics.jsonl, TensorBoard, progress bar; checkpoint when due
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from typing import Any

from rl_client.batch import build_batch, compute_advantages
from rl_client.config import TrainConfig, dump_config
from rl_client.optim import resolve_device
from rl_client.rewards import status_counts
from rl_client.rollout import Group, RolloutTimings, sample_and_score
from rl_client.run import Run, start_run
from rl_client.run_log import reward_curve, summary_table
from rl_client.sampling import FilterStats, filter_groups


def train(config: TrainConfig) -> list[dict[str, Any]]:
    """Runs (or resumes) training; returns the metrics of the steps run in this call."""
    print(dump_config(config))
    run = start_run(config, resolve_device(config.train.device, config.train.threads))
    try:
        for step in range(run.start_step + 1, config.train.steps + 1):
            train_step(run, step)
            if step % config.output.save_every == 0 or step == config.train.steps:
                run.save(step)
    finally:
        run.close()
    print(summary_table(run.log.history))
    print(reward_curve(run.log.history))
    return run.log.history


def train_step(run: Run, step: int) -> dict[str, Any]:
    config, algo = run.config, run.config.algorithm
    began = time.perf_counter()
    sampled: list[Group] = []  # every group generated this step, for the reward metrics
    kept: list[Group] = []
    stats, timings, rounds = FilterStats(), RolloutTimings(), 0
    while True:
        rows, prompt_ids = run.take_prompts(config.rollout.prompts_per_step - len(kept))
        # 1. rollout and 2. score (each chunk is scored while the next one generates)
        groups, round_timings = sample_and_score(
            run.engine,
            run.rewards,
            rows,
            prompt_ids,
            run.sampling,
            chunk_prompts=max(1, config.rollout.batch_size // run.sampling.n),
            overlong=run.overlong,
            tag=f"{step}.{rounds}",
        )
        rounds += 1
        timings.generate_s += round_timings.generate_s
        timings.reward_wait_s += round_timings.reward_wait_s
        sampled += groups
        # 3. filter
        round_kept, round_stats = filter_groups(groups, dynamic=algo.dynamic_sampling)
        kept += round_kept
        stats.dropped_groups += round_stats.dropped_groups
        stats.filtered_groups += round_stats.filtered_groups
        full = len(kept) >= config.rollout.prompts_per_step
        if full or not algo.dynamic_sampling or rounds >= algo.max_gen_rounds:
            break

    train_began = time.perf_counter()
    update: dict[str, Any] = {}
    if kept:  # else nothing verified this step: skip the update, never crash
        # 4. advantages
        batch = build_batch(
            kept, pad_token_id=run.engine.pad_token_id, mask_truncated=algo.mask_truncated
        )
        run.learner.prepare(batch)
        batch.advantages, batch.returns = compute_advantages(batch, algo)
        # 5. update
        update = run.learner.update(batch)
        # 6. sync
        run.engine.sync_weights(run.learner.model)
    # 7. log
    metrics = {
        "step": step,
        **rollout_metrics(sampled),
        "dropped_groups": stats.dropped_groups,
        "filtered_groups": stats.filtered_groups,
        "train_groups": len(kept),
        "gen_rounds": rounds,
        # Always present (null when the update was skipped or there is no reference).
        "kl": None,
        "clip_fraction": None,
        "entropy": None,
        **update,
        "update_skipped": not kept,
        "data_epoch": run.cursor.epoch,
        "time_generate_s": timings.generate_s,
        "time_reward_s": timings.reward_wait_s,
        "time_train_s": time.perf_counter() - train_began,
        "time_step_s": time.perf_counter() - began,
    }
    if algo.dynamic_sampling:
        # The budget ran out before the batch filled: trained on fewer groups (DAPO would
        # crash here; we say so instead).
        metrics["dynamic_sampling_exhausted"] = len(kept) < config.rollout.prompts_per_step
    run.log.step(metrics, sampled)
    return metrics


def rollout_metrics(groups: Sequence[Group]) -> dict[str, Any]:
    """Reward statistics over the verified items only; masked items are counted."""
    results = [r for g in groups for r in g.results]
    completions = [c for g in groups for c in g.completions]
    scores = [r.score for r in results if r.ok]
    metrics: dict[str, Any] = {
        "reward_mean": statistics.fmean(scores) if scores else None,
        "reward_std": statistics.pstdev(scores) if scores else None,
        "masked_items": len(results) - len(scores),
        **status_counts(results),
        "response_len_mean": statistics.fmean(len(c.token_ids) for c in completions),
        "truncated_fraction": sum(c.truncated for c in completions) / len(completions),
    }
    components: dict[str, list[float]] = {}
    for result in results:
        if result.ok:
            for name, value in result.components.items():
                components.setdefault(name, []).append(value)
    for name, values in sorted(components.items()):
        if all(math.isfinite(v) for v in values):
            metrics[f"reward_{name}_mean"] = statistics.fmean(values)
    return metrics
