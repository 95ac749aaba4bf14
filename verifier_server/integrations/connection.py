"""What the trainer adapters share: one client per process and server, reward specs from the
forms users write, and status counts.

Trainers fork (data loader workers, Ray actors) and a gRPC channel does not survive a fork, so
clients are cached by process id as well as by address.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from verifier_server.client import RewardClient
from verifier_server.types import Result, RewardSpec, Status

ADDRESS_ENV = "VERIFIER_SERVER_ADDRESS"
"""Environment variable read when no address is given (default 127.0.0.1:50051)."""
TOKEN_ENV = "VERIFIER_SERVER_TOKEN"
"""Environment variable read when no token is given (servers with `server.auth`)."""
REWARD_ENV = "VERIFIER_SERVER_REWARD"
"""Environment variable naming the reward where the trainer passes no arguments (OpenRLHF's
file mode; verl without `reward_kwargs`)."""

_clients: dict[tuple[int, str, str | None], RewardClient] = {}
_lock = threading.Lock()


MAX_BATCH_ITEMS = 4096
"""Items per request: one trainer call is one request up to the server's default cap."""


def endpoint(address: str | None, token: str | None) -> tuple[str, str | None]:
    """The address (default: $VERIFIER_SERVER_ADDRESS, else 127.0.0.1:50051) and token
    (default: $VERIFIER_SERVER_TOKEN, else none) to use."""
    return (
        address or os.environ.get(ADDRESS_ENV) or "127.0.0.1:50051",
        token or os.environ.get(TOKEN_ENV) or None,
    )


def shared_client(address: str | None = None, token: str | None = None) -> RewardClient:
    """The process's client for the `endpoint`, created on first use."""
    address, token = endpoint(address, token)
    key = (os.getpid(), address, token)
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = RewardClient(address, token=token, max_batch_items=MAX_BATCH_ITEMS)
            _clients[key] = client
        return client


def reward_spec(spec: str | RewardSpec | Mapping[str, Any] | None, where: str) -> RewardSpec:
    """A spec from a name, a RewardSpec or `{"name": ..., "params": {...}}`; None reads
    $VERIFIER_SERVER_REWARD. `where` names the argument in errors."""
    if spec is None:
        spec = os.environ.get(REWARD_ENV)
        if not spec:
            raise ValueError(
                f"{where}: no reward given; pass a verifier or named reward, or set ${REWARD_ENV}"
            )
    if isinstance(spec, RewardSpec):
        return spec
    if isinstance(spec, str):
        return RewardSpec(spec)
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"name", "params"}
        if unknown or not isinstance(spec.get("name"), str):
            raise ValueError(
                f"{where}: expected {{'name': str, 'params': dict}}, got {dict(spec)!r}"
            )
        params = spec.get("params") or {}
        if not isinstance(params, Mapping):
            raise ValueError(f"{where}.params: expected a mapping, got {type(params).__name__}")
        return RewardSpec(spec["name"], dict(params))
    raise ValueError(
        f"{where}: expected a name, a RewardSpec or a mapping, got {type(spec).__name__}"
    )


def check_reward(results: Iterable[Result]) -> None:
    """Raises ValueError when the server refused the reward spec itself (reason
    `invalid_reward`: an unknown name, bad params). Every item of an adapter's call shares the
    spec, so this is a setup error, and training on it would train on nothing but unverified
    items (all None for TRL, all 0.0 for verl and OpenRLHF)."""
    for result in results:
        if result.reason == "invalid_reward":
            raise ValueError(f"the server refused the reward: {result.details.get('error', '')}")


def status_counts(results: Iterable[Result]) -> Counter[str]:
    """Items by status name ("OK", "TIMEOUT", ...), every status present (zero or not)."""
    counts: Counter[str] = Counter({s.name: 0 for s in Status if s != Status.UNSPECIFIED})
    counts.update(r.status.name for r in results)
    return counts


def describe(counts: Counter[str]) -> str:
    """`"OK 14, TIMEOUT 2"`: the statuses that occurred."""
    return ", ".join(f"{name} {n}" for name, n in counts.items() if n)
