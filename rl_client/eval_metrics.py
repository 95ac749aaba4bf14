"""pass@k and maj@k over n scored samples per prompt, masked samples kept apart.

A sample whose reward could not be verified (a non-OK status) is neither right nor wrong: it
leaves the prompt's n, and a prompt with fewer than k verified samples has no pass@k / maj@k
(it is counted, not scored 0).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimator (Chen et al. 2021, arXiv:2107.03374, eq. 1): the chance
    that k samples drawn without replacement from n, c of them correct, hold a correct one,
    1 - C(n-c, k) / C(n, k), computed as a running product (the paper's stable form:
    C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i))."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def maj_at_k(answers: Sequence[str], correct: Sequence[bool], k: int) -> bool:
    """Majority voting over the first k samples: the most frequent answer (ties: the one seen
    first) is right when its samples are. Samples with the same answer share a verdict."""
    if not 1 <= k <= len(answers):
        raise ValueError(f"maj_at_k needs 1 <= k <= {len(answers)} samples (k={k})")
    votes = Counter(answers[:k])
    top = max(votes.values())
    winner = next(answer for answer in answers[:k] if votes[answer] == top)
    return correct[answers.index(winner)]


@dataclass(frozen=True)
class SampleOutcome:
    """One scored sample: `score` and `correct` are None when it is masked."""

    answer: str  # what majority voting compares
    score: float | None
    correct: bool | None
    status: str


@dataclass(frozen=True)
class PromptReport:
    id: str
    samples: int
    verified: int
    correct: int
    reward_mean: float | None
    pass_at: dict[int, float]  # only the k with at least k verified samples
    maj_at: dict[int, bool]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "samples": self.samples,
            "verified": self.verified,
            "correct": self.correct,
            "accuracy": self.correct / self.verified if self.verified else None,
            "reward_mean": self.reward_mean,
            **{f"pass@{k}": value for k, value in self.pass_at.items()},
            **{f"maj@{k}": value for k, value in self.maj_at.items()},
        }


def prompt_report(
    prompt_id: str, outcomes: Sequence[SampleOutcome], ks: Sequence[int]
) -> PromptReport:
    """One prompt's samples -> its counts, pass@k and maj@k over its verified samples."""
    verified = [o for o in outcomes if o.correct is not None]
    correct = sum(bool(o.correct) for o in verified)
    answers = [o.answer for o in verified]
    verdicts = [bool(o.correct) for o in verified]
    scores = [o.score for o in verified if o.score is not None]
    return PromptReport(
        id=prompt_id,
        samples=len(outcomes),
        verified=len(verified),
        correct=correct,
        reward_mean=statistics.fmean(scores) if scores else None,
        pass_at={k: pass_at_k(len(verified), correct, k) for k in ks if k <= len(verified)},
        maj_at={k: maj_at_k(answers, verdicts, k) for k in ks if k <= len(verified)},
    )


def summarize(prompts: Sequence[PromptReport], ks: Sequence[int]) -> dict[str, Any]:
    """Means over prompts: pass@k and maj@k over the prompts with k verified samples (how
    many is reported beside each), accuracy over all verified samples."""
    verified = sum(p.verified for p in prompts)
    rewards = [p.reward_mean * p.verified for p in prompts if p.reward_mean is not None]
    summary: dict[str, Any] = {
        "prompts": len(prompts),
        "samples": sum(p.samples for p in prompts),
        "verified_samples": verified,
        "masked_samples": sum(p.samples - p.verified for p in prompts),
        "accuracy": sum(p.correct for p in prompts) / verified if verified else None,
        "reward_mean": sum(rewards) / verified if verified else None,
    }
    for k in ks:
        scored = [p for p in prompts if k in p.pass_at]
        summary[f"pass@{k}"] = statistics.fmean(p.pass_at[k] for p in scored) if scored else None
        summary[f"maj@{k}"] = statistics.fmean(p.maj_at[k] for p in scored) if scored else None
        summary[f"prompts_with_{k}_verified"] = len(scored)
    return summary
