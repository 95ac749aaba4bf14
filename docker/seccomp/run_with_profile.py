"""run_with_profile.py PROFILE COMMAND [ARG ...]: exec COMMAND under an OCI seccomp profile.

Loads the profile with libseccomp (what runc and crun use), sets no_new_privs, and execs the
command, so it and everything it starts run under the filter: a way to check a profile on a
host without a container runtime (tests/sandboxes/test_restricted.py does). Only what OCI
profiles from docker/seccomp/generate.py use: x86-64 native rules (other ABIs are killed),
ALLOW / ERRNO / KILL actions, argument comparisons (all of a rule's conditions must hold;
conditions on the same argument are alternatives, as runc reads them).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import sys
from typing import Any

_OPS = {
    "SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7,
}  # fmt: skip
_ACT_KILL_THREAD, _ACT_KILL_PROCESS, _ACT_ALLOW = 0x00000000, 0x80000000, 0x7FFF0000


class ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def action(name: str, errno_ret: int | None) -> int:
    if name == "SCMP_ACT_ALLOW":
        return _ACT_ALLOW
    if name == "SCMP_ACT_ERRNO":
        return 0x00050000 | (errno.EPERM if errno_ret is None else errno_ret)
    if name in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return _ACT_KILL_THREAD
    if name == "SCMP_ACT_KILL_PROCESS":
        return _ACT_KILL_PROCESS
    raise ValueError(f"unsupported seccomp action {name}")


def conditions(args: list[dict[str, Any]]) -> list[list[ArgCmp]]:
    """The rule's argument checks as alternatives: one AND-list per libseccomp rule."""

    def cmp(a: dict[str, Any]) -> ArgCmp:
        return ArgCmp(a["index"], _OPS[a["op"]], a["value"], a.get("valueTwo", 0))

    if len(args) > 1 and len({a["index"] for a in args}) == 1:
        return [[cmp(a)] for a in args]
    return [[cmp(a) for a in args]]


def load(profile: dict[str, Any]) -> None:
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(ArgCmp)
    ]  # fmt: skip
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    default = action(profile["defaultAction"], profile.get("defaultErrnoRet"))
    ctx = lib.seccomp_init(ctypes.c_uint32(default))
    if not ctx:
        raise OSError("seccomp_init failed")
    for rule in profile["syscalls"]:
        act = action(rule["action"], rule.get("errnoRet"))
        if act == default:
            continue  # libseccomp refuses rules that repeat the default action
        for name in rule["names"]:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:
                continue  # unknown to this libseccomp (as runc does)
            for checks in conditions(rule.get("args", [])):
                array = (ArgCmp * len(checks))(*checks)
                rc = lib.seccomp_rule_add_array(ctx, act, number, len(checks), array)
                if rc < 0:
                    raise OSError(-rc, f"seccomp rule for {name}: {os.strerror(-rc)}")
    rc = lib.seccomp_load(ctx)
    if rc < 0:
        raise OSError(-rc, f"seccomp_load: {os.strerror(-rc)}")


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__.splitlines()[0])
    with open(sys.argv[1]) as f:
        load(json.load(f))
    os.execvp(sys.argv[2], sys.argv[2:])


if __name__ == "__main__":
    main()
