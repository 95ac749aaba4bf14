"""The learner: micro-batches with gradient accumulation equal one full batch; the sft loss
covers only the response; the batch keeps masked items out."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rl_client.batch import build_batch, compute_advantages
from rl_client.config import AlgorithmConfig, ModelConfig, TrainSettings
from rl_client.data import PromptRow
from rl_client.engines.base import Completion
from rl_client.learner import Learner
from rl_client.models import load_policy
from rl_client.rollout import Group
from rl_client.sft import IGNORE, pack
from verifier_server.types import Result, RewardSpec, Status

ROW = PromptRow("p", (), RewardSpec("x"), None)


def _group(prompt: list[int], completions: list[list[int]], scores: list[float | None]) -> Group:
    results = [
        Result(id=str(i), score=s) if s is not None else Result.failed(str(i), Status.TIMEOUT, "t")
        for i, s in enumerate(scores)
    ]
    items = [Completion(c, [-1.0] * len(c), "", "stop") for c in completions]
    return Group(ROW, prompt, items, results)


GROUPS = [
    _group([5, 6, 7], [[10, 11, 2], [12, 2], [13, 14, 15, 2], [16, 2]], [1.0, 0.0, 1.0, None]),
    _group([8, 9], [[20, 2], [21, 22, 2], [23, 2], [24, 25, 2]], [0.0, 0.0, 1.0, 0.0]),
]


def test_batch_keeps_masked_items_out_and_advantages_use_valid_members_only() -> None:
    batch = build_batch(GROUPS, pad_token_id=0, mask_truncated=False)
    assert batch.size == 7  # the TIMEOUT item is not a row
    assert batch.prompt_width == 3 and batch.completion_mask.shape == (7, 4)
    advantages, returns = compute_advantages(batch, AlgorithmConfig(advantage="dr_grpo"))
    assert returns is None
    # group 0 valid rewards 1, 0, 1: mean 2/3 -> 1/3, -2/3, 1/3 (the masked one is absent)
    # group 1: 0, 0, 1, 0: mean 1/4 -> -1/4, -1/4, 3/4, -1/4
    expected = [1 / 3, -2 / 3, 1 / 3, -0.25, -0.25, 0.75, -0.25]
    torch.testing.assert_close(advantages[:, 0], torch.tensor(expected))
    # advantages sit on completion tokens only
    assert torch.all((advantages != 0) <= batch.completion_mask.bool())


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
    if algo.kl_coef > 0:  # a made-up reference, the same for every split
        batch.ref_logprobs = torch.full_like(batch.sampler_logprobs, -3.0) * batch.completion_mask
    batch.advantages, batch.returns = compute_advantages(batch, algo)
    captured: list[torch.Tensor] = []
    learner.optimizer.step = lambda: captured.extend(  # type: ignore[method-assign]
        p.grad.clone() for p in learner.parameters
    )
    learner.update(batch)
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


def test_packing_keeps_labels_and_restarts_positions() -> None:
    examples = [
        ([1, 2, 3], [IGNORE, 2, 3]),
        ([4, 5], [IGNORE, 5]),
        ([6, 7, 8], [IGNORE, IGNORE, 8]),
    ]
    rows = pack(examples, max_len=5)
    assert rows == [
        ([1, 2, 3, 4, 5], [IGNORE, 2, 3, IGNORE, 5], [0, 1, 2, 0, 1]),
        ([6, 7, 8], [IGNORE, IGNORE, 8], [0, 1, 2]),
    ]


def test_sft_labels_cover_only_the_response_and_eos(tiny_model: Path, tmp_path: Path) -> None:
    from rl_client.config import SFTConfig, build_config
    from rl_client.models import load_tokenizer
    from rl_client.sft import sft_examples

    data = tmp_path / "sft.jsonl"
    data.write_text('{"prompt": "What is 2+2?", "completion": "\\\\boxed{4}"}\n')
    config = build_config(
        SFTConfig,
        {"model": {"path": str(tiny_model)}, "data": {"path": str(data)}, "output_dir": "o"},
    )
    tokenizer = load_tokenizer(tiny_model)
    [(ids, labels)] = sft_examples(config, tokenizer)
    answer = tokenizer("\\boxed{4}", add_special_tokens=False)["input_ids"]
    response = [*answer, tokenizer.eos_token_id]
    assert labels[-len(response) :] == response
    assert set(labels[: -len(response)]) == {IGNORE}
    assert ids[-len(response) :] == response
    prompt_text = tokenizer.decode(ids[: -len(response)])
    assert prompt_text.endswith("What is 2+2?<|im_end|>\n<|im_start|>assistant\n")


def test_kl_in_the_reward_is_summed_per_sequence_before_the_advantage() -> None:
    batch = build_batch(GROUPS, pad_token_id=0, mask_truncated=False)
    batch.ref_logprobs = torch.full_like(batch.sampler_logprobs, -1.5) * batch.completion_mask
    algo = AlgorithmConfig(
        advantage="dr_grpo", kl_coef=0.1, kl_estimator="k1", kl_placement="reward"
    )
    advantages, _ = compute_advantages(batch, algo)
    # k1 = logp - ref = -1 - (-1.5) = 0.5 per token; penalty 0.1 * 0.5 * length
    # group 0 (lengths 3, 2, 4): 1 - .15, 0 - .1, 1 - .2 = .85, -.1, .8; mean 1.55 / 3
    #   -> .333333, -.616667, .283333
    # group 1 (lengths 2, 3, 2, 3): -.1, -.15, .9, -.15; mean .125
    #   -> -.225, -.275, .775, -.275
    expected = [0.333333, -0.616667, 0.283333, -0.225, -0.275, 0.775, -0.275]
    torch.testing.assert_close(advantages[:, 0], torch.tensor(expected), atol=1e-5, rtol=0)


def test_an_ok_completion_with_no_tokens_stays_in_its_group_statistics() -> None:
    # Member 1 of group 1 answered nothing (0 tokens) and was scored 0, OK. Its reward counts:
    # rewards 0, 0, 1 -> mean 1/3 -> -1/3, -1/3, 2/3 (dropped, the mean of 0, 1 would be .5).
    groups = [_group([8, 9], [[20, 2], [], [23, 2]], [0.0, 0.0, 1.0])]
    batch = build_batch(groups, pad_token_id=0, mask_truncated=False)
    assert batch.size == 3 and batch.completion_mask[1].sum() == 0
    advantages, _ = compute_advantages(batch, AlgorithmConfig(advantage="dr_grpo"))
    torch.testing.assert_close(advantages[[0, 2], 0], torch.tensor([-1 / 3, 2 / 3]))
    assert advantages[1].abs().sum() == 0  # no token to carry it
    # A batch of empty completions only still builds (T = 1, nothing in the loss).
    empty = build_batch([_group([8], [[], []], [0.0, 1.0])], pad_token_id=0, mask_truncated=False)
    assert empty.completion_mask.shape == (2, 1) and empty.completion_mask.sum() == 0


def _episode(tokens: int, policy: list[int], score: float) -> Group:
    completion = Completion(
        list(range(10, 10 + tokens)), [-1.0] * tokens, "", "stop", tuple(policy)
    )
    return Group(ROW, [5], [completion], [Result(id="0", score=score)])


def test_ppo_advantages_of_an_episode_with_tool_outputs() -> None:
    # Policy tokens at 0, 1, 4 (2, 3 are a tool output); reward 1, V .5, gamma 1, lam .95,
    # no whitening: A = .5 * .95^k by policy steps to the end: .45125, .475, 0, 0, .5.
    batch = build_batch([_episode(5, [1, 1, 0, 0, 1], 1.0)], pad_token_id=0, mask_truncated=False)
    batch.old_values = torch.full((1, 5), 0.5) * batch.completion_mask
    algo = AlgorithmConfig(advantage="gae", gamma=1.0, gae_lambda=0.95, whiten_advantages=False)
    advantages, returns = compute_advantages(batch, algo)
    torch.testing.assert_close(advantages, torch.tensor([[0.45125, 0.475, 0.0, 0.0, 0.5]]))
    assert returns is not None and returns[0, 4] == pytest.approx(1.0)


def test_reinforce_pp_token_form_by_hand() -> None:
    # One group of two: rewards 1 and 0, group baseline .5 -> +.5, -.5 on the last policy
    # token. k1 = logp - ref = -1 - (-1.2) = .2 per policy token, times kl_coef .5 = .1.
    # Row 0 (3 tokens, the middle one a tool output): rewards -.1, (tool), .5 - .1 = .4;
    #   to go: .3, 0, .4. Row 1 (2 tokens): -.1, -.5 - .1 = -.6; to go: -.7, -.6.
    # Whitened over the 4 policy tokens .3 .4 -.7 -.6: mean -.15; deviations .45 .55 -.55
    # -.45; population var (.2025 + .3025) * 2 / 4 = .2525; std .502494
    #   -> .895533, 1.094540, -1.094540, -.895533
    groups = [
        Group(
            ROW,
            [5],
            [
                Completion([10, 11, 12], [-1.0] * 3, "", "stop", (1, 0, 1)),
                Completion([13, 14], [-1.0] * 2, "", "stop"),
            ],
            [Result(id="0", score=1.0), Result(id="1", score=0.0)],
        )
    ]
    batch = build_batch(groups, pad_token_id=0, mask_truncated=False)
    batch.ref_logprobs = torch.full_like(batch.sampler_logprobs, -1.2) * batch.completion_mask
    algo = AlgorithmConfig(
        advantage="reinforce_pp",
        reinforce_pp_form="token",
        kl_coef=0.5,
        kl_estimator="k1",
        kl_placement="reward",
    )
    advantages, _ = compute_advantages(batch, algo)
    expected = [[0.895533, 0.0, 1.094540], [-1.094540, -0.895533, 0.0]]
    torch.testing.assert_close(advantages, torch.tensor(expected), atol=1e-5, rtol=0)


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
    batch.advantages = torch.zeros_like(batch.completion_mask)
    captured: list[torch.Tensor] = []
    learner.optimizer.step = lambda: captured.extend(  # type: ignore[method-assign]
        p.grad.clone() for p in learner.parameters
    )
    learner.update(batch)

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
