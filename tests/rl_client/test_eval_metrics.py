"""pass@k (Chen et al. 2021's unbiased estimator) and maj@k, with hand-worked values and an
independent implementation; masked samples are kept apart, never counted as wrong."""

from __future__ import annotations

import itertools
from math import comb

import pytest

from rl_client.eval_metrics import (
    SampleOutcome,
    maj_at_k,
    pass_at_k,
    prompt_report,
    summarize,
)


def _pass_at_k_by_counting(n: int, c: int, k: int) -> float:
    """Independent check: the fraction of all k-subsets of n samples holding a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(samples, k))
    return sum(any(s) for s in subsets) / len(subsets)


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (10, 0, 1, 0.0),  # nothing correct
        (10, 3, 1, 0.3),  # pass@1 is c / n
        # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (5, 2, 2, 0.7),
        # 1 - C(4,3)/C(6,3) = 1 - 4/20
        (6, 2, 3, 0.8),
        # 1 - C(2,2)/C(4,2) = 1 - 1/6
        (4, 2, 2, 5 / 6),
        (4, 3, 2, 1.0),  # n - c = 1 < k: every pair holds a correct sample
        (8, 8, 8, 1.0),
        (8, 1, 8, 1.0),
    ],
)
def test_pass_at_k_hand_worked(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_matches_the_binomial_form_and_subset_counting() -> None:
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                closed = 1 - comb(n - c, k) / comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(closed, abs=1e-12)
                assert pass_at_k(n, c, k) == pytest.approx(_pass_at_k_by_counting(n, c, k))


def test_pass_at_k_stays_exact_where_binomials_are_huge() -> None:
    # C(200, 100) ~ 9e58: the running product keeps the ratio exact to float precision
    assert pass_at_k(200, 10, 100) == pytest.approx(1 - comb(190, 100) / comb(200, 100))


@pytest.mark.parametrize(("n", "c", "k"), [(4, 5, 1), (4, 1, 5), (4, 1, 0), (3, -1, 1)])
def test_pass_at_k_rejects_impossible_counts(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError, match="pass_at_k needs"):
        pass_at_k(n, c, k)


def test_maj_at_k_votes_on_answers() -> None:
    answers = ["7", "5", "5", "7", "7"]
    correct = [True, False, False, True, True]
    assert maj_at_k(answers, correct, 1) is True  # "7" alone
    assert maj_at_k(answers, correct, 3) is False  # "5" twice beats "7" once
    assert maj_at_k(answers, correct, 4) is True  # tie 2-2: "7" was seen first
    assert maj_at_k(answers, correct, 5) is True


def _outcome(answer: str, score: float | None) -> SampleOutcome:
    if score is None:
        return SampleOutcome(answer, None, None, "TIMEOUT")
    return SampleOutcome(answer, score, score >= 1.0, "OK")


def test_masked_samples_leave_n_instead_of_counting_as_wrong() -> None:
    # 4 samples, 2 masked: n = 2 verified, c = 1 -> pass@1 = 1/2, pass@2 = 1; no pass@3
    outcomes = [_outcome("3", 1.0), _outcome("x", None), _outcome("4", 0.0), _outcome("y", None)]
    report = prompt_report("p", outcomes, [1, 2, 3])
    assert (report.samples, report.verified, report.correct) == (4, 2, 1)
    assert report.pass_at == {1: 0.5, 2: 1.0}
    assert report.maj_at == {1: True, 2: True}  # tie "3" vs "4": "3" first
    assert report.as_json()["accuracy"] == 0.5


def test_summary_averages_over_prompts_with_k_verified_samples() -> None:
    ks = [1, 2]
    prompts = [
        # 2 of 2 correct: pass@1 = 1, pass@2 = 1, maj@2 = 1
        prompt_report("a", [_outcome("1", 1.0), _outcome("1", 1.0)], ks),
        # 0 of 2: pass@1 = 0, pass@2 = 0
        prompt_report("b", [_outcome("2", 0.0), _outcome("3", 0.0)], ks),
        # one verified (wrong) sample: counts for pass@1 only
        prompt_report("c", [_outcome("4", 0.0), _outcome("", None)], ks),
    ]
    summary = summarize(prompts, ks)
    assert summary["pass@1"] == pytest.approx(1 / 3)  # (1 + 0 + 0) / 3
    assert summary["pass@2"] == pytest.approx(0.5)  # (1 + 0) / 2, prompt c left out
    assert summary["maj@2"] == pytest.approx(0.5)
    assert summary["prompts_with_2_verified"] == 2
    assert summary["masked_samples"] == 1 and summary["verified_samples"] == 5
    assert summary["accuracy"] == pytest.approx(2 / 5)
    assert summary["reward_mean"] == pytest.approx(2 / 5)
