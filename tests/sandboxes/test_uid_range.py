"""The slots' outside uid range (sandboxes.uids): checked against the user namespace, handed
out a pair per slot, and, for real, the code verifier scoring inside a user namespace that
maps only 65,536 uids (as rootless podman, Docker userns-remap and Kubernetes hostUsers:
false give a container), made here with unshare and a uid map written by this root process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sandboxes import SandboxError
from sandboxes.uids import HOST_BASE, NAMESPACE_TOP, UidRange, claim, resolve

REPO = Path(__file__).resolve().parents[2]
FULL = "0 0 4294967295\n"  # a host: every uid mapped
CONTAINER = "0 100000 65536\n"  # Docker userns-remap, Kubernetes hostUsers: false
ROOTLESS = "0 1000 1\n1 100000 65536\n"  # rootless podman: the user, then its subuids


@pytest.mark.parametrize(
    ("uid_map", "expected"),
    [
        (FULL, HOST_BASE),
        (CONTAINER, NAMESPACE_TOP - 4096),  # 61438..65533: below nobody (65534)
        (ROOTLESS, NAMESPACE_TOP - 4096),
    ],
)
def test_default_base_fits_a_host_and_a_65536_uid_namespace(uid_map: str, expected: int) -> None:
    assert resolve(None, 4096, 2, uid_map=uid_map, gid_map=uid_map) == UidRange(expected, 4096)


@pytest.mark.parametrize(
    ("base", "count", "slots", "uid_map", "message"),
    [
        (HOST_BASE, 4096, 2, CONTAINER, "uid_base=1000000000, uid_count=4096: ids 1000000000-"),
        (65000, 1024, 2, CONTAINER, "(mapped uids: 0-65535)"),
        (50000, 6, 4, FULL, "uid_count=6 is too small for 4 slot(s)"),
        (None, 65536, 2, CONTAINER, "uid_base is unset and no default fits"),
        (0, 100, 2, FULL, "uid_base=0: ids must lie in 1.."),
    ],
)
def test_a_range_that_does_not_fit_names_the_key(
    base: int | None, count: int, slots: int, uid_map: str, message: str
) -> None:
    with pytest.raises(SandboxError) as caught:
        resolve(base, count, slots, uid_map=uid_map, gid_map=uid_map)
    assert message in str(caught.value)


def test_gids_are_checked_too() -> None:
    with pytest.raises(SandboxError, match="mapped gids: 0-999"):
        resolve(50000, 64, 2, uid_map=FULL, gid_map="0 0 1000\n")


def test_pairs_are_distinct_until_released_and_run_out() -> None:
    base = 2_000_000_000 + 4 * os.getpid()  # two pairs no other process claims
    ids = UidRange(base, 4)
    first, second = claim(ids), claim(ids)
    assert {(first.zygote, first.run), (second.zygote, second.run)} == {
        (base, base + 1),
        (base + 2, base + 3),
    }
    with pytest.raises(SandboxError, match="raise uid_count"):
        claim(ids)
    first.release()
    again = claim(ids)
    assert (again.zygote, again.run) == (first.zygote, first.run)
    again.release()
    second.release()


# ---- for real, in a user namespace with 65,536 uids

CHILD = """
import json, os, sys
from verifier_server.types import Item, RewardSpec
from verifier_server.verifiers.code.verifier import CodeParams, CodeVerifier

item = Item(id="probe", completion="```python\\nimport os\\nprint(int(input()) * 2)\\n```",
            reward=RewardSpec("code"),
            reference={"tests": [{"stdin": "21\\n", "stdout": "42\\n"},
                                 {"stdin": "5\\n", "stdout": "11\\n"}]})
verifier = CodeVerifier()
result = verifier.score_one(item, CodeParams(timeout_s=30))
pool = verifier._pool
claims = [[s.claim.zygote, s.claim.run] for s in (pool.slots if pool else []) if s.claim]
print(json.dumps({"status": result.status.name, "score": result.score, "claims": claims,
                  "details": str(result.details)[-600:],
                  "uid_map": open("/proc/self/uid_map").read()}))
"""


def in_namespace(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Runs `command` as root of a new user namespace mapping uids and gids 0-65535 only."""
    own = os.stat("/proc/self/ns/user").st_ino
    process = subprocess.Popen(
        ["unshare", "--user", "--", "sh", "-c", 'read go; exec "$@"', "sh", *command],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **env},
    )  # fmt: skip
    assert process.stdin is not None
    deadline = time.monotonic() + 10
    while os.stat(f"/proc/{process.pid}/ns/user").st_ino == own:  # until it has unshared
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for name in ("uid_map", "gid_map"):
        Path(f"/proc/{process.pid}/{name}").write_text("0 0 65536\n")
    stdout, stderr = process.communicate("go\n", timeout=120)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def score_in_namespace(env: dict[str, str]) -> dict[str, Any]:
    done = in_namespace([sys.executable, "-c", CHILD], env)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.integration
def test_code_scores_in_a_65536_uid_namespace_with_the_configured_base() -> None:
    result = score_in_namespace(
        {"VERIFIER_RL_SANDBOX_UID_BASE": "40000", "VERIFIER_RL_SANDBOX_UID_COUNT": "64"}
    )
    assert result["uid_map"].split() == ["0", "0", "65536"]
    # 21 * 2 == 42 passes, 5 * 2 == 10 != 11 fails: a real score, not a failure to run
    assert (result["status"], result["score"]) == ("OK", 0.5), result
    assert result["claims"] and all(40000 <= uid < 40064 for c in result["claims"] for uid in c)


@pytest.mark.integration
def test_code_scores_in_a_65536_uid_namespace_with_the_default_range() -> None:
    result = score_in_namespace({})
    assert (result["status"], result["score"]) == ("OK", 0.5), result
    low = NAMESPACE_TOP - 4096
    assert result["claims"] and all(
        low <= uid < NAMESPACE_TOP for c in result["claims"] for uid in c
    )


@pytest.mark.integration
def test_the_host_default_base_fails_closed_in_the_namespace_naming_the_key() -> None:
    result = score_in_namespace({"VERIFIER_RL_SANDBOX_UID_BASE": str(HOST_BASE)})
    assert result["status"] == "VERIFIER_ERROR", result
    assert "uid_base=1000000000" in result["details"] and "0-65535" in result["details"]


@pytest.mark.integration
def test_the_server_refuses_to_start_with_a_range_outside_the_namespace() -> None:
    command = [sys.executable, "-m", "verifier_server.cli", "serve", "--port", "0",
               "--workers", "1", "--sandbox-uid-base", str(HOST_BASE)]  # fmt: skip
    done = in_namespace(command, {})
    assert done.returncode == 2, done.stderr[-2000:]
    assert "sandbox: uid_base=1000000000, uid_count=4096" in done.stderr
