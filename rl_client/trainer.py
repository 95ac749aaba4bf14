"""The online RL loop. Each step, as in the algorithm box of GRPO / DAPO / PPO:

1. rollout     sample G completions for each of B prompts (the policy's own engine; in
               async mode generated ahead, at most max_staleness versions old)
2. score       rewards from verifier_server; items that could not be verified are masked
3. filter      drop fully masked groups; with dynamic sampling also groups with no signal,
               and go back to 1 for fresh prompts while the budget of rounds lasts
4. advantages  reference / value passes, KL-in-reward, the advantage estimator
5. update      mu passes of the clipped policy loss (+ KL term, + value loss)
6. sync        the engine samples from the new weights
7. log         metrics.jsonl, TensorBoard, progress bar; checkpoint when due
8. eval        every eval.every steps, pass@k of the policy just trained, logged with step 7
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from rl_client.algorithms.dispatch import lookup
from rl_client.algorithms.estimators import compute_advantages
from rl_client.batch import build_batch, filler_batch
from rl_client.config import AlgorithmConfig, TrainConfig, dump_config
from rl_client.distributed import (
    batch_total,
    close_world,
    init_world,
    process_device,
)
from rl_client.learner import Learner
from rl_client.optim import resolve_device
from rl_client.periodic_eval import periodic_eval
from rl_client.preflight import check_world
from rl_client.rollout import Group
from rl_client.rounds import round_step
from rl_client.run import Run, start_run
from rl_client.run_log import reward_curve, rollout_metrics, summary_table


def train(config: TrainConfig) -> list[dict[str, Any]]:
    """Runs (or resumes) training; returns the metrics of the steps run in this call. Under
    torchrun, this process's part of a run on several (`rl_client.distributed`); the main
    process prints and writes the logs."""
    device = resolve_device(config.train.device, config.train.threads)
    world = init_world(device)  # one process without torchrun
    device = process_device(device, world)
    check_world(config, world)
    if world.is_main:
        print(dump_config(config))
    try:
        run = start_run(config, device, world)
        step_fn = lookup(STEPS, config.algorithm.objective, "algorithm.objective")
        try:
            for step in range(run.start_step + 1, config.train.steps + 1):
                step_fn(run, step)
                if step % config.output.save_every == 0 or step == config.train.steps:
                    run.save(step)
        finally:
            run.close()
    finally:
        close_world()
    if world.is_main:
        print(summary_table(run.log.history))
        print(reward_curve(run.log.history))
    return run.log.history


def train_step(run: Run, step: int) -> dict[str, Any]:
    algo = run.config.algorithm
    began = time.perf_counter()
    # 1. rollout, 2. score, 3. filter: sync mode generates the batch now (going back for fresh
    # prompts while dynamic sampling's budget lasts); async mode hands over the batch that was
    # generated while earlier steps trained. Several processes: each holds its share of the
    # groups (`mine`); `rollout` is the global batch.
    mine = run.collector.collect(step)
    rollout = mine.across_processes(run.world)
    train_began = time.perf_counter()
    update: dict[str, Any] = {}
    if rollout.kept:  # else nothing verified this step: skip the update, never crash
        # 4. advantages, 5. update
        update = policy_update(run.learner, mine.kept, algo, run.engine.pad_token_id)
    # 6. sync: the engine samples from the weights of this step (its version) from now on
    sync_began = time.perf_counter()
    run.sync_weights(step)
    sync_s = time.perf_counter() - sync_began
    # 7. log
    metrics = {
        "step": step,
        **rollout_metrics(rollout.sampled),
        "dropped_groups": rollout.stats.dropped_groups,
        "filtered_groups": rollout.stats.filtered_groups,
        "train_groups": len(rollout.kept),
        "gen_rounds": rollout.rounds,
        # Always present (null when the update was skipped or there is no reference).
        "kl": None,
        "clip_fraction": None,
        "entropy": None,
        "logprob_drift": None,
        "logprob_drift_max": None,
        **update,
        **rollout.lag_metrics(step),
        "regenerated_groups": rollout.regenerated_groups,
        "update_skipped": not rollout.kept,
        "data_epoch": run.cursor.epoch,
        "time_generate_s": rollout.timings.generate_s,
        "time_reward_s": rollout.timings.reward_wait_s,
        "time_rollout_wait_s": rollout.wait_s,
        "time_train_s": sync_began - train_began,
        "time_sync_s": sync_s,  # async: includes waiting for the engine's call in progress
        "time_step_s": time.perf_counter() - began,
        # 8. periodic eval of the policy just trained (eval.every), outside time_step_s; by
        # the main process only, which logs it
        **periodic_eval(run, step),
    }
    if algo.dynamic_sampling:
        # The budget ran out before the batch filled: trained on fewer groups (DAPO would
        # crash here; we say so instead).
        metrics["dynamic_sampling_exhausted"] = (
            len(rollout.kept) < run.config.rollout.prompts_per_step
        )
    run.log.step(metrics, rollout.sampled)
    return metrics


def policy_update(
    learner: Learner, kept: Sequence[Group], algo: AlgorithmConfig, pad_token_id: int
) -> dict[str, float]:
    """4. advantages: the batch, the reference and value passes, the estimator; 5. the
    update. Several processes: `kept` is this process's share of a global batch that has
    groups; a process with none still joins the others' collectives, with no rows."""
    batch = (
        build_batch(kept, pad_token_id=pad_token_id, mask_truncated=algo.mask_truncated)
        if kept
        else filler_batch(0)
    )
    prepared = learner.prepare(batch)
    advantages = compute_advantages(
        batch,
        algo,
        ref_logprobs=prepared.ref_logprobs,
        old_values=prepared.old_values,
        batch_total=batch_total,
    )
    return learner.update(batch, prepared, advantages)


# One step of each objective: the policy gradient here, the rounds of rft and dpo in rounds.py.
STEPS: dict[str, Callable[[Run, int], dict[str, Any]]] = {
    "policy_gradient": train_step,
    "rft": round_step,
    "dpo": round_step,
}
