"""`rl-client eval`: sample the model on a prompt set, score through the reward server and
report the mean reward (masked items counted, never scored as 0)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import torch

from rl_client.config import TrainConfig
from rl_client.data import load_prompts
from rl_client.engines.base import SamplingParams
from rl_client.engines.hf import HFEngine
from rl_client.models import load_tokenizer
from rl_client.optim import resolve_device
from rl_client.rewards import RewardService, status_counts
from rl_client.rollout import sample_and_score
from rl_client.run import check_reward_names, tokenize_prompts


def evaluate(
    config: TrainConfig, *, model_path: str | None = None, limit: int | None = None
) -> dict[str, Any]:
    """Scores `model_path` (default `model.path`) on `data.eval_path` (default `data.path`)."""
    from transformers import AutoModelForCausalLM

    data, rollout = config.data, config.rollout
    path = model_path or config.model.path
    device = resolve_device(config.train.device, config.train.threads)
    torch.manual_seed(config.train.seed)
    rows = load_prompts(
        data.eval_path or data.path,
        prompt_key=data.prompt_key,
        reference_key=data.reference_key,
        default_reward=data.reward,
        system_prompt=data.system_prompt,
    )[:limit]
    tokenizer = load_tokenizer(path)
    prompt_ids = tokenize_prompts(tokenizer, rows, data.max_prompt_tokens)
    model = AutoModelForCausalLM.from_pretrained(path).to(device).eval()
    engine = HFEngine(model, tokenizer, batch_size=rollout.batch_size)
    params = SamplingParams(
        n=rollout.group_size,
        temperature=rollout.temperature,
        top_p=rollout.top_p,
        max_new_tokens=rollout.max_new_tokens,
        stop_strings=tuple(rollout.stop_strings),
    )
    with RewardService(
        config.reward.address,
        sidecar_config=config.reward.sidecar_config,
        sidecar_workers=config.reward.sidecar_workers,
        timeout_s=config.reward.timeout_s,
    ) as rewards:
        check_reward_names(rows, rewards.verifier_names())
        groups, _ = sample_and_score(
            engine,
            rewards,
            rows,
            prompt_ids,
            params,
            chunk_prompts=max(1, rollout.batch_size // params.n),
            overlong=None,
            tag="eval",
        )
    results = [r for g in groups for r in g.results]
    scores = [r.score for r in results if r.ok]
    report = {
        "model": path,
        "prompts": len(rows),
        "samples_per_prompt": params.n,
        "reward_mean": statistics.fmean(scores) if scores else None,
        "reward_std": statistics.pstdev(scores) if scores else None,
        "masked_items": len(results) - len(scores),
        **status_counts(results),
    }
    output = Path(config.output.dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "eval.json").write_text(json.dumps(report, indent=2))
    return report
