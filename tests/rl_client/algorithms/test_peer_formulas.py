"""Our estimators and losses against the formulas of three peer trainers, transcribed here in
our own words (no code of theirs is copied), on the same random tensors, to 1e-6.

The reference suite (`rl_paper_reference`) checks us against the papers; this file checks
that the papers were read the way the field's trainers read them. Each transcription names
the file and commit it mirrors:

- verl     volcengine/verl@b178a3cd56f58b2d502255daba591e92833930a7,
           verl/trainer/ppo/core_algos.py: compute_gae_advantage_return,
           compute_grpo_outcome_advantage, compute_rloo_outcome_advantage,
           compute_policy_loss_vanilla, agg_loss, compute_value_loss, kl_penalty(_forward),
           compute_rewards
- OpenRLHF OpenRLHF/OpenRLHF@3c3be6234e0cb353e76bb8019947db9dfe99fca7,
           openrlhf/models/utils.py: compute_approx_kl, compute_reward;
           openrlhf/trainer/ppo_utils/experience_maker.py: compute_advantages_and_returns,
           get_cumulative_returns (REINFORCE++ and REINFORCE++-baseline)
- TRL      huggingface/trl@f2cd57710ae345ea6428ae95363267fcf38a3dc8,
           trl/trainer/grpo_trainer.py: the group advantages (nanmean / nanstd, + 1e-4) and
           _compute_loss for loss_type grpo, dapo and dr_grpo, with beta * k3

Where a peer differs from us on purpose, the test says so and stays off that case:
verl's GRPO gives a group of one the raw score (we give 0); verl whitens with Bessel's
correction (OpenRLHF and we do not); verl's seq-mean-token-sum-norm does not divide by the
number of sequences (TRL's dr_grpo and we do); verl clamps k3 to [-10, 10] (we do not).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from rl_client.algorithms.advantages import (
    AdvantageOptions,
    gae_advantages,
    outcome_advantages,
    whiten,
)
from rl_client.algorithms.estimators import compute_advantages
from rl_client.algorithms.kl import kl_estimate
from rl_client.algorithms.losses import Normalizer, aggregate, ppo_clip_loss, value_loss
from rl_client.batch import build_batch
from rl_client.config import AlgorithmConfig
from rl_client.data import PromptRow
from rl_client.engines.base import Completion
from rl_client.rollout import Group
from verifier_server.types import Result, RewardSpec, Status

TOL = dict(atol=1e-6, rtol=0.0)
F64 = torch.float64


def _rows(seed: int, interior: bool) -> tuple[Tensor, torch.Generator]:
    """A [6, 9] mask, right-padded, every row non-empty; with `interior`, tool-output gaps."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.zeros(6, 9, dtype=F64)
    for i, length in enumerate([9, 6, 3, 8, 1, 5]):
        mask[i, :length] = 1.0
    if interior:
        mask[0, 3:5] = 0.0
        mask[3, 1] = 0.0
        mask[5, 2:4] = 0.0
    return mask, generator


# ---- verl


def _verl_gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> Tensor:
    """verl's GAE before its whitening: one backward pass over every position; on a masked
    (observation) position the running next-value and advantage are carried unchanged."""
    next_value = torch.zeros(rewards.shape[0], dtype=rewards.dtype)
    running = torch.zeros(rewards.shape[0], dtype=rewards.dtype)
    out = []
    for t in range(rewards.shape[1] - 1, -1, -1):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        candidate = delta + gamma * lam * running
        m = mask[:, t]
        next_value = values[:, t] * m + (1 - m) * next_value
        running = candidate * m + (1 - m) * running
        out.append(running)
    return torch.stack(out[::-1], dim=1)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0)])
def test_gae_matches_verl_multi_turn(gamma: float, lam: float, seed: int) -> None:
    mask, generator = _rows(seed, interior=True)
    rewards = torch.randn(mask.shape, generator=generator, dtype=F64) * mask
    values = torch.randn(mask.shape, generator=generator, dtype=F64) * mask
    ours, returns = gae_advantages(rewards, values, mask, gamma=gamma, lam=lam)
    theirs = _verl_gae(rewards, values, mask, gamma, lam)
    # verl leaves the carried advantage on observation positions; both train on mask only.
    torch.testing.assert_close(ours, theirs * mask, **TOL)
    torch.testing.assert_close(returns, (theirs + values) * mask, **TOL)


def _verl_grpo(scores: list[float], eps: float, scale: bool) -> list[float]:
    """verl's GRPO / Dr. GRPO for one group of >= 2 (torch.std: Bessel's correction)."""
    group = torch.tensor(scores, dtype=F64)
    centered = group - group.mean()
    return (centered / (group.std() + eps) if scale else centered).tolist()


def _verl_rloo(scores: list[float]) -> list[float]:
    """verl's RLOO for one group of n >= 2: r * n/(n-1) - mean * n/(n-1)."""
    n = len(scores)
    mean = sum(scores) / n
    return [r * n / (n - 1) - mean * n / (n - 1) for r in scores]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo", "rloo"])
def test_group_advantages_match_verl(estimator: str, seed: int) -> None:
    """verl groups rows by prompt id; our masked cells are rows it never sees. (verl gives a
    group of one its raw score, GRPO's std of one sample being undefined; we give 0.)"""
    generator = torch.Generator().manual_seed(seed)
    rewards = torch.rand(5, 6, generator=generator, dtype=F64)
    rewards[1] = (rewards[1] > 0.5).to(F64)  # a 0/1 group
    valid = torch.rand(5, 6, generator=generator) > 0.3
    valid[:, :2] = True  # every group has >= 2 members
    ours = outcome_advantages(estimator, rewards, valid, AdvantageOptions(eps=1e-6))
    expected = torch.zeros_like(rewards)
    for b in range(rewards.shape[0]):
        members = [g for g in range(rewards.shape[1]) if valid[b, g]]
        scores = [float(rewards[b, g]) for g in members]
        if estimator == "rloo":
            theirs = _verl_rloo(scores)
        else:
            theirs = _verl_grpo(scores, 1e-6, scale=estimator == "grpo")
        for g, a in zip(members, theirs, strict=True):
            expected[b, g] = a
    torch.testing.assert_close(ours, expected, **TOL)


def _verl_agg(loss: Tensor, mask: Tensor, mode: str) -> Tensor:
    """verl's agg_loss on one (global) batch."""
    if mode == "token_mean":
        return (loss * mask).sum() / mask.sum()
    seq_has = (mask.sum(-1) > 0).to(loss.dtype)
    if mode == "seq_mean_token_sum":
        return ((loss * mask).sum(-1) * seq_has).sum() / seq_has.sum()
    assert mode == "seq_mean_token_mean"
    per_seq = (loss * mask).sum(-1) / (mask.sum(-1) + 1e-8)
    return (per_seq * seq_has).sum() / seq_has.sum()


def _verl_policy_loss(
    logprobs: Tensor,
    old: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float,
    clip_high: float,
    clip_c: float,
    mode: str,
) -> tuple[Tensor, float, float]:
    """verl's vanilla PPO loss (dual clip always on, bound clip_c) and its two clip
    fractions."""
    ratio = torch.exp(torch.clamp(logprobs - old, -20.0, 20.0))
    plain = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_low, 1 + clip_high)
    ppo = torch.maximum(plain, clipped)
    bound = -advantages * clip_c
    with_dual = torch.min(bound, ppo)
    loss = torch.where(advantages < 0, with_dual, ppo)
    clipfrac = float(((clipped > plain).to(F64) * mask).sum() / mask.sum())
    lower = float((((ppo > bound) & (advantages < 0)).to(F64) * mask).sum() / mask.sum())
    return _verl_agg(loss, mask, mode), clipfrac, lower


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("mode", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum"])
@pytest.mark.parametrize(("clip_low", "clip_high"), [(0.2, 0.2), (0.2, 0.28)])
def test_policy_loss_matches_verl(clip_low: float, clip_high: float, mode: str, seed: int) -> None:
    mask, generator = _rows(seed, interior=True)
    old = -torch.rand(mask.shape, generator=generator, dtype=F64) * 3
    # ratios in [e^-2, e^2] = [.14, 7.4]: inside, clipped and past the dual bound 3
    logprobs = old + (torch.rand(mask.shape, generator=generator, dtype=F64) - 0.5) * 4
    advantages = torch.randn(mask.shape, generator=generator, dtype=F64) * 2
    ours_lp = logprobs.clone().requires_grad_(True)
    out = ppo_clip_loss(
        ours_lp,
        old,
        advantages,
        mask,
        clip_low=clip_low,
        clip_high=clip_high,
        dual_clip=3.0,
        aggregation=mode,
        norm=Normalizer.of(mask, 1.0),
    )
    out.loss.backward()
    theirs_lp = logprobs.clone().requires_grad_(True)
    theirs, clipfrac, lower = _verl_policy_loss(
        theirs_lp, old, advantages, mask, clip_low, clip_high, 3.0, mode
    )
    theirs.backward()
    torch.testing.assert_close(out.loss, theirs, **TOL)
    torch.testing.assert_close(ours_lp.grad, theirs_lp.grad, **TOL)
    assert out.metrics["clip_fraction"] == pytest.approx(clipfrac, abs=1e-12)
    assert out.metrics["dual_clip_fraction"] == pytest.approx(lower, abs=1e-12)
    assert lower > 0 and clipfrac > 0  # both branches were exercised


@pytest.mark.parametrize("seed", range(3))
def test_value_loss_matches_verl(seed: int) -> None:
    mask, generator = _rows(seed, interior=True)
    old = torch.randn(mask.shape, generator=generator, dtype=F64)
    values = old + (torch.rand(mask.shape, generator=generator, dtype=F64) - 0.5)
    returns = torch.randn(mask.shape, generator=generator, dtype=F64)
    ours_v = values.clone().requires_grad_(True)
    norm = Normalizer.of(mask, 1.0)
    out = value_loss(ours_v, old, returns, mask, clip=0.2, aggregation="token_mean", norm=norm)
    out.loss.backward()
    theirs_v = values.clone().requires_grad_(True)
    v_clipped = torch.clamp(theirs_v, old - 0.2, old + 0.2)
    per_token = torch.max((theirs_v - returns) ** 2, (v_clipped - returns) ** 2)
    theirs = 0.5 * _verl_agg(per_token, mask, "token_mean")
    theirs.backward()
    torch.testing.assert_close(out.loss, theirs, **TOL)
    torch.testing.assert_close(ours_v.grad, theirs_v.grad, **TOL)


def _verl_kl(logprobs: Tensor, ref: Tensor, name: str) -> Tensor:
    """verl's kl_penalty: k1, k2, k3 (low_var_kl) and 'k3+' (k3's value, k2's gradient)."""
    if name == "k1":
        return logprobs - ref
    if name == "k2":
        return 0.5 * (logprobs - ref) ** 2
    log_r = torch.clamp(ref - logprobs, -20.0, 20.0)
    k3 = torch.clamp(torch.exp(log_r) - log_r - 1, -10.0, 10.0)
    if name == "k3":
        return k3
    k2 = 0.5 * (logprobs - ref) ** 2
    return k2 - k2.detach() + k3.detach()


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("ours_name", "verl_name"), [("k1", "k1"), ("k2", "k2"), ("k3", "k3")])
def test_kl_estimators_match_verl(ours_name: str, verl_name: str, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    logprobs = -torch.rand(6, 9, generator=generator, dtype=F64) * 3
    ref = logprobs + (torch.rand(6, 9, generator=generator, dtype=F64) - 0.5) * 3  # k3 < 10
    ours_lp = logprobs.clone().requires_grad_(True)
    theirs_lp = logprobs.clone().requires_grad_(True)
    ours = kl_estimate(ours_name, ours_lp, ref)
    theirs = _verl_kl(theirs_lp, ref, verl_name)
    ours.sum().backward()
    theirs.sum().backward()
    torch.testing.assert_close(ours, theirs, **TOL)
    torch.testing.assert_close(ours_lp.grad, theirs_lp.grad, **TOL)


def test_k3_k2grad_matches_verl_k3_plus() -> None:
    generator = torch.Generator().manual_seed(0)
    logprobs = -torch.rand(6, 9, generator=generator, dtype=F64) * 3
    ref = logprobs + (torch.rand(6, 9, generator=generator, dtype=F64) - 0.5) * 3
    ours_lp = logprobs.clone().requires_grad_(True)
    theirs_lp = logprobs.clone().requires_grad_(True)
    ours = kl_estimate("k3_k2grad", ours_lp, ref)
    theirs = _verl_kl(theirs_lp, ref, "k3+")
    (ours * torch.arange(54, dtype=F64).view(6, 9)).sum().backward()
    (theirs * torch.arange(54, dtype=F64).view(6, 9)).sum().backward()
    torch.testing.assert_close(ours, theirs, **TOL)
    torch.testing.assert_close(ours_lp.grad, theirs_lp.grad, **TOL)


# ---- a batch through compute_advantages, against verl's PPO and OpenRLHF's REINFORCE++

ROW = PromptRow("p", (), RewardSpec("x"), None)


def _batch_groups(seed: int, with_tools: bool) -> list[Group]:
    """3 groups of 4 completions of random lengths and logprobs, 0/1 scores, one masked
    item; with `with_tools`, tool outputs inside some completions."""
    generator = torch.Generator().manual_seed(seed)
    groups = []
    for g in range(3):
        completions, results = [], []
        for m in range(4):
            length = int(torch.randint(2, 9, (1,), generator=generator))
            logprobs = (-torch.rand(length, generator=generator) * 2).tolist()
            loss_mask = None
            if with_tools and length >= 5 and m % 2 == 0:
                loss_mask = tuple(0 if 1 <= t < 3 else 1 for t in range(length))
                for t in range(1, 3):
                    logprobs[t] = 0.0  # what the agentic loop stores for tool tokens
            completions.append(
                Completion(list(range(10, 10 + length)), logprobs, "", "stop", loss_mask)
            )
            score = float(torch.rand(1, generator=generator) > 0.5)
            if g == 1 and m == 3:
                results.append(Result.failed(str(m), Status.TIMEOUT, "t"))
            else:
                results.append(Result(id=str(m), score=score))
        groups.append(Group(ROW, [1, 2, 3], completions, results))
    return groups


@pytest.mark.parametrize("seed", range(3))
def test_ppo_with_kl_in_the_reward_matches_verl(seed: int) -> None:
    batch = build_batch(_batch_groups(seed, with_tools=True), pad_token_id=0, mask_truncated=False)
    generator = torch.Generator().manual_seed(100 + seed)
    mask = batch.completion_mask
    ref_logprobs = (batch.sampler_logprobs - torch.rand(mask.shape, generator=generator)) * mask
    old_values = torch.randn(mask.shape, generator=generator) * mask
    algo = AlgorithmConfig(
        advantage="gae",
        gamma=1.0,
        gae_lambda=0.95,
        kl_coef=0.05,
        kl_estimator="k1",
        kl_placement="reward",
        whiten_advantages=False,
    )
    advantages, returns = compute_advantages(
        batch, algo, ref_logprobs=ref_logprobs, old_values=old_values
    )
    assert returns is not None
    # verl: the score on the last response token, minus kl_coef * (old - ref) on every token.
    # (verl's last token is that of the attention mask; in a multi-turn row the last token
    # is the policy's, as ours is: an episode ends on a model turn.)
    scores = torch.zeros(mask.shape)
    for i in range(batch.size):
        last = int(torch.nonzero(mask[i]).max())
        scores[i, last] = batch.rewards[i]
    token_rewards = scores - 0.05 * (batch.sampler_logprobs - ref_logprobs)
    theirs = _verl_gae(token_rewards.double(), old_values.double(), mask.double(), 1.0, 0.95)
    torch.testing.assert_close(advantages.double(), theirs * mask, atol=1e-6, rtol=0.0)
    torch.testing.assert_close(
        returns.double(), (theirs + old_values.double()) * mask, atol=1e-6, rtol=0.0
    )


def _openrlhf_reinforce(
    batch_rewards: Tensor,
    groups: Tensor,
    mask: Tensor,
    kl: Tensor,
    kl_coef: float,
    baseline: bool,
) -> Tensor:
    """OpenRLHF's REINFORCE++ (-baseline): r (less its group mean) on the last action token,
    -kl_coef * kl on every token, cumulative return (gamma 1), then (x - mean) * rsqrt(var)
    over all action tokens of the batch, var without Bessel's correction, clamped at 1e-8."""
    r = batch_rewards.clone()
    if baseline:
        for g in groups.unique():
            members = groups == g
            r[members] = r[members] - r[members].mean()
    last = mask.shape[1] - 1 - mask.long().fliplr().argmax(dim=1, keepdim=True)
    reward = torch.zeros_like(kl).scatter_(1, last, r.unsqueeze(1)) - kl_coef * kl
    reward = reward * mask
    returns = torch.zeros_like(reward)
    running = torch.zeros(reward.shape[0], dtype=reward.dtype)
    for t in range(reward.shape[1] - 1, -1, -1):
        running = reward[:, t] + running
        returns[:, t] = running
    n = mask.sum()
    mean = (returns * mask).sum() / n
    var = ((returns - mean) ** 2 * mask).sum() / n
    return (returns - mean) * var.clamp(min=1e-8).rsqrt()


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("baseline", [True, False])
def test_reinforce_pp_token_form_matches_openrlhf(baseline: bool, seed: int) -> None:
    # Single-turn rows: OpenRLHF has no tool outputs inside a row.
    batch = build_batch(_batch_groups(seed, with_tools=False), pad_token_id=0, mask_truncated=False)
    generator = torch.Generator().manual_seed(200 + seed)
    mask = batch.completion_mask
    ref_logprobs = (batch.sampler_logprobs - torch.rand(mask.shape, generator=generator)) * mask
    algo = AlgorithmConfig(
        advantage="reinforce_pp",
        group_baseline=baseline,
        reinforce_pp_form="token",
        kl_coef=0.01,
        kl_estimator="k1",
        kl_placement="reward",
        loss_aggregation="token_mean",
    )
    ours, _ = compute_advantages(batch, algo, ref_logprobs=ref_logprobs)
    kl = (batch.sampler_logprobs - ref_logprobs).double()  # compute_approx_kl's k1
    # The masked (TIMEOUT) item is no row here, and no member of its group's mean there.
    theirs = _openrlhf_reinforce(
        batch.rewards.double(), batch.group_index, mask.double(), kl, 0.01, baseline
    )
    torch.testing.assert_close(ours.double(), theirs * mask, atol=1e-6, rtol=0.0)


def test_token_whitening_matches_openrlhf_not_verl() -> None:
    """Population variance (OpenRLHF, REINFORCE++'s global normalisation); verl's
    masked_whiten uses Bessel's correction, a factor sqrt(n / (n - 1)) apart."""
    mask, generator = _rows(0, interior=True)
    values = torch.randn(mask.shape, generator=generator, dtype=F64)
    n = mask.sum()
    mean = (values * mask).sum() / n
    var = ((values - mean) ** 2 * mask).sum() / n
    openrlhf = (values - mean) * var.clamp(min=1e-8).rsqrt() * mask
    torch.testing.assert_close(whiten(values, mask), openrlhf, **TOL)
    verl = (values - mean) * torch.rsqrt(var * n / (n - 1) + 1e-8) * mask
    assert not torch.allclose(whiten(values, mask), verl, atol=1e-6)


# ---- TRL's GRPO


@pytest.mark.parametrize("seed", range(5))
def test_group_advantages_match_trl(seed: int) -> None:
    """TRL: unscorable completions are NaN; (r - nanmean) / (nanstd + 1e-4) per group, NaN
    (a group of one, whose nanstd is NaN) turned into 0. Ours with advantage_eps 1e-4."""
    generator = torch.Generator().manual_seed(seed)
    rewards = torch.rand(6, 4, generator=generator, dtype=F64)
    valid = torch.rand(6, 4, generator=generator) > 0.3
    valid[5] = torch.tensor([True, False, False, False])  # a group of one
    with_nan = torch.where(valid, rewards, math.nan)
    mean = torch.nanmean(with_nan, dim=1, keepdim=True)
    count = valid.sum(dim=1, keepdim=True)
    var = torch.nanmean((with_nan - mean) ** 2, dim=1, keepdim=True)
    var = var * torch.where(count > 1, count / (count - 1), math.nan)
    theirs = torch.nan_to_num((with_nan - mean) / (var.sqrt() + 1e-4), nan=0.0)
    ours = outcome_advantages("grpo", with_nan, valid, AdvantageOptions(eps=1e-4))
    torch.testing.assert_close(ours, theirs, **TOL)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(
    ("trl_loss_type", "ours_mode"),
    [
        ("grpo", "seq_mean_token_mean"),
        ("dapo", "token_mean"),
        ("dr_grpo", "seq_mean_token_sum_norm"),
    ],
)
def test_grpo_loss_with_k3_matches_trl(trl_loss_type: str, ours_mode: str, seed: int) -> None:
    """TRL adds beta * k3 to each token's clipped surrogate and aggregates once; the learner
    aggregates the policy loss and the KL loss apart with the same mode (the same, by
    linearity). One process, no gradient accumulation: TRL's num_items_in_batch is the
    batch's token count."""
    mask, generator = _rows(seed, interior=False)
    max_completion_length, beta, eps_low, eps_high = 12, 0.04, 0.2, 0.28
    old = -torch.rand(mask.shape, generator=generator, dtype=F64) * 3
    logprobs = old + (torch.rand(mask.shape, generator=generator, dtype=F64) - 0.5) * 2
    ref = old + (torch.rand(mask.shape, generator=generator, dtype=F64) - 0.5) * 2
    advantages = torch.randn(mask.shape[0], generator=generator, dtype=F64)

    theirs_lp = logprobs.clone().requires_grad_(True)
    coef_1 = torch.exp(theirs_lp - old)
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    a = advantages.unsqueeze(1)
    per_token = -torch.min(coef_1 * a, coef_2 * a)
    per_token = per_token + beta * (torch.exp(ref - theirs_lp) - (ref - theirs_lp) - 1)
    if trl_loss_type == "grpo":
        theirs = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif trl_loss_type == "dapo":
        theirs = (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    else:
        theirs = (per_token * mask).sum() / (per_token.size(0) * max_completion_length)
    theirs.backward()

    ours_lp = logprobs.clone().requires_grad_(True)
    norm = Normalizer.of(mask, float(max_completion_length))
    policy = ppo_clip_loss(
        ours_lp,
        old,
        advantages,
        mask,
        clip_low=eps_low,
        clip_high=eps_high,
        dual_clip=None,
        aggregation=ours_mode,
        norm=norm,
    )
    ours = policy.loss + beta * aggregate(ours_mode, kl_estimate("k3", ours_lp, ref), mask, norm)
    ours.backward()
    torch.testing.assert_close(ours, theirs, **TOL)
    torch.testing.assert_close(ours_lp.grad, theirs_lp.grad, **TOL)
