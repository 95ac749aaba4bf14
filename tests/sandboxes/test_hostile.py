"""The adversarial suite: hostile programs, each with the safe outcome it must get, and after
each the host is checked: no process of the run left, no mount or file appeared, the slot
pool still runs a neighbour correctly (see conftest.assert_host_unaffected)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from sandbox_checks import HostState, assert_host_unaffected, python

from sandboxes import Limits, Outcome, Program, RunResult, SandboxPool
from sandboxes.pool import _PACKAGE_PARENT as PACKAGE_PARENT

pytestmark = pytest.mark.integration

HOST_SECRET = "host-secret-7f3a9c"
ENV_SECRET = "env-secret-51be02"
FAST = Limits(cpu_s=1, wall_s=2, memory_mb=128)


@dataclass
class Host:
    """What the test plants on the host for programs to reach for."""

    secret_path: str
    port: int
    listener: socket.socket
    sentinel: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    path = tmp_path_factory.mktemp("sandbox-host") / "secret.txt"
    path.write_text(HOST_SECRET)
    os.environ["VERIFIER_TEST_SECRET"] = ENV_SECRET
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    sentinel = subprocess.Popen(["sleep", "600"])
    yield Host(str(path), listener.getsockname()[1], listener, sentinel)
    sentinel.kill()
    sentinel.wait()
    listener.close()
    del os.environ["VERIFIER_TEST_SECRET"]


def syscall(number: int, *args: int) -> str:
    """A program that makes a raw system call and prints `result errno`."""
    return (
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        f"print(libc.syscall({number}, {', '.join(map(str, args)) or '0'}), ctypes.get_errno())"
    )


def denied(result: RunResult) -> bool:
    return result.outcome is Outcome.OK and result.stdout.split() == [b"-1", b"1"]  # EPERM


@dataclass
class Case:
    id: str
    source: str | Callable[[Host], str]
    check: Callable[[RunResult, Host], bool]
    limits: Limits = field(default_factory=lambda: FAST)
    language: str = "python"


def outcome(*expected: Outcome) -> Callable[[RunResult, Host], bool]:
    return lambda result, host: result.outcome in expected


def prints(expected: bytes) -> Callable[[RunResult, Host], bool]:
    return lambda result, host: result.outcome is Outcome.OK and result.stdout == expected


CASES = [
    # --- processes
    Case("fork_bomb", "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass",
         outcome(Outcome.TIME_LIMIT, Outcome.RUNTIME_ERROR)),
    Case("thread_bomb", "import threading, time\nwhile True:\n    try: threading.Thread("
         "target=time.sleep, args=(100,)).start()\n    except RuntimeError: pass",
         outcome(Outcome.TIME_LIMIT, Outcome.RUNTIME_ERROR)),
    Case("fork_bomb_bounded", "import os\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:"
         "\n            import time; time.sleep(30)\n        n += 1\nexcept OSError:\n    print(n)",
         lambda r, h: r.outcome is Outcome.OK and int(r.stdout) < 64),
    Case("daemon_outlives_run", "import os, sys, time\nif os.fork() == 0:\n    os.setsid()\n"
         "    if os.fork() == 0:\n        time.sleep(1.5); print('late'); sys.stdout.flush()\n"
         "    os._exit(0)\nprint('parent done')",
         lambda r, h: r.stdout == b"parent done\n" and r.wall_ms < 1000),
    Case("kill_parent", "import os\nfor pid in (os.getppid(), 1):\n    try: os.kill(pid, 9)\n"
         "    except OSError as e: print(e.errno)", prints(b"1\n1\n")),
    Case("own_pid_namespace", "import os\nprint(os.getpid(), os.getppid(), os.listdir('/proc'))",
         prints(b"2 1 []\n")),  # its init and itself; a program has no /proc (test_counters.py)
    Case("kill_minus_one", "import os\nos.kill(-1, 9)", outcome(Outcome.RUNTIME_ERROR)),
    Case("kill_host_pid", lambda h: f"import os\ntry: os.kill({h.sentinel.pid}, 9)\n"
         "except OSError as e: print(e.errno)",
         lambda r, h: r.stdout == b"3\n" and h.sentinel.poll() is None),  # ESRCH
    # --- memory
    Case("heap_bomb", "a = []\nwhile True: a.append(b'x' * 10**7)", outcome(Outcome.MEMORY_LIMIT)),
    Case("huge_allocation_untouched", "b = bytearray(10**10)\nprint(len(b) > 0)",
         outcome(Outcome.OK, Outcome.RUNTIME_ERROR, Outcome.MEMORY_LIMIT)),
    Case("tmpfs_bomb", "i = 0\nwhile True: open(f'/tmp/{i}', 'wb').write(b'x' * 2**24); i += 1",
         outcome(Outcome.MEMORY_LIMIT), Limits(cpu_s=2, wall_s=4, memory_mb=128, tmpfs_mb=512)),
    Case("dev_shm_bomb", "i = 0\nwhile True: open(f'/dev/shm/{i}', 'wb').write(b'x' * 2**24)"
         "; i += 1",
         outcome(Outcome.MEMORY_LIMIT), Limits(cpu_s=2, wall_s=4, memory_mb=128, tmpfs_mb=512)),
    Case("tmpfs_full", "import os\nn = 0\ntry:\n    with open('/work/f', 'wb') as f:\n"
         "        while True: f.write(b'x' * 2**20); f.flush(); n += 1\nexcept OSError as e:\n"
         "    print(e.errno, n <= 16)", prints(b"28 True\n"),
         Limits(cpu_s=2, wall_s=4, tmpfs_mb=16, file_size_mb=64)),
    # --- time
    Case("cpu_loop", "while True: pass", outcome(Outcome.TIME_LIMIT)),
    Case("sleep_past_wall", "import time\ntime.sleep(30)", outcome(Outcome.TIME_LIMIT)),
    Case("stdin_read_gets_eof", "import sys\nprint(len(sys.stdin.read()))", prints(b"0\n")),
    Case("ignore_sigterm_and_spin", "import signal\nsignal.signal(signal.SIGTERM, "
         "signal.SIG_IGN)\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True: pass",
         outcome(Outcome.TIME_LIMIT)),
    Case("multithreaded_burn", "#include <thread>\n#include <vector>\nint main(){std::vector<"
         "std::thread> t; for(int i=0;i<8;i++) t.emplace_back([]{volatile long x=0; for(;;) x++;});"
         " for(auto&x:t) x.join();}",
         lambda r, h: r.outcome is Outcome.TIME_LIMIT and r.cpu_ms < 2 * r.wall_ms,
         Limits(cpu_s=1, wall_s=2, memory_mb=256), "cpp"),
    # --- files and output
    Case("huge_file", "with open('/work/big', 'wb') as f:\n    while True: f.write(b'x' * 2**20)",
         outcome(Outcome.RUNTIME_ERROR, Outcome.OUTPUT_LIMIT),
         Limits(cpu_s=2, wall_s=4, file_size_mb=8, tmpfs_mb=64)),
    Case("huge_file_cpp", "#include <cstdio>\nint main(){FILE*f=fopen(\"/work/big\",\"wb\");"
         "static char b[1<<20]; for(;;) fwrite(b,1,sizeof b,f);}", outcome(Outcome.OUTPUT_LIMIT),
         Limits(cpu_s=2, wall_s=4, file_size_mb=8, tmpfs_mb=64), "cpp"),
    Case("million_files", "import os\nn = 0\ntry:\n    while n < 10**6:\n        open(f'/tmp/{n}',"
         " 'w').close(); n += 1\nexcept OSError as e:\n    print(e.errno, n < 5000)",
         prints(b"28 True\n"), Limits(cpu_s=3, wall_s=6)),
    Case("gigabytes_of_stdout", "import sys\nwhile True: sys.stdout.write('x' * 65536)",
         lambda r, h: r.outcome is Outcome.OUTPUT_LIMIT and len(r.stdout) == FAST.stdout_bytes),
    Case("gigabytes_of_stderr", "import os\nwhile True: os.write(2, b'e' * 65536)",
         lambda r, h: r.outcome is Outcome.OUTPUT_LIMIT and len(r.stderr) == FAST.stderr_bytes),
    Case("binary_output", "import os\nos.write(1, bytes(range(256)) + b'\\xff\\xfe\\x00')",
         prints(bytes(range(256)) + b"\xff\xfe\x00")),
    Case("write_to_usr", "try: open('/usr/pwned', 'w')\nexcept OSError as e: print(e.errno)",
         prints(b"30\n")),  # EROFS
    Case("write_to_root", "try: open('/pwned', 'w')\nexcept OSError as e: print(e.errno)",
         prints(b"30\n")),
    # --- host files and secrets
    Case("read_host_secret", lambda h: f"try: print(open({h.secret_path!r}).read())\n"
         "except OSError as e: print(e.errno)", prints(b"2\n")),
    Case("read_etc_shadow", "try: print(open('/etc/shadow').read())\nexcept OSError as e: "
         "print(e.errno)", prints(b"2\n")),
    Case("read_proc_1_environ", "try: print(open('/proc/1/environ', 'rb').read())\n"
         "except OSError as e: print(e.errno)", prints(b"2\n")),  # no /proc at all
    Case("scan_all_environs", "import os\nfor p in os.listdir('/proc'):\n    try: print(open(f"
         "'/proc/{p}/environ','rb').read())\n    except OSError: pass",
         lambda r, h: ENV_SECRET.encode() not in r.stdout and b"VERIFIER" not in r.stdout),
    Case("own_environment", "import os\nprint(sorted(os.environ))",
         prints(b"['HOME', 'LANG', 'PATH', 'TMPDIR']\n")),
    Case("proc_1_cmdline_has_no_host_details", "import os\nfor p in os.listdir('/proc'):\n"
         "    try: print(open(f'/proc/{p}/cmdline', 'rb').read())\n    except OSError: pass",
         lambda r, h: r.outcome is Outcome.OK and PACKAGE_PARENT.encode() not in r.stdout
         and b"host_pid" not in r.stdout and str(os.getpid()).encode() not in r.stdout),
    Case("no_usr_local", "import os\nprint(os.path.exists('/usr/local'), "
         "os.path.exists('/usr/local/etc'), os.path.exists('/usr/src'), "
         "os.path.exists('/usr/bin/python3'))", prints(b"False False False True\n")),
    Case("no_sys_no_host_root", "import os\nprint(os.path.exists('/sys'), os.path.exists('/root'),"
         " os.path.exists('/home'))", prints(b"False False False\n")),
    # --- network
    # Every socket call fails with EPERM in a program run: each new socket takes a number from
    # the host-wide inode counter a later run can read (tests/sandboxes/test_counters.py).
    Case("connect_host_loopback", lambda h: f"import socket\ntry: socket.create_connection("
         f"('127.0.0.1', {h.port}), timeout=1)\nexcept OSError as e: print(e.errno)",
         lambda r, h: r.stdout == b"1\n" and _no_connection(h)),
    Case("af_vsock", "import socket\ntry: socket.socket(40, socket.SOCK_STREAM)\n"
         "except OSError as e: print(e.errno)", prints(b"1\n")),
    Case("af_netlink", "import socket\ntry: socket.socket(16, socket.SOCK_RAW, 0)\n"
         "except OSError as e: print(e.errno)", prints(b"1\n")),
    Case("af_packet", "import socket\ntry: socket.socket(17, socket.SOCK_RAW, 0)\n"
         "except OSError as e: print(e.errno)", prints(b"1\n")),
    Case("socketpair_vsock", "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
         "fds = (ctypes.c_int * 2)()\nprint(libc.socketpair(40, 1, 0, fds), ctypes.get_errno())",
         prints(b"-1 1\n")),
    Case("af_unix_and_inet_denied_too", "import socket\nfor make in (socket.socketpair, "
         "socket.socket, lambda: socket.socket(socket.AF_INET6)):\n    try: make()\n"
         "    except OSError as e: print(e.errno)", prints(b"1\n1\n1\n")),
    Case("connect_outside", "import socket\ntry: socket.create_connection(('1.1.1.1', 53), "
         "timeout=1)\nexcept OSError as e: print(e.errno)", prints(b"1\n")),
    # --- privileges and system calls
    Case("raise_rlimits", "import resource\ntry: resource.setrlimit(resource.RLIMIT_NPROC, "
         "(10**6, 10**6))\nexcept (ValueError, OSError) as e: print('denied')",
         prints(b"denied\n")),
    Case("setuid_root", "import os\ntry: os.setuid(0)\nexcept OSError as e: print(e.errno)",
         prints(b"1\n")),
    Case("ctypes_unshare", syscall(272, 0x10000000), lambda r, h: denied(r)),
    Case("ctypes_mount", "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nprint("
         "libc.mount(b'none', b'/tmp', b'tmpfs', 0, None), ctypes.get_errno())",
         lambda r, h: denied(r)),
    Case("clone_new_user", syscall(56, 0x10000000 | 17, 0, 0, 0, 0), lambda r, h: denied(r)),
    Case("ptrace_attach", syscall(101, 16, 1, 0, 0), lambda r, h: denied(r)),  # PTRACE_ATTACH
    Case("process_vm_readv", syscall(310, 1, 0, 0, 0, 0, 0), lambda r, h: denied(r)),
    Case("keyctl", syscall(250, 0), lambda r, h: denied(r)),
    Case("bpf", syscall(321, 0, 0, 0), lambda r, h: denied(r)),
    Case("perf_event_open", syscall(298, 0, 0, -1, -1, 0), lambda r, h: denied(r)),
    Case("userfaultfd", syscall(323, 0), lambda r, h: denied(r)),
    Case("io_uring_setup", syscall(425, 8, 0), lambda r, h: denied(r)),
    Case("setns", syscall(308, 0, 0), lambda r, h: denied(r)),
    Case("tiocsti", "import fcntl\ntry: fcntl.ioctl(0, 0x5412, b'x')\nexcept OSError as e: "
         "print(-1, e.errno)", lambda r, h: denied(r)),
    Case("x32_abi_killed", syscall(0x40000000 + 39), outcome(Outcome.RUNTIME_ERROR)),
    Case("chroot", "import os\ntry: os.chroot('/tmp')\nexcept OSError as e: print(e.errno)",
         prints(b"1\n")),
    Case("sethostname", "import socket\ntry: socket.sethostname('x')\nexcept OSError as e: "
         "print(e.errno)", prints(b"1\n")),
    Case("mknod_device", "import os\ntry: os.mknod('/tmp/sda', 0o600 | 0o60000, os.makedev(8, 0))"
         "\nexcept OSError as e: print(e.errno)", prints(b"1\n")),
    # --- other languages
    Case("node_cpu_loop", "while (true) {}", outcome(Outcome.TIME_LIMIT),
         Limits(cpu_s=1, wall_s=3, memory_mb=256), "javascript"),
    Case("node_read_shadow", "try { require('fs').readFileSync('/etc/shadow') } catch (e) "
         "{ console.log(e.code) }", prints(b"ENOENT\n"), Limits(cpu_s=2, wall_s=4, memory_mb=256),
         "javascript"),
]  # fmt: skip


def _no_connection(host: Host) -> bool:
    try:
        host.listener.accept()
    except BlockingIOError:
        return True
    return False


def program_for(case: Case, host: Host, pool: SandboxPool) -> Program:
    from sandboxes.languages import CompileLimits, get_language

    source = case.source(host) if callable(case.source) else case.source
    language = get_language(case.language)
    compile_program = language.compile_program(source)
    artifact = None
    if compile_program is not None and case.language != "python":
        compiled = pool.run(compile_program, CompileLimits().limits())
        assert compiled.outcome is Outcome.OK, compiled.stderr
        artifact = compiled.artifact
    return language.run_program(source, artifact, b"")


def test_the_suite_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_program(case: Case, host: Host, pool: SandboxPool) -> None:
    program = program_for(case, host, pool)
    before = HostState.now()
    result = pool.run(program, case.limits)
    assert case.check(result, host), result
    time.sleep(0.05) if case.id == "daemon_outlives_run" else None
    assert_host_unaffected(pool, before)


def test_no_file_survives_into_the_next_run() -> None:
    with SandboxPool(slots=1) as pool:
        planted = pool.run(
            python(
                "import os\nfor p in ('/work/leak', '/tmp/leak', '/dev/shm/leak'):\n"
                "    open(p, 'w').write('x')\nprint(sorted(os.listdir('/work')))"
            )
        )
        assert planted.stdout == b"['leak', 'main.py']\n"
        probe = pool.run(
            python(
                "import os\nprint(os.listdir('/work'), os.listdir('/tmp'), os.listdir('/dev/shm'))"
            )
        )
        assert probe.stdout == b"['main.py'] [] []\n"


def test_collect_refuses_a_planted_symlink(pool: SandboxPool) -> None:
    """A compile step that leaves its output as a symlink to a file it cannot read itself
    gets nothing back: the file is opened inside the sandbox with O_NOFOLLOW."""
    program = Program(
        ("/usr/bin/python3", "-c", "import os; os.symlink('/etc/passwd', '/work/a.out')"),
        collect="a.out",
    )
    before = HostState.now()
    result = pool.run(program, FAST)
    assert result.outcome is Outcome.RUNTIME_ERROR and result.artifact is None
    assert b"cannot collect" in result.stderr
    assert_host_unaffected(pool, before)


def test_hundred_concurrent_runs_do_not_cross_talk(pool: SandboxPool) -> None:
    source = (
        "import os, sys\nn = sys.stdin.read()\nassert os.listdir('/tmp') == []\n"
        "open(f'/tmp/{n}', 'w').write(n)\nprint(n, open(f'/tmp/{n}').read(), os.listdir('/tmp'))"
    )
    jobs = [(python(source, stdin=str(i).encode()), FAST) for i in range(100)]
    before = HostState.now()
    results = pool.run_many(jobs)
    for i, result in enumerate(results):
        assert result.stdout == f"{i} {i} ['{i}']\n".encode(), (i, result)
    assert_host_unaffected(pool, before)


# ---- nothing of one run reaches the next


def test_sysv_ipc_does_not_outlive_its_run() -> None:
    """A semaphore and a message queue left by one run: gone for the next run of the same
    slot (each run has its own IPC namespace). Shared memory is refused outright (EPERM): a
    segment is a file on the host-wide internal shmem mount, whose inode counter later runs
    could read (test_counters.py); it used to outlive the run and be charged to the slot."""
    with SandboxPool(slots=1) as pool:
        leave = pool.run(python(_SYSV + "shm = libc.shmget(0x5EC, 64 << 20, 0o1666)\n"
                                "print(shm, ctypes.get_errno(), "
                                "libc.semget(0x5ED, 1, 0o1666) >= 0, "
                                "libc.msgget(0x5EE, 0o1666) >= 0)"))  # fmt: skip
        assert leave.stdout == b"-1 1 True True\n", leave
        probe = pool.run(python(_SYSV + "print(libc.shmget(0x5EC, 0, 0), libc.semget(0x5ED, 0, 0),"
                                " libc.msgget(0x5EE, 0))"))  # fmt: skip
        assert probe.stdout == b"-1 -1 -1\n", probe  # EPERM, then ENOENT for each


_SYSV = (
    "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    "libc.shmat.restype = ctypes.c_void_p\n"
)


def test_the_zygote_never_holds_a_runs_request() -> None:
    """A run's files and stdin go to the forked run, not through the zygote that later runs
    are forked from: its memory, read from the host, holds no trace of them."""
    marker = os.urandom(12).hex()
    with SandboxPool(slots=1) as pool:
        result = pool.run(
            Program(("/work/main.py",), files={"main.py": f"x = '{marker}'\n".encode(),
                                              "data.txt": marker.encode() * 1000},
                    stdin=marker.encode() * 100, runner="python")
        )  # fmt: skip
        assert result.outcome is Outcome.OK, result
        zygote = pool.slots[0].zygote_pid
        assert zygote is not None
        assert _memory_contains(zygote, marker.encode()) == 0
        assert _memory_contains(zygote, b"sandboxes") > 0  # the scan does see the zygote's heap


def _memory_contains(pid: int, needle: bytes) -> int:
    hits = 0
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            addresses, perms = line.split()[:2]
            if not perms.startswith("r") or "[vvar]" in line or "[vsyscall]" in line:
                continue
            start, end = (int(x, 16) for x in addresses.split("-"))
            try:
                mem.seek(start)
                hits += mem.read(end - start).count(needle)
            except OSError:
                continue
    return hits


def test_the_pid_counter_is_no_channel_between_runs() -> None:
    """Each run has a fresh pid namespace: however many processes one run made, the next
    sees the same pids."""
    source = (
        "import os\nkids = [os.fork() for _ in range(int(input()))]\nif 0 in kids: os._exit(0)\n"
        "for k in kids: os.waitpid(k, 0)\nprint(os.getpid(), os.fork() or os._exit(0))"
    )
    with SandboxPool(slots=1) as pool:
        first = pool.run(python(source, stdin=b"0"))
        pool.run(python(source, stdin=b"5"))
        later = pool.run(python(source, stdin=b"0"))
    assert first.stdout == later.stdout == b"2 3\n", (first, later)


def test_a_slot_above_its_memory_baseline_is_recycled(monkeypatch: pytest.MonkeyPatch) -> None:
    """A slot whose memory did not come back to its baseline is replaced before the next
    run (here the baseline is lowered by hand: nothing a run leaves behind survives it)."""
    monkeypatch.setattr("sandboxes.pool._LEFTOVER_BYTES", 2 << 20)  # drift is under 1 MB
    with SandboxPool(slots=1) as pool:
        assert pool.run(python("print(1)")).stdout == b"1\n"
        slot = pool.slots[0]
        zygote, slot.baseline_retained_bytes = slot.zygote_pid, 0
        assert pool.run(python("print(2)")).stdout == b"2\n"
        assert pool.stats["slots_recycled"] == 1 and slot.zygote_pid != zygote
        assert pool.run(python("print(3)")).stdout == b"3\n"
        assert pool.stats["slots_recycled"] == 1  # the fresh slot is at its own baseline


def test_a_run_cannot_have_its_slot_recycled_at_will() -> None:
    """Negative dentries (400,000 lookups of missing files) are reclaimable kernel memory,
    not a leftover: counted, they had the slot recycled, an event later runs could see
    (a new hash seed, the inode numbers its start took)."""
    prefix = os.urandom(6).hex()  # names no earlier lookup left in the host's dentry cache
    looks_up = (
        f"import os\nfor i in range(400_000):\n    try: os.stat(f'/usr/lib/{prefix}{{i}}')\n"
        "    except OSError: pass\nprint('done')"
    )
    with SandboxPool(slots=1) as pool:
        assert pool.run(python(looks_up), Limits(cpu_s=30, wall_s=60)).stdout == b"done\n"
        assert pool.run(python("print(1)")).stdout == b"1\n"
        assert pool.stats["slots_recycled"] == 0, pool.stats
