"""Verifiers that misbehave on purpose, for tests of the pool and the server.
Loaded with `--plugin testing_verifiers` (tests/support is on the test PYTHONPATH)."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Sequence

from pydantic import Field

from verifier_server.execution import completion_phase
from verifier_server.types import Item, Result, Status
from verifier_server.verifiers.base import TimedParams, Verifier


class SleepParams(TimedParams):
    seconds: float = Field(default=0.0, ge=0, description="How long to sleep per item.")
    log_path: str | None = Field(default=None, description="Append each item's id here.")


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
        if params.log_path is not None:
            with open(params.log_path, "a") as log:
                log.write(item.id + "\n")
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


class CrashOnStartParams(TimedParams):
    pass


def crash_flag(pool_pid: int) -> str:
    """While this file exists, workers of the pool in process `pool_pid` die at start-up."""
    return os.path.join(tempfile.gettempdir(), f"verifier-rl-crash-on-start-{pool_pid}")


class CrashOnStartVerifier(Verifier):
    """A worker that loads this verifier exits during start-up while `crash_flag(pool's pid)`
    exists: a crash loop of respawns, on demand. (Workers are forked by the pool's
    forkserver, so the pool's pid is the worker's grandparent.)"""

    name = "crash_on_start"
    description = "test verifier: workers die at start-up while a flag file exists"
    Params = CrashOnStartParams
    execution = "process"

    def warm_up(self) -> None:
        with open(f"/proc/{os.getppid()}/stat") as stat:
            pool_pid = int(stat.read().rsplit(")", 1)[1].split()[1])
        if os.path.exists(crash_flag(pool_pid)):
            os._exit(7)

    def score_one(self, item: Item, params: CrashOnStartParams) -> Result:
        return Result(id=item.id, score=1.0, details={"pid": os.getpid()})


class HogParams(TimedParams):
    megabytes: int = Field(default=0, ge=0, description="Memory to keep after the item.")


_HOARD: list[bytearray] = []


class HogVerifier(Verifier):
    """Keeps `megabytes` of memory after each item (a leak, or state left by a MemoryError)."""

    name = "hog"
    description = "test verifier: keeps `megabytes` resident after each item"
    Params = HogParams
    execution = "process"

    def score_one(self, item: Item, params: HogParams) -> Result:
        if params.megabytes:
            block = bytearray(params.megabytes * 2**20)
            block[::4096] = b"x" * len(block[::4096])  # touch every page: resident
            _HOARD.append(block)
        return Result(id=item.id, score=1.0, details={"pid": os.getpid()})


class SleepyBulkVerifier(SleepyVerifier):
    name = "sleepy_bulk"
    description = "test verifier: like sleepy, scored in bulk"
    execution = "bulk"


class AsyncFaultyVerifier(Verifier):
    """An async verifier that raises: the server logs it (with the RPC's request id)."""

    name = "async_faulty"
    description = "test verifier: async, raises on every batch"
    execution = "async"

    async def ascore(self, items: Sequence[Item], params: object) -> list[Result]:
        raise ValueError("boom")
