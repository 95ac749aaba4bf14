"""Turning a reward model's raw score into the reward: as is, a sigmoid, or standardised by
running statistics of every raw score the model has produced in this server process."""

from __future__ import annotations

import math
from typing import Literal

Normalize = Literal["none", "sigmoid", "running"]


def sigmoid(x: float) -> float:
    """1 / (1 + e^-x), without overflow for large |x|: sigmoid(0) = 0.5, sigmoid(2) = 0.881."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


class RunningStats:
    """Mean and (population) standard deviation by Welford's online algorithm, and the minimum."""

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.minimum = math.inf
        self._m2 = 0.0  # sum of squared deviations from the mean

    def add(self, x: float) -> None:
        self.minimum = min(self.minimum, x)
        self.count += 1
        delta = x - self.mean
        self.mean += delta / self.count
        self._m2 += delta * (x - self.mean)

    @property
    def std(self) -> float:
        return math.sqrt(self._m2 / self.count) if self.count else 0.0

    def standardise(self, x: float, eps: float = 1e-8) -> float:
        """(x - mean) / std; before two distinct values have been seen, x - mean."""
        std = self.std
        return (x - self.mean) / std if std > eps else x - self.mean
