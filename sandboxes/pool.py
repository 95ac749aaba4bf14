"""Warm sandbox slots on the host side: start them, hand them runs, collect the results.

A slot is a launcher and a zygote (see sandboxes.zygote) with its own namespaces, cgroup and
outside uids; it runs one program at a time, so a pool of N slots runs N at once.

Guarantees:
- Fails closed: a slot that cannot be set up, a run whose setup fails, or a slot that dies
  or stops answering gives Outcome.SANDBOX_ERROR; nothing ever runs without every layer.
  A run whose slot died is retried once on a fresh slot first.
- The host never reads or writes the sandbox's files: programs' files go in as bytes and
  collected files come out through a pipe, so a planted symlink cannot make it follow.
- A run's request (argv, files, env, limits) goes through a pipe to the forked run, never
  through the zygote, whose memory every later run of the slot is forked from.
- `run_pairs` links two runs on two slots by pipes between their stdin and stdout (and the
  client's fd 3); nothing else of one reaches the other.
- A slot whose memory stays above its baseline after a run (something outlived the run) is
  replaced before the next run; runs' memory limits count from the baseline.
- stdout and stderr are read as they are written and capped; past a cap the run is killed.
- Slots die with the process that started them, and a killed slot is replaced on next use.
- Each slot's outside uid and gid pair comes from SandboxConfig's range, checked against this
  user namespace when the pool is made, and is held by no other live slot of this network
  namespace (sandboxes.uids).
- Launchers are started with posix_spawn (subprocess), never by forking this process, so a
  pool may live in a process with threads; but start pools before a gRPC server exists in
  the same process, as with any child process.

Not guaranteed: fairness between callers (a pool is used by one thread at a time), and
isolation on kernels or configurations this package refuses (non-root host, no user
namespaces, no cgroup memory and pids controllers, another architecture than x86-64): there
it raises SandboxError at start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import marshal
import multiprocessing.util
import os
import selectors
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandboxes import cgroups, rootfs, stdio, uids
from sandboxes.limits import Limits, Outcome, Program, RunResult, SandboxError
from sandboxes.zygote import HEADER, KIND_KILL, KIND_RUN

_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)
# The launcher's configuration comes on stdin, not argv: the zygote inherits the command
# line, and a run can read its /proc/1/cmdline.
_BOOT = (
    "import json, sys; c = json.loads(sys.stdin.readline()); p = sys.path[:]; "
    "sys.path.insert(0, c['package_parent']); "
    "from sandboxes.zygote import launcher_main; launcher_main(p, c)"
)
_BACKSTOP_S = 10.0  # past wall_s + this, a silent slot is considered broken
_LEFTOVER_BYTES = 32 << 20  # a slot this far above its baseline between runs is recycled
_READ_CHUNK = 1 << 16

_slot_numbers_lock = threading.Lock()
_slot_numbers_in_use: set[int] = set()


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """How slots are built. The defaults fit a Debian host with Python 3.11 at /usr/bin."""

    python: str = "/usr/bin/python3"
    """The interpreter of launchers and zygotes, and of runner="python" runs: it must live
    under /usr (the only host tree visible inside) and use only its standard library."""
    uid_base: int | None = None
    """First outside uid (and gid) of the slots' range; None: 1,000,000,000 where this user
    namespace maps it (a host), else the top `uid_count` ids below 65534 (a container that
    maps 65,536 uids). Never a real user's: each slot's runs and zygote have their own."""
    uid_count: int = 4096
    """Outside ids in the range, shared by every process of this network namespace that uses
    the same uid_base (the server's workers); each live slot holds 2."""
    cgroup_parent: str | None = None
    """The cgroup (a path in the hierarchy, as in /proc/self/cgroup) under which slot cgroups
    are made; None: the cgroup this process is in. On cgroup v2 its processes are moved to
    its `verifier-rl-server` leaf first, so that controllers can be enabled for slots."""
    start_timeout_s: float = 30.0


def check_config(config: SandboxConfig, slots: int) -> None:
    """Checks `config` for a pool of `slots` in this process, as a server does at start: the
    uid range against this user namespace, the cgroup parent (taken over on cgroup v2).
    Raises SandboxError naming the field."""
    uids.resolve(config.uid_base, config.uid_count, slots)
    if config.cgroup_parent is not None:
        cgroups.check_parent(config.cgroup_parent)


class Slot:
    """One launcher + zygote pair. Not thread-safe; owned by a SandboxPool."""

    def __init__(self, config: SandboxConfig, ids: uids.UidRange) -> None:
        self.config = config
        self.ids = ids
        self.claim: uids.UidClaim | None = None
        self.number = _take_slot_number()
        self.process: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.zygote_pid: int | None = None
        self.cgroup: cgroups.Cgroup | None = None
        self._buffer = b""
        self.pids_max = 0
        self.cpus = 0.0
        self.baseline_bytes: int | None = None  # resident memory before the first run
        self.baseline_retained_bytes: int | None = None  # and its retained part

    @property
    def alive(self) -> bool:
        return self.sock is not None

    def start(self) -> None:
        """Starts the launcher and waits for the zygote's "ready". Raises SandboxError."""
        if os.geteuid() != 0:
            raise SandboxError("sandboxes need root on the host (uid maps, cgroups)")
        host_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock = host_sock
        try:
            self.claim = claim = uids.claim(self.ids)
            zygote_uid, slot_uid = claim.zygote, claim.run
            self.cgroup = cgroups.create(cgroups.slot_name(self.number), self.config.cgroup_parent)
            launcher_config = {
                "fd": child_sock.fileno(), "host_pid": os.getpid(),
                "package_parent": _PACKAGE_PARENT,
            }  # fmt: skip
            self.process = subprocess.Popen(
                [self.config.python, "-I", "-S", "-X", "utf8", "-c", _BOOT],
                pass_fds=[child_sock.fileno()], stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={}, cwd="/",
                start_new_session=True,
            )  # fmt: skip
            assert self.process.stdin is not None
            with self.process.stdin:
                self.process.stdin.write(json.dumps(launcher_config).encode() + b"\n")
            child_sock.close()
            deadline = time.monotonic() + self.config.start_timeout_s
            launcher_pid = self._expect("userns", deadline)
            _write_proc(
                launcher_pid, "uid_map", f"0 {zygote_uid} 1\n{rootfs.SANDBOX_UID} {slot_uid} 1\n"
            )
            _write_proc(
                launcher_pid, "gid_map", f"0 {zygote_uid} 1\n{rootfs.SANDBOX_GID} {slot_uid} 1\n"
            )
            self.cgroup.add(launcher_pid)
            host_sock.sendall(b'{"mapped": true}\n')
            self.zygote_pid = self._expect("zygote", deadline)
            self._expect("ready", deadline)
        except BaseException as exc:
            detail = self._stderr_tail()
            self.kill()
            if isinstance(exc, SandboxError):
                raise SandboxError(f"{exc}{detail}") from None
            if isinstance(exc, OSError):
                raise SandboxError(f"slot start failed: {exc}{detail}") from None
            raise
        finally:
            with contextlib.suppress(OSError):
                child_sock.close()
        assert self.process.stderr is not None
        self.process.stderr.close()

    def _expect(self, key: str, deadline: float) -> Any:
        message = self.read_message(deadline)
        if message is None:
            raise SandboxError(f"the slot exited while starting (waiting for {key!r})")
        if "error" in message:
            raise SandboxError(f"slot start failed: {message['error']}")
        if key not in message:
            raise SandboxError(f"slot start: expected {key!r}, got {message}")
        return message[key]

    def read_message(self, deadline: float) -> dict[str, Any] | None:
        """The next JSON line from the zygote (blocking until `deadline`); None on EOF."""
        assert self.sock is not None
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SandboxError("the slot did not answer in time")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(_READ_CHUNK)
            except TimeoutError:
                raise SandboxError("the slot did not answer in time") from None
            finally:
                self.sock.settimeout(None)
            if not chunk:
                return None
            self._buffer += chunk
        return self.pop_message()

    def pop_message(self) -> dict[str, Any] | None:
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            message = json.loads(line)
        except ValueError:
            raise SandboxError(f"garbled message from the slot: {line[:200]!r}") from None
        if not isinstance(message, dict):
            raise SandboxError(f"garbled message from the slot: {line[:200]!r}")
        return message

    def feed(self) -> bool:
        """Reads what the zygote sent (non-blocking use after select); False on EOF."""
        assert self.sock is not None
        chunk = self.sock.recv(_READ_CHUNK)
        self._buffer += chunk
        return bool(chunk)

    def has_message(self) -> bool:
        return b"\n" in self._buffer

    def send_run(self, run_id: int, wall_s: float, fds: Sequence[int]) -> None:
        assert self.sock is not None
        socket.send_fds(self.sock, [HEADER.pack(KIND_RUN, run_id, wall_s)], list(fds))

    def send_kill(self, run_id: int) -> None:
        assert self.sock is not None
        self.sock.sendall(HEADER.pack(KIND_KILL, run_id, 0.0))

    def configure(self, limits: Limits) -> None:
        assert self.cgroup is not None
        pids = limits.processes + 3  # the launcher, the zygote and each run's init too
        if pids != self.pids_max:
            self.cgroup.set_pids_max(pids)
            self.pids_max = pids
        if limits.cpus != self.cpus:
            self.cgroup.set_cpus(limits.cpus)
            self.cpus = limits.cpus

    def kill(self) -> None:
        """Kills the slot's whole tree (the zygote is pid 1 of its namespace) and cleans up."""
        if self.zygote_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.zygote_pid, signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5)
            if self.process.stderr is not None:
                self.process.stderr.close()
        self._close()

    def close(self) -> None:
        """Asks the zygote to exit (it closes on EOF), then makes sure."""
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(2)
        self.kill()

    def _close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.cgroup is not None:
            self.cgroup.destroy()
            self.cgroup = None
        if self.claim is not None:  # after the kill: no process of the slot has these uids
            self.claim.release()
            self.claim = None
        self.zygote_pid = None
        self.process = None
        self._buffer = b""
        self.pids_max, self.cpus = 0, 0.0
        self.baseline_bytes = self.baseline_retained_bytes = None

    def release(self) -> None:
        _release_slot_number(self.number)

    def _stderr_tail(self) -> str:
        if self.process is None or self.process.stderr is None:
            return ""
        with contextlib.suppress(OSError, ValueError):
            os.set_blocking(self.process.stderr.fileno(), False)
            text = (self.process.stderr.read() or b"")[-1500:].decode(errors="replace").strip()
            return f"\n{text}" if text else ""
        return ""


@dataclass(eq=False)
class _Run:
    """A run in flight: its pipes, what came back so far, and its slot."""

    program: Program
    limits: Limits
    unit: _Unit
    position: int
    links: dict[int, int] = field(default_factory=dict)  # child fd -> end of a pair's pipe
    slot: Slot | None = None
    run_id: int = 0
    fds: dict[int, str] = field(default_factory=dict)  # host-side pipe end -> role
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    artifact: bytearray = field(default_factory=bytearray)
    outgoing: dict[str, memoryview] = field(default_factory=dict)  # payload, stdin: still to write
    done: dict[str, Any] | None = None
    over_output: bool = False
    kill_sent: bool = False
    snapshot: cgroups.RunSnapshot | None = None
    backstop: float = 0.0


@dataclass(eq=False)
class _Unit:
    """Runs that start together, each on its own slot: one run, or a linked pair."""

    index: int
    runs: list[_Run] = field(default_factory=list)
    attempts: int = 0
    results: dict[int, RunResult | object] = field(default_factory=dict)  # position -> result


class SandboxPool:
    """`slots` warm sandboxes; `run`, `run_many` and `run_pairs` block until their runs finish.

    Use from one thread at a time. Start it (or its first run) before this process creates a
    gRPC server; close it (or use `with`) to remove the slots and their cgroups.
    """

    def __init__(self, slots: int = 2, config: SandboxConfig | None = None) -> None:
        if slots < 1:
            raise ValueError("slots must be >= 1")
        self.config = config or SandboxConfig()
        ids = uids.resolve(self.config.uid_base, self.config.uid_count, slots)
        self.slots = [Slot(self.config, ids) for _ in range(slots)]
        # Runs at exit also in multiprocessing children (which leave through os._exit), so the
        # slots' cgroups are removed even when nobody calls close().
        self._finalizer = multiprocessing.util.Finalize(
            self, _close_slots, args=(list(self.slots),), exitpriority=0
        )
        self._next_id = 0
        self.stats = {"runs": 0, "slot_restarts": 0, "slots_recycled": 0}

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Starts every slot now (otherwise each starts on first use). Raises SandboxError."""
        for slot in self.slots:
            if not slot.alive:
                slot.start()

    def close(self) -> None:
        self._finalizer()
        self.slots = []

    def run(self, program: Program, limits: Limits | None = None) -> RunResult:
        return self.run_many([(program, limits or Limits())])[0]

    def run_many(self, jobs: Sequence[tuple[Program, Limits]]) -> list[RunResult]:
        """Runs every job, as many at once as there are slots; results in input order."""
        units = [self._unit(i, [job]) for i, job in enumerate(jobs)]
        return [results[0] for results in self._execute(units)]

    def run_pairs(
        self, pairs: Sequence[tuple[Program, Limits, Program, Limits]]
    ) -> list[tuple[RunResult, RunResult]]:
        """Runs linked pairs (server, server_limits, client, client_limits), each pair on two
        slots at once: what the client writes to its fd 3 is the server's stdin, and the
        server's stdout is the client's stdin. Nothing else connects them (separate slots,
        uids and namespaces); each one's stderr, and the client's stdout, come back here. When
        the client ends, the server is killed. Results (server, client) in input order."""
        if len(self.slots) < 2:
            raise SandboxError("a linked pair needs a pool of at least 2 slots")
        for server, _, client, _ in pairs:
            if server.stdin or client.stdin or server.collect or client.collect:
                raise ValueError("a linked pair's programs take no stdin and collect nothing")
        units = [
            self._unit(i, [(server, s_limits), (client, c_limits)])
            for i, (server, s_limits, client, c_limits) in enumerate(pairs)
        ]
        return [(results[0], results[1]) for results in self._execute(units)]

    @staticmethod
    def _unit(index: int, jobs: Sequence[tuple[Program, Limits]]) -> _Unit:
        unit = _Unit(index)
        unit.runs = [_Run(program, limits, unit, n) for n, (program, limits) in enumerate(jobs)]
        return unit

    def _execute(self, units: list[_Unit]) -> list[list[RunResult]]:
        if not self.slots:
            raise SandboxError("the pool is closed")
        results: list[list[RunResult] | None] = [None] * len(units)
        queue = deque(units)
        active: dict[Slot, _Run] = {}
        with selectors.DefaultSelector() as selector:
            while queue or active:
                free = [slot for slot in self.slots if slot not in active]
                while queue and len(queue[0].runs) <= len(free):
                    unit = queue.popleft()
                    taken, free = free[: len(unit.runs)], free[len(unit.runs) :]
                    for slot, run in self._start_unit(unit, taken, selector):
                        active[slot] = run
                    self._settle(unit, queue, results)
                if not active:
                    continue
                timeout = max(0.0, min(r.backstop for r in active.values()) - time.monotonic())
                for key, _ in selector.select(timeout):
                    run, role = key.data
                    self._on_ready(run, role, key.fd, selector)
                for slot, run in list(active.items()):
                    finished = self._check(run, selector)
                    if finished is None:
                        continue
                    del active[slot]
                    unit = run.unit
                    unit.results[run.position] = finished
                    # a pair ends with its client (the last run); a failed run takes its peer
                    if finished is _RETRY or run.position == len(unit.runs) - 1:
                        for other in unit.runs:
                            if other.position not in unit.results:
                                self._kill(other)
                    self._settle(unit, queue, results)
        return results  # type: ignore[return-value]

    def _start_unit(
        self, unit: _Unit, slots: list[Slot], selector: selectors.BaseSelector
    ) -> list[tuple[Slot, _Run]]:
        """Starts the unit's runs; one that cannot start fails the unit (its peers are killed)."""
        unit.attempts += 1
        links: list[dict[int, int]] = [{} for _ in unit.runs]
        if len(unit.runs) == 2:
            calls_read, calls_write = os.pipe2(os.O_CLOEXEC)  # client fd 3 -> server stdin
            replies_read, replies_write = os.pipe2(os.O_CLOEXEC)  # server stdout -> client
            links = [{0: calls_read, 1: replies_write}, {0: replies_read, 3: calls_write}]
        started: list[tuple[Slot, _Run]] = []
        try:
            for slot, run, link in zip(slots, unit.runs, links, strict=True):
                run.links = link
                if self._start(slot, run, selector):
                    started.append((slot, run))
                    continue
                unit.results[run.position] = run_failed(run)
                for other in unit.runs:
                    if other.position not in unit.results and other is not run:
                        if any(r is other for _, r in started):
                            self._kill(other)
                        else:
                            unit.results[other.position] = run_failed(
                                other, "its linked run could not start"
                            )
                break
        finally:
            for link in links:
                for fd in link.values():
                    os.close(fd)  # the slots hold their own copies now
        return started

    def _settle(
        self, unit: _Unit, queue: deque[_Unit], results: list[list[RunResult] | None]
    ) -> None:
        """Once every run of the unit ended: its results, or the unit again after a slot died."""
        if len(unit.results) < len(unit.runs):
            return
        values = [unit.results[n] for n in range(len(unit.runs))]
        if any(value is _RETRY for value in values):
            if unit.attempts < 2:
                unit.results.clear()
                queue.appendleft(unit)
                return
            values = [
                run_failed(run, "the slot died or stopped answering during the run")
                if value is _RETRY
                else value
                for run, value in zip(unit.runs, values, strict=True)
            ]
        results[unit.index] = values  # type: ignore[assignment]

    # ---- one run's life

    def _start(self, slot: Slot, run: _Run, selector: selectors.BaseSelector) -> bool:
        try:
            if not slot.alive:
                if run.unit.attempts > 1 or self.stats["runs"]:
                    self.stats["slot_restarts"] += 1
                slot.start()
            extra_bytes = 0 if run.links else stdio.stdin_file_bytes(len(run.program.stdin))
            run.snapshot = self._prepare(slot, run.limits, extra_bytes)
        except SandboxError as exc:
            run.done = {"setup_error": str(exc)}
            return False
        self._next_id += 1
        run.slot, run.run_id = slot, self._next_id
        run.stdout.clear(), run.stderr.clear(), run.artifact.clear()
        run.over_output = run.kill_sent = False
        run.done = None
        limits = run.limits
        host_ends, child_ends = self._pipes(run)
        own_child_ends = [fd for fd in child_ends if fd not in run.links.values()]
        try:
            slot.send_run(run.run_id, limits.wall_s, child_ends)
        except OSError as exc:
            for fd in [*own_child_ends, *host_ends]:
                os.close(fd)
            run.done = {"setup_error": f"cannot reach the slot: {exc}"}
            slot.kill()
            return False
        finally:
            for fd in own_child_ends:
                with contextlib.suppress(OSError):
                    os.close(fd)
        run.fds = host_ends
        run.backstop = time.monotonic() + limits.wall_s + _BACKSTOP_S
        self.stats["runs"] += 1
        run.outgoing = {
            "payload": memoryview(marshal.dumps(self._request(run))),
            "stdin": memoryview(run.program.stdin),
        }
        self._register(run, slot, selector)
        return True

    @staticmethod
    def _pipes(run: _Run) -> tuple[dict[int, str], list[int]]:
        """The run's pipes: the host's ends by role, and the child's ends in fd order (a linked
        pair's stdin/stdout come from its partner instead of a new pipe)."""
        # The request travels through a pipe that the forked run reads itself: the zygote,
        # which every later run of the slot is forked from, never holds a run's files.
        host_ends: dict[int, str] = {}
        child_ends: list[int] = []
        roles = [("payload", False), ("stdin", False), ("stdout", True), ("stderr", True)]
        if run.program.collect:
            roles.append(("artifact", True))
        for number, (role, child_writes) in enumerate(roles):
            if number - 1 in run.links:  # child fd number - 1: the payload pipe comes first
                child_ends.append(run.links[number - 1])
                continue
            read_end, write_end = os.pipe2(os.O_CLOEXEC)
            child_ends.append(write_end if child_writes else read_end)
            host_ends[read_end if child_writes else write_end] = role
        if 3 in run.links:
            child_ends.append(run.links[3])
        return host_ends, child_ends

    @staticmethod
    def _request(run: _Run) -> dict[str, Any]:
        """What the forked run reads from its payload pipe."""
        program = run.program
        return {
            "argv": list(program.argv),
            "files": dict(program.files),
            "env": dict(program.env),
            "runner": program.runner,
            "collect": program.collect,
            "toolchain": program.toolchain,
            "limits": dataclasses.asdict(run.limits),
            "stdio_files": not run.links,  # a linked pair's stdin and stdout are its channels
            "stdin_bytes": len(program.stdin),
        }

    def _register(self, run: _Run, slot: Slot, selector: selectors.BaseSelector) -> None:
        """Puts the run's host ends (and its slot's control socket) in the selector."""
        for fd, role in list(run.fds.items()):
            os.set_blocking(fd, False)
            if role in run.outgoing:
                if run.outgoing[role]:
                    selector.register(fd, selectors.EVENT_WRITE, (run, role))
                else:
                    self._close_fd(run, fd, selector, registered=False)
            else:
                selector.register(fd, selectors.EVENT_READ, (run, role))
        assert slot.sock is not None
        selector.register(slot.sock, selectors.EVENT_READ, (run, "control"))

    def _prepare(self, slot: Slot, limits: Limits, extra_bytes: int) -> cgroups.RunSnapshot:
        """Limits for the next run (its memory limit raised by `extra_bytes`: its stdin file);
        a slot whose memory did not come back to its baseline (something of an earlier run
        outlived it) is replaced first."""
        snapshot = self._limit(slot, limits, extra_bytes)
        assert slot.baseline_retained_bytes is not None
        if snapshot.retained_bytes > slot.baseline_retained_bytes + _LEFTOVER_BYTES:
            slot.kill()
            self.stats["slots_recycled"] += 1
            slot.start()
            snapshot = self._limit(slot, limits, extra_bytes)
        return snapshot

    @staticmethod
    def _limit(slot: Slot, limits: Limits, extra_bytes: int) -> cgroups.RunSnapshot:
        slot.configure(limits)
        assert slot.cgroup is not None
        memory_bytes = (limits.memory_mb << 20) + extra_bytes
        snapshot = slot.cgroup.before_run(memory_bytes, slot.baseline_bytes)
        if slot.baseline_bytes is None:
            slot.baseline_bytes = snapshot.resident_bytes
            slot.baseline_retained_bytes = snapshot.retained_bytes
        return snapshot

    def _on_ready(self, run: _Run, role: str, fd: int, selector: selectors.BaseSelector) -> None:
        if role == "control":
            assert run.slot is not None
            if not run.slot.feed():
                selector.unregister(fd)
                run.slot.kill()  # the zygote died: every process of the slot is gone
            return
        if role in run.outgoing:
            data = run.outgoing[role]
            try:
                data = data[os.write(fd, data[:_READ_CHUNK]) :]
            except BlockingIOError:
                return
            except OSError:  # the program closed its stdin or exited
                data = memoryview(b"")
            run.outgoing[role] = data
            if not data:
                self._close_fd(run, fd, selector)
            return
        try:
            chunk = os.read(fd, _READ_CHUNK)
        except BlockingIOError:
            return
        if not chunk:
            self._close_fd(run, fd, selector)
            return
        buffer: bytearray = getattr(run, role)
        cap = {
            "stdout": run.limits.stdout_bytes,
            "stderr": run.limits.stderr_bytes,
            "artifact": run.limits.artifact_bytes,
        }[role]
        room = cap - len(buffer)
        buffer += chunk[: max(0, room)]
        if len(chunk) > room:  # an artifact over its cap too: a truncated binary is no result
            run.over_output = True
            self._kill(run)

    def _kill(self, run: _Run) -> None:
        if run.kill_sent or run.slot is None or not run.slot.alive:
            return
        run.kill_sent = True
        try:
            run.slot.send_kill(run.run_id)
        except OSError:
            run.slot.kill()

    def _close_fd(
        self, run: _Run, fd: int, selector: selectors.BaseSelector, registered: bool = True
    ) -> None:
        if registered:
            selector.unregister(fd)
        os.close(fd)
        del run.fds[fd]

    def _check(self, run: _Run, selector: selectors.BaseSelector) -> RunResult | object | None:
        """The run's result once the zygote reported and its pipes are drained; else None."""
        slot = run.slot
        assert slot is not None
        try:
            while run.done is None and slot.alive and slot.has_message():
                message = slot.pop_message()
                if message is not None and message.get("done") == run.run_id:
                    run.done = message
        except SandboxError as exc:
            run.done = {"setup_error": str(exc)}
            slot.kill()
        broken = not slot.alive or (run.done is None and time.monotonic() > run.backstop)
        if broken:
            self._abandon(run, selector)
            if run.done is None and not slot.alive:
                return _RETRY  # the unit runs again if it has not already
            return run_failed(run, "the slot died or stopped answering during the run")
        if run.done is None or any(
            role in ("stdout", "stderr", "artifact") for role in run.fds.values()
        ):
            return None
        self._abandon(run, selector)
        return self._result(run)

    def _abandon(self, run: _Run, selector: selectors.BaseSelector) -> None:
        for fd in list(run.fds):
            self._close_fd(run, fd, selector)
        slot = run.slot
        assert slot is not None
        if slot.sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                selector.unregister(slot.sock)
        if slot.alive and run.done is None:
            slot.kill()  # unresponsive: nothing of it may linger

    def _result(self, run: _Run) -> RunResult:
        done = run.done
        slot = run.slot
        assert done is not None and slot is not None and slot.cgroup is not None
        assert run.snapshot is not None
        peak_kb, oom_killed = slot.cgroup.after_run(run.snapshot)
        if done.get("setup_error"):
            return run_failed(run, f"run setup failed: {done['setup_error']}")
        return RunResult(
            outcome=classify(done, oom_killed, run.over_output, run.limits),
            exit_code=done.get("exit_code"),
            signal=done.get("signal"),
            stdout=bytes(run.stdout),
            stderr=bytes(run.stderr),
            wall_ms=float(done.get("wall_ms", 0.0)),
            cpu_ms=float(done.get("cpu_ms", 0.0)),
            memory_peak_kb=peak_kb,
            artifact=bytes(run.artifact)
            if run.program.collect and done.get("exit_code") == 0 and not run.over_output
            else None,
        )  # fmt: skip


_RETRY = object()


def classify(done: dict[str, Any], oom_killed: bool, over_output: bool, limits: Limits) -> Outcome:
    """The outcome of a finished run, from facts observed outside the sandbox.

    Order matters: the host's own kill for output comes first; then the OOM killer; then the
    wall clock and the CPU limit; then the file-size limit; then the exit status.
    """
    sig = done.get("signal")
    if over_output:
        return Outcome.OUTPUT_LIMIT
    if oom_killed:
        return Outcome.MEMORY_LIMIT
    if done.get("timed_out") or sig == signal.SIGXCPU:
        return Outcome.TIME_LIMIT
    if done.get("cpu_ms", 0.0) > limits.cpu_s * 1000 and (sig == signal.SIGKILL or sig is None):
        return Outcome.TIME_LIMIT  # RLIMIT_CPU counts whole seconds: the rest is checked here
    if sig == signal.SIGXFSZ:
        return Outcome.OUTPUT_LIMIT
    if done.get("exit_code") == 0:
        return Outcome.OK
    return Outcome.RUNTIME_ERROR


def _close_slots(slots: list[Slot]) -> None:
    for slot in slots:
        slot.close()
        slot.release()


def run_failed(run: _Run, error: str = "") -> RunResult:
    message = error or (run.done or {}).get("setup_error") or "the sandbox failed"
    return RunResult(outcome=Outcome.SANDBOX_ERROR, error=str(message)[:2000])


def _write_proc(pid: int, name: str, text: str) -> None:
    try:
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(text)
    except OSError as exc:
        raise SandboxError(f"cannot write /proc/{pid}/{name}: {exc.strerror}") from None


def _take_slot_number() -> int:
    """The lowest number no live slot of this process has (it names the slot's cgroup)."""
    with _slot_numbers_lock:
        number = 1
        while number in _slot_numbers_in_use:
            number += 1
        _slot_numbers_in_use.add(number)
        return number


def _release_slot_number(number: int) -> None:
    with _slot_numbers_lock:
        _slot_numbers_in_use.discard(number)
