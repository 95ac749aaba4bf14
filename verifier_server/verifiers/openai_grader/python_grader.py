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
import json, math, sys
sys.path.insert(0, "/work")
payload = json.loads(sys.stdin.read())
from grader import grade  # a failure here is the grader's: no "raised" line is printed
try:
    score = float(grade(payload["sample"], payload["item"]))
    out = {"score": score} if math.isfinite(score) else {"raised": f"grade() returned {score}"}
except BaseException as exc:  # SystemExit too: whatever grade() did with this sample
    try:
        out = {"raised": f"{type(exc).__name__}: {exc}"[:1000]}
    except BaseException:  # an exception whose str() raises
        out = {"raised": type(exc).__name__}
print()
print(json.dumps(out))
"""


class PythonFailure(Exception):
    """The grader gave no score; `reason` is machine-readable. `raised`: grade() raised or
    returned a non-number or a non-finite one for this sample (`grader_raised`), which is
    that sample's verdict; else the run ended without one (time or memory limit, no output)."""

    def __init__(self, reason: str, message: str, raised: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.raised = raised


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
        out = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise PythonFailure("grader_bad_output", "the python grader printed no score") from None
    if isinstance(out, dict) and isinstance(out.get("raised"), str):
        # The text may quote the sample: no lone surrogate may reach the reply's UTF-8.
        message = out["raised"].encode("utf-8", "replace").decode("utf-8")
        raise PythonFailure("grader_raised", f"grade() failed on this sample: {message}", True)
    score = out.get("score") if isinstance(out, dict) else None
    if not isinstance(score, float) or not math.isfinite(score):
        raise PythonFailure("grader_bad_output", "the python grader printed no score")
    return score
