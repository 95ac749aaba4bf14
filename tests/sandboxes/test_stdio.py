"""A run's standard streams as the program sees them (sandboxes.stdio): /dev/fd/0 a read-only
file holding its stdin, /dev/fd/1 and 2 FIFOs relayed to the host, /dev/stdin, /dev/stdout
and /dev/stderr links to them; a linked pair's runs keep the host's pipes."""

from __future__ import annotations

import pytest

from sandboxes import Limits, Outcome, Program, SandboxPool

pytestmark = pytest.mark.integration


def _python(source: str, stdin: bytes = b"") -> Program:
    return Program(("/work/main.py",), files={"main.py": source.encode()}, stdin=stdin,
                   runner="python")  # fmt: skip


STREAMS = """
import errno, os, stat
kinds = [stat.S_ISREG(os.fstat(0).st_mode), stat.S_ISFIFO(os.fstat(1).st_mode),
         stat.S_ISFIFO(os.fstat(2).st_mode)]
first = os.read(0, 3)
again = open('/dev/stdin').read(), open('/dev/fd/0').read()  # a file: read from the start
refused = []
for attempt in (lambda: open('/dev/stdin', 'a'), lambda: os.unlink('/dev/fd/1'),
                lambda: open('/dev/fd/3', 'w'), lambda: os.chmod('/dev/fd/0', 0o666)):
    try:
        attempt()
        refused.append(0)
    except OSError as exc:
        refused.append(errno.errorcode[exc.errno])
print(kinds, first, again, refused, end=' ', flush=True)
with open('/dev/stdout', 'w') as out:  # O_TRUNC means nothing on a FIFO: this appends
    out.write('appended')
with open('/dev/stderr', 'w') as err:
    err.write('to stderr')
"""


def test_streams_are_the_runs_own_files(pool: SandboxPool) -> None:
    result = pool.run(_python(STREAMS, stdin=b"abcdef"))
    assert result.outcome is Outcome.OK, result
    assert result.stdout == (
        b"[True, True, True] b'abc' ('abcdef', 'abcdef') "
        b"['EACCES', 'EACCES', 'EACCES', 'EPERM'] appended"
    ), result
    assert result.stderr == b"to stderr", result


def test_output_written_just_before_exit_arrives_whole(pool: SandboxPool) -> None:
    """What the FIFOs hold when the program ends is relayed before the run reports; a
    background process still holding stdout does not keep the run going."""
    source = (
        "import os, sys, time\nif os.fork() == 0:\n    time.sleep(30)\n"
        "sys.stdout.write('x' * (3 << 20))\nsys.stdout.flush()\nos._exit(0)"
    )
    result = pool.run(_python(source), Limits(wall_s=10))
    assert result.outcome is Outcome.OK and result.stdout == b"x" * (3 << 20), result.outcome
    assert result.wall_ms < 3000, result.wall_ms


def test_the_stdin_file_is_not_counted_as_the_programs_memory(pool: SandboxPool) -> None:
    """80 MB of stdin with a 64 MB memory limit: the file the run's init writes is added to the
    run's cgroup limit, so the program keeps its whole budget, as when stdin was a pipe."""
    source = "import sys\nprint(len(sys.stdin.buffer.read(5)))"
    result = pool.run(_python(source, stdin=b"1" * (80 << 20)), Limits(memory_mb=64))
    assert (result.outcome, result.stdout) == (Outcome.OK, b"5\n"), result


PAIR_SERVER = "import os\nprint(os.path.exists('/dev/stdin'), os.listdir('/dev/fd'), flush=True)"
PAIR_CLIENT = "import os, sys\nprint(sys.stdin.readline().strip(), os.path.exists('/dev/stdin'))"


def test_a_linked_pair_keeps_the_pipes_that_link_it(pool: SandboxPool) -> None:
    """The server's stdin and stdout are the pair's call and reply channels: no stream files,
    no /dev/stdin (the server's line, relayed by the client, says so)."""
    limits = Limits()
    [(_, client)] = pool.run_pairs([(_python(PAIR_SERVER), limits,
                                     _python(PAIR_CLIENT), limits)])  # fmt: skip
    assert client.stdout == b"False [] False\n", client


REOPENS = """
import os, sys
os.close(1)
os.close(2)
with open('/dev/stdout', 'w') as out:  # what freopen does: close fd 1, then open the path
    out.write('reopened\\n')
print(os.path.exists('/dev/stderr'), file=open('/dev/stderr', 'w'))
"""


def test_closing_and_reopening_a_stream_neither_blocks_nor_loses_output(pool: SandboxPool) -> None:
    """With no descriptor of the program left on a FIFO, reopening it still finds a reader
    (the run's init holds both ends), so the open does not wait for one."""
    result = pool.run(_python(REOPENS), Limits(wall_s=3))
    assert (result.outcome, result.stdout, result.stderr) == (
        Outcome.OK, b"reopened\n", b"True\n"), result  # fmt: skip


ORPHANS = """
import os, time
for _ in range(200):
    if os.fork() == 0:
        if os.fork() == 0:
            os._exit(0)  # an orphan: the run's init reaps it
        os._exit(0)
    os.wait()
print('ok')
"""


def test_orphans_are_reaped_while_the_program_runs(pool: SandboxPool) -> None:
    """200 orphans with a 64-process limit: each is reaped as it ends, not when the program
    does (a zombie still counts)."""
    result = pool.run(_python(ORPHANS), Limits(wall_s=10, processes=64))
    assert (result.outcome, result.stdout) == (Outcome.OK, b"ok\n"), result


FLUSHES_LINES = """
import resource, sys
for i in range(100_000):
    sys.stdout.write(f'{i}\\n')
    sys.stdout.flush()
usage = resource.getrusage(resource.RUSAGE_SELF)
print((usage.ru_utime + usage.ru_stime) * 1000, file=sys.stderr)
"""


def test_relaying_the_output_is_not_the_programs_cpu_time(pool: SandboxPool) -> None:
    """100,000 flushed lines: the run's cpu_ms is what the program itself used (its own
    figure, plus its exit). A relay woken once a line took 200 ms of CPU more; it now pauses
    between rounds (about 10 ms in all) and that time is taken off the run's."""
    result = pool.run(_python(FLUSHES_LINES), Limits(cpu_s=10, wall_s=20))
    assert result.outcome is Outcome.OK and result.stdout.count(b"\n") == 100_000, result.outcome
    assert result.cpu_ms < float(result.stderr) + 40, (result.cpu_ms, result.stderr)
