"""Attacks on the sandbox found after issue 12, one property each."""

from __future__ import annotations

import pytest

from sandboxes import Limits, Outcome, Program, SandboxPool

pytestmark = pytest.mark.integration


def test_an_artifact_over_its_cap_is_output_limit_not_a_truncated_file(
    pool: SandboxPool,
) -> None:
    """It used to come back cut at the cap with outcome OK: a truncated binary."""
    program = Program(
        ("/usr/bin/python3", "-c", "open('/work/a.out', 'wb').write(b'x' * 200_000)"),
        collect="a.out",
    )
    result = pool.run(program, Limits(cpu_s=1, wall_s=3, artifact_bytes=100_000))
    assert result.outcome is Outcome.OUTPUT_LIMIT and result.artifact is None
    fits = pool.run(program, Limits(cpu_s=1, wall_s=3, artifact_bytes=200_000))
    assert fits.outcome is Outcome.OK and fits.artifact == b"x" * 200_000


LEAVES_TIME_WAIT = """
import os, socket
try:
    socket.socket().bind(('127.0.0.1', 40123))
except OSError as exc:
    print(exc.errno)
print(os.path.exists('/proc/self/net/tcp'))
"""


def test_socket_state_of_a_run_is_not_seen_by_the_next() -> None:
    """A program used to tell the slot's later runs which of its answers passed through ports
    it left in TIME_WAIT. Each run now has its own network namespace with loopback down, a
    program can make no socket and has no /proc/self/net to read one in."""
    with SandboxPool(slots=1) as pool:
        leaves = pool.run(_python(LEAVES_TIME_WAIT))
        assert leaves.stdout == b"1\nFalse\n", leaves  # EPERM: no socket in a program run


def _python(source: str) -> Program:
    return Program(("/work/main.py",), files={"main.py": source.encode()}, runner="python")


# Host-wide counters a run could move and a later run read: a channel between runs of the
# same item, as the TIME_WAIT ports above were. Each names its moving part in a comment.
HOST_WIDE = (
    "/proc/stat",  # processes (forks since boot), ctxt, intr, per-CPU times
    "/proc/meminfo", "/proc/vmstat", "/proc/zoneinfo", "/proc/buddyinfo", "/proc/slabinfo",
    "/proc/loadavg",  # the last pid and the running count
    "/proc/uptime", "/proc/diskstats", "/proc/interrupts", "/proc/softirqs", "/proc/schedstat",
    "/proc/pressure/cpu", "/proc/pressure/memory", "/proc/pressure/io", "/proc/locks",
    "/proc/sys/kernel/random/entropy_avail", "/proc/sys/kernel/random/boot_id",
    "/proc/sys/fs/file-nr", "/proc/sys/fs/inode-nr", "/proc/sys/fs/dentry-state",
    "/proc/sys/kernel/pid_max", "/proc/cpuinfo", "/proc/mounts", "/proc/net/tcp",
    "/proc/sysvipc/shm", "/sys/fs/cgroup", "/sys/devices/system/cpu/online",
    "/sys/kernel/mm/transparent_hugepage/enabled", "/sys/block",
)  # fmt: skip
READS_HOST_WIDE = f"""
import os
for path in {HOST_WIDE!r}:
    try:
        with open(path) as f:
            print(path, f.read()[:2000])
    except OSError as exc:
        print(path, type(exc).__name__)
print(sorted(n for n in os.listdir('/proc') if not n.isdigit()))
"""
# What a sender does to move them: forks, memory touched, files opened, CPU burnt.
MOVES_HOST_WIDE = """
import os, time
for _ in range(300):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
held = [open('/dev/null') for _ in range(200)]
block = bytearray(64 << 20)
end = time.monotonic() + 0.3
while time.monotonic() < end:
    pass
print('moved')
"""


def test_a_run_reads_no_host_wide_counter_in_proc_or_sys(pool: SandboxPool) -> None:
    """A program has no /proc (even lookups of /proc/self move a host-wide counter:
    test_counters.py) and no /sys. It used to read all of these."""
    result = pool.run(_python(READS_HOST_WIDE))
    lines = result.stdout.decode().splitlines()
    assert lines[:-1] == [f"{path} FileNotFoundError" for path in HOST_WIDE], result
    assert lines[-1] == "[]", result


def test_host_wide_counters_are_no_channel_between_runs() -> None:
    """A receiver reads every counter above before and after a sender on the same slot moved
    them (300 forks, 200 open files, 64 MB, 0.3 s of CPU): it reads the same both times.
    Through /proc/stat's fork count alone it used to see the 300 forks."""
    with SandboxPool(slots=1) as pool:
        before = pool.run(_python(READS_HOST_WIDE))
        sent = pool.run(_python(MOVES_HOST_WIDE), Limits(cpu_s=5, wall_s=10, memory_mb=256))
        assert sent.stdout == b"moved\n", sent
        after = pool.run(_python(READS_HOST_WIDE))
        assert before.outcome is Outcome.OK and before.stdout == after.stdout, (before, after)


RUNTIMES_WITHOUT_PROC = """
import multiprocessing, os, resource
with multiprocessing.Pool(2) as workers:
    squares = workers.map(abs, [-1, -2])
print(os.cpu_count() >= 1, len(os.sched_getaffinity(0)) >= 1, squares,
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0, os.path.exists('/dev/stdin'))
"""
NODE_WITHOUT_PROC = """
const os = require('os');
console.log(os.totalmem(), os.freemem(), os.availableParallelism() >= 1,
            os.cpus().length, os.loadavg());
"""


def test_runtimes_work_without_proc(pool: SandboxPool) -> None:
    """What Python and Node ask the system about: CPUs come from sched_getaffinity, the run's
    own figures from getrusage. Node's os.cpus() reads /proc/stat and /proc/cpuinfo: it is
    empty (os.availableParallelism() is the count). sysinfo(2) fails with EPERM, so Node's
    host memory and load read 0. multiprocessing.Pool fits in the pipe budget. /dev/stdin
    resolves: it links to the run's own /dev/fd/0 (sandboxes.stdio), not into /proc."""
    limits = Limits(cpu_s=5, wall_s=15, memory_mb=512)
    python = pool.run(_python(RUNTIMES_WITHOUT_PROC), limits)
    assert python.stdout == b"True True [1, 2] True True\n", python
    node = pool.run(
        Program(("/usr/bin/node", "/work/main.js"), files={"main.js": NODE_WITHOUT_PROC.encode()}),
        limits,
    )
    assert node.stdout == b"0 0 true 0 [ 0, 0, 0 ]\n", node


SENDS_ON_LOOPBACK = """
import os, socket
sent = 0
for family, address in ((socket.AF_INET, ('127.0.0.1', 5000)), (socket.AF_INET6, ('::1', 5000))):
    try:
        sender = socket.socket(family, socket.SOCK_DGRAM)
    except OSError:
        continue  # EPERM: a program run makes no socket
    for _ in range(20_000):
        try:
            sent += sender.sendto(b'x', address)
        except OSError:
            pass
print(sent, os.path.exists('/proc/self/net/softnet_stat'))
"""


def test_loopback_packets_are_no_channel_between_runs(pool: SandboxPool) -> None:
    """Loopback packets count in the host-wide per-CPU totals of /proc/self/net/softnet_stat,
    which every network namespace shows: with loopback up, a sender's 50,000 packets moved
    the next run's reading by exactly 50,000. A run's loopback is down, a program can make no
    socket to send with and has no /proc to read the totals in."""
    sent = pool.run(_python(SENDS_ON_LOOPBACK), Limits(cpu_s=5, wall_s=10))
    assert sent.stdout == b"0 False\n", sent
