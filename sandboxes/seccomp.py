"""The seccomp deny-list every sandboxed process runs under, as a classic-BPF program.

Denied with EPERM: debugging other processes (ptrace, process_vm_readv/writev, pidfd_getfd,
kcmp), kernel keyrings, bpf, perf_event_open, userfaultfd, io_uring, every mount and
namespace call (mount, umount2, pivot_root, chroot, the new mount API, unshare, setns, and
clone with any CLONE_NEW* flag), module and kexec loading, reboot, swap, acct, quotactl,
syslog, open_by_handle_at, and ioctl(TIOCSTI) (pushing input into a terminal). clone3 gets
ENOSYS, so libc falls back to clone, whose flags the filter can inspect. Sockets are an
allow-list: socket() and socketpair() only for AF_UNIX, AF_INET and AF_INET6 (others, e.g.
AF_VSOCK, which ignores network namespaces, or AF_NETLINK, get EAFNOSUPPORT).

A program run (everything but a compiler, `Program.toolchain`) gets `program_filter`: the
deny-list plus every call by which it could move a host-wide counter that a later run can
read, all EPERM: socket and socketpair (each takes a number from the kernel's host-wide inode
counter, get_next_ino, which the inode of any pipe, stdin included, shows), memfd_secret,
io_setup (an AIO ring file), mq_open (a POSIX message queue) and mmap with MAP_HUGETLB (all
get_next_ino too), memfd_create, shmget and mmap(MAP_SHARED|MAP_ANONYMOUS) (a new file on
the internal shmem mount, whose inode counter is host-wide; so would a shared mapping of
/dev/zero be, which the sandbox does not have), pidfd_open and clone(CLONE_PIDFD) (a pidfd's
inode is the host-wide count of processes and threads ever made, and forks cannot be
denied), and sysinfo (host-wide free memory, load and process count). pipe and pipe2
(Node's runtime needs four at start-up) go to the slot's zygote through
`pipe_notify_filter`, which allows each run a fixed budget and tops every run up to it
(sandboxes.pipe_budget).

Any other architecture's calling convention, including x32 on x86-64, kills the process.
Only x86-64 is supported: on another machine `deny_list_filter` raises, and the sandbox fails
closed. It is a deny-list, so a kernel bug in an allowed call is not covered; namespaces, an
unprivileged uid and no capabilities are the other layers.
"""

from __future__ import annotations

import errno
import os
import struct
from typing import NamedTuple

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000

# x86-64 numbers (asm/unistd_64.h).
DENIED_SYSCALLS: dict[str, int] = {
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "pidfd_getfd": 438,
    "kcmp": 312, "add_key": 248, "request_key": 249, "keyctl": 250, "bpf": 321,
    "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
    "fspick": 433, "mount_setattr": 442, "unshare": 272, "setns": 308, "init_module": 175,
    "finit_module": 313, "delete_module": 176, "kexec_load": 246, "kexec_file_load": 320,
    "reboot": 169, "swapon": 167, "swapoff": 168, "acct": 163, "quotactl": 179,
    "quotactl_fd": 443, "syslog": 103, "name_to_handle_at": 303, "open_by_handle_at": 304,
    "lookup_dcookie": 212, "uselib": 134, "vhangup": 153,
}  # fmt: skip
SYS_CLONE = 56
SYS_CLONE3 = 435
SYS_IOCTL = 16
TIOCSTI = 0x5412
CLONE_NEW_FLAGS = 0x7E020000  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
CLONE_PIDFD = 0x1000
SYS_SOCKET = 41
SYS_SOCKETPAIR = 53
ALLOWED_SOCKET_FAMILIES = (1, 2, 10)  # AF_UNIX, AF_INET, AF_INET6

# Calls a program run may not make, on top of DENIED_SYSCALLS: each moves (or, for
# pidfd_open, reads) a host-wide counter that survives the run.
PROGRAM_DENIED_SYSCALLS: dict[str, int] = {
    "socket": 41, "socketpair": 53, "memfd_create": 319, "memfd_secret": 447, "shmget": 29,
    "pidfd_open": 434, "sysinfo": 99, "mq_open": 240, "io_setup": 206,
}  # fmt: skip
PIPE_SYSCALLS: dict[str, int] = {"pipe": 22, "pipe2": 293}
SYS_MMAP = 9
MAP_SHARED_BIT = 0x01  # set in MAP_SHARED and MAP_SHARED_VALIDATE, not in MAP_PRIVATE
MAP_ANONYMOUS = 0x20
MAP_HUGETLB = 0x40000

# classic BPF opcodes
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K

RET_ALLOW = 0x7FFF0000
RET_USER_NOTIF = 0x7FC00000
RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000

# struct seccomp_data offsets: nr, arch, instruction_pointer, args[6] (little-endian u64)
_OFF_NR, _OFF_ARCH, _OFF_ARG0_LO, _OFF_ARG1_LO, _OFF_ARG3_LO = 0, 4, 16, 24, 40


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def _socket_families() -> list[bytes]:
    """socket/socketpair: allow the listed families (the low word of the first argument)."""
    families = ALLOWED_SOCKET_FAMILIES
    checks = [
        _insn(_JEQ_K, family, jt=len(families) - n) for n, family in enumerate(families)
    ]  # each jumps over the rest and the refusal, to the allow
    return [
        _insn(_JEQ_K, SYS_SOCKET, jt=1),
        _insn(_JEQ_K, SYS_SOCKETPAIR, jf=len(families) + 3),  # neither: skip the block
        _insn(_LD_W_ABS, _OFF_ARG0_LO),
        *checks,
        _insn(_RET_K, RET_ERRNO | errno.EAFNOSUPPORT),
        _insn(_RET_K, RET_ALLOW),
    ]


class Filters(NamedTuple):
    """The filters a slot's runs use, compiled once by the zygote."""

    program: bytes
    toolchain: bytes
    pipe_notify: bytes


def compile_filters(machine: str | None = None) -> Filters:
    return Filters(program_filter(machine), deny_list_filter(machine), pipe_notify_filter(machine))


def deny_list_filter(machine: str | None = None) -> bytes:
    """The compiler's filter (and the base of the program's): one 8-byte `struct sock_filter`
    per instruction."""
    return b"".join([*_prologue(machine), *_deny_list(), *_socket_families(), *_epilogue()])


def program_filter(machine: str | None = None) -> bytes:
    """A program run's filter: the deny-list and PROGRAM_DENIED_SYSCALLS, all sockets among
    them, shared and huge-page mappings and clone(CLONE_PIDFD)."""
    eperm = RET_ERRNO | errno.EPERM
    code = [*_prologue(machine), *_deny_list()]
    for number in sorted(PROGRAM_DENIED_SYSCALLS.values()):
        code += [_insn(_JEQ_K, number, jf=1), _insn(_RET_K, eperm)]
    # mmap: shared anonymous memory is a new file on the internal shmem mount, whose inode
    # numbers are host-wide (so is /dev/zero's shared mapping: the sandbox has no /dev/zero);
    # MAP_HUGETLB takes a get_next_ino number even when it fails. Private anonymous memory
    # and shared mappings of files (POSIX semaphores in /dev/shm) are not affected.
    code += [
        _insn(_JEQ_K, SYS_MMAP, jf=6),
        _insn(_LD_W_ABS, _OFF_ARG3_LO),
        _insn(_JSET_K, MAP_HUGETLB, jt=2),
        _insn(_JSET_K, MAP_ANONYMOUS, jf=2),
        _insn(_JSET_K, MAP_SHARED_BIT, jf=1),
        _insn(_RET_K, eperm),
        _insn(_RET_K, RET_ALLOW),
    ]
    return b"".join([*code, *_epilogue(pidfd=True)])


def pipe_notify_filter(machine: str | None = None) -> bytes:
    """pipe and pipe2 go to the supervisor holding the filter's listener; all else passes."""
    code = [*_prologue(machine)]
    for number in sorted(PIPE_SYSCALLS.values()):
        code += [_insn(_JEQ_K, number, jf=1), _insn(_RET_K, RET_USER_NOTIF)]
    return b"".join([*code, _insn(_RET_K, RET_ALLOW)])


def _prologue(machine: str | None) -> list[bytes]:
    """Kills any other architecture's calls (x32 included); leaves the call number loaded."""
    machine = machine or os.uname().machine
    if machine != "x86_64":
        raise OSError(0, f"the seccomp filter supports x86_64 only, not {machine}")
    return [
        _insn(_LD_W_ABS, _OFF_ARCH),
        _insn(_JEQ_K, AUDIT_ARCH_X86_64, jt=1),
        _insn(_RET_K, RET_KILL_PROCESS),
        _insn(_LD_W_ABS, _OFF_NR),
        _insn(_JGE_K, X32_SYSCALL_BIT, jf=1),
        _insn(_RET_K, RET_KILL_PROCESS),
    ]


def _deny_list() -> list[bytes]:
    eperm = RET_ERRNO | errno.EPERM
    code = []
    for number in sorted(DENIED_SYSCALLS.values()):
        code += [_insn(_JEQ_K, number, jf=1), _insn(_RET_K, eperm)]
    return [*code, _insn(_JEQ_K, SYS_CLONE3, jf=1), _insn(_RET_K, RET_ERRNO | errno.ENOSYS)]


def _epilogue(pidfd: bool = False) -> list[bytes]:
    """clone with namespace flags (and, with `pidfd`, CLONE_PIDFD), ioctl(TIOCSTI); then allow."""
    eperm = RET_ERRNO | errno.EPERM
    clone_flags = CLONE_NEW_FLAGS | (CLONE_PIDFD if pidfd else 0)
    return [
        # clone: deny when a listed flag is set in the low word of the flags argument
        _insn(_JEQ_K, SYS_CLONE, jf=3),
        _insn(_LD_W_ABS, _OFF_ARG0_LO),
        _insn(_JSET_K, clone_flags, jf=1),
        _insn(_RET_K, eperm),
        _insn(_LD_W_ABS, _OFF_NR),  # reload nr: harmless when we got here from a non-clone call
        # ioctl: the command is an unsigned int, so only the low word counts
        _insn(_JEQ_K, SYS_IOCTL, jf=3),
        _insn(_LD_W_ABS, _OFF_ARG1_LO),
        _insn(_JEQ_K, TIOCSTI, jf=1),
        _insn(_RET_K, eperm),
        _insn(_RET_K, RET_ALLOW),
    ]
