"""The zygote's side of a program run's pipe budget, through seccomp user notification.

Every new pipe takes an inode number from the kernel's one host-wide counter (get_next_ino),
and the inode of any pipe shows it, the run's own stdin included: 100,000 pipes made by one
run moved the number the next run's stdin got by about 100,000. Node cannot start without
pipes (libuv makes four), so pipe and pipe2 are not simply denied: the run's init installs
`seccomp.pipe_notify_filter`, whose listener it hands to the zygote, and the kernel runs a
program's pipe call only once the zygote allows it, at most PIPE_BUDGET per run (then EPERM).
After the run the zygote makes the rest of the budget itself, so every program run moves the
counter by exactly PIPE_BUDGET, whatever it did, however it ended.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from sandboxes.seccomp import PIPE_SYSCALLS

PIPE_BUDGET = 8
"""Pipes one program run may make: Node needs 4 at start-up; Python and C++ programs none."""

# struct seccomp_notif: id, pid, flags, then struct seccomp_data (nr, arch, ip, args[6])
_NOTIF = struct.Struct("<QIIiIQ6Q")
# struct seccomp_notif_resp: id, val, error, flags
_RESP = struct.Struct("<QqiI")
_IOCTL_RECV = 0xC0000000 | _NOTIF.size << 16 | ord("!") << 8 | 0  # _IOWR('!', 0, notif)
_IOCTL_SEND = 0xC0000000 | _RESP.size << 16 | ord("!") << 8 | 1  # _IOWR('!', 1, resp)
_FLAG_CONTINUE = 1  # SECCOMP_USER_NOTIF_FLAG_CONTINUE: the kernel runs the call as asked
# pipe2 flags the kernel accepts without O_NOTIFICATION_PIPE; any other fails before taking
# an inode number, and an allowed call that took none would let a run fall short of its budget
_PIPE2_FLAGS = os.O_CLOEXEC | os.O_NONBLOCK | os.O_DIRECT


class PipeBudget:
    """Answers one run's pipe calls (the zygote polls `listener`), then tops the run up."""

    def __init__(self, listener: int | None) -> None:
        self.listener = listener
        self.used = 0

    def answer(self) -> None:
        """Answers one waiting call; call it when `listener` polls readable."""
        assert self.listener is not None
        request = bytearray(_NOTIF.size)
        try:
            fcntl.ioctl(self.listener, _IOCTL_RECV, request, True)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return  # the caller died before we took its call
            raise
        notif_id, _, _, nr, _, _, *args = _NOTIF.unpack(request)
        error = self._refusal(nr, args[1])
        flags = 0 if error else _FLAG_CONTINUE
        try:
            fcntl.ioctl(self.listener, _IOCTL_SEND, _RESP.pack(notif_id, 0, -error, flags))
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return  # the caller died waiting: its call never ran
            raise
        if not error:
            self.used += 1

    def _refusal(self, nr: int, pipe2_flags: int) -> int:
        if nr not in PIPE_SYSCALLS.values():
            return errno.ENOSYS  # the filter notifies nothing else
        if nr == PIPE_SYSCALLS["pipe2"] and pipe2_flags & ~_PIPE2_FLAGS:
            return errno.EINVAL
        return errno.EPERM if self.used >= PIPE_BUDGET else 0

    def close_and_top_up(self) -> None:
        """After the run (every process of it dead): closes the listener and makes the pipes
        the run did not, so the host-wide counter moved by PIPE_BUDGET."""
        if self.listener is not None:
            os.close(self.listener)
            self.listener = None
        for _ in range(PIPE_BUDGET - self.used):
            read_end, write_end = os.pipe()
            os.close(read_end)
            os.close(write_end)
        self.used = PIPE_BUDGET
