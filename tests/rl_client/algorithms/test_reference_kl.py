"""KL estimators and placements against the references, and by exact enumeration over a
small vocabulary: which estimator x placement actually follows the KL gradient.

A placement's gradient, in expectation over x ~ pi (g(x) = grad log pi(x)):
- 'reward': the estimate is a detached penalty in the reward, so the policy-gradient step
  follows E[k(x) g(x)] (the score function);
- 'loss': the estimate is differentiated through logprobs: E[grad k(x)].
The enumerations compute those expectations exactly (sum over every x, weighted by pi(x)) and
compare them with the autograd gradient of the exact KL.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
import rl_paper_reference as ref
import torch
from torch import Tensor

from rl_client.algorithms.advantages import AdvantageOptions, reward_to_go
from rl_client.algorithms.estimators import Advantages, compute_advantages
from rl_client.algorithms.kl import KL_ESTIMATORS, kl_estimate
from rl_client.algorithms.losses import AGGREGATIONS, Normalizer, aggregate, ppo_clip_loss
from rl_client.batch import Batch
from rl_client.config import AlgorithmConfig

TOL = dict(atol=1e-6, rtol=0.0)
F64 = torch.float64


def _tokens(seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """logprobs, ref_logprobs, mask [5, 8] with padding and a gap."""
    generator = torch.Generator().manual_seed(seed)
    logprobs = -torch.rand(5, 8, generator=generator, dtype=F64) * 4
    ref_logprobs = -torch.rand(5, 8, generator=generator, dtype=F64) * 4
    mask = torch.zeros(5, 8, dtype=F64)
    for i, length in enumerate([8, 5, 2, 7, 3]):
        mask[i, :length] = 1
    mask[3, 2:4] = 0
    return logprobs, ref_logprobs, mask


REFERENCE_VALUE = {"k1": ref.k1, "k2": ref.k2, "k3": ref.k3, "k3_k2grad": ref.k3}
REFERENCE_GRADIENT = {"k1": ref.k1, "k2": ref.k2, "k3": ref.k3, "k3_k2grad": ref.k2}


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("estimator", sorted(KL_ESTIMATORS))
def test_estimator_values_and_gradients(estimator: str, seed: int) -> None:
    logprobs, ref_logprobs, _ = _tokens(seed)
    ours_input = logprobs.clone().requires_grad_(True)
    ours = kl_estimate(estimator, ours_input, ref_logprobs)
    ours.sum().backward()
    for i, t in itertools.product(range(5), range(8)):
        x = logprobs[i, t].clone().requires_grad_(True)
        value = REFERENCE_VALUE[estimator](x, float(ref_logprobs[i, t]))
        assert float(ours[i, t].detach()) == pytest.approx(float(value), abs=1e-6)
        (grad,) = torch.autograd.grad(
            REFERENCE_GRADIENT[estimator](x, float(ref_logprobs[i, t])), x
        )
        assert float(ours_input.grad[i, t]) == pytest.approx(float(grad), abs=1e-6)


@pytest.mark.parametrize("mode", sorted(AGGREGATIONS))
@pytest.mark.parametrize("estimator", ["k2", "k3", "k3_k2grad"])
def test_kl_as_a_loss_term(estimator: str, mode: str) -> None:
    # The learner adds kl_coef * aggregate(mode, kl_estimate(...)) to the loss.
    logprobs, ref_logprobs, mask = _tokens(7)
    beta, constant = 0.04, 10.0
    ours_input = logprobs.clone().requires_grad_(True)
    kl = kl_estimate(estimator, ours_input, ref_logprobs)
    ours = beta * aggregate(mode, kl, mask, Normalizer.of(mask, constant))
    ours.backward()
    ref_input = logprobs.clone().requires_grad_(True)
    value, gradient = REFERENCE_VALUE[estimator], REFERENCE_GRADIENT[estimator]
    rows_value, rows_gradient = [], []
    for i in range(5):
        cells = [t for t in range(8) if mask[i, t] > 0]
        rows_value.append(
            [
                value(ref_input[i, t], float(ref_logprobs[i, t])) if t in cells else None
                for t in range(8)
            ]
        )
        rows_gradient.append(
            [
                gradient(ref_input[i, t], float(ref_logprobs[i, t])) if t in cells else None
                for t in range(8)
            ]
        )
    expected = beta * ref.aggregate(mode, rows_value, constant)
    (beta * ref.aggregate(mode, rows_gradient, constant)).backward()
    torch.testing.assert_close(ours, expected, **TOL)
    torch.testing.assert_close(ours_input.grad, ref_input.grad, **TOL)


@dataclass(frozen=True)
class _Measured(Batch):
    """A batch with what the learner measures before the update (`learner.Prepared`)."""

    ref_logprobs: Tensor
    old_values: Tensor


def _advantages(batch: _Measured, algo: AlgorithmConfig) -> Advantages:
    return compute_advantages(
        batch, algo, ref_logprobs=batch.ref_logprobs, old_values=batch.old_values
    )


def _batch(seed: int) -> _Measured:
    """3 groups of 3 (one member masked), float64, a tool output inside some rows."""
    generator = torch.Generator().manual_seed(seed)
    members = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2)]  # (1, 1) masked
    n, length = len(members), 6
    mask = torch.zeros(n, length, dtype=F64)
    for i, size in enumerate([6, 4, 5, 2, 6, 3, 1, 5]):
        mask[i, :size] = 1
    mask[0, 2:4] = 0
    mask[4, 1:3] = 0
    ids = torch.zeros(n, 1 + length, dtype=torch.long)
    return _Measured(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        position_ids=torch.zeros_like(ids),
        prompt_width=1,
        completion_mask=mask,
        loss_mask=mask,
        sampler_logprobs=-torch.rand(n, length, generator=generator, dtype=F64) * 3 * mask,
        rewards=torch.rand(n, generator=generator, dtype=F64).round(),
        group_index=torch.tensor([g for g, _ in members]),
        member_index=torch.tensor([m for _, m in members]),
        truncated=torch.zeros(n, dtype=torch.bool),
        num_groups=3,
        group_size=3,
        ref_logprobs=-torch.rand(n, length, generator=generator, dtype=F64) * 3 * mask,
        old_values=torch.rand(n, length, generator=generator, dtype=F64) * mask,
    )


def _k1_per_token(batch: _Measured) -> list[list[float]]:
    """Reference k1 at the behaviour policy on each row's policy tokens."""
    assert batch.ref_logprobs is not None
    return [
        [
            float(ref.k1(batch.sampler_logprobs[i, t], float(batch.ref_logprobs[i, t])))
            for t in ref.policy_positions(batch.completion_mask[i])
        ]
        for i in range(batch.size)
    ]


BETA = 0.1


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo", "rloo"])
def test_k1_in_the_reward_of_the_group_estimators(estimator: str, seed: int) -> None:
    # r'_i = r_i - beta * sum_t k1_t, then the group estimator; A_i on every policy token.
    batch = _batch(seed)
    algo = AlgorithmConfig(
        advantage=estimator, kl_coef=BETA, kl_estimator="k1", kl_placement="reward"
    )
    ours, _ = _advantages(batch, algo)
    penalised = [
        float(r) - BETA * sum(k) for r, k in zip(batch.rewards, _k1_per_token(batch), strict=True)
    ]
    expected = torch.zeros_like(ours)
    for g in range(3):
        rows = [i for i in range(batch.size) if batch.group_index[i] == g]
        grid = [0.0] * 3
        valid = [False] * 3
        for i in rows:
            grid[int(batch.member_index[i])] = penalised[i]
            valid[int(batch.member_index[i])] = True
        if estimator == "grpo":
            group = ref.grpo(grid, valid, AdvantageOptions().eps)
        elif estimator == "dr_grpo":
            group = ref.dr_grpo(grid, valid)
        else:
            group = ref.rloo(grid, valid)
        for i in rows:
            expected[i] = group[int(batch.member_index[i])] * batch.completion_mask[i]
    torch.testing.assert_close(ours, expected, **TOL)


@pytest.mark.parametrize("seed", range(3))
def test_k1_per_token_in_the_reward_of_gae(seed: int) -> None:
    # r_t = -beta * k1_t, plus the outcome on the last policy token; GAE over policy steps.
    batch = _batch(seed)
    algo = AlgorithmConfig(
        advantage="gae",
        gamma=0.97,
        gae_lambda=0.9,
        whiten_advantages=False,
        kl_coef=BETA,
        kl_estimator="k1",
        kl_placement="reward",
    )
    advantages, returns = _advantages(batch, algo)
    assert batch.old_values is not None and returns is not None
    expected = torch.zeros_like(advantages)
    for i, k1 in enumerate(_k1_per_token(batch)):
        positions = ref.policy_positions(batch.completion_mask[i])
        rewards = [-BETA * k for k in k1]
        rewards[-1] += float(batch.rewards[i])
        values = [float(batch.old_values[i, t]) for t in positions]
        for t, a in zip(positions, ref.gae_row(rewards, values, 0.97, 0.9), strict=True):
            expected[i, t] = a
    torch.testing.assert_close(advantages, expected, **TOL)
    torch.testing.assert_close(
        returns, (expected + batch.old_values) * batch.completion_mask, **TOL
    )


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("group_baseline", [True, False])
def test_k1_per_token_in_the_reward_of_reinforce_pp(group_baseline: bool, seed: int) -> None:
    # REINFORCE++ (sec. 3): r(x, y) (less the group mean: -baseline) on the last policy
    # token, -beta * k1_t on every one, reward-to-go, whitened over all policy tokens.
    batch = _batch(seed)
    algo = AlgorithmConfig(
        advantage="reinforce_pp",
        reinforce_pp_form="token",
        group_baseline=group_baseline,
        kl_coef=BETA,
        kl_estimator="k1",
        kl_placement="reward",
    )
    advantages, _ = _advantages(batch, algo)
    outcome = [float(r) for r in batch.rewards]
    if group_baseline:
        for g in range(3):
            rows = [i for i in range(batch.size) if batch.group_index[i] == g]
            centered = ref.dr_grpo([outcome[i] for i in rows], [True] * len(rows))
            for i, c in zip(rows, centered, strict=True):
                outcome[i] = c
    cells, to_go = [], []
    for i, k1 in enumerate(_k1_per_token(batch)):
        rewards = [-BETA * k for k in k1]
        rewards[-1] += outcome[i]
        cells += [(i, t) for t in ref.policy_positions(batch.completion_mask[i])]
        to_go += ref.reward_to_go_row(rewards, 1.0)
    expected = torch.zeros_like(advantages)
    for (i, t), a in zip(cells, ref.whiten_cells(to_go, 1e-8), strict=True):
        expected[i, t] = a
    torch.testing.assert_close(advantages, expected, **TOL)


# ---- exact enumeration: one token over a vocabulary of 6


def _policies(seed: int) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    theta = (torch.randn(6, generator=generator, dtype=F64) * 1.5).requires_grad_(True)
    ref_logits = torch.randn(6, generator=generator, dtype=F64) * 1.5
    return theta, torch.log_softmax(ref_logits, dim=0)


def _true_gradients(theta: Tensor, ref_logprobs: Tensor) -> tuple[Tensor, Tensor]:
    """grad KL(pi || ref) and grad KL(ref || pi), exact."""
    logprobs = torch.log_softmax(theta, dim=0)
    forward = (logprobs.exp() * (logprobs - ref_logprobs)).sum()
    (grad_forward,) = torch.autograd.grad(forward, theta)
    logprobs = torch.log_softmax(theta, dim=0)
    reverse = (ref_logprobs.exp() * (ref_logprobs - logprobs)).sum()
    (grad_reverse,) = torch.autograd.grad(reverse, theta)
    return grad_forward, grad_reverse


def _in_reward_gradient(estimator: str, theta: Tensor, ref_logprobs: Tensor) -> Tensor:
    """E_pi[k(x) grad log pi(x)], through our PPO loss: every token x a one-token sequence,
    reward -k(x) as its advantage, weighted by pi(x); at ratio 1 the loss's gradient is
    -A grad log pi, and seq_mean_token_sum divides by the V sequences."""
    logprobs = torch.log_softmax(theta, dim=0).unsqueeze(1)  # [V, 1]
    penalty = kl_estimate(estimator, logprobs.detach(), ref_logprobs.unsqueeze(1))
    mask = torch.ones_like(logprobs)
    out = ppo_clip_loss(
        logprobs,
        logprobs.detach(),
        -penalty.squeeze(1),
        mask,
        clip_low=0.2,
        clip_high=0.2,
        dual_clip=None,
        aggregation="seq_mean_token_sum",
        norm=Normalizer.of(mask, 1.0),
        token_weights=logprobs.exp().detach(),
    )
    (gradient,) = torch.autograd.grad(out.loss, theta)
    return gradient * logprobs.shape[0]


def _as_loss_gradient(estimator: str, theta: Tensor, ref_logprobs: Tensor) -> Tensor:
    """E_pi[grad k(x)]: the estimate differentiated, averaged over x ~ pi (pi held fixed)."""
    logprobs = torch.log_softmax(theta, dim=0)
    kl = kl_estimate(estimator, logprobs, ref_logprobs)
    (gradient,) = torch.autograd.grad((logprobs.exp().detach() * kl).sum(), theta)
    return gradient


@pytest.mark.parametrize("seed", range(20))
def test_k1_in_the_reward_is_the_kl_gradient(seed: int) -> None:
    theta, ref_logprobs = _policies(seed)
    forward, _ = _true_gradients(theta, ref_logprobs)
    torch.testing.assert_close(_in_reward_gradient("k1", theta, ref_logprobs), forward, **TOL)


@pytest.mark.parametrize("seed", range(20))
def test_estimators_as_a_loss(seed: int) -> None:
    theta, ref_logprobs = _policies(seed)
    forward, reverse = _true_gradients(theta, ref_logprobs)
    # k2: grad KL(pi || ref) exactly; k3: grad KL(ref || pi) (DeepSeekMath's GRPO); k3_k2grad:
    # k2's; k1: nothing at all (E_pi[grad log pi] = 0).
    torch.testing.assert_close(_as_loss_gradient("k2", theta, ref_logprobs), forward, **TOL)
    torch.testing.assert_close(_as_loss_gradient("k3", theta, ref_logprobs), reverse, **TOL)
    torch.testing.assert_close(_as_loss_gradient("k3_k2grad", theta, ref_logprobs), forward, **TOL)
    torch.testing.assert_close(
        _as_loss_gradient("k1", theta, ref_logprobs), torch.zeros(6, dtype=F64), **TOL
    )


@pytest.mark.parametrize("estimator", ["k2", "k3"])
def test_k2_and_k3_in_the_reward_are_not_the_kl_gradient(estimator: str) -> None:
    # Over 200 random pairs of policies: never equal to grad KL, and on some the step it
    # takes (along minus its gradient) points uphill in KL: <g, grad KL> < 0.
    uphill = 0
    for seed in range(200):
        theta, ref_logprobs = _policies(seed)
        forward, _ = _true_gradients(theta, ref_logprobs)
        gradient = _in_reward_gradient(estimator, theta, ref_logprobs)
        assert (gradient - forward).abs().max() > 1e-3
        uphill += float(gradient @ forward) < 0
    assert uphill > 0
    for seed in range(200):  # k1, exact, never does
        theta, ref_logprobs = _policies(seed)
        forward, _ = _true_gradients(theta, ref_logprobs)
        assert float(_in_reward_gradient("k1", theta, ref_logprobs) @ forward) >= 0


# ---- exact enumeration over sequences: 2 tokens over a vocabulary of 3


def _sequence_policies(seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """First-token logits [3], second-token logits given the first [3, 3], for the policy
    (with grad) and the reference; and every sequence [9, 2]."""
    generator = torch.Generator().manual_seed(seed)
    theta = (torch.randn(4, 3, generator=generator, dtype=F64) * 1.5).requires_grad_(True)
    ref_logits = torch.randn(4, 3, generator=generator, dtype=F64) * 1.5
    sequences = torch.tensor(list(itertools.product(range(3), repeat=2)))
    return theta, ref_logits, sequences


def _token_logprobs(logits: Tensor, sequences: Tensor) -> Tensor:
    """[9, 2] log pi(y_t | y_<t): row 0 of `logits` is the first token's, row 1 + y1 the
    second's."""
    log_probs = torch.log_softmax(logits, dim=1)
    first = log_probs[0, sequences[:, 0]]
    second = log_probs[1 + sequences[:, 0], sequences[:, 1]]
    return torch.stack([first, second], dim=1)


def _sequence_kl_gradient(theta: Tensor, ref_logits: Tensor, sequences: Tensor) -> Tensor:
    logprobs = _token_logprobs(theta, sequences).sum(dim=1)
    ref_logprobs = _token_logprobs(ref_logits, sequences).sum(dim=1)
    kl = (logprobs.exp() * (logprobs - ref_logprobs)).sum()
    (gradient,) = torch.autograd.grad(kl, theta)
    return gradient


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("form", ["summed", "reward_to_go"])
def test_k1_in_the_reward_is_the_sequence_kl_gradient(form: str, seed: int) -> None:
    # Summed per sequence (the group estimators) or as per-token rewards summed to go
    # (REINFORCE++'s token form, GAE with V = 0): both are grad KL(pi(y) || ref(y)).
    theta, ref_logits, sequences = _sequence_policies(seed)
    logprobs = _token_logprobs(theta, sequences)  # [9, 2]
    ref_logprobs = _token_logprobs(ref_logits, sequences).detach()
    k1 = kl_estimate("k1", logprobs.detach(), ref_logprobs)
    mask = torch.ones_like(k1)
    if form == "summed":
        advantages = -k1.sum(dim=1, keepdim=True).expand_as(k1)
    else:
        advantages = reward_to_go(-k1, mask)
    weight = logprobs.sum(dim=1).exp().detach().unsqueeze(1).expand_as(k1)  # pi(y)
    out = ppo_clip_loss(
        logprobs,
        logprobs.detach(),
        advantages,
        mask,
        clip_low=0.2,
        clip_high=0.2,
        dual_clip=None,
        aggregation="seq_mean_token_sum",
        norm=Normalizer.of(mask, 1.0),
        token_weights=weight,
    )
    (gradient,) = torch.autograd.grad(out.loss * 9, theta)
    torch.testing.assert_close(gradient, _sequence_kl_gradient(theta, ref_logits, sequences), **TOL)


@pytest.mark.parametrize("seed", range(10))
def test_k2_as_a_loss_is_the_per_position_kl_gradient(seed: int) -> None:
    # Per token, k2 as a loss follows grad KL at each position with the prefix held fixed:
    # sum_t E_{y<t}[grad KL(pi(.|y<t) || ref(.|y<t))]. That is not the sequence KL's gradient,
    # which also counts how y_t changes the KL of later positions (the term k1-in-the-reward
    # gets through its reward-to-go); documented in algorithms/kl.py.
    theta, ref_logits, sequences = _sequence_policies(seed)
    logprobs = _token_logprobs(theta, sequences)
    ref_logprobs = _token_logprobs(ref_logits, sequences).detach()
    weight = logprobs.sum(dim=1).exp().detach().unsqueeze(1)
    k2_loss = (weight * kl_estimate("k2", logprobs, ref_logprobs)).sum()
    (gradient,) = torch.autograd.grad(k2_loss, theta)

    log_pi, log_ref = torch.log_softmax(theta, dim=1), torch.log_softmax(ref_logits, dim=1)
    position_kl = (log_pi.exp() * (log_pi - log_ref)).sum(dim=1)  # [4]: first, then given y1
    first = log_pi[0].exp().detach()
    per_position = position_kl[0] + (first * position_kl[1:]).sum()
    (expected,) = torch.autograd.grad(per_position, theta)
    torch.testing.assert_close(gradient, expected, **TOL)
    assert (gradient - _sequence_kl_gradient(theta, ref_logits, sequences)).abs().max() > 1e-3
