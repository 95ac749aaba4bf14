"""The "code" verifier: run the completion's program against tests in the sandbox.

The code is the last fenced block of the completion (any language tag), or the whole
completion with `extract: raw`. Compiled languages compile first, in the sandbox, with their
own limits; a failure makes every test `compile_error`. Each test is a separate sandboxed run
with the per-test limits, and its verdict is decided outside the program's control:
- stdin/stdout tests compare the captured stdout with the expected text here, in the server
  (see code_compare), never inside the sandbox;
- function tests (HumanEval, MBPP) run as a linked pair of sandboxed runs (harness.py): the
  program serves calls to its functions over a pipe, and a separate judge, which never runs
  the program's code, runs the test against stubs, compares plain values and reports the
  verdict to the host on a channel the program cannot reach.
Verdicts: passed, wrong_answer, runtime_error, time_limit, memory_limit, output_limit,
compile_error, not_run (after a failure with `stop_at_first_failure`). A sandbox that could
not run the program makes the item STATUS_VERIFIER_ERROR, never a score of 0.

Runs in the worker pool ("process"): each worker owns a pool of warm sandbox slots (default
2, or the config's `sandbox` section / VERIFIER_RL_SANDBOX_* variables: see sandbox_env),
started by `warm_up` before the server accepts requests.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import marshal
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from pydantic import Field

from sandboxes import Limits, Outcome, Program, RunResult, SandboxError, SandboxPool
from sandboxes.languages import CompileLimits, Language, get_language
from verifier_server.types import Item, Result, Status, truncate
from verifier_server.verifiers.base import InvalidItem, TimedParams, Verifier
from verifier_server.verifiers.code import sandbox_env
from verifier_server.verifiers.code.compare import CompareMode, outputs_match
from verifier_server.verifiers.code.reference import (
    CodeReference,
    FunctionTest,
    StdioTest,
    parse_reference,
)
from verifier_server.verifiers.text import last_fenced_block

log = logging.getLogger(__name__)

_HARNESS = Path(__file__).with_name("harness.py").read_bytes()
# When the sandbox's interpreter reads this one's bytecode, the harness goes in compiled:
# compiling it in each of a test's two runs would cost more than the rest of the harness.
_LOADER = b"import marshal\nexec(marshal.loads(open('/work/harness.bin', 'rb').read()))\n"
_MAGIC = b"import importlib.util\nprint(importlib.util.MAGIC_NUMBER.hex())\n"
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
        self.slots = sandbox_env.slots_from_env(os.environ)
        self._pool: SandboxPool | None = None
        self._harness: dict[str, bytes] | None = None

    def warm_up(self) -> None:
        self.pool().start()
        self.harness_files()

    def harness_files(self) -> dict[str, bytes]:
        """harness.py, compiled ahead when the sandbox's Python has this one's magic number."""
        if self._harness is None:
            probe = self.pool().run(
                Program(("/work/m.py",), files={"m.py": _MAGIC}, runner="python")
            )
            if probe.outcome is Outcome.SANDBOX_ERROR:
                raise SandboxError(probe.error)
            self._harness = {"harness.py": _HARNESS}
            if probe.stdout.strip() == importlib.util.MAGIC_NUMBER.hex().encode():
                code = compile(_HARNESS, "/work/harness.py", "exec", dont_inherit=True)
                self._harness = {"harness.py": _LOADER, "harness.bin": marshal.dumps(code)}
        return self._harness

    def pool(self) -> SandboxPool:
        if self._pool is None:
            self._pool = SandboxPool(
                max(sandbox_env.DEFAULT_SLOTS, self.slots), sandbox_env.config_from_env(os.environ)
            )
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
        rounds = math.ceil(len(reference.tests) / self._parallel(reference))
        worst_s = compile_s + rounds * (2 * params.time_limit_s + 1 + _PER_RUN_OVERHEAD_S)
        if worst_s > params.timeout_s:
            raise InvalidItem(
                "reference.tests",
                f"{len(reference.tests)} tests could take {worst_s:.0f} s (with "
                f"time_limit_s={params.time_limit_s:g} on {self.slots} slots), more than "
                f"timeout_s={params.timeout_s:g}; raise timeout_s or lower time_limit_s",
            )

    def _parallel(self, reference: CodeReference) -> int:
        """Tests at once: a function test takes two slots (the program and its judge)."""
        return max(1, self.slots // 2) if _is_function_test(reference) else self.slots

    def _score(
        self, item_id: str, code: str, reference: CodeReference, params: CodeParams
    ) -> Result:
        language = get_language(reference.language)
        pool = self.pool()
        n = len(reference.tests)
        details: dict = {"language": reference.language, "tests_total": n}
        if _is_function_test(reference):
            prompt = reference.tests[0].prompt  # type: ignore[union-attr]
            code = f"{prompt}\n{code}" if prompt else code
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
        limits = _run_limits(language, params)
        verdicts: list[dict] = []
        failure: _TestRun | None = None
        batch = self._parallel(reference) if params.stop_at_first_failure else n
        for start in range(0, n, batch):
            chunk = reference.tests[start : start + batch]
            if _is_function_test(reference):
                harness = self.harness_files()
                runs = _function_tests(pool, harness, code, chunk, limits)  # type: ignore[arg-type]
            else:
                runs = _stdio_tests(pool, language, code, artifact, chunk, limits, params)  # type: ignore[arg-type]
            for test_run in runs:
                if test_run.run.outcome is Outcome.SANDBOX_ERROR:
                    return _sandbox_failed(item_id, test_run.run)
                verdicts.append(test_run.details())
                if test_run.verdict != "passed" and failure is None:
                    failure = test_run
            if params.stop_at_first_failure and failure is not None:
                break
        verdicts += [{"verdict": "not_run"} for _ in range(n - len(verdicts))]
        return _verdict(item_id, verdicts, failure, params, details)


def _run_limits(language: Language, params: CodeParams) -> Limits:
    """Each test run's limits: wall clock 2 x CPU + 1 s, so a program blocked on I/O ends."""
    return language.run_limits(
        Limits(
            cpu_s=params.time_limit_s,
            wall_s=2 * params.time_limit_s + 1,
            memory_mb=params.memory_mb,
            stdout_bytes=params.output_limit_kb * 1024,
            stderr_bytes=64 * 1024,
        )
    )


def _verdict(
    item_id: str,
    verdicts: list[dict],
    failure: _TestRun | None,
    params: CodeParams,
    details: dict,
) -> Result:
    """The item's score from its tests' verdicts; the first failure names the reason."""
    n = len(verdicts)
    passed = sum(v["verdict"] == "passed" for v in verdicts)
    score = (1.0 if passed == n else 0.0) if params.scoring == "all" else passed / n
    details.update(tests_passed=passed, tests=verdicts)
    reason = ""
    if failure is not None:
        reason = failure.verdict
        details["stderr_tail"] = _tail(failure.run.stderr)
    return Result(id=item_id, score=score, reason=reason, details=details)


@dataclass(frozen=True)
class _TestRun:
    """One test's verdict and the run of the program it came from."""

    run: RunResult
    verdict: str
    error: str = ""

    def details(self) -> dict:
        details = {
            "verdict": self.verdict,
            "time_ms": round(self.run.wall_ms, 1),
            "cpu_ms": round(self.run.cpu_ms, 1),
            "memory_kb": self.run.memory_peak_kb,
        }
        if self.error:
            details["error"] = self.error
        return details


def _is_function_test(reference: CodeReference) -> bool:
    return isinstance(reference.tests[0], FunctionTest)


def _stdio_tests(
    pool: SandboxPool,
    language: Language,
    code: str,
    artifact: bytes | None,
    tests: Sequence[StdioTest],
    limits: Limits,
    params: CodeParams,
) -> list[_TestRun]:
    jobs = [(language.run_program(code, artifact, test.stdin.encode()), limits) for test in tests]
    runs = []
    for run, test in zip(pool.run_many(jobs), tests, strict=True):
        if run.outcome is not Outcome.OK:
            runs.append(_TestRun(run, _OUTCOME_VERDICTS.get(run.outcome, "sandbox_error")))
            continue
        matched = outputs_match(run.stdout, test.stdout, params.compare, params.float_tolerance)
        runs.append(_TestRun(run, "passed" if matched else "wrong_answer"))
    return runs


def _function_tests(
    pool: SandboxPool,
    harness: dict[str, bytes],
    code: str,
    tests: Sequence[FunctionTest],
    limits: Limits,
) -> list[_TestRun]:
    """Each test is a linked pair: the program serves calls, the judge runs the test."""
    program = Program(
        ("/work/harness.py", "serve"),
        files={**harness, "solution.py": code.encode(errors="surrogatepass")},
        runner="python",
    )
    # the judge's needs do not shrink with the program's memory limit
    judge_limits = replace(limits, memory_mb=max(256, limits.memory_mb), stdout_bytes=64 * 1024)
    pairs = [(program, limits, _judge_program(harness, test), judge_limits) for test in tests]
    return [_function_verdict(candidate, judge) for candidate, judge in pool.run_pairs(pairs)]


def _judge_program(harness: dict[str, bytes], test: FunctionTest) -> Program:
    spec = {"style": test.style, "test": test.test, "setup": test.setup, "prompt": test.prompt}
    if test.entry_point:
        spec["entry_point"] = test.entry_point
    return Program(
        ("/work/harness.py", "judge"),
        files={**harness, "spec.json": json.dumps(spec).encode()},
        runner="python",
    )


def _function_verdict(candidate: RunResult, judge: RunResult) -> _TestRun:
    """The judge's verdict; when it failed, the program's own limit (if it hit one) says why."""
    if judge.outcome is Outcome.SANDBOX_ERROR:
        return _TestRun(judge, "sandbox_error")
    if candidate.outcome is Outcome.SANDBOX_ERROR:
        return _TestRun(candidate, "sandbox_error")
    verdict, error = "", ""
    if judge.outcome is Outcome.OK:
        verdict, error, field = judge_verdict(judge.stdout)
        if verdict == "invalid_test":
            raise InvalidItem(f"reference.{field}", error)
    if verdict == "passed":
        return _TestRun(candidate, verdict)
    if candidate.outcome in _LIMIT_VERDICTS:
        return _TestRun(candidate, _LIMIT_VERDICTS[candidate.outcome], error)
    if not verdict:  # the judge died: the values it was sent made it run out of time or memory
        verdict = _OUTCOME_VERDICTS.get(judge.outcome, "runtime_error")
        error = error or f"the test ended with {judge.outcome.value}"
    return _TestRun(candidate, verdict, error)


def judge_verdict(stdout: bytes) -> tuple[str, str, str]:
    """(verdict, error, field) from the judge's one line; anything else is a judge failure,
    which only the values the program sent can cause: a runtime error."""
    lines = stdout.splitlines()
    try:
        message = json.loads(lines[0]) if len(lines) == 1 else None
    except ValueError:
        message = None
    if not isinstance(message, dict) or message.get("verdict") not in _JUDGE_VERDICTS:
        return "", "the judge gave no verdict", ""
    return message["verdict"], str(message.get("error", "")), str(message.get("field", ""))


_JUDGE_VERDICTS = ("passed", "wrong_answer", "runtime_error", "invalid_test")
_OUTCOME_VERDICTS = {
    Outcome.RUNTIME_ERROR: "runtime_error",
    Outcome.TIME_LIMIT: "time_limit",
    Outcome.MEMORY_LIMIT: "memory_limit",
    Outcome.OUTPUT_LIMIT: "output_limit",
}
_LIMIT_VERDICTS = {
    Outcome.TIME_LIMIT: "time_limit",
    Outcome.MEMORY_LIMIT: "memory_limit",
    Outcome.OUTPUT_LIMIT: "output_limit",
}


def _sandbox_failed(item_id: str, run: RunResult) -> Result:
    log.error("sandbox error: %s", truncate(run.error, 300))
    return Result.failed(item_id, Status.VERIFIER_ERROR, "sandbox_error", run.error)


def _tail(stderr: bytes) -> str:
    return stderr[-_STDERR_TAIL:].decode("utf-8", errors="replace")
