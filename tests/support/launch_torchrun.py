"""`torchrun` for the tests that launch several processes: on timeout the whole launch is
stopped, its workers too. `subprocess.run(timeout=...)` SIGKILLs torchrun alone, and a hung
launch (the bug a multi-process test exists to catch) would leave its workers running,
holding their memory and ports, after the test has failed. torchrun starts each worker in
a session of its own, so only torchrun can stop them: SIGTERM, which it passes on."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

# torchrun gives a worker 30 s between its SIGTERM and a SIGKILL.
STOP_GRACE_S = 60.0


def torchrun(
    args: Sequence[str], *, nproc: int = 2, env: dict[str, str], cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    """`torchrun --standalone --nproc_per_node nproc ARGS`, its output captured. Raises
    `subprocess.TimeoutExpired` (with the output so far) after `timeout` seconds, once
    every process of the launch is gone."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    proc = subprocess.Popen(
        [*command, "--nproc_per_node", str(nproc), *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # torchrun terminates its workers, then exits
        try:
            out, err = proc.communicate(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        raise subprocess.TimeoutExpired(proc.args, timeout, output=out, stderr=err) from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
