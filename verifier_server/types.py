"""The plain data that verifiers, the server and the client exchange.

Protobuf stays at the edges: the servicer (server.py), the dispatcher (dispatch.py, which
routes bulk items still serialized), bulk.py (which scores them in a worker), convert.py and
the client. Verifiers, the scorer and the worker pool see only these.
`reference`, `params` and `details` hold JSON values (dict, list, str, float, bool, None).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

JSON = Any  # a JSON value: dict | list | str | int | float | bool | None


class Status(enum.IntEnum):
    """Mirrors `verifier.v1.Status`. Anything but OK means "could not verify": mask it."""

    UNSPECIFIED = 0
    OK = 1
    TIMEOUT = 2
    INVALID_REQUEST = 3
    VERIFIER_ERROR = 4
    BACKEND_UNAVAILABLE = 5
    OVERLOADED = 6


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class RewardSpec:
    """A verifier name, a named reward from the server config, or "composite"."""

    name: str
    params: dict[str, JSON] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Item:
    """One completion to score. `id` is the caller's and is echoed in the result."""

    id: str
    completion: str
    reward: RewardSpec | None = None
    prompt: str = ""
    messages: tuple[ChatMessage, ...] = ()
    reference: JSON = None
    completion_tokens: int = 0
    truncated: bool = False
    group_id: str = ""


@dataclass(slots=True)
class Result:
    """The verdict on one item. `score` is meaningful only when `status` is OK."""

    id: str
    score: float = 0.0
    status: Status = Status.OK
    reason: str = ""
    components: dict[str, float] = field(default_factory=dict)
    details: dict[str, JSON] = field(default_factory=dict)
    elapsed_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    @classmethod
    def failed(cls, item_id: str, status: Status, reason: str, message: str = "") -> Result:
        """A could-not-verify result; `message` is a human-readable explanation."""
        if status == Status.OK:
            raise ValueError("failed() needs a non-OK status")
        details = {"error": truncate(message)} if message else {}
        return cls(id=item_id, score=0.0, status=status, reason=reason, details=details)


def truncate(text: str, limit: int = 500) -> str:
    """Shortens untrusted text before it goes into logs, errors or details."""
    return text if len(text) <= limit else f"{text[:limit]}… [{len(text) - limit} more chars]"
