"""Verifiers that misbehave on purpose, for tests of the pool and the server.
Loaded with `--plugin testing_verifiers` (tests/support is on the test PYTHONPATH)."""

from __future__ import annotations

import os
import signal
import time

from pydantic import Field

from verifier_server.execution import completion_phase
from verifier_server.types import Item, Result, Status
from verifier_server.verifiers.base import TimedParams, Verifier


class SleepParams(TimedParams):
    seconds: float = Field(default=0.0, ge=0, description="How long to sleep per item.")


class SleepyVerifier(Verifier):
    """Sleeps, or spins in pure C (a huge power) when the completion is "hang"."""

    name = "sleepy"
    description = (
        "test verifier: sleeps `seconds`, hangs in C code on 'hang'; in its completion phase "
        "on 'hang_answer', crashes on 'crash_answer', is SIGKILLed on 'killed_answer'"
    )
    Params = SleepParams
    execution = "process"

    def score_one(self, item: Item, params: SleepParams) -> Result:
        if item.completion == "hang":
            _ = 10 ** (10**10)  # C-level arithmetic no signal can interrupt
        with completion_phase():  # as a verifier marks the work on the completion alone
            if item.completion == "hang_answer":
                _ = 10 ** (10**10)
            if item.completion == "crash_answer":
                os.kill(os.getpid(), signal.SIGSEGV)
            if item.completion == "killed_answer":
                os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(params.seconds)
        return Result(id=item.id, score=1.0, details={"pid": os.getpid()})


class FaultyVerifier(Verifier):
    """Fails in the way its completion names."""

    name = "faulty"
    description = "test verifier: raise / garbage / wrong_id / nan / die / ok"
    execution = "process"

    def score_one(self, item: Item, params: object) -> Result:
        match item.completion:
            case "raise":
                raise ValueError("boom")
            case "base_exception":
                raise SystemExit(3)
            case "garbage":
                return "not a result"  # type: ignore[return-value]
            case "wrong_id":
                return Result(id="someone-else", score=1.0)
            case "nan":
                return Result(id=item.id, score=float("nan"))
            case "unspecified":
                return Result(id=item.id, score=1.0, status=Status.UNSPECIFIED)
            case "die":
                os._exit(9)
            case "memory":
                _ = bytearray(8 * 1024**3)
        return Result(id=item.id, score=0.5)


class FaultyBulkVerifier(FaultyVerifier):
    name = "faulty_bulk"
    description = "test verifier: like faulty, scored in bulk"
    execution = "bulk"
