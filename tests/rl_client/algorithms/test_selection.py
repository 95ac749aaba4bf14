"""Rejection sampling's winners and online DPO's pairs: hand-worked tables, then random tables
with ties and masked items against the loops of `rl_paper_reference`."""

from __future__ import annotations

import math

import pytest
import rl_paper_reference as ref
import torch

from rl_client.algorithms.selection import preference_pairs, rejection_sampling_keep

NAN = math.nan


def _table(rows: list[list[float | None]]) -> tuple[torch.Tensor, torch.Tensor]:
    """None: not verified (the cell holds NaN, as Group.rewards has it)."""
    rewards = torch.tensor([[NAN if r is None else r for r in row] for row in rows])
    valid = torch.tensor([[r is not None for r in row] for row in rows])
    return rewards, valid


def _pairs(rows: list[list[float | None]], mode: str, margin: float = 0.0) -> list[tuple]:
    index = preference_pairs(*_table(rows), mode=mode, min_margin=margin)
    return list(
        zip(index.group.tolist(), index.chosen.tolist(), index.rejected.tolist(), strict=True)
    )


@pytest.mark.parametrize(
    ("rows", "threshold", "k", "kept"),
    [
        # the two 1.0s pass; k = 1 keeps the first of them
        ([[0.0, 1.0, None, 1.0]], 1.0, 1, [[False, True, False, False]]),
        ([[0.0, 1.0, None, 1.0]], 1.0, 4, [[False, True, False, True]]),
        # a masked item never wins, however high its cell (here NaN) or the threshold is low
        ([[None, None], [None, 0.0]], -1.0, 2, [[False, False], [False, True]]),
        # threshold 0.5: 0.7 and 0.9 pass, k = 1 keeps the higher (0.9), not the first
        ([[0.7, 0.2, 0.9]], 0.5, 1, [[False, False, True]]),
        # nothing reaches the threshold: no winner, not the best of the losers
        ([[0.0, 0.0, 0.3]], 1.0, 2, [[False, False, False]]),
    ],
)
def test_rejection_sampling_hand_worked(
    rows: list[list[float | None]], threshold: float, k: int, kept: list[list[bool]]
) -> None:
    rewards, valid = _table(rows)
    keep = rejection_sampling_keep(rewards, valid, threshold=threshold, max_per_prompt=k)
    assert keep.tolist() == kept


def test_rejection_sampling_needs_k() -> None:
    rewards, valid = _table([[1.0]])
    with pytest.raises(ValueError, match="max_per_prompt"):
        rejection_sampling_keep(rewards, valid, threshold=1.0, max_per_prompt=0)


@pytest.mark.parametrize(
    ("rows", "mode", "margin", "pairs"),
    [
        # best 1.0 (first of two) against worst 0.0; the masked cell takes no part
        ([[0.0, 1.0, None, 1.0]], "best_worst", 0.0, [(0, 1, 0)]),
        # all: each 1.0 against the 0.0; the tie 1.0/1.0 is no pair
        ([[0.0, 1.0, None, 1.0]], "all", 0.0, [(0, 1, 0), (0, 3, 0)]),
        # all equal, or one verified member: no pair
        ([[1.0, 1.0], [None, 0.0], [None, None]], "best_worst", 0.0, []),
        ([[1.0, 1.0], [None, 0.0], [None, None]], "all", 0.0, []),
        # a margin of 0.5: 0.9 vs 0.2 (gap 0.7) and 0.9 vs 0.3 (0.6) only
        ([[0.2, 0.9, 0.3, 0.6]], "all", 0.5, [(0, 1, 0), (0, 1, 2)]),
        # best_worst with a margin the spread does not reach: no pair
        ([[0.2, 0.5]], "best_worst", 0.5, []),
        # two groups: group 1's verified members tie, its masked cell takes no part
        ([[0.0, 1.0, None], [None, 0.0, 0.0]], "best_worst", 0.0, [(0, 1, 0)]),
    ],
)
def test_pairs_hand_worked(
    rows: list[list[float | None]], mode: str, margin: float, pairs: list[tuple]
) -> None:
    assert _pairs(rows, mode, margin) == pairs


def _random_rows(seed: int) -> list[list[float | None]]:
    """Rewards from {0, 0.5, 1} (ties are common), a quarter masked."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(12):
        levels = torch.randint(0, 3, (6,), generator=generator).tolist()
        masked = (torch.rand(6, generator=generator) < 0.25).tolist()
        rows.append([None if m else v / 2 for v, m in zip(levels, masked, strict=True)])
    return rows


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("margin", [0.0, 0.5, 0.75])
def test_pairs_match_the_loops(seed: int, margin: float) -> None:
    rows = _random_rows(seed)
    for mode, loop in (("all", ref.pairs_all), ("best_worst", ref.pair_best_worst)):
        expected = [(b, i, j) for b, row in enumerate(rows) for i, j in loop(row, margin)]
        got = _pairs(rows, mode, margin)
        assert got == expected
        for b, i, j in got:  # never a masked item, never a tie
            assert rows[b][i] is not None and rows[b][j] is not None
            assert rows[b][i] > rows[b][j]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("threshold", "k"), [(0.5, 1), (0.5, 3), (1.0, 2), (0.0, 6)])
def test_rejection_sampling_matches_the_loop(seed: int, threshold: float, k: int) -> None:
    rows = _random_rows(seed)
    keep = rejection_sampling_keep(*_table(rows), threshold=threshold, max_per_prompt=k)
    for row, kept in zip(rows, keep.tolist(), strict=True):
        assert [i for i, x in enumerate(kept) if x] == ref.best_of_n(row, threshold, k)


def test_unknown_pair_mode_names_the_valid_ones() -> None:
    with pytest.raises(KeyError, match="best_worst, all"):
        preference_pairs(*_table([[1.0, 0.0]]), mode="random")
