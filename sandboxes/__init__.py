"""Isolated, resource-limited runs of untrusted programs on Linux, without Docker.

    from sandboxes import Limits, Program, SandboxPool

    with SandboxPool(slots=2) as pool:
        result = pool.run(Program(("/work/main.py",), files={"main.py": b"print(1)"},
                                  runner="python"), Limits(cpu_s=1, memory_mb=256))
        result.outcome, result.stdout

What every run gets (all layers on, failing closed: a layer that cannot be set up makes the
run a SANDBOX_ERROR, never an unsandboxed run):
- its slot's user, uts and cgroup namespaces, and its own pid, mount, System V IPC and
  network namespaces, no interface up, not even loopback (it sees no process, pid, shared
  memory or socket state of any other run, and sends no packet: loopback packets count in
  the host-wide /proc/self/net/softnet_stat);
- a fresh root: the host's /bin, /lib* and the /usr subtrees programs use (not /usr/local)
  read-only, fresh /dev (no /dev/zero), no /sys, no /proc in a program run (a compiler's
  run has one with only its pid directories, subset=pid), and fresh size-capped tmpfs on
  /work (the working directory), /tmp and /dev/shm; the environment reduced to PATH, HOME,
  TMPDIR, LANG plus what the Program sets;
- its stdin as a read-only file and its stdout and stderr as FIFOs on a fresh /dev/fd, which
  /dev/stdin, /dev/stdout and /dev/stderr link to, relayed to the host by the run's init
  (sandboxes.stdio; a linked pair's runs keep the host's pipes);
- an unprivileged outside uid per slot (so RLIMIT_NPROC counts), no capabilities, and
  no_new_privs;
- rlimits: CPU, file size, open files, stack, core 0, processes, and address space where the
  runtime allows;
- memory, pids and CPU-bandwidth cgroup limits (v1 or v2); memory-limit kills are told
  apart from other deaths by the cgroup's OOM counter;
- a seccomp deny-list (ptrace, process_vm_*, keyctl, bpf, perf_event_open, userfaultfd,
  io_uring, mount and namespace calls, TIOCSTI, module loading ...); a program run (not a
  compiler's, `Program.toolchain`) also gets EPERM from every call that moves a host-wide
  counter a later run could read (sockets, memfd, System V shared memory, shared anonymous
  and huge-page mappings, POSIX queues, AIO, memfd_secret), from pidfd_open and sysinfo,
  and may make PIPE_BUDGET pipes (sandboxes.pipe_budget); a compiler's run keeps an
  allow-list of socket families (AF_UNIX, AF_INET, AF_INET6);
- a wall-clock limit enforced by the slot's pid 1, which then kills every process of the
  run (daemons included), and caps on stdout and stderr enforced by the host.

Nothing of a run passes through the zygote that later runs are forked from: its request and
stdin arrive through pipes the forked run reads itself. `run_pairs` links two runs (on two
slots) by their stdin/stdout, for a program and a judge that must not share a process.

What it does not give: protection from kernel bugs in allowed system calls (this is not a
VM); hiding of the host's programs and libraries under /usr (readable);
determinism of timing on a loaded machine; freedom from timing channels to later runs (which
host files are in the page cache; when a run ends, which sets when the next one starts).
runner="python" runs share the zygote's hash seed
and already-imported standard modules, unlike separate interpreter starts. Needs root on the
host, user namespaces, and cgroup memory and pids controllers; x86-64 only.
"""

from sandboxes.limits import Limits, Outcome, Program, RunResult, SandboxError
from sandboxes.pool import SandboxConfig, SandboxPool

__all__ = [
    "Limits",
    "Outcome",
    "Program",
    "RunResult",
    "SandboxConfig",
    "SandboxError",
    "SandboxPool",
]
