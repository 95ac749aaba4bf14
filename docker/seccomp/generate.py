"""Writes the reward server's seccomp profiles from Docker's default profile plus one rule.

    python docker/seccomp/generate.py            # rewrites the two profiles below
    python docker/seccomp/generate.py --check    # exit 1 if they are stale

Input: `moby-default.json`, Docker's default profile, copied unchanged from
moby/moby vendor/github.com/moby/profiles/seccomp/default.json (commit 35797366d7cd,
Apache-2.0). Outputs:
- `verifier-rl.json`: Docker's profile format (rules conditional on capabilities and
  architectures), for `docker run` / `podman run --security-opt seccomp=FILE`;
- `verifier-rl.oci.json`: the same, resolved for x86-64 and Docker's default capability set
  into plain OCI rules, for Kubernetes `seccompProfile: Localhost` (containerd reads only OCI
  fields: it would apply Docker's capability-conditional rules to everyone).

The rules added (`SANDBOX_RULES`) are what the sandbox needs and Docker's profile denies
without CAP_SYS_ADMIN: unshare with namespace flags only (sandboxes/zygote.py and
sandboxes/child.py), and mount, umount2, pivot_root and sethostname, which the sandbox calls
inside the user namespace it created: the kernel checks them against that namespace, so they
reach nothing of the container's. Without CAP_SYS_ADMIN in the container, unshare of anything
but a user namespace (or with one) fails anyway. setns only into a pid namespace (the zygote
returns to its own after forking a run into a new one, sandboxes/zygote.py; the kernel wants
CAP_SYS_ADMIN over the target's user namespace, so only the sandbox's own qualify). clone
with namespace flags, clone3, setns of other kinds and the new mount API stay denied.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the repository root, for sandboxes
from sandboxes import syscalls  # noqa: E402

MOBY_DEFAULT = HERE / "moby-default.json"
DOCKER_OUT = HERE / "verifier-rl.json"
OCI_OUT = HERE / "verifier-rl.oci.json"

# Docker's default capabilities (moby oci/caps/defaults.go); the server container keeps
# exactly these or fewer.
DOCKER_DEFAULT_CAPS = frozenset({
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
})  # fmt: skip
# Of those, what the sandbox needs: uid/gid maps that name other uids (SETUID, SETGID) and new
# cgroup directories, which may be r-x even for root (DAC_OVERRIDE). The compose file and the
# Pod keep only these; tests/sandboxes/test_restricted.py checks that they suffice.
SANDBOX_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_DAC_OVERRIDE")
# unshare may create any of these namespaces and nothing else (no CLONE_FILES, CLONE_FS,
# CLONE_SYSVSEM, CLONE_NEWTIME): every bit outside them must be 0.
NAMESPACE_FLAGS = (
    syscalls.CLONE_NEWUSER | syscalls.CLONE_NEWPID | syscalls.CLONE_NEWNS | syscalls.CLONE_NEWNET
    | syscalls.CLONE_NEWIPC | syscalls.CLONE_NEWUTS | syscalls.CLONE_NEWCGROUP
)  # fmt: skip
OTHER_FLAGS = ~NAMESPACE_FLAGS & (2**64 - 1)  # (flags & OTHER_FLAGS) == 0: namespaces only
SANDBOX_RULES: list[dict[str, Any]] = [
    {
        "names": ["unshare"],
        "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": OTHER_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
        "comment": "verifier-rl sandbox: unshare into new user, pid, mount, net, ipc, uts and "
        "cgroup namespaces",
    },
    {
        "names": ["setns"],
        "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 1, "value": syscalls.CLONE_NEWPID, "valueTwo": 0, "op": "SCMP_CMP_EQ"}],
        "comment": "verifier-rl sandbox: the zygote back into its own pid namespace after "
        "forking a run into a new one",
    },
    {
        "names": ["mount", "umount2", "pivot_root", "sethostname"],
        "action": "SCMP_ACT_ALLOW",
        "comment": "verifier-rl sandbox: its fresh root, inside its own user namespace",
    },
]


def docker_profile(moby: dict[str, Any]) -> dict[str, Any]:
    profile = copy.deepcopy(moby)
    profile["syscalls"] += copy.deepcopy(SANDBOX_RULES)
    return profile


def oci_profile(docker: dict[str, Any], caps: frozenset[str] = DOCKER_DEFAULT_CAPS) -> dict:
    """Resolves Docker's conditional rules for x86-64 and `caps` into plain OCI rules."""
    rules = []
    for rule in docker["syscalls"]:
        includes, excludes = rule.get("includes", {}), rule.get("excludes", {})
        if not set(includes.get("caps", [])) <= caps:
            continue
        if includes.get("arches") and not {"amd64", "x86_64"} & set(includes["arches"]):
            continue
        if set(excludes.get("caps", [])) & caps or {"amd64"} & set(excludes.get("arches", [])):
            continue
        plain = {key: rule[key] for key in ("names", "action", "errnoRet", "args") if key in rule}
        rules.append(plain)
    return {
        "defaultAction": docker["defaultAction"],
        "defaultErrnoRet": docker["defaultErrnoRet"],
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": rules,
    }


def render(profile: dict[str, Any]) -> str:
    return json.dumps(profile, indent=1) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the outputs are stale")
    args = parser.parse_args()
    docker = docker_profile(json.loads(MOBY_DEFAULT.read_text()))
    outputs = {DOCKER_OUT: render(docker), OCI_OUT: render(oci_profile(docker))}
    stale = [p.name for p, text in outputs.items() if not p.exists() or p.read_text() != text]
    if args.check:
        if stale:
            print(f"stale: {', '.join(stale)}; run python {Path(__file__).name}", file=sys.stderr)
        return 1 if stale else 0
    for path, text in outputs.items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
