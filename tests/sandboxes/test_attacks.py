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
import socket
listener = socket.socket()
listener.bind(('127.0.0.1', 40123))
listener.listen(1)
client = socket.create_connection(('127.0.0.1', 40123))
server, _ = listener.accept()
client.close(); server.close(); listener.close()
print(open('/proc/net/tcp').read().count(' 06 '))
"""
COUNTS_TIME_WAIT = "print(open('/proc/net/tcp').read().count(' 06 '))"


def test_socket_state_of_a_run_is_not_seen_by_the_next() -> None:
    """Each run has its own network namespace: a port left in TIME_WAIT (what a program used
    to tell the slot's later runs which of its answers passed) dies with the run."""
    with SandboxPool(slots=1) as pool:
        leaves = pool.run(_python(LEAVES_TIME_WAIT))
        assert leaves.stdout == b"1\n", leaves  # the writer sees its own
        later = pool.run(_python(COUNTS_TIME_WAIT))
        assert later.stdout == b"0\n", later


def _python(source: str) -> Program:
    return Program(("/work/main.py",), files={"main.py": source.encode()}, runner="python")
