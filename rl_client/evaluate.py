"""`rl-client eval`: sample the model on a prompt set, score through the reward server and
report the mean reward (masked items counted, never scored as 0)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import torch

from rl_client.config import TrainConfig
from rl_client.engines.hf import HFEngine
from rl_client.engines.versioned import VersionedEngine
from rl_client.models import load_tokenizer
from rl_client.optim import resolve_device
from rl_client.rewards import status_counts
from rl_client.rollout import sample
from rl_client.run import (
    check_reward_names,
    prompts_from_config,
    reward_service,
    rollout_plan,
    tokenize_prompts,
)


def evaluate(
    config: TrainConfig, *, model_path: str | None = None, limit: int | None = None
) -> dict[str, Any]:
    """Scores `model_path` (default `model.path`; a checkpoint's `policy/` dir works too, LoRA
    adapters included) on `data.eval_path` (default `data.path`)."""
    from transformers import AutoModelForCausalLM

    data, rollout = config.data, config.rollout
    path = model_path or config.model.path
    device = resolve_device(config.train.device, config.train.threads)
    torch.manual_seed(config.train.seed)
    rows = prompts_from_config(data, data.eval_path or data.path)[:limit]
    tokenizer = load_tokenizer(path)
    prompt_ids = tokenize_prompts(tokenizer, rows, data.max_prompt_tokens)
    if (Path(path) / "adapter_config.json").exists():  # a LoRA checkpoint: base + adapters
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(path).to(device).eval()
    else:
        model = AutoModelForCausalLM.from_pretrained(path).to(device).eval()
    engine = VersionedEngine(HFEngine(model, tokenizer, batch_size=rollout.batch_size), 0)
    plan = rollout_plan(rollout, overlong=None)
    with reward_service(config.reward) as rewards:
        check_reward_names(rows, rewards.verifier_names())
        groups, _ = sample(engine, rewards, rows, prompt_ids, plan, tag="eval").finish()
    results = [r for g in groups for r in g.results]
    scores = [r.score for r in results if r.ok]
    report = {
        "model": path,
        "prompts": len(rows),
        "samples_per_prompt": plan.sampling.n,
        "reward_mean": statistics.fmean(scores) if scores else None,
        "reward_std": statistics.pstdev(scores) if scores else None,
        "masked_items": len(results) - len(scores),
        **status_counts(results),
    }
    output = Path(config.output.dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "eval.json").write_text(json.dumps(report, indent=2))
    return report
