"""The learning-rate schedule against hand-worked values."""

from __future__ import annotations

import pytest

from rl_client.optim import lr_multiplier


@pytest.mark.parametrize(
    ("step", "schedule", "expected"),
    [
        (0, "constant", 0.25),  # warm-up (0 + 1) / 4
        (3, "constant", 1.0),  # (3 + 1) / 4
        (50, "constant", 1.0),
        (4, "cosine", 1.0),  # progress 0: 0.1 + 0.9 * (1 + cos 0) / 2
        (9, "cosine", 0.55),  # progress 5 / 10: 0.1 + 0.9 * (1 + cos(pi / 2)) / 2 = 0.55
        (14, "cosine", 0.1),  # progress 1: the floor
        (20, "cosine", 0.1),  # past the end: stays at the floor
    ],
)
def test_lr_multiplier(step: int, schedule: str, expected: float) -> None:
    value = lr_multiplier(step, warmup_steps=4, total_steps=14, schedule=schedule, min_lr_ratio=0.1)
    assert value == pytest.approx(expected)
