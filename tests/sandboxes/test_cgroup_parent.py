"""A configured cgroup parent (SandboxConfig.cgroup_parent): slot cgroups are made under it
and limit runs there; a parent that cannot hold them is an error naming the key.

This machine mounts the memory, pids and cpu controllers on cgroup v1, so the real-kernel
case runs on v1: a subtree is made in each controller (under this process's memory cgroup,
so the machine's own limit still applies), a child server process moves itself into a leaf
of it, and its pool runs programs that break the memory and process limits. The v2 takeover
(moving the parent's processes to a leaf, then enabling controllers) runs against the kernel
on this machine's v2 hierarchy with hugetlb standing in for memory, pids and cpu (bound to
v1 here), and against a fake cgroupfs directory for the rest of the v2 path.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxes import SandboxConfig, SandboxError, SandboxPool, cgroups
from sandboxes.cgroups import ROOT, SERVER_LEAF, CgroupV2, delegate, detect, own_paths

REPO = Path(__file__).resolve().parents[2]
V1 = ("memory", "pids", "cpu")

CHILD = """
import json, os, sys
from pathlib import Path
from sandboxes import Limits, Program, SandboxConfig, SandboxPool

parent = sys.argv[1]
for controller in ("memory", "pids", "cpu"):  # the server leaves the parent for a leaf
    Path(f"/sys/fs/cgroup/{controller}{parent}/server/cgroup.procs").write_text(str(os.getpid()))
hog = "x = bytearray(200 << 20)\\nprint('allocated')\\n"
forks = (
    "import os, time\\nstarted = 0\\nfor _ in range(40):\\n    try:\\n"
    "        if os.fork() == 0:\\n            time.sleep(2); os._exit(0)\\n"
    "        started += 1\\n    except OSError:\\n        break\\nprint(started)\\n"
)
with SandboxPool(2, SandboxConfig(cgroup_parent=parent)) as pool:
    pool.start()
    slots = {c: sorted(p.name for p in Path(f"/sys/fs/cgroup/{c}{parent}").iterdir()
                       if p.name.startswith("verifier-rl-")) for c in ("memory", "pids", "cpu")}
    memory = pool.run(Program(("/work/m.py",), files={"m.py": hog.encode()}, runner="python"),
                      Limits(memory_mb=64))
    processes = pool.run(Program(("/usr/bin/python3", "/work/f.py"),
                                 files={"f.py": forks.encode()}), Limits(processes=8, wall_s=10))
    pids_max = sorted(Path(f"/sys/fs/cgroup/pids{parent}/{name}/pids.max").read_text().strip()
                      for name in slots["pids"])
print(json.dumps({
    "slots": slots, "memory": memory.outcome.value, "processes": processes.outcome.value,
    "started": processes.stdout.decode().strip(), "pids_max": pids_max,
    "left": sorted(p.name for p in Path(f"/sys/fs/cgroup/memory{parent}").iterdir()
                   if p.name.startswith("verifier-rl-")),
}))
"""


@pytest.fixture
def v1_parent() -> Iterator[str]:
    """A fresh cgroup path in the memory, pids and cpu v1 hierarchies, with a `server` leaf."""
    if detect() != "v1":
        pytest.fail("this test needs the v1 memory, pids and cpu hierarchies")
    own = own_paths(Path("/proc/self/cgroup").read_text())["memory"].rstrip("/")
    parent = f"{own}/verifier-rl-test-{os.getpid()}"
    made: list[Path] = []
    for controller in V1:
        for directory in (
            ROOT / controller / parent.lstrip("/"),
            ROOT / controller / parent.lstrip("/") / "server",
        ):
            for ancestor in [*reversed(directory.parents), directory]:
                if ancestor.is_relative_to(ROOT / controller) and not ancestor.exists():
                    ancestor.mkdir()
                    made.append(ancestor)
    yield parent
    for directory in reversed(made):
        directory.rmdir()


@pytest.mark.integration
def test_slot_cgroups_are_made_under_the_parent_and_limit_runs_there(v1_parent: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, v1_parent], capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert all(len(names) == 2 for names in result["slots"].values()), result
    assert result["memory"] == "memory_limit", result
    # 8 processes in all: the run's python and at most 7 children (the pids cgroup also
    # counts the slot's launcher, zygote and run init: 8 + 3)
    assert result["processes"] == "ok" and 0 < int(result["started"]) <= 7, result
    assert "11" in result["pids_max"], result  # the limit is set in the slot under the parent
    assert result["left"] == [], result  # removed with the pool


def test_a_parent_that_is_not_a_cgroup_names_the_key() -> None:
    with (
        pytest.raises(SandboxError, match="cgroup_parent='/no-such-cgroup-18'"),
        SandboxPool(1, SandboxConfig(cgroup_parent="/no-such-cgroup-18")) as pool,
    ):
        pool.start()


# ---- cgroup v2 takeover, against a fake cgroupfs


def fake_v2_parent(root: Path, controllers: str = "cpu memory pids io") -> Path:
    (root / "cgroup.controllers").write_text(controllers + "\n")
    parent = root / "pod"
    parent.mkdir()
    (parent / "cgroup.controllers").write_text(controllers + "\n")
    (parent / "cgroup.procs").write_text("1\n")
    (parent / "cgroup.subtree_control").write_text("")
    return parent


def test_v2_parent_processes_move_to_the_leaf_then_controllers_are_enabled(
    tmp_path: Path,
) -> None:
    parent = fake_v2_parent(tmp_path)
    assert delegate("/pod", tmp_path) == parent
    assert (parent / SERVER_LEAF / "cgroup.procs").read_text() == "1"  # pid 1 was moved
    assert (parent / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    (parent / "cgroup.subtree_control").write_text("memory pids cpu\n")  # as the kernel shows it
    cgroup = CgroupV2("verifier-rl-1-1-1", root=tmp_path, parent_path="/pod")
    assert cgroup.dir == parent / "verifier-rl-1-1-1"


def test_v2_parent_without_delegated_controllers_names_the_key(tmp_path: Path) -> None:
    fake_v2_parent(tmp_path, controllers="cpu io")
    with pytest.raises(SandboxError, match=r"cgroup_parent='/pod'.*not delegated"):
        delegate("/pod", tmp_path)


# ---- the cgroup v2 takeover against the kernel's own rule

UNIFIED = Path("/sys/fs/cgroup/unified")


@pytest.fixture
def v2_parent_with_a_process() -> Iterator[tuple[Path, int]]:
    """A cgroup in this machine's v2 hierarchy, with a process in it. Only hugetlb is on v2
    here (memory, pids and cpu are bound to v1), so it stands in for them: the kernel's
    no-internal-processes rule is the same for every domain controller. hugetlb is enabled
    at the hierarchy's root only for the test, when it was not."""
    if "hugetlb" not in (UNIFIED / "cgroup.controllers").read_text().split():
        pytest.fail("this test needs hugetlb on the v2 hierarchy at /sys/fs/cgroup/unified")
    enabled_here = "hugetlb" not in (UNIFIED / "cgroup.subtree_control").read_text().split()
    if enabled_here:
        (UNIFIED / "cgroup.subtree_control").write_text("+hugetlb")
    parent = UNIFIED / f"verifier-rl-test-{os.getpid()}"
    parent.mkdir()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (parent / "cgroup.procs").write_text(str(sleeper.pid))
        yield parent, sleeper.pid
    finally:
        sleeper.kill()
        sleeper.wait()
        for child in parent.iterdir():
            if child.is_dir():
                child.rmdir()
        parent.rmdir()
        if enabled_here:
            (UNIFIED / "cgroup.subtree_control").write_text("-hugetlb")


def test_v2_takeover_moves_the_parents_processes_so_the_kernel_enables_controllers(
    v2_parent_with_a_process: tuple[Path, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    parent, pid = v2_parent_with_a_process
    with pytest.raises(OSError) as refused:  # the rule: no controllers for a cgroup's children
        (parent / "cgroup.subtree_control").write_text("+hugetlb")  # while it holds a process
    assert refused.value.errno == errno.EBUSY
    monkeypatch.setattr(cgroups, "CONTROLLERS", ("hugetlb",))
    assert delegate(f"/{parent.name}", UNIFIED) == parent
    assert (parent / "cgroup.procs").read_text() == ""
    assert (parent / SERVER_LEAF / "cgroup.procs").read_text().split() == [str(pid)]
    assert (parent / "cgroup.subtree_control").read_text().split() == ["hugetlb"]
    slot = parent / "verifier-rl-slot"
    slot.mkdir()  # a slot's cgroup beside the leaf gets the controller's files
    assert any(name.name.startswith("hugetlb.") for name in slot.iterdir())
    assert delegate(f"/{parent.name}", UNIFIED) == parent  # again (another worker): no change
    (parent / "cgroup.subtree_control").write_text("-hugetlb")  # so the fixture can clean up
