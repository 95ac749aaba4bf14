"""The math verifier against the field's own grader test suites (the conformance table).

`conformance/peer_cases.json` holds every case read from Math-Verify's tests, MARIO_EVAL's
`test_is_equiv`, NeMo-Skills' `test_math_equal` and Qwen2.5-Math's grader examples, each with
its source (repository, file, line, commit), the peer's expected verdict, ours, and — where
ours differs — the name of the documented rule that says why (docs/verifiers.md, "Conformance").
A row whose verdict changes fails here until the table says so (`conformance/update_table.py`).

How a case is run: the peer's gold is the `reference` (a number stays a JSON number); the
peer's answer is the completion as written when it has an anchor (`\\boxed{}`, `<answer>`),
else its content (math delimiters stripped) is put in a box: the peer graded it as the final
answer, and we grade only anchored answers.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from verifier_server.types import JSON, Item, Status
from verifier_server.verifiers.math.extract import strip_math_delimiters
from verifier_server.verifiers.math.verifier import MathParams, MathVerifier

TABLE = Path(__file__).parent / "conformance" / "peer_cases.json"
CASES: list[dict[str, Any]] = json.loads(TABLE.read_text())
_ANCHORS = ("\\boxed", "\\fbox", "<answer>")
_VERIFIER = MathVerifier()


def completion_for(answer: JSON) -> str:
    if answer is None:
        return ""
    text = str(answer) if not isinstance(answer, str) else answer
    if any(anchor in text for anchor in _ANCHORS):
        return text
    return f"\\boxed{{{strip_math_delimiters(text)}}}"


def our_verdict(case: dict[str, Any]) -> bool | str:
    """True (1.0), False (0.0), or "refused" (the gold is INVALID_REQUEST)."""
    item = Item(id="c", completion=completion_for(case["answer"]), reference=case["gold"])
    [result] = _VERIFIER.score([item], MathParams())
    if result.status == Status.INVALID_REQUEST:
        return "refused"
    assert result.status == Status.OK, result  # a completion never earns another status
    return result.score == 1.0


def _case_id(case: dict[str, Any]) -> str:
    return f"{case['suite']}:{Path(case['file']).name}:{case['line']}:{str(case['answer'])[:30]}"


def test_table_is_complete_and_explained() -> None:
    assert len(CASES) >= 380
    assert {c["suite"] for c in CASES} == {
        "math-verify",
        "mario-eval",
        "nemo-skills",
        "qwen2.5-math",
    }
    for case in CASES:
        assert len(case["commit"]) == 40 and case["repo"] and case["file"]
        if case["ours"] != case["peer"]:
            assert case.get("rule"), f"an unexplained difference: {_case_id(case)}"
        else:
            assert not case.get("rule"), f"a rule on an agreeing row: {_case_id(case)}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_our_verdict_is_the_recorded_one(case: dict[str, Any]) -> None:
    assert our_verdict(case) == case["ours"], case


def agreement() -> dict[str, tuple[int, int]]:
    """(agreeing, total) per suite, from the table."""
    total, agree = Counter(), Counter()
    for case in CASES:
        total[case["suite"]] += 1
        agree[case["suite"]] += case["ours"] == case["peer"]
    return {suite: (agree[suite], total[suite]) for suite in total}


_DOC_NAMES = {
    "math-verify": "Math-Verify", "mario-eval": "MARIO_EVAL", "nemo-skills": "NeMo-Skills",
    "qwen2.5-math": "Qwen2.5-Math",
}  # fmt: skip


def test_the_docs_state_the_agreement_of_the_table() -> None:
    doc = (Path(__file__).parents[4] / "docs" / "verifiers.md").read_text()
    for suite, (agree, total) in agreement().items():
        row = re.search(rf"^\| {re.escape(_DOC_NAMES[suite])} \| (\d+) \| (\d+) ", doc, re.M)
        assert row is not None, suite
        assert (int(row[2]), int(row[1])) == (agree, total), suite
