"""Which groups train: masked-out groups are dropped, and with DAPO's dynamic sampling
(arXiv:2503.14476, sec. 3.2) so are groups whose signal is the same for every valid
member: their advantages carry no learning signal, so they only dilute the batch.

DAPO's condition is 0 < #correct < G: it looks at accuracy, not at the shaped reward. A group
whose members are all correct but differ by a small overlong penalty has a spread of 0.02, and
a std-normalised estimator blows that up to advantages as large as a correctness signal. So
the filter looks at `DynamicSampling.signal`: by default the task reward before shaping.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rl_client.rewards import OVERLONG_COMPONENT
from rl_client.rollout import Group
from verifier_server.types import Result, RewardSpec


@dataclass
class FilterStats:
    dropped_groups: int = 0  # every item masked (could not verify): nothing to learn from
    filtered_groups: int = 0  # dynamic sampling: the signal is equal across valid members


@dataclass(frozen=True)
class DynamicSampling:
    """DAPO's filter: which score must vary within a group for the group to train.

    signal 'task': the row's reward before overlong shaping (the shaped score less
    `overlong_weight` x the overlong component); 'score': the shaped reward; any other name:
    that component of a composite reward."""

    signal: str = "task"
    overlong_weight: float = 0.0

    def score(self, result: Result, spec: RewardSpec | None = None) -> float:
        """The member's signal; `spec` is the row's reward before shaping (its gates)."""
        if self.signal == "score":
            return result.score
        if self.signal == "task":
            if self.overlong_weight == 0:
                return result.score
            if spec is not None and gate_failed(spec, result):
                # The composite's gate made the whole reward 0, the penalty included: taking
                # the penalty off would invent a task score of -weight x penalty > 0.
                return 0.0
            return result.score - self.overlong_weight * self._component(result, OVERLONG_COMPONENT)
        return self._component(result, self.signal)

    def _component(self, result: Result, name: str) -> float:
        if name not in result.components:
            raise ValueError(
                f"algorithm.dynamic_sampling_signal={self.signal!r}: the result of item "
                f"{result.id!r} has no component {name!r} (it has: "
                f"{', '.join(sorted(result.components)) or 'none'}); name a component of the "
                "reward, or use 'task' or 'score'"
            )
        return result.components[name]

    def signals(self, group: Group) -> list[float]:
        """The group's signal per member; NaN where the result is not valid."""
        return [self.score(r, group.row.reward) if r.ok else math.nan for r in group.results]


def gate_failed(spec: RewardSpec, result: Result) -> bool:
    """Whether a gate of the row's inline composite reward rejected this result. The overlong
    penalty is appended to such a composite (`with_overlong`), so a failed gate zeroes it too.
    (A named reward is wrapped as the `task` component instead: its gates stay inside it.)
    Gate defaults as the server's `Component`: key = name or verifier, threshold 1.0."""
    if spec.name != "composite":
        return False
    for component in spec.params.get("components", []):
        if component.get("gate", False):
            key = component.get("name") or component["verifier"]
            threshold = component.get("gate_threshold", 1.0)
            if result.components.get(key, math.inf) < threshold:
                return True
    return False


def informative(rewards: Sequence[float], valid: Sequence[bool]) -> bool:
    """At least two valid rewards, and not all equal."""
    scores = [r for r, ok in zip(rewards, valid, strict=True) if ok]
    return len(scores) >= 2 and not all(math.isclose(s, scores[0]) for s in scores)


def trains(group: Group, *, dynamic: DynamicSampling | None) -> bool:
    """Whether `filter_groups` keeps the group."""
    if not any(group.valid):
        return False
    return dynamic is None or informative(dynamic.signals(group), group.valid)


def filter_groups(
    groups: Sequence[Group], *, dynamic: DynamicSampling | None
) -> tuple[list[Group], FilterStats]:
    stats = FilterStats()
    kept = []
    for group in groups:
        if not any(group.valid):
            stats.dropped_groups += 1
        elif not trains(group, dynamic=dynamic):
            stats.filtered_groups += 1
        else:
            kept.append(group)
    return kept, stats
