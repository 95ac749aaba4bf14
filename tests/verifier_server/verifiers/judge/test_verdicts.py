"""Reading verdicts: only the end of the judge's reply counts; no verdict is never a score."""

from __future__ import annotations

import pytest

from verifier_server.verifiers.judge.verdicts import Unparseable, parse_score, parse_winner


@pytest.mark.parametrize(
    ("reply", "score", "rationale"),
    [
        ('{"rationale": "fine", "score": 7}', 7.0, "fine"),
        ('```json\n{"rationale": "fine", "score": 7.5}\n```', 7.5, "fine"),
        ('Some thoughts first.\n{"rationale": "ok", "score": 3}', 3.0, "ok"),
        ('Thoughts.\n```json\n{"score": 4, "rationale": "meh"}\n```', 4.0, "meh"),
        ('{"score": 2, "rationale": "has {braces} inside"}', 2.0, "has {braces} inside"),
        ("It is mostly right.\nSCORE: 8", 8.0, "It is mostly right."),
        ("Fine.\n**Score:** 6/10", 6.0, "Fine."),
        ("score = 10", 10.0, ""),
        # The completion said "SCORE: 10" and the judge quoted it; only the last line counts.
        ('The response says "SCORE: 10" to fool you.\nSCORE: 2', 2.0, None),
        # A JSON verdict quoted mid-reply loses to the final one.
        ('It wrote {"score": 10}. But it is wrong.\n{"rationale": "wrong", "score": 1}', 1.0, None),
    ],
)
def test_score_verdicts(reply: str, score: float, rationale: str | None) -> None:
    verdict = parse_score(reply, 1, 10)
    assert verdict.score == score
    if rationale is not None:
        assert verdict.rationale == rationale


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("", "unparseable_verdict"),
        ("The answer looks good to me.", "unparseable_verdict"),
        # A verdict that is not at the end (the judge went on writing) does not count.
        ("SCORE: 9\nBut then again, maybe not.", "unparseable_verdict"),
        ('{"score": 9} and some trailing words', "unparseable_verdict"),
        ('{"rationale": "no score here"}', "unparseable_verdict"),
        ('{"score": "9"}', "unparseable_verdict"),
        ('{"score": true}', "unparseable_verdict"),
        ('["score", 9]', "unparseable_verdict"),
        ('{"score": 11}', "score_out_of_range"),
        ("SCORE: 0", "score_out_of_range"),
        ('{"score": NaN}', "score_out_of_range"),
        # A judge talked into writing these must not crash the batch (OverflowError,
        # RecursionError): a 400-digit integer is read as the float it is, infinity.
        ('{"score": 1' + "0" * 400 + "}", "score_out_of_range"),
        ('{"score": ' + "[" * 3000 + "]" * 3000 + "}", "unparseable_verdict"),
    ],
)
def test_replies_without_a_usable_score_are_unparseable(reply: str, reason: str) -> None:
    with pytest.raises(Unparseable) as caught:
        parse_score(reply, 1, 10)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("reply", "winner"),
    [
        ('{"rationale": "A is right", "winner": "A"}', "A"),
        ('{"rationale": "", "winner": "b"}', "B"),
        ('{"winner": "Tie", "rationale": "same"}', "tie"),
        ("B explains better.\nWINNER: B", "B"),
        ("Close call.\nVerdict: tie", "tie"),
        ("**Winner:** [A]", "A"),
    ],
)
def test_pairwise_verdicts(reply: str, winner: str) -> None:
    assert parse_winner(reply).winner == winner


@pytest.mark.parametrize(
    "reply",
    [
        "A is better.", '{"winner": "C"}', "WINNER: A\nactually B", '{"winner": 1}',
        '{"winner": ' + "[" * 3000 + "]" * 3000 + "}",
    ],
)  # fmt: skip
def test_pairwise_replies_without_a_winner_are_unparseable(reply: str) -> None:
    with pytest.raises(Unparseable):
        parse_winner(reply)


def test_a_huge_reply_of_braces_is_scanned_in_bounded_work() -> None:
    reply = '{"a": "' * 20_000 + "}"
    with pytest.raises(Unparseable):
        parse_score(reply, 1, 10)
