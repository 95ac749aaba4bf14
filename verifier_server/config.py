"""The server config file (YAML or TOML): server settings, limits, per-verifier defaults and
named rewards. Validated once at start; `verifier-server check --config FILE` reports every
problem with its location.

    server:   {host: 127.0.0.1, port: 50051, workers: 2}
    limits:   {max_items_per_request: 4096, max_completion_bytes: 1048576}
    sandbox:  {uid_base: 61438, uid_count: 4096, cgroup_parent: /}   # code verifier's sandboxes
    verifiers:                       # defaults merged under each request's params
      json_schema: {timeout_s: 3}
    verifier_settings:               # server-side settings of stateful verifiers (never
      judge: {backends: {...}}       # from a request): backends, model paths, env var names
    rewards:
      math_with_format:
        description: correct answer, well formatted
        combine: sum
        components:
          - {verifier: string_check, weight: 1.0}
          - {verifier: format, weight: 0.1}
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from verifier_server.composite import CompositeParams


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsSettings(_Strict):
    """TLS for the gRPC port (and mutual TLS with `client_ca_file`)."""

    cert_file: str = Field(description="PEM certificate chain of the server.")
    key_file: str = Field(description="PEM private key of the server.")
    client_ca_file: str | None = Field(
        default=None,
        description="PEM CA bundle: when set, clients must present a certificate it signed.",
    )


class AuthSettings(_Strict):
    """Bearer tokens, checked on every RPC but health, and per-token quotas."""

    tokens_file: str | None = Field(
        default=None,
        description="File with one token a line, optionally after a label: `trainer-a TOKEN`.",
    )
    tokens_env: str | None = Field(
        default=None, description="Name of an environment variable holding comma-separated tokens."
    )
    max_in_flight_items: int | None = Field(
        default=None, ge=1, description="Items one token may have in flight; past it: OVERLOADED."
    )
    items_per_s: float | None = Field(
        default=None, gt=0, description="Items per second one token may send; past it: OVERLOADED."
    )

    @model_validator(mode="after")
    def _one_source(self) -> AuthSettings:
        if (self.tokens_file is None) == (self.tokens_env is None):
            raise ValueError("set exactly one of tokens_file and tokens_env")
        return self


class ServerSettings(_Strict):
    """Where and how the server listens. Command-line flags override these."""

    host: str = Field(default="127.0.0.1", description="Address to bind; loopback by default.")
    port: int = Field(default=50051, ge=0, le=65535, description="TCP port; 0 picks a free one.")
    unix: str | None = Field(default=None, description="Also listen on this Unix socket path.")
    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description="Worker processes for CPU-bound verifiers (default: one per core).",
    )
    threads: int = Field(default=2, ge=1, description="Threads for linear-time verifiers.")
    worker_memory_mb: int | None = Field(
        default=4096, ge=64, description="Address-space limit of each worker (None: none)."
    )
    grace_s: float = Field(
        default=10.0, ge=0, description="On SIGTERM, how long in-flight work may drain."
    )
    tls: TlsSettings | None = Field(default=None, description="TLS / mTLS; None: plaintext.")
    auth: AuthSettings | None = Field(default=None, description="Tokens and quotas; None: open.")
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="Serve Prometheus metrics on this port (HTTP)."
    )
    http_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Also serve the HTTP/JSON front end (POST /v1/score, GET /v1/verifiers, "
        "GET /healthz, POST /v1/openrlhf/<reward>) on this port, with the same TLS and tokens.",
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="json: one JSON object a line, with the RPC's request id."
    )


class Limits(_Strict):
    """Caps that protect the server; past them a request or item gets a clear error."""

    max_message_mb: int = Field(default=64, ge=1, le=2047, description="Largest gRPC message.")
    max_items_per_request: int = Field(default=4096, ge=1, description="Items in one request.")
    max_completion_bytes: int = Field(default=1 << 20, ge=1, description="Size of one completion.")
    max_reference_bytes: int = Field(
        default=4 << 20, ge=1, description="Size of one item's reference (gold, tests, schema)."
    )
    max_queued_items: int = Field(
        default=200_000, ge=1, description="Items waiting for workers; past it: OVERLOADED."
    )
    default_item_timeout_s: float = Field(
        default=10.0, gt=0, description="Per-item time limit of a verifier with no timeout_s."
    )
    max_item_timeout_s: float = Field(
        default=120.0, gt=0, description="Upper bound on any item's timeout_s."
    )


class SandboxSettings(_Strict):
    """The code verifier's sandboxes, in every worker (sandboxes.SandboxConfig). Each key is
    also a `--sandbox-*` flag (which wins) and a VERIFIER_RL_SANDBOX_* environment variable
    (used when the key is unset here); unset everywhere, the sandbox's default applies."""

    slots: int | None = Field(
        default=None, ge=2, description="Warm sandbox slots per worker (default 2)."
    )
    uid_base: int | None = Field(
        default=None,
        ge=1,
        description="First outside uid/gid of the slots (default: 1,000,000,000 where the "
        "server's user namespace maps it, else the top uid_count ids below 65534).",
    )
    uid_count: int | None = Field(
        default=None,
        ge=2,
        description="Outside uids/gids for all workers' slots, 2 per slot (default 4096).",
    )
    cgroup_parent: str | None = Field(
        default=None,
        pattern=r"^/",
        description="cgroup path (as in /proc/self/cgroup) under which slot cgroups are made; "
        "on cgroup v2 the server moves its processes to its leaf `verifier-rl-server` "
        "(default: the server's own cgroup).",
    )


class ServerConfig(_Strict):
    server: ServerSettings = Field(default_factory=ServerSettings)
    limits: Limits = Field(default_factory=Limits)
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    plugins: list[str] = Field(default_factory=list, description="Modules to load as plugins.")
    verifiers: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per-verifier default params, by verifier name."
    )
    rewards: dict[str, CompositeParams] = Field(
        default_factory=dict, description="Named rewards, used as RewardSpec.name."
    )
    verifier_settings: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Server-side settings by verifier name (backends, model paths), validated "
        "by each verifier's Settings model; a request can never set these.",
    )


class ConfigError(Exception):
    """The config file is unreadable or invalid; the message lists every problem."""


def load_config(path: str | Path | None) -> ServerConfig:
    if path is None:
        return ServerConfig()
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {exc}"
        ) from None
    try:
        return ServerConfig.model_validate(raw or {})
    except ValidationError as exc:
        raise ConfigError(f"{path}:\n{format_validation_error(exc)}") from None


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem: `rewards.x.components.0.weight: Input should be a valid number`."""
    lines = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"])
        location = f"{prefix}.{location}" if prefix and location else prefix or location
        lines.append(f"  {location or '<root>'}: {error['msg']}")
    return "\n".join(lines)
