"""The transformers rollout engine: G samples per prompt, sampler logprobs, EOS/stop/length."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rl_client.batch import build_batch
from rl_client.config import AlgorithmConfig, ModelConfig, TrainSettings
from rl_client.data import PromptRow
from rl_client.engines.base import SamplingParams
from rl_client.engines.hf import HFEngine
from rl_client.learner import Learner
from rl_client.models import load_policy, load_tokenizer
from rl_client.rollout import Group
from verifier_server.types import Result, RewardSpec


def _engine(model_dir: Path) -> tuple[HFEngine, torch.nn.Module, object]:
    tokenizer = load_tokenizer(model_dir)
    model = load_policy(ModelConfig(path=str(model_dir)), torch.device("cpu"))
    return HFEngine(model, tokenizer, batch_size=8), model, tokenizer


def _prompt(tokenizer: object, text: str) -> list[int]:
    rendered = tokenizer.apply_chat_template(  # type: ignore[attr-defined]
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
    return tokenizer(rendered, add_special_tokens=False)["input_ids"]  # type: ignore[operator]


def test_g_samples_per_prompt_and_length_limit(tiny_model: Path) -> None:
    engine, _, tokenizer = _engine(tiny_model)
    torch.manual_seed(0)
    prompts = [_prompt(tokenizer, "What is 1+2?"), _prompt(tokenizer, "Hi")]
    out = engine.generate(prompts, SamplingParams(n=3, max_new_tokens=5))
    assert [len(group) for group in out] == [3, 3]
    for completion in (c for group in out for c in group):
        assert 1 <= len(completion.token_ids) <= 5
        assert len(completion.logprobs) == len(completion.token_ids)
        # A random model over 384 tokens almost never says EOS in 5 tokens.
        if completion.token_ids[-1] != tokenizer.eos_token_id:
            assert completion.truncated and len(completion.token_ids) == 5


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 1.0)])
def test_sampler_logprobs_match_the_learner(
    tiny_model: Path, temperature: float, top_p: float
) -> None:
    engine, model, tokenizer = _engine(tiny_model)
    torch.manual_seed(1)
    prompts = [_prompt(tokenizer, "What is 1+2?"), _prompt(tokenizer, "Longer prompt here")]
    out = engine.generate(
        prompts, SamplingParams(n=2, temperature=temperature, top_p=top_p, max_new_tokens=6)
    )
    row = PromptRow("p", (), RewardSpec("x"), None)
    groups = [
        Group(row, prompt, completions, [Result(id=str(i), score=1.0) for i in range(2)])
        for prompt, completions in zip(prompts, out, strict=True)
    ]
    batch = build_batch(groups, pad_token_id=engine.pad_token_id, mask_truncated=False)
    learner = Learner(
        model,
        algo=AlgorithmConfig(),
        train=TrainSettings(),
        temperature=temperature,
        seq_len_norm=6.0,
        device=torch.device("cpu"),
    )
    with torch.no_grad():
        recomputed = learner.forward(model, batch, slice(0, batch.size), values=False).logprobs
    drift = ((recomputed - batch.sampler_logprobs).abs() * batch.completion_mask).max()
    assert drift < 1e-4


def test_top_p_logprobs_are_of_the_truncated_distribution(tiny_model: Path) -> None:
    # Nucleus sampling renormalises over the kept tokens: each logprob is >= the full one.
    engine, model, tokenizer = _engine(tiny_model)
    torch.manual_seed(2)
    prompts = [_prompt(tokenizer, "What is 1+2?")]
    out = engine.generate(prompts, SamplingParams(n=4, top_p=0.5, max_new_tokens=4))
    row = PromptRow("p", (), RewardSpec("x"), None)
    group = Group(row, prompts[0], out[0], [Result(id=str(i), score=1.0) for i in range(4)])
    batch = build_batch([group], pad_token_id=engine.pad_token_id, mask_truncated=False)
    learner = Learner(
        model,
        algo=AlgorithmConfig(),
        train=TrainSettings(),
        temperature=1.0,
        seq_len_norm=4.0,
        device=torch.device("cpu"),
    )
    with torch.no_grad():
        full = learner.forward(model, batch, slice(0, batch.size), values=False).logprobs
    mask = batch.completion_mask.bool()
    assert torch.all(batch.sampler_logprobs[mask] >= full[mask] - 1e-5)
    assert torch.any(batch.sampler_logprobs[mask] > full[mask] + 1e-3)


def test_completion_is_cut_after_eos_or_stop_string(tiny_model: Path) -> None:
    engine, _, tokenizer = _engine(tiny_model)
    from transformers import GenerationConfig

    tokens = tokenizer("abc</answer>xyz", add_special_tokens=False)["input_ids"]
    logprobs = [-0.1 * (i + 1) for i in range(len(tokens))]
    stopped = engine._completion(tokens, logprobs, GenerationConfig(stop_strings=["</answer>"]))
    assert stopped.text == "abc</answer>"
    assert stopped.finish_reason == "stop"
    assert stopped.logprobs == logprobs[: len(stopped.token_ids)]

    with_eos = [
        *tokenizer("ok", add_special_tokens=False)["input_ids"],
        tokenizer.eos_token_id,
        5,
        6,
    ]
    ended = engine._completion(with_eos, [0.0] * 5, GenerationConfig())
    assert ended.token_ids == with_eos[:3] and ended.text == "ok" and not ended.truncated

    plain = engine._completion(tokens, logprobs, GenerationConfig())
    assert plain.truncated and plain.text == "abc</answer>xyz"
