"""A run's standard streams as files: /dev/fd/0 holds its stdin, /dev/fd/1 and /dev/fd/2 are
FIFOs whose data the run's init relays to the host's pipes as it is written.

Why: a program run has no /proc (sandboxes.child), so links into /proc/self/fd cannot
resolve, yet `readFileSync('/dev/stdin')`, `open('/dev/stdout', 'w')` and
`freopen("/dev/stdout", ...)` are common. /dev/stdin, /dev/stdout and /dev/stderr link to
/dev/fd/0, 1 and 2 (sandboxes.rootfs), and /dev/fd is a tmpfs mounted fresh for each run:
its inode numbers come from its own counter, which starts over with every run, so these
files take nothing from the host-wide counters a later run could read, and the program
never holds the host's pipes (whose inode numbers show one of those counters).

Why a file for stdin: the whole of it is known before the program starts; reopening a FIFO
whose writer has gone blocks, reopening a file reads it again from the start (as under a
judge that redirects stdin from a file). Why FIFOs for output: they keep the semantics of the
pipes they replace (O_TRUNC and offsets mean nothing, writes append and block when full), and
the data reaches the host as it is written, so the host's stdout and stderr caps kill a run
at the same point as before.

Only for runs whose stdin is fully known up front: a linked pair's runs (`run_pairs`) keep
the host's pipes, which are their call and reply channels.
"""

from __future__ import annotations

import os
import select

from sandboxes import syscalls as sc

STDIO_DIR = "/dev/fd"
_PAGE = 4096
_CHUNK = 1 << 16
# How often the relay looks whether the program ended while something it started still holds
# /dev/fd/1 or 2 open (else the FIFOs' end of file says so at once).
_POLL_MS = 50


def mount_stdio(host_fds: list[int], stdin_bytes: int) -> tuple[list[int], dict[int, int]]:
    """Reads the host's stdin pipe (host_fds[0], closed here) to its end into /dev/fd/0 and
    makes the FIFOs /dev/fd/1 and 2. Returns the program's descriptors for 0, 1 and 2 and the
    relays (FIFO read end -> host pipe: host_fds[1] and [2]). The directory and the stdin file
    belong to the run's root, so the program can read and write its streams but not replace
    them. Must run as root of the slot's user namespace, in the run's own mount namespace."""
    options = f"size={stdin_file_bytes(stdin_bytes)},nr_inodes=8,mode=0555"
    sc.mount("tmpfs", STDIO_DIR, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, options)
    stdin_path = f"{STDIO_DIR}/0"
    with open(stdin_path, "xb", buffering=0) as stdin_file, open(host_fds[0], "rb", 0) as host:
        while chunk := host.read(1 << 20):
            view = memoryview(chunk)
            while view:
                view = view[stdin_file.write(view) :]
    os.chmod(stdin_path, 0o444)
    program_fds = [os.open(stdin_path, os.O_RDONLY)]
    relays: dict[int, int] = {}
    for number, host_pipe in ((1, host_fds[1]), (2, host_fds[2])):
        path = f"{STDIO_DIR}/{number}"
        os.mkfifo(path)
        os.chmod(path, 0o666)
        relays[os.open(path, os.O_RDONLY | os.O_NONBLOCK)] = host_pipe  # a reader first ...
        program_fds.append(os.open(path, os.O_WRONLY))  # ... so this open does not block
    return program_fds, relays


def stdin_file_bytes(stdin_bytes: int) -> int:
    """Memory the stdin file takes in the run's cgroup, which the host adds to the run's
    memory limit: the test's input is not the program's memory."""
    return (-(-stdin_bytes // _PAGE) + 1) * _PAGE


def relay_until_exit(program: int, relays: dict[int, int]) -> int:
    """Forwards what the run writes to /dev/fd/1 and 2 to the host's pipes, reaping orphans
    (this is the namespace's init), until the program ends; returns its wait status. What the
    FIFOs hold then is forwarded too; the host's pipes are closed."""
    poller = select.poll()
    for source in relays:
        poller.register(source, select.POLLIN)
    try:
        while relays:
            for source, _ in poller.poll(_POLL_MS):
                if _forward(source, relays) is None:
                    poller.unregister(source)
            status = _reap(program, block=False)
            if status is not None:
                for source in list(relays):
                    while _forward(source, relays):
                        pass
                return status
        return wait_program(program)
    finally:
        for source, sink in relays.items():
            os.close(source)
            os.close(sink)


def wait_program(program: int) -> int:
    """The program's wait status, reaping orphans until it ends."""
    status = _reap(program, block=True)
    assert status is not None
    return status


def _forward(source: int, relays: dict[int, int]) -> int | None:
    """Moves one chunk from a FIFO to its host pipe: the bytes moved (0: none waiting), or
    None once the FIFO has no writer left or the host stopped reading (both then closed)."""
    try:
        chunk = os.read(source, _CHUNK)
    except BlockingIOError:
        return 0
    sink = relays[source]
    try:
        view = memoryview(chunk)
        while view:
            view = view[os.write(sink, view) :]
    except BrokenPipeError:
        chunk = b""  # the host closed it (a cap was reached): the program's writes now fail
    if not chunk:
        del relays[source]
        os.close(source)
        os.close(sink)
        return None
    return len(chunk)


def _reap(program: int, *, block: bool) -> int | None:
    """Reaps ended processes of the namespace; the program's wait status once it is among
    them, else None (only without `block`)."""
    while True:
        pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        if pid == program:
            return status
        if pid == 0:
            return None
