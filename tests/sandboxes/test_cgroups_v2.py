"""cgroup v2 support, against a fake cgroupfs directory (a test double: this machine mounts
cgroup v1 controllers, so the real v2 path cannot run here; the v1 path runs in every
sandbox test)."""

from __future__ import annotations

from pathlib import Path

from sandboxes.cgroups import CgroupV2, detect


def fake_v2(root: Path) -> Path:
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    parent = root / "srv"
    parent.mkdir()
    (parent / "cgroup.subtree_control").write_text("memory pids cpu\n")
    return parent


def test_v2_limits_peak_and_oom_counter(tmp_path: Path) -> None:
    parent = fake_v2(tmp_path)
    assert detect(tmp_path) == "v2"
    (parent / "verifier-rl-1-1").mkdir()
    slot = parent / "verifier-rl-1-1"
    for name, text in {
        "memory.current": "10485760\n", "memory.stat": "anon 4194304\nfile 6291456\n",
        "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n", "memory.peak": "0\n",
    }.items():  # fmt: skip
        (slot / name).write_text(text)
    cgroup = CgroupV2("verifier-rl-1-1", root=tmp_path, proc_cgroup="0::/srv\n")
    cgroup.set_pids_max(66)
    cgroup.set_cpus(1.5)
    snapshot = cgroup.before_run(256 * 1024 * 1024)
    # limit = usage without page cache (10 MiB - 6 MiB) + 256 MiB
    assert (slot / "memory.max").read_text() == str(4194304 + 268435456)
    assert (slot / "pids.max").read_text() == "66"
    assert (slot / "cpu.max").read_text() == "150000 100000"
    (slot / "memory.peak").write_text("31457280\n")  # 30 MiB at the end of the run
    (slot / "memory.events").write_text("oom_kill 2\n")
    peak_kb, oom_killed = cgroup.after_run(snapshot)
    assert peak_kb == (31457280 - 10485760) // 1024  # 20 MiB above the usage at start
    assert oom_killed
