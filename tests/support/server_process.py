"""Helpers for tests that run `verifier-server` as a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from verifier_server.client import RewardClient
from verifier_server.sidecar import start_server_process

ROOT = Path(__file__).resolve().parents[2]
SUPPORT = ROOT / "tests" / "support"
PLUGIN_EXAMPLE = ROOT / "examples" / "plugin"


def server_env(extra_paths: list[Path] | None = None) -> dict[str, str]:
    paths = [str(p) for p in [SUPPORT, PLUGIN_EXAMPLE, *(extra_paths or [])]]
    existing = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([*paths, *([existing] if existing else [])]),
    }


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs `verifier-server ARGS` to completion, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "verifier_server.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env or server_env(),
    )


class ServerProcess:
    """A `verifier-server serve` subprocess; stopped with SIGTERM by `stop()`."""

    def __init__(
        self, args: list[str], env: dict[str, str] | None = None, stderr: object = None
    ) -> None:
        self.process, self.address = start_server_process(
            args, env=env or server_env(), stderr=stderr
        )

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                raise
        return self.process.returncode


@contextlib.contextmanager
def configured_server(config: dict[str, Any], directory: Path) -> Iterator[ServerProcess]:
    """A server started with `config` (written to `directory`, its log beside it); it stops
    on exit."""
    (directory / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    with (directory / "server.log").open("w") as stderr:
        proc = ServerProcess(["--config", str(directory / "config.yaml")], stderr=stderr)
        try:
            yield proc
        finally:
            proc.stop()


@contextlib.contextmanager
def configured_client(
    config: dict[str, Any], directory: Path, timeout_s: float = 60
) -> Iterator[RewardClient]:
    """A server started with `config` (see configured_server) and a ready client to it."""
    with (
        configured_server(config, directory) as proc,
        RewardClient(proc.address, timeout_s=timeout_s) as client,
    ):
        client.wait_ready()
        yield client


def kill_replica(proc: ServerProcess) -> None:
    """SIGKILLs the server and its workers at once, as when its machine dies: no drain, no
    answer to the calls it holds."""
    doomed = [proc.process.pid, *children_of(proc.process.pid)]
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.process.wait()


def children_of(pid: int) -> set[int]:
    """All descendants of `pid`, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
