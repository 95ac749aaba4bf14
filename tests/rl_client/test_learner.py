"""The learner: micro-batches with gradient accumulation equal one full batch (KL and
entropy terms included), gradient checkpointing changes nothing, the entropy bonus has PPO's
gradient, and `prepare` measures the reference and the value head on the completions only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rl_helpers import GROUPS

from rl_client.algorithms.estimators import Advantages, compute_advantages
from rl_client.batch import build_batch
from rl_client.config import AlgorithmConfig, ModelConfig, TrainSettings
from rl_client.learner import Learner, Prepared
from rl_client.models import load_policy, new_value_head


def _grads(
    model_dir: Path,
    micro_batch_size: int,
    aggregation: str,
    checkpointing: bool = False,
    **knobs: object,
) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model_config = ModelConfig(path=str(model_dir), gradient_checkpointing=checkpointing)
    model = load_policy(model_config, torch.device("cpu"))
    algo = AlgorithmConfig(loss_aggregation=aggregation, **knobs)  # type: ignore[arg-type]
    learner = Learner(
        model,
        algo=algo,
        train=TrainSettings(micro_batch_size=micro_batch_size),
        temperature=1.0,
        seq_len_norm=4.0,
        device=torch.device("cpu"),
    )
    batch = build_batch(GROUPS, pad_token_id=0, mask_truncated=False)
    prepared = Prepared(ref_logprobs=None, old_values=None)
    if algo.kl_coef > 0:  # a made-up reference, the same for every split
        ref_logprobs = torch.full_like(batch.sampler_logprobs, -3.0) * batch.completion_mask
        prepared = Prepared(ref_logprobs=ref_logprobs, old_values=None)
    advantages = compute_advantages(batch, algo, ref_logprobs=prepared.ref_logprobs)
    captured: list[torch.Tensor] = []
    learner.optimizer.step = lambda: captured.extend(  # type: ignore[method-assign]
        p.grad.clone() for p in learner.parameters
    )
    learner.update(batch, prepared, advantages)
    return captured


@pytest.mark.filterwarnings(r"ignore:Seems like `optimizer.step\(\)`")
def test_micro_batches_accumulate_to_the_full_batch_gradient(tiny_model: Path) -> None:
    # The KL loss and the entropy bonus are aggregated with the batch's denominators too.
    kl_and_entropy = {"kl_coef": 0.1, "kl_estimator": "k3", "entropy_coef": 0.01}
    for aggregation, knobs in (
        ("token_mean", {}),
        ("seq_mean_token_mean", {}),
        ("seq_mean_token_sum_norm", {}),
        ("seq_mean_token_sum", {}),
        ("token_mean", kl_and_entropy),
        ("seq_mean_token_mean", kl_and_entropy),
    ):
        full = _grads(tiny_model, 8, aggregation, **knobs)
        split = _grads(tiny_model, 3, aggregation, **knobs)  # 7 rows: 3 + 3 + 1
        assert any(g.abs().sum() > 0 for g in full)
        for a, b in zip(full, split, strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


@pytest.mark.filterwarnings(r"ignore:Seems like `optimizer.step\(\)`")
def test_gradient_checkpointing_gives_the_same_gradient(tiny_model: Path) -> None:
    plain = _grads(tiny_model, 4, "token_mean")
    checkpointed = _grads(tiny_model, 4, "token_mean", checkpointing=True)
    for a, b in zip(plain, checkpointed, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


@pytest.mark.filterwarnings(r"ignore:Seems like `optimizer.step\(\)`")
def test_entropy_bonus_gradient(tiny_model: Path) -> None:
    # Advantages 0 make the policy loss's gradient 0, so the step's gradient is exactly
    # -c2 * grad(token mean of the entropy of softmax(logits / temperature)) (PPO eq. 9),
    # computed here from the model's own logits.
    torch.manual_seed(0)
    model = load_policy(ModelConfig(path=str(tiny_model)), torch.device("cpu"))
    algo = AlgorithmConfig(loss_aggregation="token_mean", entropy_coef=0.3, tis_cap=None)
    learner = Learner(
        model,
        algo=algo,
        train=TrainSettings(micro_batch_size=3, max_grad_norm=None),
        temperature=0.7,
        seq_len_norm=4.0,
        device=torch.device("cpu"),
    )
    batch = build_batch(GROUPS, pad_token_id=0, mask_truncated=False)
    zeros = Advantages(torch.zeros_like(batch.completion_mask), None)
    captured: list[torch.Tensor] = []
    learner.optimizer.step = lambda: captured.extend(  # type: ignore[method-assign]
        p.grad.clone() for p in learner.parameters
    )
    learner.update(batch, Prepared(ref_logprobs=None, old_values=None), zeros)

    model.zero_grad()
    width, length = batch.prompt_width, batch.completion_mask.shape[1]
    logits = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
    ).logits[:, width - 1 : width - 1 + length]
    log_probs = torch.log_softmax(logits.float() / 0.7, dim=-1)
    entropy = -(log_probs.exp() * log_probs).sum(dim=-1)  # [N, T]
    mask = batch.loss_mask
    (-0.3 * (entropy * mask).sum() / mask.sum()).backward()
    expected = [p.grad for p in learner.parameters]
    assert any(g.abs().sum() > 0 for g in expected)
    for got, want in zip(captured, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-4)


def test_prepare_measures_the_reference_and_values_on_completion_tokens_only(
    tiny_model: Path,
) -> None:
    torch.manual_seed(0)
    model = load_policy(ModelConfig(path=str(tiny_model)), torch.device("cpu"))
    reference = load_policy(ModelConfig(path=str(tiny_model)), torch.device("cpu"))
    algo = AlgorithmConfig(advantage="gae", kl_coef=0.05, kl_estimator="k1", kl_placement="reward")
    learner = Learner(
        model,
        algo=algo,
        train=TrainSettings(micro_batch_size=3),
        temperature=1.0,
        seq_len_norm=4.0,
        device=torch.device("cpu"),
        reference=reference,
        value_head=new_value_head(model, torch.device("cpu")),
    )
    batch = build_batch(GROUPS, pad_token_id=0, mask_truncated=False)
    prepared = learner.prepare(batch)
    assert prepared.ref_logprobs is not None and prepared.old_values is not None
    off = batch.completion_mask == 0
    assert torch.all(prepared.ref_logprobs[off] == 0) and torch.all(prepared.old_values[off] == 0)
    # The reference is a copy of the policy: its logprobs are the policy's own.
    own = learner.forward(model, batch, slice(0, batch.size), values=False).logprobs
    torch.testing.assert_close(prepared.ref_logprobs, own.detach() * batch.completion_mask)
    assert torch.all(prepared.ref_logprobs[~off] < 0)
    # Without a KL or a critic there is nothing to measure.
    plain = Learner(
        model,
        algo=AlgorithmConfig(kl_coef=0.0),
        train=TrainSettings(micro_batch_size=3),
        temperature=1.0,
        seq_len_norm=4.0,
        device=torch.device("cpu"),
    )
    assert plain.prepare(batch) == Prepared(ref_logprobs=None, old_values=None)
