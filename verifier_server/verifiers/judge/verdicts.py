"""Reading a judge's verdict from its reply. Only the *end* of the reply counts, so text the
judge quotes from the completion earlier in its reply cannot pose as the verdict.

Accepted, in this order:
1. a JSON object that ends the reply (the whole reply, or its last part; a ```json fence
   around it is fine): `{"rationale": "...", "score": 7}` or, pairwise,
   `{"rationale": "...", "winner": "A"}` (`"A"`, `"B"` or `"tie"`, any case);
2. a last non-empty line `SCORE: 7` (also `Score = 7/10`, `**Score:** 7`) or, pairwise,
   `WINNER: A` (or `VERDICT: tie`).
Anything else is `Unparseable`, and so is a score outside the rubric's range: never clamped
or read as a low score. The judge verifier then decides whose fault it is (see its docstring).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

Winner = Literal["A", "B", "tie"]

# Bounds on the JSON scan (it runs on the event loop): the reply's tail, and start positions.
_MAX_SCAN_CHARS = 16_384
_MAX_STARTS = 200
_FENCE = re.compile(r"\A```[A-Za-z]*\s*\n?(.*?)\n?\s*```\Z", re.DOTALL)
_SCORE_LINE = re.compile(
    r"\A[\W_]*score[\W_]*[:=]\s*\**\s*([-+]?\d+(?:\.\d+)?)\s*(?:/\s*\d+(?:\.\d+)?)?[\W_]*\Z",
    re.IGNORECASE,
)
_WINNER_LINE = re.compile(
    r"\A[\W_]*(?:winner|verdict)[\W_]*[:=][\s\[\"'*(]*(A|B|tie)[\s\]\"'*)]*[.!]?\s*\Z",
    re.IGNORECASE,
)


class Unparseable(Exception):
    """The reply holds no verdict in an accepted form; `reason` is machine-readable."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ScoreVerdict:
    score: float  # in the rubric's own range, e.g. 1..10
    rationale: str


@dataclass(frozen=True)
class PairVerdict:
    winner: Winner
    rationale: str


def parse_score(text: str, min_score: float, max_score: float) -> ScoreVerdict:
    """The score verdict in `text`, checked to lie in [min_score, max_score]."""
    obj = final_json_object(text)
    if obj is not None:
        score = obj.get("score")
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise Unparseable("unparseable_verdict", "the JSON verdict has no numeric 'score'")
        rationale = obj.get("rationale")
        verdict = ScoreVerdict(float(score), rationale if isinstance(rationale, str) else "")
    else:
        match = _SCORE_LINE.match(_last_line(text))
        if match is None:
            raise Unparseable(
                "unparseable_verdict",
                "the reply ends with neither a JSON verdict nor a 'SCORE: <number>' line",
            )
        verdict = ScoreVerdict(float(match.group(1)), text[: text.rfind(match.group(0))].strip())
    if not (math.isfinite(verdict.score) and min_score <= verdict.score <= max_score):
        raise Unparseable(
            "score_out_of_range",
            f"score {verdict.score:g} is outside the rubric's range [{min_score:g}, {max_score:g}]",
        )
    return verdict


def parse_winner(text: str) -> PairVerdict:
    """The pairwise verdict in `text`: which of the two responses, A or B, is better, or a tie."""
    obj = final_json_object(text)
    if obj is not None:
        winner = obj.get("winner")
        rationale = obj.get("rationale")
        rationale = rationale if isinstance(rationale, str) else ""
    else:
        match = _WINNER_LINE.match(_last_line(text))
        if match is None:
            raise Unparseable(
                "unparseable_verdict",
                "the reply ends with neither a JSON verdict nor a 'WINNER: A|B|tie' line",
            )
        winner, rationale = match.group(1), text[: text.rfind(match.group(0))].strip()
    normalised = {"a": "A", "b": "B", "tie": "tie"}.get(str(winner).strip().lower())
    if normalised is None:
        raise Unparseable("unparseable_verdict", '\'winner\' must be "A", "B" or "tie"')
    return PairVerdict(normalised, rationale)  # type: ignore[arg-type]


def final_json_object(text: str) -> dict[str, Any] | None:
    """The JSON object that ends `text` (after removing a code fence around it), or None.

    Of the objects ending at the end, the outermost (leftmost start) wins. Integers are read
    as floats (a 400-digit one is infinity, not an OverflowError later), and JSON nested past
    the recursion limit is no object: a judge can be talked into writing either.
    """
    body = text.strip()[-_MAX_SCAN_CHARS:]
    fenced = _FENCE.search(body)
    if fenced is None and body.endswith("```"):  # prose, then a fenced object at the end
        start = body.rfind("```", 0, len(body) - 3)
        fenced = _FENCE.search(body[start:]) if start >= 0 else None
    if fenced is not None:
        body = fenced.group(1).strip()
    if not body.endswith("}"):
        return None
    decoder = json.JSONDecoder(parse_int=float)
    position = body.find("{")
    for _ in range(_MAX_STARTS):
        if position == -1:
            break
        try:
            obj, end = decoder.raw_decode(body, position)
        except (ValueError, RecursionError):
            pass
        else:
            if end == len(body) and isinstance(obj, dict):
                return obj
        position = body.find("{", position + 1)
    return None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""
