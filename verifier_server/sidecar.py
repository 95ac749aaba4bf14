"""Starting a verifier-server as a child process (a sidecar) and learning its address.

Used by the trainer (a sidecar next to `rl-client train`), the demo, tests and benchmarks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

# Runs `verifier_server.cli` after asking Linux for SIGTERM when the parent dies
# (PR_SET_PDEATHSIG = 1); exits at once if the parent (argv[1]) is already gone.
_DIE_WITH_PARENT = """
import ctypes, os, runpy, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
sys.argv = ["verifier-server", *sys.argv[2:]]
runpy.run_module("verifier_server.cli", run_name="__main__", alter_sys=True)
"""


def start_server_process(
    args: Sequence[str],
    env: dict[str, str] | None = None,
    timeout_s: float = 60.0,
    stderr: Any = None,
    die_with_parent: bool = False,
) -> tuple[subprocess.Popen[str], str]:
    """Starts `verifier-server serve --port 0 ARGS`; returns the process and its address.

    `stderr` (a file, or None to inherit ours) receives the server's logs. `die_with_parent`:
    the server gets SIGTERM when the calling thread's process dies, even by SIGKILL (Linux
    PR_SET_PDEATHSIG), so a killed trainer leaves no sidecar behind."""
    # die_with_parent: the child sets PR_SET_PDEATHSIG itself, right after exec (a
    # preexec_fn would run between fork and exec, which is unsafe in a threaded parent).
    launcher = (
        ["-c", _DIE_WITH_PARENT, str(os.getpid())]
        if die_with_parent
        else ["-m", "verifier_server.cli"]
    )
    process = subprocess.Popen(
        [
            sys.executable,
            *launcher,
            "serve",
            "--port",
            "0",
            "--log-level",
            "WARNING",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**(env if env is not None else os.environ), "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # "verifier-server listening on 127.0.0.1:PORT"
    if "listening on" not in line:
        process.kill()
        raise RuntimeError(f"the server did not start (exit code {process.wait(timeout_s)})")
    return process, line.split("listening on ", 1)[1].split(", ")[0].strip()
