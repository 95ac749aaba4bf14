"""A `python` grader's `grade(sample, item)` run in the sandbox (sandboxes.SandboxPool, the
code verifier's machinery): the caller's source is the program, the sample and item arrive on
stdin as JSON, the score leaves as the last line of stdout. The sandbox's interpreter is the
system Python with the standard library only (OpenAI's grader image also has numpy and
friends: a grader importing them fails with ModuleNotFoundError)."""

from __future__ import annotations

import json
import math
from typing import Any

from sandboxes import Limits, Outcome, Program, RunResult

_RUNNER = b"""\
import json, sys
sys.path.insert(0, "/work")
payload = json.loads(sys.stdin.read())
from grader import grade
score = grade(payload["sample"], payload["item"])
print()
print(json.dumps({"score": float(score)}))
"""


class PythonFailure(Exception):
    """The grader gave no score; `reason` is machine-readable."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def program(source: str, sample: dict[str, Any], item: dict[str, Any]) -> Program:
    stdin = json.dumps({"sample": sample, "item": item}, ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )
    return Program(
        ("/work/run.py",),
        files={"grader.py": source.encode(), "run.py": _RUNNER},
        stdin=stdin,
        runner="python",
    )


def limits(wall_s: float) -> Limits:
    return Limits(cpu_s=max(0.1, wall_s), wall_s=max(0.1, wall_s), memory_mb=512)


def read_score(run: RunResult) -> float:
    """The grader's score from a finished run, or PythonFailure."""
    if run.outcome is not Outcome.OK:
        tail = run.stderr[-500:].decode("utf-8", "replace").strip()
        raise PythonFailure(
            f"grader_{run.outcome.value}",
            f"the python grader ended with {run.outcome.value}: {tail or run.error or 'no output'}",
        )
    lines = run.stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        score = json.loads(lines[-1])["score"]
    except (IndexError, ValueError, KeyError, TypeError):
        raise PythonFailure("grader_bad_output", "the python grader printed no score") from None
    if not isinstance(score, float) or not math.isfinite(score):
        raise PythonFailure("grader_bad_output", f"grade() returned {score!r}, not a finite float")
    return score
