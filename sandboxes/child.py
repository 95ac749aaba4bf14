"""One run, from the zygote's fork to the program: the layers applied to every run.

In order: die with the zygote; a private mount namespace (and System V IPC and network
namespaces; no interface up, not even loopback) with fresh size-capped tmpfs on /work, /tmp
and /dev/shm and a /proc of the run's own pid namespace holding only its pid directories
(subset=pid: no host-wide counter); the program's files; its stdin as a file and its
stdout and stderr as FIFOs on a fresh /dev/fd (sandboxes.stdio; a linked pair's runs keep
the host's pipes); for a program run, the pipe budget's notifying filter, its listener
handed to the zygote; then, in the forked program (pid 2; the first process stays as the
namespace's init, relays the program's output to the host's pipes and reports its status):
the OOM killer's first choice; for a program run, no /proc at all; stdio on 0, 1, 2 and
every other descriptor closed; rlimits; the unprivileged uid (all capabilities gone);
no_new_privs and the seccomp filter (the program's, or a compiler's); then exec, or the
Python runner.
A setup failure is written to `status_fd` (close-on-exec, so a successful exec writes nothing)
and the zygote reports a sandbox error: a run never starts with a layer missing.
"""

from __future__ import annotations

import contextlib
import fcntl
import marshal
import math
import os
import resource
import signal
import socket
import sys
from typing import Any, NoReturn

from sandboxes import rootfs, stdio
from sandboxes import syscalls as sc
from sandboxes.limits import WORK_DIR
from sandboxes.seccomp import Filters

BASE_ENV = {"PATH": "/usr/bin:/bin", "HOME": WORK_DIR, "TMPDIR": "/tmp", "LANG": "C.UTF-8"}
STATUS_SETUP_FAILED = 127


def run_child(fds: list[int], status_fd: int, filters: Filters, notify_fd: int) -> NoReturn:
    """Never returns. Runs as pid 1 of the run's own pid namespace: sets up the run's mounts
    and files, forks the program (pid 2) and waits for it, then writes its wait status to
    `status_fd` and exits, which kills whatever else of the run is left. fds: the request
    pipe, then stdin, stdout, stderr and an optional fourth pipe (fd 3: a collected file's,
    or a linked pair's call pipe). Unless the request says otherwise (a linked pair's runs),
    the program's stdin, stdout and stderr are /dev/fd/0, 1 and 2 (sandboxes.stdio), which
    this process fills from and relays to the pipes. notify_fd: a socket to the zygote,
    which gets the pipe budget's listener (or nothing, for a toolchain run)."""
    try:
        request = _read_request(fds[0])
        fds = fds[1:]
        sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
        _fresh_mounts(request["limits"])
        _write_files(request["files"])
        streams = None
        if request["stdio_files"]:
            streams = stdio.mount_stdio(fds[:3], request["stdin_bytes"])
            fds = [*streams.program_fds, *fds[3:]]
        _hand_over_pipe_budget(notify_fd, filters, toolchain=request["toolchain"])
        program = os.fork()
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.write(status_fd, f"{type(exc).__name__}: {exc}".encode(errors="replace")[:2000])
        os._exit(STATUS_SETUP_FAILED)
    if program == 0:
        bpf = filters.toolchain if request["toolchain"] else filters.program
        _run_program(request, fds, status_fd, bpf)
    try:
        for fd in fds:
            os.close(fd)  # the run's streams close when the program's last process ends
        relay_cpu_ms = 0.0
        if streams is None:
            status = stdio.wait_program(program)
        else:
            started = _own_cpu_ms()
            status = stdio.relay_until_exit(program, streams)
            relay_cpu_ms = _own_cpu_ms() - started
        os.write(status_fd, STATUS_MARK + f"{status} {relay_cpu_ms}".encode())
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.write(status_fd, f"init: {type(exc).__name__}: {exc}".encode(errors="replace"))
        os._exit(STATUS_SETUP_FAILED)
    os._exit(0)


# then the program's wait status and the CPU the relay took (not the program's: the zygote
# takes it off the run's), after any setup error text
STATUS_MARK = b"\0status "


def _own_cpu_ms() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return (usage.ru_utime + usage.ru_stime) * 1000


def _hand_over_pipe_budget(notify_fd: int, filters: Filters, *, toolchain: bool) -> None:
    """A program run's pipe calls wait for the zygote (sandboxes.pipe_budget): this process
    installs the notifying filter, which the program inherits, and sends its listener to the
    zygote before the program exists, so the program never holds it. This process makes no
    pipe afterwards. A compiler runs trusted code whose pipes do not depend on its input
    (g++ -pipe: six), so a toolchain run has no budget: it sends b"T"."""
    with socket.socket(fileno=notify_fd) as notify:
        if toolchain:
            notify.sendall(b"T")
        else:
            listener = sc.install_seccomp(filters.pipe_notify, listener=True)
            assert listener is not None
            socket.send_fds(notify, [b"L"], [listener])
            os.close(listener)


def _run_program(request: dict[str, Any], fds: list[int], status_fd: int, bpf: bytes) -> NoReturn:
    """The program's process: pid 2 of the run's namespace, so it keeps ordinary signal
    semantics (pid 1 would ignore signals it has no handler for)."""
    try:
        argv, runner = request["argv"], request["runner"]
        limits = request["limits"]
        sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
        sc.prctl(sc.PR_SET_DUMPABLE, 1)  # else /proc/self belongs to the host's root
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")  # the run dies first, never the zygote
        if not request["toolchain"]:
            # Every /proc entry a process looks up for the first time takes a number from the
            # host-wide inode counter (get_next_ino) that any pipe's inode shows: reopening an
            # fd and looking up /proc/self/fd/N moved the next run's pipe inodes by one each
            # time, a fresh process's /proc/self by about ten. A program has no /proc: the
            # run's and, under it, the slot's (its /dev/stdin and the like: sandboxes.stdio).
            while os.path.ismount("/proc"):
                sc.umount2("/proc", sc.MNT_DETACH)
        kept = [status_fd]
        artifact_fd = _setup_fds(fds, keep=kept)
        status_fd = kept[0]
        _set_rlimits(limits)
        os.chdir(WORK_DIR)
        os.setgroups([])
        os.setresgid(rootfs.SANDBOX_GID, rootfs.SANDBOX_GID, rootfs.SANDBOX_GID)
        os.setresuid(rootfs.SANDBOX_UID, rootfs.SANDBOX_UID, rootfs.SANDBOX_UID)
        sc.prctl(sc.PR_SET_DUMPABLE, 1)  # setresuid cleared it; the program may read /proc/self
        sc.install_seccomp(bpf)
        env = {**BASE_ENV, **request["env"]}
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        if runner == "python":
            os.close(status_fd)
            _run_python(argv, env)
        for sig in (
            signal.SIGPIPE,
            signal.SIGXFSZ,
        ):  # Python ignores them; exec'd programs must not
            signal.signal(sig, signal.SIG_DFL)
        if request["collect"] is not None:
            _run_and_collect(argv, env, request["collect"], artifact_fd, limits, status_fd)
        os.execve(argv[0], argv, env)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.write(status_fd, f"{type(exc).__name__}: {exc}".encode(errors="replace")[:2000])
        os._exit(STATUS_SETUP_FAILED)
    os._exit(STATUS_SETUP_FAILED)


def _read_request(fd: int) -> dict[str, Any]:
    """The run's request, read here in the forked child, never in the zygote."""
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    os.close(fd)
    return marshal.loads(b"".join(chunks))


def _fresh_mounts(limits: dict[str, Any]) -> None:
    # A System V IPC namespace of its own: shared memory, semaphores and queues a run leaves
    # behind die with it, unseen by the next run and uncharged to the slot. A network
    # namespace of its own: socket state a run leaves (a port in TIME_WAIT, the counters in
    # /proc/self/net) is no channel to later runs. A function test's program learns whether
    # its last answer passed from whether the next call comes; through the slot's shared
    # namespace it used to tell later runs, which then passed (issue 12 attack). Its loopback
    # stays down: every packet over it counts in the host-wide per-CPU totals of
    # /proc/self/net/softnet_stat (50,000 UDP packets moved the next run's reading by exactly
    # 50,000; idle runs moved it by 0), and that file is in every network namespace.
    sc.unshare(sc.CLONE_NEWNS | sc.CLONE_NEWIPC | sc.CLONE_NEWNET)
    options = f"size={limits['tmpfs_mb']}m,nr_inodes={limits['tmpfs_inodes']}"
    owner = f"uid={rootfs.SANDBOX_UID},gid={rootfs.SANDBOX_GID}"
    flags = sc.MS_NOSUID | sc.MS_NODEV
    sc.mount("tmpfs", WORK_DIR, "tmpfs", flags, f"{options},mode=0755,{owner}")
    sc.mount("tmpfs", "/tmp", "tmpfs", flags, f"{options},mode=1777")
    sc.mount("tmpfs", "/dev/shm", "tmpfs", flags | sc.MS_NOEXEC, f"{options},mode=1777")
    # This process is pid 1 of the run's pid namespace: its /proc shows the run alone, and
    # with subset=pid only the run's pid directories, self and thread-self: none of the
    # host-wide counters a run could move and a later run read (/proc/stat's fork count,
    # meminfo, loadavg, vmstat, interrupts, pressure/*, sys/kernel/random/*, sys/fs/*-nr).
    sc.mount("proc", "/proc", "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, "subset=pid")


def _write_files(files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = f"{WORK_DIR}/{name}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchown(fd, rootfs.SANDBOX_UID, rootfs.SANDBOX_GID)
        finally:
            os.close(fd)


def _setup_fds(fds: list[int], keep: list[int]) -> int | None:
    """stdin, stdout, stderr onto 0, 1, 2 and a fourth pipe (if any) onto 3, which it returns;
    `keep` are moved above them (and updated in place); every other descriptor is closed."""
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 16) for fd in [*fds, *keep]]
    for target, fd in enumerate(moved[: len(fds)]):
        os.dup2(fd, target, inheritable=True)
    keep[:] = moved[len(fds) :]
    extra = 3 if len(fds) > 3 else None
    first_free = len(fds)
    for fd in sorted(keep):
        os.closerange(first_free, fd)
        first_free = fd + 1
    os.closerange(first_free, 1 << 20)
    return extra


def _set_rlimits(limits: dict[str, Any]) -> None:
    mb = 1024 * 1024
    cpu = max(1, math.ceil(limits["cpu_s"]))
    wanted = {
        resource.RLIMIT_CPU: (cpu, cpu + 1),
        resource.RLIMIT_FSIZE: (limits["file_size_mb"] * mb,) * 2,
        resource.RLIMIT_NOFILE: (limits["open_files"],) * 2,
        resource.RLIMIT_CORE: (0, 0),
        resource.RLIMIT_NPROC: (limits["processes"],) * 2,
        resource.RLIMIT_STACK: (limits["stack_mb"] * mb,) * 2,
    }
    if limits["address_space_mb"] is not None:
        wanted[resource.RLIMIT_AS] = (limits["address_space_mb"] * mb,) * 2
    for which, (soft, hard) in wanted.items():
        _, current_hard = resource.getrlimit(which)
        if current_hard != resource.RLIM_INFINITY:  # cannot raise a hard limit in a user ns
            soft, hard = min(soft, current_hard), min(hard, current_hard)
        resource.setrlimit(which, (soft, hard))


def _run_and_collect(
    argv: list[str],
    env: dict[str, str],
    collect: str,
    artifact_fd: int | None,
    limits: dict[str, Any],
    status_fd: int,
) -> NoReturn:
    """Runs the command as a child; if it exits 0, streams /work/<collect> to the artifact pipe."""
    assert artifact_fd is not None
    pid = os.fork()
    if pid == 0:
        os.close(artifact_fd)
        os.execve(argv[0], argv, env)
    os.close(status_fd)
    _, status = os.waitpid(pid, 0)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        try:
            fd = os.open(f"{WORK_DIR}/{collect}", os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            os.write(2, f"\nsandbox: cannot collect {collect}: {exc.strerror}\n".encode())
            os._exit(1)
        with os.fdopen(fd, "rb") as source, os.fdopen(artifact_fd, "wb") as sink:
            remaining = limits["artifact_bytes"] + 1  # one byte more tells the host it is over
            while remaining > 0 and (chunk := source.read(min(remaining, 1 << 20))):
                sink.write(chunk)
                remaining -= len(chunk)
    if os.WIFSIGNALED(status):
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def _run_python(argv: list[str], env: dict[str, str]) -> NoReturn:
    """What `python3 -I -S script args` does, in this already started interpreter."""
    import atexit
    import builtins
    import types

    os.environ.clear()
    os.environ.update(env)
    sys.argv = list(argv)
    sys.stdin = sys.__stdin__ = _text_stream(0, "rb", "surrogateescape")
    sys.stdout = sys.__stdout__ = _text_stream(1, "wb", "surrogateescape")
    sys.stderr = sys.__stderr__ = _text_stream(2, "wb", "backslashreplace", line_buffering=True)
    main = types.ModuleType("__main__")
    main.__dict__.update({"__file__": argv[0], "__builtins__": builtins, "__cached__": None})
    sys.modules["__main__"] = main
    atexit._clear()
    status = 0
    try:
        with open(argv[0], "rb") as f:
            code = compile(f.read(), argv[0], "exec")
        exec(code, main.__dict__)
    except SystemExit as exc:
        status = _exit_status(exc)
    except BaseException as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
        status = 1
    try:
        threading = sys.modules.get("threading")
        if threading is not None:
            threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
    except SystemExit as exc:
        status = _exit_status(exc)
    except BaseException as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            status = status or 120  # what the interpreter exits with when flushing fails
    os._exit(status)


def _text_stream(fd: int, mode: str, errors: str, line_buffering: bool = False) -> Any:
    """A standard stream as a fresh interpreter in UTF-8 mode makes it (a pipe: buffered)."""
    import io

    binary = open(fd, mode, closefd=False)  # noqa: SIM115 (lives as long as the process)
    return io.TextIOWrapper(binary, "utf-8", errors, line_buffering=line_buffering)


def _exit_status(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    with contextlib.suppress(BaseException):
        print(code, file=sys.stderr)
    return 1
