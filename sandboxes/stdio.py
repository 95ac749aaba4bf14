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

import contextlib
import fcntl
import os
import select
import signal
import struct
import termios
import time
from dataclasses import dataclass

from sandboxes import syscalls as sc

STDIO_DIR = "/dev/fd"
_PAGE = 4096
_CHUNK = 1 << 16
# A FIFO as large as an unprivileged process may make one (/proc/sys/fs/pipe-max-size's
# default), and a pause after each round of relaying: a program that writes line by line
# then wakes the relay about once a millisecond, not once a line (100,000 flushed lines
# took the relay 200 ms of CPU), and fills 1 MB before it waits for it.
_FIFO_BYTES = 1 << 20
_PAUSE_S = 0.001


@dataclass(frozen=True, slots=True)
class Streams:
    """What mount_stdio made, for the program and for the run's init."""

    program_fds: list[int]
    """The program's descriptors 0, 1 and 2."""
    relays: dict[int, int]
    """The init's end of each output FIFO -> the host pipe it is relayed to."""
    wakeup: int
    """An unlinked FIFO that SIGCHLD writes to, so the relay wakes when a process ends."""


def mount_stdio(host_fds: list[int], stdin_bytes: int) -> Streams:
    """Reads the host's stdin pipe (host_fds[0], closed here) to its end into /dev/fd/0 and
    makes the FIFOs /dev/fd/1 and 2, relayed to host_fds[1] and [2]. The directory and the
    stdin file belong to the run's root, so the program can read and write its streams but
    not replace them. Must run as root of the slot's user namespace, in the run's own mount
    namespace."""
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
        # Read and write: the FIFO always has a writer (this end), so the relay never sees an
        # end of file while the program lives, and a reader, so the program's own opens never
        # block: freopen("/dev/stdout") closes fd 1 before it reopens the path.
        relay_end = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        with contextlib.suppress(OSError):  # a lower pipe-max-size: the default size
            fcntl.fcntl(relay_end, fcntl.F_SETPIPE_SZ, _FIFO_BYTES)
        relays[relay_end] = host_pipe
        program_fds.append(os.open(path, os.O_WRONLY))
    wakeup_path = f"{STDIO_DIR}/wakeup"
    os.mkfifo(wakeup_path, 0o600)
    wakeup = os.open(wakeup_path, os.O_RDWR | os.O_NONBLOCK)
    os.unlink(wakeup_path)
    return Streams(program_fds, relays, wakeup)


def stdin_file_bytes(stdin_bytes: int) -> int:
    """Memory the stdin file takes in the run's cgroup, which the host adds to the run's
    memory limit: the test's input is not the program's memory."""
    return (-(-stdin_bytes // _PAGE) + 1) * _PAGE


def relay_until_exit(program: int, streams: Streams) -> int:
    """Forwards what the run writes to /dev/fd/1 and 2 to the host's pipes, reaping orphans
    (this is the namespace's init), until the program ends; returns its wait status. What the
    FIFOs hold then is forwarded too (not more: a process the program left could keep
    writing), and the host's pipes are closed."""
    relays = dict(streams.relays)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that the wakeup fd is written
    signal.set_wakeup_fd(streams.wakeup, warn_on_full_buffer=False)
    poller = select.poll()
    for fd in (streams.wakeup, *relays):
        poller.register(fd, select.POLLIN)
    try:
        while (status := _reap(program, block=False)) is None:  # also what ended before
            for fd, _ in poller.poll():
                if fd == streams.wakeup:
                    os.read(fd, _CHUNK)
                    continue
                while (moved := _forward(fd, relays, _CHUNK)) == _CHUNK:
                    pass
                if moved is None:
                    poller.unregister(fd)
                else:
                    time.sleep(_PAUSE_S)
        for source in list(relays):
            pending = _pending_bytes(source)
            while pending > 0 and (moved := _forward(source, relays, pending)):
                pending -= moved
        return status
    finally:
        signal.set_wakeup_fd(-1)
        os.close(streams.wakeup)
        for source, sink in relays.items():
            os.close(source)
            os.close(sink)


def wait_program(program: int) -> int:
    """The program's wait status, reaping orphans until it ends."""
    status = _reap(program, block=True)
    assert status is not None
    return status


def _forward(source: int, relays: dict[int, int], limit: int) -> int | None:
    """Moves up to `limit` bytes from a FIFO to its host pipe: the bytes moved (0: none
    waiting), or None once the host stopped reading (a cap was reached; both ends are then
    closed, and the program's writes fail as they did on the host's pipe)."""
    try:
        chunk = os.read(source, min(limit, _CHUNK))
    except BlockingIOError:
        return 0
    try:
        view = memoryview(chunk)
        while view:
            view = view[os.write(relays[source], view) :]
    except BrokenPipeError:
        os.close(source)
        os.close(relays.pop(source))
        return None
    return len(chunk)


def _pending_bytes(fd: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]


def _reap(program: int, *, block: bool) -> int | None:
    """Reaps ended processes of the namespace; the program's wait status once it is among
    them, else None (only without `block`)."""
    while True:
        pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        if pid == program:
            return status
        if pid == 0:
            return None
