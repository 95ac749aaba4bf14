"""A verifier that keeps state in the server process, for tests of the setup/close hooks.
Loaded with `--plugin stateful_verifiers` (tests/support is on the test PYTHONPATH)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

from pydantic import Field

from verifier_server.types import Item, Result
from verifier_server.verifiers.base import (
    Params,
    Verifier,
    VerifierContext,
    current_deadline,
)


class StatefulSettings(Params):
    bonus: float = Field(description="Added to every score; shows the settings arrived.")
    closed_marker: str = Field(description="A file written by close(), to show it ran.")
    fail_setup: bool = Field(default=False, description="Raise in setup.")


class StatefulVerifier(Verifier):
    """Scores `bonus`; "sick" marks its part `engine` NOT_SERVING, "well" SERVING again;
    "hang" ignores every deadline."""

    name = "stateful"
    description = "test verifier: server-side settings, setup/close, health reports"
    Settings = StatefulSettings
    execution = "async"

    def __init__(self) -> None:
        self._settings: StatefulSettings | None = None
        self._context: VerifierContext | None = None

    async def setup(self, context: VerifierContext) -> None:
        if context.settings.fail_setup:
            raise RuntimeError("the engine would not start")
        self._settings, self._context = context.settings, context
        context.set_serving(True, "engine")

    async def close(self) -> None:
        assert self._settings is not None
        Path(self._settings.closed_marker).write_text("closed")

    async def ascore(self, items: Sequence[Item], params: object) -> list[Result]:
        assert self._settings is not None and self._context is not None
        deadline = current_deadline()
        results = []
        for item in items:
            if item.completion == "hang":
                await asyncio.sleep(3600)
            if item.completion in ("sick", "well"):
                self._context.set_serving(item.completion == "well", "engine")
            remaining = None if deadline is None else deadline - time.monotonic()
            results.append(
                Result(id=item.id, score=self._settings.bonus, details={"remaining_s": remaining})
            )
        return results
