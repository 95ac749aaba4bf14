"""The slot's two processes inside the sandbox boundary: the launcher and the zygote.

The host starts the launcher (`python3 -I -S`, as root) with one end of a socketpair. The
launcher enters a new user namespace, waits while the host writes its uid/gid maps and puts
it in the slot's cgroups, becomes the namespace's root (an unprivileged uid outside), creates
the pid, mount, network, ipc, uts and cgroup namespaces, and forks the zygote: pid 1 of the
new pid namespace. The zygote builds the fresh root, brings up loopback, compiles the seccomp
filter, and then serves runs one at a time: fork a child (sandboxes.child), wait for it with
the wall-clock limit, kill every other process in the namespace, report.

Wire format. Host to zygote: a fixed header `<IQd` (kind, run id, wall-clock seconds); a run's
header carries its pipe ends as SCM_RIGHTS, the first of them the pipe its request (argv,
files, limits) comes through. The zygote never reads that request: the forked child does, so
nothing of a run's files ever lives in the memory later runs are forked from. Zygote to
host: one JSON object per line.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import struct
import sys
import time
import traceback
from typing import Any

# Imported here, by the launcher while it is still the host's root: after it becomes the slot's
# unprivileged uid, a package installed under a directory only root may enter (a venv in /root,
# pytest's 0700 tmp) can no longer be read.
from sandboxes import child, rootfs, seccomp
from sandboxes import syscalls as sc
from sandboxes.pipe_budget import PipeBudget
from sandboxes.seccomp import Filters

HEADER = struct.Struct("<IQd")
KIND_RUN, KIND_KILL = 1, 2
MAX_FDS = 5
NAMESPACES = (
    sc.CLONE_NEWPID | sc.CLONE_NEWNS | sc.CLONE_NEWNET | sc.CLONE_NEWIPC | sc.CLONE_NEWUTS
    | sc.CLONE_NEWCGROUP
)  # fmt: skip


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(json.dumps(message).encode() + b"\n")


def launcher_main(stdlib_path: list[str], config: dict[str, Any]) -> None:
    """Entry point of the launcher; `config` is what the host wrote on its stdin, and
    `stdlib_path` the interpreter's sys.path before the host added this package's parent."""
    import resource

    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sock = socket.socket(fileno=config["fd"])
    sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != config["host_pid"]:
        os._exit(1)  # the host died before we could tie our life to it
    try:
        # The host's own limits (a worker's RLIMIT_AS) should not leak in; runs set their own.
        # Raising a hard limit needs CAP_SYS_RESOURCE, which a root in a container may lack.
        for which in (resource.RLIMIT_AS, resource.RLIMIT_DATA):
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(which, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        sc.unshare(sc.CLONE_NEWUSER)
        send(sock, {"userns": os.getpid()})
        if _recv_line(sock).get("mapped") is not True:
            os._exit(1)
        os.setgroups([])
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)  # root of the new namespace; the slot's zygote uid outside
        sc.unshare(NAMESPACES)
        sync_read, sync_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(sync_write)
            os.read(sync_read, 1)  # let the launcher report our pid first
            os.close(sync_read)
            _zygote_main(sock, config, stdlib_path)
            os._exit(0)
    except BaseException:
        with contextlib.suppress(OSError):
            send(sock, {"error": f"launcher: {traceback.format_exc(limit=3)}"})
        os._exit(1)
    os.close(sync_read)
    send(sock, {"zygote": pid})
    os.write(sync_write, b"x")
    os.close(sync_write)
    sock.close()
    _, status = os.waitpid(pid, 0)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def _recv_line(sock: socket.socket) -> dict[str, Any]:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            os._exit(1)
        data += chunk
    return json.loads(data)


def _zygote_main(sock: socket.socket, config: dict[str, Any], stdlib_path: list[str]) -> None:
    try:
        sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
        # Everything the zygote and its runs import comes first: the host's files vanish below.
        import atexit  # noqa: F401
        import io  # noqa: F401
        import site
        import types  # noqa: F401

        filters = seccomp.compile_filters()
        site.setquit()  # exit() and quit(), which -S leaves out
        rootfs.build_root()
        rootfs.bring_up_loopback()
        sc.sethostname("sandbox")
        sys.path[:] = stdlib_path  # what a run's `import` sees: the standard library only
        sys.dont_write_bytecode = True
    except BaseException:
        send(sock, {"error": f"zygote: {traceback.format_exc(limit=4)}"})
        return
    send(sock, {"ready": True})
    Zygote(sock, filters, child.run_child).serve()


class Zygote:
    """Serves runs one at a time. pid 1 of the slot: whatever it kills, nothing survives."""

    def __init__(self, sock: socket.socket, filters: Filters, run_child: Any) -> None:
        self.sock = sock
        self.filters = filters
        self.run_child = run_child
        self.pid_namespace = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)

    def serve(self) -> None:
        while True:
            message = self._receive()
            if message is None:
                return  # the host closed the socket: the slot is done
            kind, run_id, wall_s, fds = message
            if kind == KIND_RUN and fds:
                self._run(run_id, wall_s, fds)
            else:
                for fd in fds:
                    os.close(fd)  # a stale kill for a run that already ended

    def _receive(self) -> tuple[int, int, float, list[int]] | None:
        header, fds, _, _ = socket.recv_fds(self.sock, HEADER.size, MAX_FDS)
        while header and len(header) < HEADER.size:
            more = self.sock.recv(HEADER.size - len(header))
            if not more:
                return None
            header += more
        if not header:
            return None
        kind, run_id, wall_s = HEADER.unpack(header)
        return kind, run_id, wall_s, fds

    def _run(self, run_id: int, wall_s: float, fds: list[int]) -> None:
        status_read, status_write = os.pipe2(os.O_CLOEXEC)
        notify, notify_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        started = time.monotonic()
        pid = self._fork_run(fds, status_read, status_write, notify, notify_child)
        timed_out, killed, handed_over, budget = self._supervise(
            pid, run_id, started + wall_s, notify
        )
        if timed_out or killed:
            os.kill(pid, signal.SIGKILL)
        _, status, usage = os.wait4(pid, 0)
        wall_ms = (time.monotonic() - started) * 1000
        self._kill_all()
        if not handed_over:
            budget = self._receive_budget(notify)  # sent, or not, before the run ended
        notify.close()
        if budget is not None:
            budget.close_and_top_up()
        report = self._read_all(status_read)
        setup_error, mark, reported = report.partition(child.STATUS_MARK)
        cpu_ms = (usage.ru_utime + usage.ru_stime) * 1000
        if mark and not (timed_out or killed):
            program_status, relay_cpu_ms = reported.split()
            status = int(program_status)  # the program's own status, reported by the run's init
            cpu_ms -= float(relay_cpu_ms)  # the init's relaying of its output is not its CPU
        send(
            self.sock,
            {
                "done": run_id,
                "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                "wall_ms": wall_ms,
                "cpu_ms": cpu_ms,
                "timed_out": timed_out,
                "killed": killed,
                "setup_error": setup_error.decode(errors="replace"),
            },
        )

    def _fork_run(
        self,
        fds: list[int],
        status_read: int,
        status_write: int,
        notify: socket.socket,
        notify_child: socket.socket,
    ) -> int:
        """Forks the run's init (it never returns in the child); the parent keeps only its ends."""
        # Each run is forked into a fresh pid namespace (its first process is pid 1 there):
        # it sees no process and no pid counter of the slot or of earlier runs.
        sc.unshare(sc.CLONE_NEWPID)
        pid = -1
        try:
            pid = os.fork()
        finally:
            if pid != 0:
                sc.setns(self.pid_namespace, sc.CLONE_NEWPID)  # the next unshare needs it
        if pid == 0:
            os.close(status_read)
            os.close(self.pid_namespace)
            self.sock.close()
            notify.close()
            self.run_child(fds, status_write, self.filters, notify_child.detach())
        for fd in (*fds, status_write):
            os.close(fd)
        notify_child.close()
        return pid

    def _supervise(
        self, pid: int, run_id: int, deadline: float, notify: socket.socket
    ) -> tuple[bool, bool, bool, PipeBudget | None]:
        """Waits for the run to end, its wall-clock deadline or a kill from the host, answering
        its pipe calls meanwhile; returns (timed out, killed, handed over, the budget)."""
        budget: PipeBudget | None = None
        handed_over = timed_out = killed = False
        pidfd = os.pidfd_open(pid)
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.register(self.sock, select.POLLIN)
        poller.register(notify, select.POLLIN)
        while True:
            remaining_ms = (deadline - time.monotonic()) * 1000
            if remaining_ms <= 0:
                timed_out = True
                break
            events = dict(poller.poll(remaining_ms))
            if pidfd in events:
                break
            if budget is not None and budget.listener in events:
                if events[budget.listener] & select.POLLIN:
                    budget.answer()  # only then: a receive with nothing waiting would block
                else:  # POLLHUP: no process is left under its filter; polling on would spin
                    poller.unregister(budget.listener)
            if not handed_over and notify.fileno() in events:
                budget, handed_over = self._receive_budget(notify), True
                poller.unregister(notify)
                if budget is not None and budget.listener is not None:
                    poller.register(budget.listener, select.POLLIN)
            if self.sock.fileno() in events:
                message = self._receive()
                if message is None:
                    self._kill_all()
                    os._exit(0)
                kind, target, _, extra = message
                for fd in extra:
                    os.close(fd)
                if kind == KIND_KILL and target == run_id:
                    killed = True
                    break
        os.close(pidfd)
        return timed_out, killed, handed_over, budget

    @staticmethod
    def _receive_budget(notify: socket.socket) -> PipeBudget | None:
        """What the run's init handed over: the pipe budget's listener, or b"T" (None) for a
        toolchain run. Nothing at all (its setup failed first, so no program ran) is a budget
        without a listener: the run still moves the host-wide counter by a whole budget."""
        message, fds, _, _ = socket.recv_fds(notify, 1, 1)
        if message == b"T":
            return None
        return PipeBudget(fds[0] if fds else None)

    @staticmethod
    def _read_all(fd: int) -> bytes:
        data = b""
        while chunk := os.read(fd, 4096):
            data += chunk
        os.close(fd)
        return data[:8192]

    @staticmethod
    def _kill_all() -> None:
        """Kills and reaps every other process of the pid namespace (daemons included)."""
        while True:
            with contextlib.suppress(ProcessLookupError):
                os.kill(-1, signal.SIGKILL)
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                return
