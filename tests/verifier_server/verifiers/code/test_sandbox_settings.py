"""The server config's `sandbox` section: it reaches every worker's sandboxes, and a value
that cannot work stops the server at start with an error naming the key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from server_process import ServerProcess, run_cli, server_env

from verifier_server import Item, RewardSpec
from verifier_server.client import RewardClient
from verifier_server.types import Status

pytestmark = pytest.mark.integration
BASE = 1_500_000_000 + 64 * os.getpid()  # a range no other test run uses


def held_pairs(base: int) -> set[str]:
    """Abstract socket names of the uid pairs held on this machine's network namespace."""
    lines = Path("/proc/net/unix").read_text().splitlines()
    return {line.split()[-1] for line in lines if f"@verifier-rl/uids/{base}/" in line}


def test_flags_reach_every_workers_sandboxes() -> None:
    flags = ["--sandbox-uid-base", str(BASE), "--sandbox-uid-count", "8"]
    server = ServerProcess(["--port", "0", "--workers", "2", *flags])
    try:
        with RewardClient(server.address) as client:
            item = Item(
                id="double", reward=RewardSpec("code"),
                completion="```python\nprint(int(input()) * 2)\n```",
                reference={"tests": [{"stdin": "21", "stdout": "42"}]},
            )  # fmt: skip
            [result] = client.score([item], timeout_s=60)
            assert (result.status, result.score) == (Status.OK, 1.0), result
            # 2 workers x 2 warm slots: every pair of the 8 uids is held
            assert held_pairs(BASE) == {f"@verifier-rl/uids/{BASE}/{n}" for n in range(4)}
    finally:
        server.stop()
    assert held_pairs(BASE) == set()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "2", "--sandbox-uid-count", "6"],
         ["sandbox: uid_count=6 is too small for 4 slot(s)"]),
        (["--workers", "1", "--sandbox-cgroup-parent", "/no-such-cgroup-18"],
         ["sandbox: cgroup_parent='/no-such-cgroup-18'", "is not a cgroup directory"]),
        (["--sandbox-cgroup-parent", "pod"],
         ["sandbox.cgroup_parent", "String should match pattern '^/'"]),
    ],
)  # fmt: skip
def test_a_setting_that_cannot_work_stops_the_server(args: list[str], message: list[str]) -> None:
    done = run_cli("serve", "--port", "0", *args)
    assert done.returncode == 2
    assert all(part in done.stderr for part in message), done.stderr


def test_config_and_environment_must_not_disagree(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"sandbox: {{uid_base: {BASE}}}\n")
    env = {**server_env(), "VERIFIER_RL_SANDBOX_UID_BASE": "7"}
    done = run_cli("serve", "--port", "0", "--config", str(config), env=env)
    assert done.returncode == 2
    assert f"sandbox.uid_base={BASE} and VERIFIER_RL_SANDBOX_UID_BASE='7' disagree" in done.stderr
