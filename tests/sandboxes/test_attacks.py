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
