"""Per-slot cgroups for memory, process count and CPU bandwidth, on cgroup v1 or v2.

Each slot gets its own cgroup, created under the cgroup the host process is in (so the host's
own limits still apply) or under a configured parent, and named
`verifier-rl-<pid namespace>-<host pid>-<slot>` (a pid is only meaningful in its namespace:
another container sharing the hierarchy must not take a live slot's cgroup for a dead
one's). The slot's launcher joins it once at start; every run is forked from inside, so no
run pays for joining a cgroup. Before each run the host sets the memory limit (the slot's
baseline, its resident memory before its first run, plus the run's `memory_mb` and its stdin
file: never more because an earlier run left something behind; the pool recycles a slot that
does not come back to its baseline) and resets the peak; after it, it reads the peak and the
OOM-kill counter, which is how a memory-limit kill is told apart from any other SIGKILL.

A configured parent on cgroup v2 is taken over (`delegate`): the kernel enables controllers
for a cgroup's children only while it holds no process ("no internal processes"), so every
process in it is moved to its leaf `verifier-rl-server` first, as systemd and container
engines do with a cgroup delegated to them. Use a cgroup this server owns: a container's own
cgroup (with a private cgroup namespace, "/"), or a systemd unit's with Delegate=yes.

Not guaranteed: the peak includes page cache the run caused to be charged; on v2 without
`memory.peak` (kernels before 5.19) the peak is unknown.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from sandboxes.limits import SandboxError

ROOT = Path("/sys/fs/cgroup")
PREFIX = "verifier-rl-"
SERVER_LEAF = "verifier-rl-server"  # where a delegated v2 parent's own processes go
CONTROLLERS = ("memory", "pids", "cpu")
_PERIOD_US = 100_000


@dataclass(frozen=True, slots=True)
class RunSnapshot:
    """Counters read before a run, to compare with after it."""

    usage_bytes: int
    oom_kills: int
    resident_bytes: int  # usage without page cache
    retained_bytes: int
    """Resident without reclaimable kernel memory (v2: reclaimable slab; v1, which does not
    split it: all kernel memory): what an earlier run could have left behind. Negative
    dentries of 400,000 lookups of missing files (about 40 MB) count in resident memory and
    had the slot recycled: an event a run could trigger at will, seen by later runs."""


def detect(root: Path = ROOT) -> str:
    """ "v2" on a unified hierarchy, "v1" where memory and pids controllers are mounted."""
    if (root / "cgroup.controllers").exists():
        return "v2"
    if (root / "memory").is_dir() and (root / "pids").is_dir():
        return "v1"
    raise SandboxError(f"no usable cgroup hierarchy under {root} (need memory and pids)")


def own_paths(proc_cgroup: str) -> dict[str, str]:
    """/proc/self/cgroup -> {controller: path}; the v2 entry is under the key ""."""
    paths = {}
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            paths[controller] = path
    return paths


class CgroupV1:
    """memory, pids and cpu hierarchies, each with the slot's directory."""

    def __init__(
        self,
        name: str,
        root: Path = ROOT,
        proc_cgroup: str | None = None,
        parent: str | None = None,
    ) -> None:
        paths = own_paths(proc_cgroup or Path("/proc/self/cgroup").read_text())
        self.dirs: dict[str, Path] = {}
        for controller in CONTROLLERS:
            path = parent if parent is not None else paths.get(controller, "/")
            parent_dir = _existing(root / controller / path.lstrip("/"), parent)
            _sweep_stale(parent_dir)
            self.dirs[controller] = _make(parent_dir / name)
        memory = self.dirs["memory"]
        self._write(memory / "memory.swappiness", "0")
        self._write(self.dirs["cpu"] / "cpu.cfs_period_us", str(_PERIOD_US))

    def add(self, pid: int) -> None:
        for directory in self.dirs.values():
            self._write(directory / "cgroup.procs", str(pid))

    def set_pids_max(self, pids: int) -> None:
        self._write(self.dirs["pids"] / "pids.max", str(pids))

    def set_cpus(self, cpus: float) -> None:
        self._write(self.dirs["cpu"] / "cpu.cfs_quota_us", str(max(1000, int(cpus * _PERIOD_US))))

    def before_run(self, memory_bytes: int, baseline_bytes: int | None = None) -> RunSnapshot:
        memory = self.dirs["memory"]
        usage = int(self._read(memory / "memory.usage_in_bytes"))
        stat = _keyed(self._read(memory / "memory.stat"))
        resident = max(
            0, usage - stat.get("total_active_file", 0) - stat.get("total_inactive_file", 0)
        )
        base = resident if baseline_bytes is None else baseline_bytes
        self._write(memory / "memory.limit_in_bytes", str(base + memory_bytes))
        self._write(memory / "memory.max_usage_in_bytes", "0")  # resets the peak to usage now
        oom = _keyed(self._read(memory / "memory.oom_control")).get("oom_kill", 0)
        kernel_path = memory / "memory.kmem.usage_in_bytes"
        kernel = int(self._read(kernel_path)) if kernel_path.exists() else 0
        return RunSnapshot(usage, oom, resident, max(0, resident - kernel))

    def after_run(self, snapshot: RunSnapshot) -> tuple[int | None, bool]:
        """(peak kB above the usage at start, whether the OOM killer killed something)."""
        memory = self.dirs["memory"]
        peak = int(self._read(memory / "memory.max_usage_in_bytes"))
        oom = _keyed(self._read(memory / "memory.oom_control")).get("oom_kill", 0)
        return max(0, peak - snapshot.usage_bytes) // 1024, oom > snapshot.oom_kills

    def destroy(self) -> None:
        for directory in self.dirs.values():
            _remove(directory)

    @staticmethod
    def _read(path: Path) -> str:
        return path.read_text()

    @staticmethod
    def _write(path: Path, value: str) -> None:
        _write(path, value)


class CgroupV2:
    """One directory in the unified hierarchy with memory, pids and cpu enabled."""

    def __init__(
        self,
        name: str,
        root: Path = ROOT,
        proc_cgroup: str | None = None,
        parent_path: str | None = None,
    ) -> None:
        if parent_path is not None:
            parent = delegate(parent_path, root)
        else:
            paths = own_paths(proc_cgroup or Path("/proc/self/cgroup").read_text())
            parent = root / paths.get("", "/").lstrip("/")
        enabled = set((parent / "cgroup.subtree_control").read_text().split())
        missing = set(CONTROLLERS) - enabled
        if missing:
            try:
                _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))
            except SandboxError as exc:
                raise SandboxError(
                    f"cgroup v2: cannot enable {sorted(missing)} for children of {parent} "
                    "(a cgroup with processes in it cannot; set cgroup_parent to a cgroup "
                    f"delegated to this server, e.g. the container's own, '/'): {exc}"
                ) from None
        _sweep_stale(parent)
        self.dir = _make(parent / name)
        with contextlib.suppress(FileNotFoundError):  # no swap accounting on this kernel
            _write(self.dir / "memory.swap.max", "0")
        self._peak_fd: int | None = None
        with contextlib.suppress(FileNotFoundError):
            self._peak_fd = os.open(self.dir / "memory.peak", os.O_RDWR)

    def add(self, pid: int) -> None:
        _write(self.dir / "cgroup.procs", str(pid))

    def set_pids_max(self, pids: int) -> None:
        _write(self.dir / "pids.max", str(pids))

    def set_cpus(self, cpus: float) -> None:
        _write(self.dir / "cpu.max", f"{max(1000, int(cpus * _PERIOD_US))} {_PERIOD_US}")

    def before_run(self, memory_bytes: int, baseline_bytes: int | None = None) -> RunSnapshot:
        usage = int((self.dir / "memory.current").read_text())
        stat = _keyed((self.dir / "memory.stat").read_text())
        resident = max(0, usage - stat.get("file", 0))
        base = resident if baseline_bytes is None else baseline_bytes
        _write(self.dir / "memory.max", str(base + memory_bytes))
        if self._peak_fd is not None:
            try:  # since Linux 6.12 a write resets the peak seen through this descriptor
                os.pwrite(self._peak_fd, b"reset\n", 0)
            except OSError:
                os.close(self._peak_fd)
                self._peak_fd = None
        oom = _keyed((self.dir / "memory.events").read_text()).get("oom_kill", 0)
        retained = max(0, resident - stat.get("slab_reclaimable", 0))
        return RunSnapshot(usage, oom, resident, retained)

    def after_run(self, snapshot: RunSnapshot) -> tuple[int | None, bool]:
        peak = None
        if self._peak_fd is not None:
            peak = max(0, int(os.pread(self._peak_fd, 64, 0)) - snapshot.usage_bytes) // 1024
        oom = _keyed((self.dir / "memory.events").read_text()).get("oom_kill", 0)
        return peak, oom > snapshot.oom_kills

    def destroy(self) -> None:
        if self._peak_fd is not None:
            os.close(self._peak_fd)
            self._peak_fd = None
        _remove(self.dir)


Cgroup = CgroupV1 | CgroupV2


def create(name: str, parent: str | None = None) -> Cgroup:
    """The slot cgroup `name`, under `parent` (a cgroup path) or this process's cgroup."""
    if detect() == "v2":
        return CgroupV2(name, parent_path=parent)
    return CgroupV1(name, parent=parent)


def check_parent(parent: str) -> None:
    """Fails now, not at the first slot, when `parent` cannot hold slot cgroups (on v2 this
    takes it over: see `delegate`). Raises SandboxError naming cgroup_parent."""
    if detect() == "v2":
        delegate(parent)
        return
    for controller in CONTROLLERS:
        _existing(ROOT / controller / parent.lstrip("/"), parent)


def delegate(parent_path: str, root: Path = ROOT, attempts: int = 20) -> Path:
    """Makes the v2 cgroup `parent_path` ready for slot cgroups: its processes moved to its
    SERVER_LEAF child, memory, pids and cpu enabled for its children. Idempotent (every
    worker may call it). Raises SandboxError naming cgroup_parent."""
    parent = _existing(root / parent_path.lstrip("/"), parent_path)
    available = set((parent / "cgroup.controllers").read_text().split())
    if not available >= set(CONTROLLERS):
        raise SandboxError(
            f"cgroup_parent={parent_path!r}: {parent} offers controllers {sorted(available)}, "
            f"not all of {list(CONTROLLERS)}: they are not delegated to it"
        )
    wanted = " ".join(f"+{c}" for c in CONTROLLERS)
    leaf = _make(parent / SERVER_LEAF)
    for _ in range(attempts):
        for pid in (parent / "cgroup.procs").read_text().split():
            try:
                with open(leaf / "cgroup.procs", "w") as f:
                    f.write(pid)
            except ProcessLookupError:
                pass  # exited meanwhile
            except OSError as exc:
                raise SandboxError(
                    f"cgroup_parent={parent_path!r}: cannot move process {pid} from {parent} "
                    f"to {leaf}: {exc.strerror}"
                ) from None
        try:
            _write(parent / "cgroup.subtree_control", wanted)
            return parent
        except SandboxError as exc:  # a process joined in between (an exec): move it too
            last = exc
            time.sleep(0.01)
    raise SandboxError(f"cgroup_parent={parent_path!r}: {last}")


def _keyed(text: str) -> dict[str, int]:
    values = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            values[key] = int(value)
    return values


def _existing(path: Path, parent: str | None) -> Path:
    """`path` if it is a cgroup directory; a configured parent that is not one is named."""
    if not (path / "cgroup.procs").is_file():
        where = f"cgroup_parent={parent!r}: " if parent is not None else ""
        raise SandboxError(f"{where}{path} is not a cgroup directory")
    return path


def _make(path: Path) -> Path:
    try:
        path.mkdir(exist_ok=True)
    except OSError as exc:
        raise SandboxError(f"cannot create cgroup {path}: {exc.strerror}") from None
    return path


def _write(path: Path, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        raise SandboxError(f"cannot write {value!r} to {path}: {exc.strerror}") from None


def _remove(path: Path, timeout_s: float = 2.0) -> None:
    """rmdir, retried while the last processes finish exiting."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                return  # left for the next sweep, which removes it once empty
            time.sleep(0.01)


def slot_name(number: int) -> str:
    return f"{PREFIX}{_pid_namespace()}-{os.getpid()}-{number}"


def _pid_namespace() -> int:
    return os.stat("/proc/self/ns/pid").st_ino


def _sweep_stale(parent: Path) -> None:
    """Removes slot cgroups left by processes of this pid namespace that died without
    cleaning up."""
    pattern = re.compile(re.escape(f"{PREFIX}{_pid_namespace()}-") + r"(\d+)-\d+")
    with contextlib.suppress(OSError):
        for entry in parent.iterdir():
            match = pattern.fullmatch(entry.name)
            if match and not Path(f"/proc/{match.group(1)}").exists():
                with contextlib.suppress(OSError):
                    entry.rmdir()
