"""The sandbox in the restricted world a container runtime makes: it comes up under the
shipped seccomp profile (docker/seccomp/) with only Docker's default capabilities, and
anything less makes the code verifier fail closed: VERIFIER_ERROR (sandbox_error), the
program never runs.

Each case runs the code verifier in a child process that is restricted the way a container
is (kernel-enforced, not mocked): capabilities cut to Docker's default bounding set with
setpriv, a seccomp profile loaded with libseccomp (docker/seccomp/run_with_profile.py), and,
in a private mount namespace, cgroupfs read-only or /proc masked as Docker mounts them. The
program writes a marker file on the host path it was given and prints `ran`: the marker must
never appear (the sandbox hides the host, and a restricted sandbox must not run at all).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SECCOMP = REPO / "docker" / "seccomp"
sys.path.insert(0, str(SECCOMP))
from generate import DOCKER_DEFAULT_CAPS, SANDBOX_CAPS, SANDBOX_RULES, oci_profile  # noqa: E402

pytestmark = pytest.mark.integration
CLONE_NEWUSER = 0x10000000

BOUNDING_SET = "-all," + ",".join(
    "+" + cap.removeprefix("CAP_").lower() for cap in sorted(DOCKER_DEFAULT_CAPS)
)
LEAST_CAPS = [cap.removeprefix("CAP_").lower() for cap in SANDBOX_CAPS]
CHILD = """
import json, sys
from verifier_server.types import Item, RewardSpec
from verifier_server.verifiers.code.verifier import CodeParams, CodeVerifier

marker = sys.argv[1]
program = (
    "```python\\ntry:\\n    open(%r, 'w').write('ran')\\nexcept OSError:\\n    pass\\n"
    "print('ran')\\n```" % marker
)
item = Item(id="probe", completion=program, reward=RewardSpec("code"),
            reference={"tests": [{"stdin": "", "stdout": "ran\\n"}]})
verifier = CodeVerifier()
result = verifier.score_one(item, CodeParams(timeout_s=30))
verifier.pool().close()
print(json.dumps({"status": result.status.name, "score": result.score,
                  "reason": result.reason, "details": str(result.details)[-400:]}))
"""
READ_ONLY_CGROUPS = (  # as a container runtime mounts cgroupfs for an unprivileged container
    'for m in $(findmnt -rn -t cgroup,cgroup2 -o TARGET); do mount -o remount,bind,ro "$m"; done'
)
MASKED_PROC = (  # Docker's masked and read-only /proc paths (moby oci/defaults.go)
    "for p in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug; do "
    '[ ! -e "$p" ] || mount --bind /dev/null "$p"; done; '
    "mount --bind /proc/sys /proc/sys; mount -o remount,bind,ro /proc/sys"
)


def full_profile() -> dict[str, Any]:
    return json.loads((SECCOMP / "verifier-rl.oci.json").read_text())


def oci_sandbox_rules() -> list[dict[str, Any]]:
    return [{k: v for k, v in rule.items() if k != "comment"} for rule in SANDBOX_RULES]


def without(profile: dict[str, Any], name: str) -> dict[str, Any]:
    """`profile` less one syscall of the sandbox's rules."""
    rules = []
    for rule in profile["syscalls"]:
        if rule in oci_sandbox_rules() and name in rule["names"]:
            rule = {**rule, "names": [n for n in rule["names"] if n != name]}
        if rule["names"]:
            rules.append(rule)
    return {**profile, "syscalls": rules}


def without_user_namespaces(profile: dict[str, Any]) -> dict[str, Any]:
    """`profile` whose unshare rule also refuses CLONE_NEWUSER: user namespaces disabled."""
    rules = []
    for rule in profile["syscalls"]:
        if rule in oci_sandbox_rules() and rule["names"] == ["unshare"]:
            mask = rule["args"][0]["value"] | CLONE_NEWUSER
            rule = {**rule, "args": [{**rule["args"][0], "value": mask}]}
        rules.append(rule)
    return {**profile, "syscalls": rules}


def score_restricted(
    tmp_path: Path,
    profile: dict[str, Any],
    mount_setup: str | None = None,
    bounding_set: str = BOUNDING_SET,
) -> tuple[dict[str, Any], Path]:
    """Scores the probe item in a child restricted as described above; (result, marker)."""
    profile_path = tmp_path / "profile.json"
    profile_path.write_text(json.dumps(profile))
    marker = tmp_path / "ran"
    command = [
        "setpriv", "--bounding-set", bounding_set, "--inh-caps", "-all", "--",
        sys.executable, str(SECCOMP / "run_with_profile.py"), str(profile_path),
        sys.executable, "-c", CHILD, str(marker),
    ]  # fmt: skip
    if mount_setup is not None:  # in a private mount namespace, before dropping anything
        command = ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-ec",
                   f'{mount_setup}; exec "$@"', "sh", *command]  # fmt: skip
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "VERIFIER_RL_SANDBOX_SLOTS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1]), marker


def assert_failed_closed(result: dict[str, Any], marker: Path) -> None:
    assert (result["status"], result["reason"]) == ("VERIFIER_ERROR", "sandbox_error"), result
    assert not marker.exists()


def test_profiles_are_generated_from_dockers_default() -> None:
    check = [sys.executable, str(SECCOMP / "generate.py"), "--check"]
    assert subprocess.run(check, capture_output=True).returncode == 0
    moby = json.loads((SECCOMP / "moby-default.json").read_text())
    # Docker's own rules, unchanged, then the sandbox's and nothing else
    assert full_profile() == oci_profile({**moby, "syscalls": moby["syscalls"] + SANDBOX_RULES})
    assert full_profile()["syscalls"][-len(SANDBOX_RULES) :] == oci_sandbox_rules()


def test_code_runs_under_the_profile_with_dockers_default_capabilities(tmp_path: Path) -> None:
    result, marker = score_restricted(tmp_path, full_profile())
    assert (result["status"], result["score"]) == ("OK", 1.0), result
    assert not marker.exists()  # it ran, in the sandbox: the host path was not there


def test_dockers_default_profile_fails_closed(tmp_path: Path) -> None:
    moby = json.loads((SECCOMP / "moby-default.json").read_text())
    assert_failed_closed(*score_restricted(tmp_path, oci_profile(moby)))


@pytest.mark.parametrize(
    "name", ["unshare", "setns", "mount", "umount2", "pivot_root", "sethostname"]
)
def test_each_added_syscall_is_needed_and_its_absence_fails_closed(
    tmp_path: Path, name: str
) -> None:
    profile = without(full_profile(), name)
    assert len(json.dumps(profile)) < len(json.dumps(full_profile()))
    assert_failed_closed(*score_restricted(tmp_path, profile))


def test_no_user_namespaces_fails_closed(tmp_path: Path) -> None:
    profile = without_user_namespaces(full_profile())
    assert profile != full_profile()
    assert_failed_closed(*score_restricted(tmp_path, profile))


def test_read_only_cgroupfs_fails_closed(tmp_path: Path) -> None:
    assert_failed_closed(*score_restricted(tmp_path, full_profile(), READ_ONLY_CGROUPS))


def test_masked_proc_fails_closed(tmp_path: Path) -> None:
    """With paths of /proc masked, the kernel refuses a fresh proc in a user namespace."""
    assert_failed_closed(*score_restricted(tmp_path, full_profile(), MASKED_PROC))


def test_code_runs_with_only_setuid_setgid_and_dac_override(tmp_path: Path) -> None:
    caps = "-all," + ",".join(f"+{cap}" for cap in LEAST_CAPS)
    result, marker = score_restricted(tmp_path, full_profile(), bounding_set=caps)
    assert (result["status"], result["score"]) == ("OK", 1.0), result
    assert not marker.exists()


@pytest.mark.parametrize("missing", ["setuid", "setgid"])
def test_without_setuid_or_setgid_it_fails_closed(tmp_path: Path, missing: str) -> None:
    caps = "-all," + ",".join(f"+{cap}" for cap in LEAST_CAPS if cap != missing)
    assert_failed_closed(*score_restricted(tmp_path, full_profile(), bounding_set=caps))
