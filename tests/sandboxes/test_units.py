"""Pure parts of the sandbox: the seccomp program, outcome classification, input checks."""

from __future__ import annotations

import os
import signal
import struct
from pathlib import Path

import pytest

from sandboxes import Limits, Outcome, Program
from sandboxes.cgroups import _sweep_stale, own_paths, slot_name
from sandboxes.pool import classify
from sandboxes.seccomp import (
    DENIED_SYSCALLS,
    PIPE_SYSCALLS,
    PROGRAM_DENIED_SYSCALLS,
    RET_ALLOW,
    RET_KILL_PROCESS,
    RET_USER_NOTIF,
    deny_list_filter,
    pipe_notify_filter,
    program_filter,
)


def instructions(program: bytes) -> list[tuple[int, int, int, int]]:
    return [struct.unpack("<HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]


def test_seccomp_checks_the_architecture_first_and_ends_by_allowing() -> None:
    code = instructions(deny_list_filter("x86_64"))
    # load arch (offset 4); jump over the kill if it is x86-64; else kill the process
    assert code[0] == (0x20, 0, 0, 4)
    assert code[1] == (0x15, 1, 0, 0xC000003E)
    assert code[2] == (0x06, 0, 0, RET_KILL_PROCESS)
    assert code[-1] == (0x06, 0, 0, RET_ALLOW)


def test_seccomp_denies_every_listed_call_with_eperm() -> None:
    code = instructions(deny_list_filter("x86_64"))
    for number in DENIED_SYSCALLS.values():
        at = code.index((0x15, 0, 1, number))
        assert code[at + 1] == (0x06, 0, 0, 0x00050000 | 1)  # SECCOMP_RET_ERRNO | EPERM


def run_filter(program: bytes, nr: int, arg0: int = 0, arg1: int = 0, arg3: int = 0) -> int:
    """A classic-BPF interpreter for the instructions the filter uses, on one system call."""
    code = instructions(program)
    data = struct.pack("<iIQ6Q", nr, 0xC000003E, 0, arg0, arg1, 0, arg3, 0, 0)
    accumulator, pc = 0, 0
    while True:
        op, jt, jf, k = code[pc]
        if op == 0x20:
            accumulator = struct.unpack_from("<I", data, k)[0]
        elif op == 0x06:
            return k
        elif op in (0x15, 0x35, 0x45):
            taken = {0x15: accumulator == k, 0x35: accumulator >= k, 0x45: accumulator & k}[op]
            pc += jt if taken else jf
        pc += 1


@pytest.mark.parametrize(
    ("nr", "family", "allowed"),
    [
        (41, 1, True), (41, 2, True), (41, 10, True),  # socket: AF_UNIX, AF_INET, AF_INET6
        (41, 40, False), (41, 16, False), (41, 17, False),  # AF_VSOCK, AF_NETLINK, AF_PACKET
        (53, 1, True), (53, 40, False),  # socketpair
        (0, 40, True),  # read(40, ...): other calls are not affected
    ],
)  # fmt: skip
def test_seccomp_allows_only_unix_and_inet_sockets(nr: int, family: int, allowed: bool) -> None:
    verdict = run_filter(deny_list_filter("x86_64"), nr, family)
    assert verdict == (RET_ALLOW if allowed else 0x00050000 | 97)  # EAFNOSUPPORT


def test_seccomp_still_denies_listed_calls_in_the_interpreter() -> None:
    program = deny_list_filter("x86_64")
    assert run_filter(program, DENIED_SYSCALLS["ptrace"]) == 0x00050000 | 1
    assert run_filter(program, 56, 0x10000000) == 0x00050000 | 1  # clone(CLONE_NEWUSER)
    assert run_filter(program, 56, 0x11) == RET_ALLOW  # clone(SIGCHLD)


EPERM = 0x00050000 | 1


@pytest.mark.parametrize("name", sorted(PROGRAM_DENIED_SYSCALLS))
def test_program_filter_denies_calls_that_move_host_wide_counters(name: str) -> None:
    number = PROGRAM_DENIED_SYSCALLS[name]
    assert run_filter(program_filter("x86_64"), number, 1) == EPERM  # socket(AF_UNIX) too
    assert run_filter(deny_list_filter("x86_64"), number, 1) == RET_ALLOW  # the compiler's


@pytest.mark.parametrize(
    ("flags", "allowed"),
    [
        (0x01 | 0x20, False), (0x03 | 0x20, False),  # MAP_SHARED(_VALIDATE) | MAP_ANONYMOUS
        (0x02 | 0x20 | 0x40000, False),  # MAP_HUGETLB takes an inode number even if it fails
        (0x02 | 0x20, True), (0x02, True),  # private anonymous memory; private file mappings
        (0x01, True),  # shared file mappings: a POSIX semaphore in the run's own /dev/shm
    ],
)  # fmt: skip
def test_program_filter_denies_shared_and_huge_page_mappings(flags: int, allowed: bool) -> None:
    assert run_filter(program_filter("x86_64"), 9, arg3=flags) == (RET_ALLOW if allowed else EPERM)


def test_program_filter_denies_clone_pidfd_and_keeps_the_deny_list() -> None:
    program = program_filter("x86_64")
    assert run_filter(program, 56, 0x1000 | 17) == EPERM  # clone(CLONE_PIDFD | SIGCHLD)
    assert run_filter(program, 56, 17) == RET_ALLOW
    assert run_filter(deny_list_filter("x86_64"), 56, 0x1000 | 17) == RET_ALLOW
    assert run_filter(program, DENIED_SYSCALLS["ptrace"]) == EPERM
    assert run_filter(program, 16, 3, 0x5412) == EPERM  # ioctl(TIOCSTI)
    for number in PIPE_SYSCALLS.values():
        assert run_filter(program, number) == RET_ALLOW  # the pipe budget decides


def test_pipe_notify_filter_sends_pipes_to_the_zygote_and_nothing_else() -> None:
    notify = pipe_notify_filter("x86_64")
    assert [run_filter(notify, n) for n in PIPE_SYSCALLS.values()] == [RET_USER_NOTIF] * 2
    assert run_filter(notify, 41, 1) == RET_ALLOW and run_filter(notify, 0) == RET_ALLOW


def test_seccomp_refuses_other_architectures() -> None:
    with pytest.raises(OSError, match="x86_64 only"):
        deny_list_filter("aarch64")


LIMITS = Limits(cpu_s=2)


@pytest.mark.parametrize(
    ("done", "oom", "over_output", "expected"),
    [
        ({"exit_code": 0, "cpu_ms": 10}, False, False, Outcome.OK),
        ({"exit_code": 1, "cpu_ms": 10}, False, False, Outcome.RUNTIME_ERROR),
        ({"signal": signal.SIGSEGV, "cpu_ms": 10}, False, False, Outcome.RUNTIME_ERROR),
        ({"signal": signal.SIGKILL, "cpu_ms": 10}, True, False, Outcome.MEMORY_LIMIT),
        ({"signal": signal.SIGKILL, "timed_out": True}, False, False, Outcome.TIME_LIMIT),
        ({"signal": signal.SIGXCPU, "cpu_ms": 2000}, False, False, Outcome.TIME_LIMIT),
        # SIGKILL at the hard CPU limit (2 s soft + 1): past cpu_s, so a time limit
        ({"signal": signal.SIGKILL, "cpu_ms": 3000}, False, False, Outcome.TIME_LIMIT),
        # RLIMIT_CPU counts whole seconds: 2.4 s of CPU under a 2 s limit still exceeds it
        ({"exit_code": 0, "cpu_ms": 2400}, False, False, Outcome.TIME_LIMIT),
        ({"signal": signal.SIGXFSZ, "cpu_ms": 10}, False, False, Outcome.OUTPUT_LIMIT),
        # the host's kill for output wins over the OOM counter and the timer
        ({"signal": signal.SIGKILL, "killed": True}, True, True, Outcome.OUTPUT_LIMIT),
    ],
)
def test_classify(done: dict, oom: bool, over_output: bool, expected: Outcome) -> None:
    assert classify(done, oom, over_output, LIMITS) is expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cpu_s": 0}, "cpu_s"),
        ({"wall_s": float("nan")}, "wall_s"),
        ({"memory_mb": 0}, "memory_mb"),
        ({"address_space_mb": -1}, "address_space_mb"),
        ({"open_files": 3}, "open_files"),
    ],
)
def test_bad_limits_name_the_field(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Limits(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"argv": ()}, "argv"),
        ({"argv": ("/bin/true",), "files": {"../x": b""}}, "plain name"),
        ({"argv": ("/bin/true",), "files": {"a/b": b""}}, "plain name"),
        ({"argv": ("/bin/true",), "runner": "docker"}, "runner"),
        ({"argv": ("/bin/true",), "env": {"A=B": "c"}}, "malformed"),
    ],
)
def test_bad_programs_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Program(**kwargs)


def test_own_cgroup_paths_v1_and_v2() -> None:
    text = "4:memory:/a/b\n8:pids:/\n2:cpu,cpuacct:/c\n0::/unified/x\n"
    assert own_paths(text) == {
        "memory": "/a/b", "pids": "/", "cpu": "/c", "cpuacct": "/c", "": "/unified/x"
    }  # fmt: skip


def test_the_sweep_removes_only_dead_slots_of_this_pid_namespace(tmp_path: Path) -> None:
    ns = os.stat("/proc/self/ns/pid").st_ino
    dead, alive = f"verifier-rl-{ns}-999999999-1", f"verifier-rl-{ns}-{os.getpid()}-1"
    other_namespace, old_style = f"verifier-rl-{ns + 1}-999999999-1", "verifier-rl-999999999-1"
    for name in (dead, alive, other_namespace, old_style):
        (tmp_path / name).mkdir()
    _sweep_stale(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive, other_namespace, old_style])
    assert slot_name(3) == f"verifier-rl-{ns}-{os.getpid()}-3"
