"""DPO and IPO losses against hand-worked values and against the papers' equations written out
pair by pair (`rl_paper_reference`), values and gradients."""

from __future__ import annotations

import math

import pytest
import rl_paper_reference as ref
import torch

from rl_client.algorithms.dpo import dpo_loss, sequence_logprobs

# One pair: log pi(y_w) = -10, log ref(y_w) = -12, log pi(y_l) = -8, log ref(y_l) = -7.
# h = (-10 + 12) - (-8 + 7) = 2 - (-1) = 3.
PAIR = (-10.0, -8.0, -12.0, -7.0)  # chosen, rejected, ref chosen, ref rejected


def _one_pair(beta: float, variant: str) -> tuple[torch.Tensor, torch.Tensor, object]:
    chosen = torch.tensor([PAIR[0]], requires_grad=True)
    rejected = torch.tensor([PAIR[1]], requires_grad=True)
    out = dpo_loss(
        chosen,
        rejected,
        torch.tensor([PAIR[2]]),
        torch.tensor([PAIR[3]]),
        beta=beta,
        variant=variant,
    )
    out.loss.backward()
    return chosen, rejected, out


def test_sigmoid_hand_worked() -> None:
    chosen, rejected, out = _one_pair(0.1, "sigmoid")
    # beta h = 0.3; -log sigmoid(0.3) = log(1 + e^-0.3) = log(1.740818) = 0.554355
    assert out.loss.item() == pytest.approx(0.5543552, abs=1e-6)
    # d/d log pi(y_w) = -beta sigmoid(-beta h) = -0.1 * 0.425557 = -0.0425557; y_l: the opposite
    assert float(chosen.grad) == pytest.approx(-0.0425557, abs=1e-6)
    assert float(rejected.grad) == pytest.approx(0.0425557, abs=1e-6)
    # implicit rewards: beta (log pi - log ref) = 0.1 * 2 = 0.2 and 0.1 * -1 = -0.1
    assert out.metrics == pytest.approx(
        {
            "dpo_margin": 0.3,
            "dpo_accuracy": 1.0,
            "dpo_chosen_reward": 0.2,
            "dpo_rejected_reward": -0.1,
        }
    )


@pytest.mark.parametrize(
    ("beta", "loss", "grad"),
    [
        # 1/(2 beta) = 5: (3 - 5)^2 = 4; d/d log pi(y_w) = 2 (3 - 5) = -4
        (0.1, 4.0, -4.0),
        # 1/(2 beta) = 2: (3 - 2)^2 = 1; 2 (3 - 2) = 2: h is past its target, pulled back
        (0.25, 1.0, 2.0),
        # 1/(2 beta) = 3: on target, no loss and no gradient
        (1.0 / 6.0, 0.0, 0.0),
    ],
)
def test_ipo_hand_worked(beta: float, loss: float, grad: float) -> None:
    chosen, rejected, out = _one_pair(beta, "ipo")
    assert out.loss.item() == pytest.approx(loss, abs=1e-5)
    assert float(chosen.grad) == pytest.approx(grad, abs=1e-5)
    assert float(rejected.grad) == pytest.approx(-grad, abs=1e-5)


def test_a_tie_costs_log_2_and_counts_as_wrong() -> None:
    # h = 0: -log sigmoid(0) = log 2 whatever beta
    zeros = torch.zeros(3)
    for beta in (0.05, 0.5, 3.0):
        out = dpo_loss(zeros, zeros, zeros, zeros, beta=beta)
        assert out.loss.item() == pytest.approx(math.log(2))
        assert out.metrics["dpo_accuracy"] == 0.0


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("variant", ["sigmoid", "ipo"])
@pytest.mark.parametrize("beta", [0.05, 0.1, 0.5])
def test_matches_the_papers_equations(variant: str, beta: float, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    logprobs = -20 * torch.rand(4, 7, generator=generator, dtype=torch.float64)
    chosen = logprobs[0].clone().requires_grad_(True)
    rejected = logprobs[1].clone().requires_grad_(True)
    out = dpo_loss(chosen, rejected, logprobs[2], logprobs[3], beta=beta, variant=variant)
    out.loss.backward()
    pairs = list(zip(*(row.tolist() for row in logprobs), strict=True))
    paper = ref.dpo_pair if variant == "sigmoid" else ref.ipo_pair
    expected = sum(paper(*pair, beta) for pair in pairs) / len(pairs)
    assert out.loss.item() == pytest.approx(expected, abs=1e-9)
    if variant == "sigmoid":  # the paper's gradient (DPO sec. 4), averaged over the pairs
        grads = [ref.dpo_pair_grad_chosen(*pair, beta) / len(pairs) for pair in pairs]
        assert chosen.grad.tolist() == pytest.approx(grads, abs=1e-9)
        assert rejected.grad.tolist() == pytest.approx([-g for g in grads], abs=1e-9)


def test_micro_batches_sum_to_the_batch_mean() -> None:
    generator = torch.Generator().manual_seed(0)
    c, r, rc, rr = (-5 * torch.rand(6, generator=generator) for _ in range(4))
    whole = dpo_loss(c, r, rc, rr, beta=0.1)
    halves = sum(
        dpo_loss(c[s], r[s], rc[s], rr[s], beta=0.1, num_pairs=6).loss
        for s in (slice(0, 4), slice(4, 6))
    )
    assert float(halves) == pytest.approx(float(whole.loss), abs=1e-6)


def test_unknown_variant_names_the_valid_ones() -> None:
    x = torch.zeros(1)
    with pytest.raises(KeyError, match="ipo, sigmoid"):
        dpo_loss(x, x, x, x, beta=0.1, variant="hinge")


def test_sequence_logprobs_sum_the_mask_only() -> None:
    logprobs = torch.tensor([[-1.0, -2.0, float("nan")], [-0.5, float("nan"), -0.25]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])  # right pad; an interior tool output
    # -1 - 2 = -3; -0.5 - 0.25 = -0.75 (the NaN cells are off the mask)
    assert sequence_logprobs(logprobs, mask).tolist() == [-3.0, -0.75]
