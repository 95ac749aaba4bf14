"""Starting and stopping verifiers that keep state in the server process.

A verifier with a `Settings` model or a `setup` hook (the judge's HTTP clients, a loaded
reward model) is set up once, in the server process, after the worker pool has forked and
before the gRPC server exists; it is closed after in-flight requests have drained. Its
settings come only from the config's `verifier_settings.<name>`: a request can never name a
URL, a file or an environment variable.

Health: a verifier reports it through `VerifierContext.set_serving`, shown by the standard
gRPC health service as `verifier.v1.VerifierService/<name>` (and `…/<name>/<part>`). Verifiers
that never report are SERVING while the server is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import ValidationError

from verifier_server.config import ServerConfig, format_validation_error
from verifier_server.registry import Registry
from verifier_server.verifiers.base import Verifier, VerifierContext

log = logging.getLogger(__name__)


class HealthSink(Protocol):
    async def set(self, service: str, status: Any) -> None: ...


class LifecycleError(RuntimeError):
    """A verifier's settings are invalid or its setup failed: the server does not start."""


def settings_problems(registry: Registry, config: ServerConfig) -> list[str]:
    """Every problem in `verifier_settings`, one line each (for `verifier-server check`)."""
    problems = []
    for name, raw in config.verifier_settings.items():
        if name not in registry:
            problems.append(
                f"verifier_settings.{name}: unknown verifier; known: {registry.names()}"
            )
        elif registry.get(name).Settings is None:
            problems.append(f"verifier_settings.{name}: verifier {name!r} takes no settings")
        else:
            try:
                registry.get(name).Settings.model_validate(raw)  # type: ignore[union-attr]
            except ValidationError as exc:
                problems.append(format_validation_error(exc, f"verifier_settings.{name}").strip())
    return problems


def _needs_setup(cls: type[Verifier]) -> bool:
    return cls.Settings is not None or cls.setup is not Verifier.setup


class ServerVerifiers:
    """The set-up verifiers of one server process, and the health they report."""

    def __init__(self, health: HealthSink, service_name: str, serving: Any, not_serving: Any):
        self._health = health
        self._service_name = service_name
        self._statuses = (not_serving, serving)
        self._pending: dict[str, bool] = {}
        self._flushing = False
        self.reported: set[str] = set()  # health names some verifier has reported
        self._started: list[Verifier] = []

    async def start(self, registry: Registry, config: ServerConfig) -> None:
        """Validates settings and calls `setup` on each verifier that has settings or a hook."""
        problems = settings_problems(registry, config)
        if problems:
            raise LifecycleError("invalid verifier_settings:\n  " + "\n  ".join(problems))
        for name, cls in registry.items():
            if not _needs_setup(cls):
                continue
            settings = (
                cls.Settings.model_validate(config.verifier_settings.get(name, {}))
                if cls.Settings is not None
                else None
            )
            verifier = registry.instance(name)
            context = VerifierContext(settings=settings, set_serving=self._reporter(name))
            try:
                await verifier.setup(context)
            except Exception as exc:
                await self.close()
                raise LifecycleError(
                    f"verifier {name!r} ({registry.origin(name)}) failed to set up: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            self._started.append(verifier)

    async def close(self) -> None:
        """Closes every set-up verifier, in reverse order; a failure is logged, not raised."""
        while self._started:
            verifier = self._started.pop()
            try:
                await verifier.close()
            except Exception:
                log.exception("verifier %s failed to close", verifier.name)

    def _reporter(self, name: str) -> Callable[..., None]:
        def set_serving(serving: bool, part: str | None = None) -> None:
            service = f"{self._service_name}/{name}" + (f"/{part}" if part else "")
            self.reported.add(service)
            self._pending[service] = bool(serving)
            if not self._flushing:
                self._flushing = True
                asyncio.get_running_loop().create_task(self._flush())

        return set_serving

    async def _flush(self) -> None:
        # Only the latest state of each name is sent, so a quick False-then-True ends True.
        try:
            while self._pending:
                service, serving = self._pending.popitem()
                await self._health.set(service, self._statuses[serving])
        finally:
            self._flushing = False
