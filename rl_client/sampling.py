"""Which groups train: masked-out groups are dropped, and with DAPO's dynamic sampling
(arXiv:2503.14476, sec. 3.2) so are groups whose valid rewards are all equal: their advantages
are all zero, so they only dilute the batch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rl_client.rollout import Group


@dataclass
class FilterStats:
    dropped_groups: int = 0  # every item masked (could not verify): nothing to learn from
    filtered_groups: int = 0  # dynamic sampling: all valid rewards equal


def informative(rewards: Sequence[float], valid: Sequence[bool]) -> bool:
    """At least two valid rewards, and not all equal."""
    scores = [r for r, ok in zip(rewards, valid, strict=True) if ok]
    return len(scores) >= 2 and not all(math.isclose(s, scores[0]) for s in scores)


def trains(group: Group, *, dynamic: bool) -> bool:
    """Whether `filter_groups` keeps the group."""
    return any(group.valid) and (not dynamic or informative(group.rewards, group.valid))


def filter_groups(groups: Sequence[Group], *, dynamic: bool) -> tuple[list[Group], FilterStats]:
    stats = FilterStats()
    kept = []
    for group in groups:
        if not any(group.valid):
            stats.dropped_groups += 1
        elif dynamic and not informative(group.rewards, group.valid):
            stats.filtered_groups += 1
        else:
            kept.append(group)
    return kept, stats
