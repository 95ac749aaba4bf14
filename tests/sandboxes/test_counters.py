"""Host-wide kernel counters a program run could move and a later run read (issue 12).

Three such counters outlive a run on Linux 6.18, measured on this host:
- get_next_ino: the inode numbers of new pipes, sockets, memfd_secret files, AIO rings
  (io_setup), POSIX message queues, MAP_HUGETLB mappings (even failed ones) and of every
  /proc entry looked up for the first time; any pipe's inode shows it, stdin included;
- the internal shmem mount's inode numbers, taken by memfd_create, shmget and shared
  mappings of anonymous memory or of /dev/zero (fstat of a memfd, the inode column of maps);
- pidfs inode numbers, one per process or thread ever made on the host: a pidfd shows it.
A program run makes none of these (EPERM; it has no /proc and no /dev/zero), opens no
pidfd, gets EPERM from sysinfo, and makes at most PIPE_BUDGET pipes, topped up after the run
so that every run takes exactly PIPE_BUDGET inode numbers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator

import pytest

from sandboxes import Limits, Outcome, Program, SandboxPool
from sandboxes.pipe_budget import PIPE_BUDGET

pytestmark = pytest.mark.integration

ATTEMPTS = 50_000
# Raw calls through ctypes, as a program that wants the counter moved would make them.
SENDER = f"""
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
fds = (ctypes.c_int * 2)()
def pair(result):
    if result == 0:
        os.close(fds[0]); os.close(fds[1])
    return result
def one(result):
    if result >= 0:
        os.close(result)
    return result
def shm(result):
    if result >= 0:
        libc.shmctl(result, 0, None)  # IPC_RMID
    return result
def mapping(address, size=4096):
    if address not in (None, ctypes.c_void_p(-1).value):
        libc.munmap(ctypes.c_void_p(address), size)
        return 0
    return -1
context = ctypes.c_ulong(0)
def queue(result):
    if result >= 0:
        os.close(result)
        libc.syscall(241, b"q")  # mq_unlink: the next mq_open makes a new queue
    return result
def aio(result):
    if result == 0:
        libc.syscall(207, context)  # io_destroy
    context.value = 0  # io_setup wants a zeroed context
    return result
def dev_zero():
    try:
        fd = os.open("/dev/zero", os.O_RDONLY)  # its shared mapping is a new shmem file
    except OSError as exc:
        ctypes.set_errno(exc.errno)
        return -1
    try:
        return mapping(libc.mmap(None, 4096, 1, 0x01, fd, 0))
    finally:
        os.close(fd)
def proc_fd():
    fd = os.open("/dev/null", os.O_RDONLY)
    os.close(fd)
    try:
        os.stat(f"/proc/self/fd/{{fd}}")  # looked up closed, then open: a new proc inode
    except OSError:
        pass
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        os.stat(f"/proc/self/fd/{{fd}}")
        return 0
    except OSError as exc:
        ctypes.set_errno(exc.errno)
        return -1
    finally:
        os.close(fd)
calls = {{
    "pipe": lambda: pair(libc.pipe(fds)),
    "pipe2": lambda: pair(libc.pipe2(fds, os.O_CLOEXEC)),
    "socket": lambda: one(libc.socket(1, 1, 0)),  # AF_UNIX, SOCK_STREAM
    "socketpair": lambda: pair(libc.socketpair(1, 1, 0, fds)),
    "memfd_create": lambda: one(libc.memfd_create(b"x", 0)),
    "memfd_secret": lambda: one(libc.syscall(447, 0)),
    "shmget": lambda: shm(libc.shmget(0, 4096, 0o600)),  # IPC_PRIVATE
    "mmap_shared_anonymous": lambda: mapping(libc.mmap(None, 4096, 1, 0x01 | 0x20, -1, 0)),
    "mmap_hugetlb": lambda: mapping(libc.mmap(None, 2 << 20, 3, 0x22 | 0x40000, -1, 0), 2 << 20),
    "mq_open": lambda: queue(libc.syscall(240, b"q", os.O_CREAT | os.O_RDWR, 0o600, None)),
    "io_setup": lambda: aio(libc.syscall(206, 1, ctypes.byref(context))),
    "proc_fd_lookup": proc_fd,
    "dev_zero": dev_zero,
}}
made = {{}}
for name, call in calls.items():
    made[name] = [0, 0]
    for _ in range({ATTEMPTS}):
        if call() < 0:
            made[name][1] = ctypes.get_errno()
        else:
            made[name][0] += 1
print(json.dumps(made))
"""
LIMITS = Limits(cpu_s=30, wall_s=60, memory_mb=256)


def _python(source: str) -> Program:
    return Program(("/work/main.py",), files={"main.py": source.encode()}, runner="python")


def _pipe_inode() -> int:
    read_end, write_end = os.pipe()
    try:
        return os.fstat(read_end).st_ino
    finally:
        os.close(read_end)
        os.close(write_end)


def _memfd_inode() -> int:
    fd = os.memfd_create("probe")
    try:
        return os.fstat(fd).st_ino
    finally:
        os.close(fd)


def _host_wide(new_inode: Callable[[], int]) -> int:
    """The counter as the host sees it: the highest of 1,100 new inode numbers. Both counters
    hand out numbers in per-CPU batches of 1,024, so at least one came from the shared count
    rather than this CPU's cached batch."""
    return max(new_inode() for _ in range(1_100))


def test_a_run_cannot_move_the_inode_counters_a_later_run_reads() -> None:
    """50,000 tries of each call: every one but PIPE_BUDGET pipes fails with EPERM, and the
    host-wide counters move as little as between idle runs. Before, 100,000 pipes made by one
    run moved the next run's pipe inode by about 100,000."""
    with SandboxPool(slots=1) as pool:
        before = _host_wide(_pipe_inode), _host_wide(_memfd_inode)
        sent = pool.run(_python(SENDER), LIMITS)
        after = _host_wide(_pipe_inode), _host_wide(_memfd_inode)
    assert sent.outcome is Outcome.OK, sent
    made = json.loads(sent.stdout)
    assert made.pop("pipe") == [PIPE_BUDGET, 1], sent  # then EPERM
    assert made.pop("pipe2") == [0, 1], sent  # the budget is per run, for both calls
    assert made.pop("proc_fd_lookup") == [0, 2], sent  # ENOENT: a program has no /proc
    assert made.pop("dev_zero") == [0, 2], sent  # ENOENT: nor /dev/zero
    assert made == {name: [0, 1] for name in made}, sent
    # 1,100 of our own probes and a few batches of other processes' numbers; a sender that
    # got through would add 50,000 (each probe took one batch at most on either side)
    assert after[0] - before[0] < 25_000, (before, after)
    assert after[1] - before[1] < 25_000, (before, after)


@pytest.fixture
def one_cpu() -> Iterator[None]:
    """The test and the slot it starts on one CPU, so that all of them draw from one per-CPU
    batch of inode numbers and consecutive runs' stdin inodes differ by what came between."""
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, cpus)


# stdin is a file of the run's own /dev/fd now (sandboxes.stdio): a pipe of the budget shows
# the counter
PRINTS_PIPE_INODE = "import os, ctypes\nprint(os.fstat(os.pipe()[0]).st_ino)\n"
MAKES_PIPES = """
libc = ctypes.CDLL(None, use_errno=True)
fds = (ctypes.c_int * 2)()
for _ in range({}):
    if libc.pipe(fds) == 0:
        os.close(fds[0]); os.close(fds[1])
"""


@pytest.mark.usefixtures("one_cpu")
def test_every_program_run_takes_the_same_number_of_pipe_inodes() -> None:
    """A run that makes one pipe, one that makes its whole budget and one that tries 2,000:
    the next run's first pipe's inode is the same distance on. The minimum of five tries each, since
    other processes on the CPU can only add to a distance."""
    kinds = {"none": 0, "budget": PIPE_BUDGET, "over": 2_000}
    distances: dict[str, list[int]] = {kind: [] for kind in kinds}
    with SandboxPool(slots=1) as pool:
        for _ in range(5):
            for kind, pipes in kinds.items():
                first = pool.run(_python(PRINTS_PIPE_INODE + MAKES_PIPES.format(pipes)), LIMITS)
                second = pool.run(_python(PRINTS_PIPE_INODE), LIMITS)
                distances[kind].append(int(second.stdout) - int(first.stdout))
    assert len({min(found) for found in distances.values()}) == 1, distances


MAKES_TMPFS_FILES = """
import os
for directory in ('/tmp', '/work', '/dev/shm'):
    for n in range(100_000 if directory == '/tmp' else 10_000):
        os.close(os.open(f'{directory}/f', os.O_CREAT | os.O_WRONLY))
        os.unlink(f'{directory}/f')
print('made')
"""
PRINTS_TMPFS_INODES = """
import os
new = [os.fstat(os.open(f'{d}/probe', os.O_CREAT | os.O_WRONLY)).st_ino
       for d in ('/tmp', '/work', '/dev/shm')]
print(new, [os.fstat(fd).st_ino for fd in (0, 1, 2)])
"""


def test_a_runs_tmpfs_inode_numbers_start_over(pool: SandboxPool) -> None:
    """/work, /tmp, /dev/shm and /dev/fd (the run's streams) are tmpfs mounted fresh for each
    run, each numbering its inodes from its own counter: 120,000 files made and removed by one
    run leave the next run's new files and its streams with the numbers they had before."""
    before = pool.run(_python(PRINTS_TMPFS_INODES), LIMITS)
    assert pool.run(_python(MAKES_TMPFS_FILES), LIMITS).stdout == b"made\n"
    after = pool.run(_python(PRINTS_TMPFS_INODES), LIMITS)
    assert before.outcome is Outcome.OK and before.stdout == after.stdout, (before, after)


PIPE_BUDGET_EDGES = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
fds = (ctypes.c_int * 2)()
print(libc.pipe2(fds, os.O_EXCL), ctypes.get_errno())  # O_NOTIFICATION_PIPE: EINVAL, uncounted
print([os.pipe()[0] > 2 for _ in range({})])
try:
    os.pipe()
except OSError as exc:
    print(exc.errno)
"""


def test_a_run_gets_its_pipe_budget_and_then_eperm(pool: SandboxPool) -> None:
    """pipe2 flags the kernel would refuse before taking an inode number are refused by the
    zygote too (EINVAL) and do not count: else a run could end below its budget."""
    result = pool.run(_python(PIPE_BUDGET_EDGES.format(PIPE_BUDGET)))
    assert result.stdout == f"-1 22\n{[True] * PIPE_BUDGET}\n1\n".encode(), result


def test_a_compiler_is_not_held_to_the_budget(pool: SandboxPool) -> None:
    """A toolchain run (g++ -pipe makes six pipes, and more with -flto) runs under the base
    filter: pipes, sockets and sysinfo work."""
    source = (
        "import ctypes, os, socket\nprint(len([os.pipe() for _ in range(20)]), "
        "socket.socketpair()[0].family.name, "
        "ctypes.CDLL(None).sysinfo(ctypes.create_string_buffer(128)))"
    )
    program = Program(("/usr/bin/python3", "-c", source), toolchain=True)
    assert pool.run(program).stdout == b"20 AF_UNIX 0\n"


READS_PIDFS = """
import ctypes, os, signal
libc = ctypes.CDLL(None, use_errno=True)
try:
    os.pidfd_open(os.getpid())
except OSError as exc:
    print('pidfd_open', exc.errno)
pidfd = ctypes.c_int(-1)
child = libc.syscall(56, 0x1000 | signal.SIGCHLD, 0, ctypes.byref(pidfd), 0, 0)
if child == 0:
    os._exit(0)
print('clone_pidfd', child, ctypes.get_errno())
print('sysinfo', libc.sysinfo(ctypes.create_string_buffer(128)), ctypes.get_errno())
"""


def test_a_run_opens_no_pidfd_and_gets_no_sysinfo(pool: SandboxPool) -> None:
    """Every process and thread made on the host takes the next pidfs inode number, and a run
    cannot stop forking; so it may not open the pidfd that would show it. sysinfo(2) would
    show the host's free memory, load and process count."""
    result = pool.run(_python(READS_PIDFS))
    assert result.stdout == b"pidfd_open 1\nclone_pidfd -1 1\nsysinfo -1 1\n", result


NODE_SPAWNS = """
const child = require('child_process').spawnSync('/bin/true');
console.log(child.error ? child.error.code : child.status, require('os').freemem());
"""


def test_node_starts_within_the_budget_and_cannot_spawn_past_it(pool: SandboxPool) -> None:
    """Node's libuv makes four pipes at start-up; a child process needs more than are left."""
    program = Program(("/usr/bin/node", "/work/main.js"), files={"main.js": NODE_SPAWNS.encode()})
    result = pool.run(program, Limits(cpu_s=5, wall_s=15, memory_mb=512))
    assert result.outcome is Outcome.OK and result.stdout == b"EPERM 0\n", result
