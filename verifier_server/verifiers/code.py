"""The "code" verifier: run the completion's program against tests in the sandbox.

The code is the last fenced block of the completion (any language tag), or the whole
completion with `extract: raw`. Compiled languages compile first, in the sandbox, with their
own limits; a failure makes every test `compile_error`. Each test is a separate sandboxed run
with the per-test limits, and its verdict is decided outside the program's control:
- stdin/stdout tests compare the captured stdout with the expected text here, in the server
  (see code_compare), never inside the sandbox;
- function tests (HumanEval, MBPP) pass only with a line carrying a per-run secret that the
  trusted harness (code_harness) prints after the test ran to its end.
Verdicts: passed, wrong_answer, runtime_error, time_limit, memory_limit, output_limit,
compile_error, not_run (after a failure with `stop_at_first_failure`). A sandbox that could
not run the program makes the item STATUS_VERIFIER_ERROR, never a score of 0.

Runs in the worker pool ("process"): each worker owns a pool of warm sandbox slots (default
2, or VERIFIER_RL_SANDBOX_SLOTS), started by `warm_up` before the server accepts requests.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field

from sandboxes import Limits, Outcome, Program, RunResult, SandboxError, SandboxPool
from sandboxes.languages import CompileLimits, get_language
from verifier_server.types import Item, Result, Status, truncate
from verifier_server.verifiers.base import InvalidItem, TimedParams, Verifier
from verifier_server.verifiers.code_compare import CompareMode, outputs_match
from verifier_server.verifiers.code_reference import (
    CodeReference,
    FunctionTest,
    StdioTest,
    parse_reference,
)
from verifier_server.verifiers.text import last_fenced_block

log = logging.getLogger(__name__)

_HARNESS = (Path(__file__).with_name("code_harness.py")).read_bytes()
_STDERR_TAIL = 500
_PER_RUN_OVERHEAD_S = 0.2  # budget allowance per run for setup and a loaded machine


class CodeParams(TimedParams):
    timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=300,
        description="Limit for the whole item (compile and every test); the tests' worst case "
        "(compile + ceil(tests / slots) x (2 x time_limit_s + 1)) must fit in it.",
    )
    extract: Literal["fenced", "raw"] = Field(
        default="fenced",
        description="'fenced': the last complete ``` block (any language tag); 'raw': the "
        "whole completion.",
    )
    scoring: Literal["fraction", "all"] = Field(
        default="fraction", description="Fraction of tests passed, or 1 only if all pass."
    )
    stop_at_first_failure: bool = Field(
        default=False, description="Stop after the first failing test; the rest are not_run."
    )
    time_limit_s: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="CPU seconds per test; the wall-clock limit is 2 x time_limit_s + 1.",
    )
    memory_mb: int = Field(default=256, ge=16, le=16384, description="Memory per test run.")
    output_limit_kb: int = Field(
        default=1024, ge=1, le=65536, description="stdout per test; past it: output_limit."
    )
    compare: CompareMode = Field(
        default="whitespace",
        description="stdin/stdout tests: 'exact' text; 'whitespace': same lines and tokens; "
        "'float': tokens equal or numbers within float_tolerance.",
    )
    float_tolerance: float = Field(
        default=1e-6, ge=0, le=1, description="Absolute or relative tolerance for 'float'."
    )
    compile_time_limit_s: float = Field(
        default=10.0, gt=0, le=60, description="CPU seconds for the compile step."
    )
    compile_memory_mb: int = Field(
        default=1024, ge=64, le=16384, description="Memory for the compile step."
    )


class CodeVerifier(Verifier):
    name = "code"
    description = (
        "Runs the completion's Python, C++ or JavaScript program in the sandbox against "
        "stdin/stdout tests, a HumanEval check() or MBPP asserts."
    )
    Params = CodeParams
    execution = "process"

    def __init__(self) -> None:
        self.slots = int(os.environ.get("VERIFIER_RL_SANDBOX_SLOTS", "2"))
        self._pool: SandboxPool | None = None

    def warm_up(self) -> None:
        self.pool().start()

    def pool(self) -> SandboxPool:
        if self._pool is None:
            self._pool = SandboxPool(self.slots)
        return self._pool

    def score_one(self, item: Item, params: CodeParams) -> Result:
        reference = parse_reference(item.reference)
        self._check_budget(reference, params)
        code = item.completion if params.extract == "raw" else last_fenced_block(item.completion)
        if code is None or not code.strip():
            return Result(id=item.id, score=0.0, reason="no_code", details={"tests_passed": 0})
        try:
            return self._score(item.id, code, reference, params)
        except SandboxError as exc:
            return Result.failed(item.id, Status.VERIFIER_ERROR, "sandbox_error", str(exc))

    def _check_budget(self, reference: CodeReference, params: CodeParams) -> None:
        language = get_language(reference.language)
        compile_s = 0.0
        if language.compile_program("") is not None:
            compile_s = 2 * params.compile_time_limit_s + 1 + _PER_RUN_OVERHEAD_S
        rounds = math.ceil(len(reference.tests) / self.slots)
        worst_s = compile_s + rounds * (2 * params.time_limit_s + 1 + _PER_RUN_OVERHEAD_S)
        if worst_s > params.timeout_s:
            raise InvalidItem(
                "reference.tests",
                f"{len(reference.tests)} tests could take {worst_s:.0f} s (with "
                f"time_limit_s={params.time_limit_s:g} on {self.slots} slots), more than "
                f"timeout_s={params.timeout_s:g}; raise timeout_s or lower time_limit_s",
            )

    def _score(
        self, item_id: str, code: str, reference: CodeReference, params: CodeParams
    ) -> Result:
        language = get_language(reference.language)
        pool = self.pool()
        n = len(reference.tests)
        details: dict = {"language": reference.language, "tests_total": n}
        artifact = None
        compile_program = language.compile_program(code)
        if compile_program is not None:
            limits = CompileLimits(params.compile_time_limit_s, params.compile_memory_mb).limits()
            compiled = pool.run(compile_program, limits)
            if compiled.outcome is Outcome.SANDBOX_ERROR:
                return _sandbox_failed(item_id, compiled)
            if not compiled.ok:
                details.update(
                    tests_passed=0,
                    tests=[{"verdict": "compile_error"} for _ in range(n)],
                    stderr_tail=_tail(compiled.stderr),
                    compile_outcome=compiled.outcome.value,
                )
                return Result(id=item_id, score=0.0, reason="compile_error", details=details)
            artifact = compiled.artifact
        limits = language.run_limits(
            Limits(
                cpu_s=params.time_limit_s,
                wall_s=2 * params.time_limit_s + 1,
                memory_mb=params.memory_mb,
                stdout_bytes=params.output_limit_kb * 1024,
                stderr_bytes=64 * 1024,
            )
        )
        jobs = []
        secrets_ = []
        for test in reference.tests:
            if isinstance(test, StdioTest):
                program = language.run_program(code, artifact, test.stdin.encode())
                secrets_.append(b"")
            else:
                secret = secrets.token_hex(16).encode()
                program = _harness_program(code, test, secret)
                secrets_.append(secret)
            jobs.append((program, limits))
        verdicts: list[dict] = []
        failure: RunResult | None = None
        batch = len(pool.slots) if params.stop_at_first_failure else n
        for start in range(0, n, batch):
            results = pool.run_many(jobs[start : start + batch])
            for offset, run in enumerate(results):
                index = start + offset
                if run.outcome is Outcome.SANDBOX_ERROR:
                    return _sandbox_failed(item_id, run)
                verdict = _verdict(run, reference.tests[index], secrets_[index], params)
                verdicts.append(
                    {
                        "verdict": verdict,
                        "time_ms": round(run.wall_ms, 1),
                        "cpu_ms": round(run.cpu_ms, 1),
                        "memory_kb": run.memory_peak_kb,
                    }
                )
                if verdict != "passed" and failure is None:
                    failure = run
            if params.stop_at_first_failure and failure is not None:
                break
        verdicts += [{"verdict": "not_run"} for _ in range(n - len(verdicts))]
        passed = sum(v["verdict"] == "passed" for v in verdicts)
        if params.scoring == "all":
            score = 1.0 if passed == n else 0.0
        else:
            score = passed / n
        details.update(tests_passed=passed, tests=verdicts)
        reason = ""
        if failure is not None:
            reason = next(v["verdict"] for v in verdicts if v["verdict"] != "passed")
            details["stderr_tail"] = _tail(failure.stderr)
        return Result(id=item_id, score=score, reason=reason, details=details)


def _harness_program(code: str, test: FunctionTest, secret: bytes) -> Program:
    spec = {"style": test.style, "test": test.test, "setup": test.setup}
    if test.entry_point:
        spec["entry_point"] = test.entry_point
    return Program(
        ("/work/harness.py",),
        files={
            "harness.py": _HARNESS,
            "solution.py": code.encode(errors="surrogatepass"),
            "spec.json": json.dumps(spec).encode(),
        },
        stdin=secret + b"\n",
        runner="python",
    )


_OUTCOME_VERDICTS = {
    Outcome.RUNTIME_ERROR: "runtime_error",
    Outcome.TIME_LIMIT: "time_limit",
    Outcome.MEMORY_LIMIT: "memory_limit",
    Outcome.OUTPUT_LIMIT: "output_limit",
}


def _verdict(
    run: RunResult, test: StdioTest | FunctionTest, secret: bytes, params: CodeParams
) -> str:
    if run.outcome is not Outcome.OK:
        return _OUTCOME_VERDICTS[run.outcome]
    if isinstance(test, StdioTest):
        matched = outputs_match(run.stdout, test.stdout, params.compare, params.float_tolerance)
        return "passed" if matched else "wrong_answer"
    return harness_verdict(run.stdout, secret)


def harness_verdict(stdout: bytes, secret: bytes) -> str:
    """The verdict the harness printed after `secret`; a missing or repeated line is a
    runtime error (the program ended, or meddled, before the test finished)."""
    marker = secret + b" "
    if stdout.count(marker) != 1:
        return "runtime_error"
    line = stdout[stdout.index(marker) + len(marker) :].split(b"\n", 1)[0]
    verdict = line.split(b" ", 1)[0].decode("ascii", errors="replace")
    return verdict if verdict in ("passed", "wrong_answer", "runtime_error") else "runtime_error"


def _sandbox_failed(item_id: str, run: RunResult) -> Result:
    log.error("sandbox error: %s", truncate(run.error, 300))
    return Result.failed(item_id, Status.VERIFIER_ERROR, "sandbox_error", run.error)


def _tail(stderr: bytes) -> str:
    return stderr[-_STDERR_TAIL:].decode("utf-8", errors="replace")
