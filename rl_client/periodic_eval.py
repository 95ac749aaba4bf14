"""The periodic eval during training (`eval.every`): `rl-client eval`'s sampling and scoring,
on the policy the step has just trained, its metrics logged beside the step's as `eval/<name>`.

It must not change what training computes, so that a run with periodic eval resumes exactly
and trains as it would without: it samples under a forked torch RNG seeded from
(train.seed, step), which leaves the training streams where they were, and makes each eval
the same whether the run was resumed or not. In async mode the rollout thread is held while
it runs (it shares the engine). Under torchrun every process calls it and pauses its thread
(the threads of a dynamic-sampling run reduce their counts together, so all stop at the same
step), and the main process alone evaluates and logs.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from rl_client.evaluate import score_samples
from rl_client.run import Run

PREFIX = "eval/"


def periodic_eval(run: Run, step: int) -> dict[str, Any]:
    """{'eval/pass@1': ..., 'eval/time_s': ...} when `step` is a multiple of eval.every, else
    {} (and always {} on a process other than the main one). Sampled with eval.n_samples
    (default rollout.group_size) per prompt."""
    every = run.config.eval.every
    if every == 0 or step % every != 0:
        return {}
    began = time.perf_counter()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with run.collector.paused(), torch.random.fork_rng(devices=devices):
        if not run.world.is_main:
            return {}
        torch.manual_seed(run.config.train.seed * 1_000_003 + step)
        report, _ = score_samples(
            run.engine,
            run.rewards,
            run.eval_rows,
            run.eval_prompt_ids,
            run.config,
            progress=False,  # the training bar is on screen
        )
    del report["per_prompt"]
    return {
        **{f"{PREFIX}{name}": value for name, value in report.items()},
        f"{PREFIX}time_s": time.perf_counter() - began,
    }
