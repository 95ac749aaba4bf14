"""Rewards from verifier_server, only through `AsyncRewardClient`.

- With no address configured, `RewardService` starts `verifier-server` as a sidecar subprocess
  on a free loopback port and stops it (SIGTERM) on close.
- The client runs on a private event-loop thread, so the trainer can submit one chunk of
  completions while the engine is still generating the next (`submit` returns a future).
- DAPO's soft overlong punishment is the `length` verifier, added to the row's reward as a
  weighted component of an inline composite.
- A result whose status is not OK is "could not verify": it is reported as invalid and the
  trainer masks it. It is never turned into a reward of 0.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from verifier_server.client import AsyncRewardClient, RewardClientError
from verifier_server.sidecar import start_server_process
from verifier_server.types import Item, Result, RewardSpec

OVERLONG_COMPONENT = "overlong"  # the penalty's key in Result.components


@dataclass(frozen=True)
class Overlong:
    """Soft overlong punishment: `weight` x length(max_tokens, cache_tokens) added."""

    weight: float
    max_tokens: int
    cache_tokens: int


def with_overlong(spec: RewardSpec, overlong: Overlong | None) -> RewardSpec:
    """The row's reward plus the weighted `length` penalty, as one inline composite."""
    if overlong is None or overlong.weight == 0:
        return spec
    length = {
        "name": OVERLONG_COMPONENT,
        "verifier": "length",
        "params": {"max_tokens": overlong.max_tokens, "cache_tokens": overlong.cache_tokens},
        "weight": overlong.weight,
    }
    if spec.name == "composite":
        if spec.params.get("combine", "sum") != "sum":
            raise ValueError(
                "the overlong penalty can only be added to a composite with combine: sum"
            )
        return RewardSpec(
            "composite", {**spec.params, "components": [*spec.params["components"], length]}
        )
    task = {"name": "task", "verifier": spec.name, "params": dict(spec.params)}
    return RewardSpec("composite", {"combine": "sum", "components": [task, length]})


def status_counts(results: Sequence[Result]) -> dict[str, int]:
    """{'masked_TIMEOUT': 2, ...} for the results that are not OK."""
    counts = Counter(f"masked_{r.status.name}" for r in results if not r.ok)
    return dict(sorted(counts.items()))


class SidecarError(Exception):
    """The sidecar verifier-server did not start."""


class RewardService:
    """An AsyncRewardClient on its own event-loop thread, plus the sidecar server if needed."""

    def __init__(
        self,
        address: str | list[str] | None,
        *,
        sidecar_config: str | None = None,
        sidecar_workers: int = 2,
        timeout_s: float = 120.0,
        ready_timeout_s: float = 60.0,
    ) -> None:
        """`ready_timeout_s`: how long the server may take to answer SERVING at start."""
        self.timeout_s = timeout_s
        self.sidecar: subprocess.Popen[str] | None = None
        if address is None:
            args = ["--workers", str(sidecar_workers)]
            if sidecar_config is not None:
                args += ["--config", sidecar_config]
            try:
                self.sidecar, address = start_server_process(args, die_with_parent=True)
            except RuntimeError as exc:
                raise SidecarError(f"{exc} (args: {' '.join(args)})") from None
        self.address = address
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="rl-rewards", daemon=True
        )
        self._thread.start()
        try:
            self._client: AsyncRewardClient = self._run(self._make_client()).result()
            self._run(self._client.wait_ready(timeout_s=ready_timeout_s)).result()
        except RewardClientError as exc:  # say which server: there may be several
            self.close()
            named = address if isinstance(address, str) else ", ".join(address)
            raise RewardClientError(f"{named}: {exc}", exc.code) from None
        except BaseException:
            self.close()
            raise

    async def _make_client(self) -> AsyncRewardClient:
        return AsyncRewardClient(self.address, timeout_s=self.timeout_s)

    def _run(self, coro: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def submit(self, items: Sequence[Item]) -> Future[list[Result]]:
        """Starts scoring at once; the future holds one result per item, in order."""
        return self._run(self._client.score(items, timeout_s=self.timeout_s))

    def verifier_names(self) -> set[str]:
        return {v.name for v in self._run(self._client.list_verifiers()).result()}

    def close(self) -> None:
        if not self._loop.is_closed():
            if hasattr(self, "_client"):
                self._run(self._client.close()).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
        if self.sidecar is not None and self.sidecar.poll() is None:
            self.sidecar.send_signal(signal.SIGTERM)
            try:
                self.sidecar.wait(30)
            except subprocess.TimeoutExpired:
                self.sidecar.kill()
                self.sidecar.wait()

    def __enter__(self) -> RewardService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
