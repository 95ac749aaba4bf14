"""The code verifier's sandbox settings, from the server config or the environment.

Workers read them from VERIFIER_RL_SANDBOX_* variables (the worker pool sets those the config
names, so a key set in the config file or by a flag reaches every worker); a server started
without the config keys takes them from its own environment.
"""

from __future__ import annotations

from collections.abc import Mapping

from sandboxes import SandboxConfig, SandboxError
from sandboxes.pool import check_config
from verifier_server.config import ConfigError, SandboxSettings

ENV = {
    "slots": "VERIFIER_RL_SANDBOX_SLOTS",
    "uid_base": "VERIFIER_RL_SANDBOX_UID_BASE",
    "uid_count": "VERIFIER_RL_SANDBOX_UID_COUNT",
    "cgroup_parent": "VERIFIER_RL_SANDBOX_CGROUP_PARENT",
}
DEFAULT_SLOTS = 2  # a function test's pair needs two


def worker_env(settings: SandboxSettings, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables to set in each worker for the keys the config sets. A key set both in
    the config and, differently, in the environment is an error: set it in one place."""
    env = {}
    for key, variable in ENV.items():
        value = getattr(settings, key)
        if value is None:
            continue
        if variable in environ and environ[variable] != str(value):
            raise ConfigError(
                f"sandbox.{key}={value} and {variable}={environ[variable]!r} disagree; "
                "set it in only one place"
            )
        env[variable] = str(value)
    return env


def slots_from_env(environ: Mapping[str, str]) -> int:
    """Slots per worker as asked; a pool has at least DEFAULT_SLOTS whatever is asked."""
    raw = environ.get(ENV["slots"])
    return _integer("slots", raw) if raw is not None else DEFAULT_SLOTS


def config_from_env(environ: Mapping[str, str]) -> SandboxConfig:
    """SandboxConfig from the variables; a malformed one raises SandboxError naming it."""
    fields: dict[str, int | str] = {}
    for key in ("uid_base", "uid_count"):
        if environ.get(ENV[key]) is not None:
            fields[key] = _integer(key, environ[ENV[key]])
    if environ.get(ENV["cgroup_parent"]):
        fields["cgroup_parent"] = environ[ENV["cgroup_parent"]]
    return SandboxConfig(**fields)  # type: ignore[arg-type]


def check_at_start(environ: Mapping[str, str], workers: int) -> None:
    """When any sandbox setting is given: checks it now, in the server process, for every
    worker's slots (the uid range is shared by all), and takes over a cgroup v2 parent before
    the workers are forked into it. Raises ConfigError naming the key."""
    if not any(variable in environ for variable in ENV.values()):
        return  # the sandbox's defaults: a failure shows at the first code item
    try:
        slots = max(DEFAULT_SLOTS, slots_from_env(environ))
        check_config(config_from_env(environ), workers * slots)
    except SandboxError as exc:
        raise ConfigError(f"sandbox: {exc}") from None


def _integer(key: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise SandboxError(f"{ENV[key]}={raw!r} (sandbox.{key}) is not an integer") from None
