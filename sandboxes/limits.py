"""What a sandboxed run is given and what it gives back: Limits, Program, RunResult, Outcome.

Plain data, no I/O. `Outcome` separates the program's fault (a runtime error, a time, memory
or output limit) from the infrastructure's (`SANDBOX_ERROR`: the run could not be set up or
supervised, so it says nothing about the program).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

WORK_DIR = "/work"  # the program's working directory inside the sandbox (a fresh tmpfs)


class Outcome(enum.Enum):
    OK = "ok"  # exited with status 0
    RUNTIME_ERROR = "runtime_error"  # non-zero exit status or killed by a signal
    TIME_LIMIT = "time_limit"  # CPU limit (RLIMIT_CPU) or wall-clock limit
    MEMORY_LIMIT = "memory_limit"  # killed by the memory cgroup's OOM killer
    OUTPUT_LIMIT = "output_limit"  # stdout/stderr cap, or the file-size limit (SIGXFSZ)
    SANDBOX_ERROR = "sandbox_error"  # isolation could not be set up or the slot died


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits of one run. All are enforced by the kernel or from outside the sandbox."""

    cpu_s: float = 2.0
    """CPU seconds of the main process (RLIMIT_CPU; SIGXCPU, then SIGKILL one second later)."""
    wall_s: float = 5.0
    """Wall-clock seconds from start; past it the zygote kills every process of the run."""
    memory_mb: int = 512
    """Memory of the whole run (memory cgroup: heap, stacks, tmpfs files, page cache)."""
    address_space_mb: int | None = None
    """RLIMIT_AS per process; None for none (Node and other runtimes reserve huge ranges)."""
    processes: int = 64
    """Processes and threads of the run together (pids cgroup and RLIMIT_NPROC)."""
    file_size_mb: int = 64
    """Largest file the run may write (RLIMIT_FSIZE; SIGXFSZ past it)."""
    open_files: int = 256
    """Open file descriptors per process (RLIMIT_NOFILE)."""
    stack_mb: int = 64
    """Stack size of the main thread (RLIMIT_STACK)."""
    tmpfs_mb: int = 64
    """Size of each fresh tmpfs: /work, /tmp and /dev/shm (also counted as memory)."""
    tmpfs_inodes: int = 4096
    """Files and directories in each tmpfs."""
    stdout_bytes: int = 4 << 20
    """Past this much stdout the run is killed with OUTPUT_LIMIT."""
    stderr_bytes: int = 1 << 20
    """Past this much stderr the run is killed with OUTPUT_LIMIT."""
    artifact_bytes: int = 64 << 20
    """Largest collected file (Program.collect); past it the run is OUTPUT_LIMIT."""
    cpus: float = 1.0
    """CPU bandwidth of the slot (cgroup quota), so a multi-threaded burn cannot take the host."""

    def __post_init__(self) -> None:
        for name in ("cpu_s", "wall_s", "cpus"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"Limits.{name} must be a positive number, got {value!r}")
        for name in (
            "memory_mb", "processes", "file_size_mb", "open_files", "stack_mb", "tmpfs_mb",
            "tmpfs_inodes", "stdout_bytes", "stderr_bytes", "artifact_bytes",
        ):  # fmt: skip
            value = getattr(self, name)
            if not (isinstance(value, int) and value > 0):
                raise ValueError(f"Limits.{name} must be a positive integer, got {value!r}")
        if self.address_space_mb is not None and self.address_space_mb <= 0:
            raise ValueError("Limits.address_space_mb must be positive or None")
        if self.open_files < 16:
            raise ValueError("Limits.open_files must be at least 16")


Runner = Literal["exec", "python"]


@dataclass(frozen=True, slots=True)
class Program:
    """What to run. Paths are inside the sandbox; `files` are written to /work first.

    runner="exec": execve(argv[0], argv). runner="python": argv[0] is a Python script that the
    slot's warm interpreter (the system's /usr/bin/python3, started with -I -S -X utf8) runs
    in a forked child, as `python3 script args` would, without paying interpreter start-up.
    """

    argv: tuple[str, ...]
    files: Mapping[str, bytes] = field(default_factory=dict)
    stdin: bytes = b""
    env: Mapping[str, str] = field(default_factory=dict)
    runner: Runner = "exec"
    collect: str | None = None
    """A file under /work to return as RunResult.artifact when the command exits 0 (a
    compiler's output): it travels over a pipe, the host never touches the sandbox's files."""
    toolchain: bool = False
    """A trusted compiler on untrusted input: it runs under the base seccomp filter, which
    lets it make pipes and sockets and call sysinfo (g++ needs them). Every other run is a
    program run, under `seccomp.program_filter` and the pipe budget. Never set it for code
    whose behaviour the untrusted input chooses."""

    def __post_init__(self) -> None:
        if not self.argv or not all(isinstance(a, str) and "\0" not in a for a in self.argv):
            raise ValueError("Program.argv must be a non-empty sequence of strings without NUL")
        if self.runner not in ("exec", "python"):
            raise ValueError(f"Program.runner must be 'exec' or 'python', got {self.runner!r}")
        for name in [*self.files, *([self.collect] if self.collect else [])]:
            if not _is_plain_name(name):
                raise ValueError(f"file name {name!r} must be a plain name without '/'")
        for key, value in self.env.items():
            if "=" in key or "\0" in key or "\0" in value:
                raise ValueError(f"environment variable {key!r} is malformed")


def _is_plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name


@dataclass(frozen=True, slots=True)
class RunResult:
    outcome: Outcome
    exit_code: int | None = None  # the main process's exit status, if it exited
    signal: int | None = None  # the signal that killed the main process, if any
    stdout: bytes = b""
    stderr: bytes = b""
    wall_ms: float = 0.0
    cpu_ms: float = 0.0  # user + system time of the main process and the children it waited for
    memory_peak_kb: int | None = None  # the cgroup's peak during the run, above the slot's baseline
    artifact: bytes | None = None
    error: str = ""  # for SANDBOX_ERROR: what went wrong

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


class SandboxError(Exception):
    """The sandbox could not be set up (fails closed: nothing runs unsandboxed)."""
