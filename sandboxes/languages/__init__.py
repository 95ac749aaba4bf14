"""How to compile and run a source file in each supported language.

A `Language` turns source text into Programs: an optional compile step (run in the sandbox
like anything else, with its own limits; its output travels back as an artifact) and a run
step. `LANGUAGES` maps names ("python", "cpp", "javascript") to them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from sandboxes.limits import Limits, Program


class Language(Protocol):
    name: str

    def compile_program(self, source: str) -> Program | None:
        """The compile step, or None when the language has none."""

    def run_program(self, source: str, artifact: bytes | None, stdin: bytes) -> Program:
        """Runs the program; `artifact` is what the compile step collected."""

    def run_limits(self, limits: Limits) -> Limits:
        """`limits` adjusted to what the runtime tolerates (e.g. no RLIMIT_AS for Node)."""


@dataclass(frozen=True)
class CompileLimits:
    """Limits of a compile step; independent of the per-test limits."""

    cpu_s: float = 10.0
    memory_mb: int = 1024

    def limits(self) -> Limits:
        return Limits(
            cpu_s=self.cpu_s,
            wall_s=self.cpu_s * 2 + 1,
            memory_mb=self.memory_mb,
            processes=32,
            file_size_mb=256,
            tmpfs_mb=512,
            # the artifact is written into each test run's /work (Limits.tmpfs_mb, 64 MB by
            # default): a larger one would fail every run's setup, a sandbox error
            artifact_bytes=32 << 20,
        )


def with_address_space(limits: Limits, headroom_mb: int = 1024) -> Limits:
    """RLIMIT_AS at the memory limit plus headroom for what runtimes map but never touch;
    the memory cgroup is the real bound, this one stops absurd reservations early."""
    return replace(limits, address_space_mb=limits.memory_mb + headroom_mb)


def get_language(name: str) -> Language:
    from sandboxes.languages.cpp import CPP
    from sandboxes.languages.javascript import JAVASCRIPT
    from sandboxes.languages.python import PYTHON

    languages: dict[str, Language] = {"python": PYTHON, "cpp": CPP, "javascript": JAVASCRIPT}
    return languages[name]


LANGUAGE_NAMES = ("python", "cpp", "javascript")
