"""Our policy loss, value loss and aggregations against the per-token loops of
`rl_paper_reference`, on random float64 rows with right padding and interior masks: the
loss values and their gradients (w.r.t. logprobs, values), to 1e-6."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import rl_paper_reference as ref
import torch
from torch import Tensor

from rl_client.algorithms.losses import (
    AGGREGATIONS,
    Normalizer,
    aggregate,
    ppo_clip_loss,
    truncated_importance_weights,
    value_loss,
)

TOL = dict(atol=1e-6, rtol=0.0)
MODES = sorted(AGGREGATIONS)
CONSTANT = 12.0  # Dr. GRPO's normaliser


def _mask(generator: torch.Generator) -> Tensor:
    """[6, 9]: right padding, a gap inside some rows, one row with no token."""
    mask = torch.zeros(6, 9, dtype=torch.float64)
    for i, length in enumerate([9, 6, 3, 0, 8, 1]):
        mask[i, :length] = 1.0
    mask[0, 3:5] = 0.0
    mask[4, 1] = 0.0
    return mask


def _reference_total(
    mask: Tensor,
    mode: str,
    token_loss: Callable[[int, int], Tensor],
    weights: Tensor | None = None,
) -> Tensor:
    """Aggregates `token_loss(i, t)` (a 0-d tensor) over the mask with the reference loops."""
    losses: list[list[Tensor | None]] = []
    for i in range(mask.shape[0]):
        row: list[Tensor | None] = []
        for t in range(mask.shape[1]):
            if float(mask[i, t]) > 0:
                loss = token_loss(i, t)
                row.append(loss * float(weights[i, t]) if weights is not None else loss)
            else:
                row.append(None)
        losses.append(row)
    return ref.aggregate(mode, losses, CONSTANT)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("clip_low", "clip_high", "dual_clip", "per_token", "tis"),
    [
        (0.2, 0.2, None, False, False),  # PPO / GRPO
        (0.2, 0.28, None, True, False),  # DAPO's clip-higher, token-level advantages
        (0.2, 0.28, 3.0, True, False),  # dual clip
        (0.1, 0.3, 2.0, False, True),  # truncated importance weights
    ],
)
def test_ppo_clip_loss(
    clip_low: float,
    clip_high: float,
    dual_clip: float | None,
    per_token: bool,
    tis: bool,
    mode: str,
    seed: int,
) -> None:
    generator = torch.Generator().manual_seed(seed)
    mask = _mask(generator)
    shape = mask.shape
    # ratios spread over [e^-1.5, e^1.5] = [.22, 4.5]: every branch (inside, clipped,
    # dual-capped) is hit, as the metrics check below
    old = -torch.rand(shape, generator=generator, dtype=torch.float64) * 3
    logprobs = old + (torch.rand(shape, generator=generator, dtype=torch.float64) - 0.5) * 3.0
    advantages = torch.randn(shape if per_token else shape[:1], generator=generator)
    advantages = advantages.to(torch.float64) * 2
    weights = None
    if tis:
        sampler = old + (torch.rand(shape, generator=generator, dtype=torch.float64) - 0.5)
        weights = truncated_importance_weights(old, sampler, cap=1.2)

    ours_logprobs = logprobs.clone().requires_grad_(True)
    out = ppo_clip_loss(
        ours_logprobs,
        old,
        advantages,
        mask,
        clip_low=clip_low,
        clip_high=clip_high,
        dual_clip=dual_clip,
        aggregation=mode,
        norm=Normalizer.of(mask, CONSTANT),
        token_weights=weights,
    )
    out.loss.backward()
    assert out.metrics["clip_fraction"] > 0
    assert dual_clip is None or out.metrics["dual_clip_fraction"] > 0

    ref_logprobs = logprobs.clone().requires_grad_(True)

    def token_loss(i: int, t: int) -> Tensor:
        advantage = float(advantages[i, t] if per_token else advantages[i])
        return ref.ppo_token_loss(
            ref_logprobs[i, t], float(old[i, t]), advantage, clip_low, clip_high, dual_clip
        )

    expected = _reference_total(mask, mode, token_loss, weights)
    expected.backward()
    torch.testing.assert_close(out.loss, expected, **TOL)
    torch.testing.assert_close(ours_logprobs.grad, ref_logprobs.grad, **TOL)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("mode", MODES)
def test_aggregations(mode: str, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    mask = _mask(generator)
    values = torch.randn(mask.shape, generator=generator, dtype=torch.float64)
    ours_values = values.clone().requires_grad_(True)
    ours = aggregate(mode, ours_values, mask, Normalizer.of(mask, CONSTANT))
    ours.backward()
    ref_values = values.clone().requires_grad_(True)
    expected = _reference_total(mask, mode, lambda i, t: ref_values[i, t])
    expected.backward()
    torch.testing.assert_close(ours, expected, **TOL)
    torch.testing.assert_close(ours_values.grad, ref_values.grad, **TOL)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("clip", [None, 0.2])
@pytest.mark.parametrize("mode", MODES)
def test_value_loss(mode: str, clip: float | None, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    mask = _mask(generator)
    old = torch.randn(mask.shape, generator=generator, dtype=torch.float64)
    values = old + (torch.rand(mask.shape, generator=generator, dtype=torch.float64) - 0.5)
    returns = torch.randn(mask.shape, generator=generator, dtype=torch.float64)
    ours_values = values.clone().requires_grad_(True)
    norm = Normalizer.of(mask, CONSTANT)
    out = value_loss(ours_values, old, returns, mask, clip=clip, aggregation=mode, norm=norm)
    out.loss.backward()
    ref_values = values.clone().requires_grad_(True)

    def token_loss(i: int, t: int) -> Tensor:
        return ref.value_token_loss(ref_values[i, t], float(old[i, t]), float(returns[i, t]), clip)

    expected = _reference_total(mask, mode, token_loss)
    expected.backward()
    torch.testing.assert_close(out.loss, expected, **TOL)
    torch.testing.assert_close(ours_values.grad, ref_values.grad, **TOL)
