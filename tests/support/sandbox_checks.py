"""Checks that a sandboxed run left the host alone, and a helper to build Python programs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sandboxes import Limits, Program, SandboxPool


def python(source: str, stdin: bytes = b"") -> Program:
    return Program(
        ("/work/main.py",), files={"main.py": source.encode()}, stdin=stdin, runner="python"
    )


def slot_uids(pool: SandboxPool) -> set[int]:
    """The outside uids runs of the pool's live slots have (a dead slot's processes died
    with its pid namespace)."""
    return {slot.claim.run for slot in pool.slots if slot.claim is not None}


def processes_of(uids: set[int]) -> list[int]:
    """Host pids whose real uid is one of `uids` (a run's processes, seen from outside)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        uid_line = next((line for line in status.splitlines() if line.startswith("Uid:")), "")
        if uid_line and int(uid_line.split()[1]) in uids:
            found.append(int(entry))
    return found


@dataclass
class HostState:
    mounts: str
    tmp_entries: set[str]
    shm_entries: set[str]

    @classmethod
    def now(cls) -> HostState:
        return cls(
            mounts=Path("/proc/self/mountinfo").read_text(),
            tmp_entries=set(os.listdir("/tmp")),
            shm_entries=set(os.listdir("/dev/shm")),
        )


def _foreign_owned(directory: str, names: set[str]) -> set[str]:
    owned = set()
    for name in names:
        try:
            if os.lstat(os.path.join(directory, name)).st_uid != os.getuid():
                owned.add(name)
        except FileNotFoundError:
            continue
    return owned


def assert_host_unaffected(pool: SandboxPool, before: HostState) -> None:
    """No process of a run survives, no mount or file appeared on the host, the pool works."""
    assert processes_of(slot_uids(pool)) == []
    after = HostState.now()
    assert after.mounts == before.mounts
    # Other processes on the machine may add entries meanwhile; a run's would be owned by one
    # of the sandbox's unprivileged uids, never by the uid running the tests.
    assert _foreign_owned("/dev/shm", after.shm_entries - before.shm_entries) == set()
    new_tmp = {name for name in after.tmp_entries - before.tmp_entries if "sandbox" in name}
    assert new_tmp == set()
    neighbour = pool.run(python("print(6 * 7)"), Limits())
    assert neighbour.stdout == b"42\n", neighbour
