"""`verifier-server demo`: start a real server as a subprocess on a
free loopback port, score the bundled sample batch through the client, print a table, stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from verifier_server.client import RewardClient
from verifier_server.types import ChatMessage, Item, Result, RewardSpec

SAMPLES = Path(__file__).parent / "samples"


def item_from_json(row: dict[str, Any]) -> Item:
    """A JSON object with Item's field names (reward as {"name", "params"}) -> Item."""
    reward = row.get("reward")
    return Item(
        id=str(row["id"]),
        completion=row.get("completion", ""),
        reward=RewardSpec(reward["name"], reward.get("params", {})) if reward else None,
        prompt=row.get("prompt", ""),
        messages=tuple(ChatMessage(m["role"], m["content"]) for m in row.get("messages", [])),
        reference=row.get("reference"),
        completion_tokens=row.get("completion_tokens", 0),
        truncated=row.get("truncated", False),
        group_id=row.get("group_id", ""),
    )


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


def format_table(items: Sequence[Item], results: Sequence[Result]) -> str:
    rows = [("id", "reward", "status", "score", "reason", "ms")]
    for item, result in zip(items, results, strict=True):
        rows.append(
            (
                item.id,
                item.reward.name if item.reward else "",
                result.status.name,
                f"{result.score:.3f}",
                result.reason[:48],
                f"{result.elapsed_ms:.2f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def run_demo(workers: int = 2) -> int:
    items = [
        item_from_json(json.loads(line))
        for line in (SAMPLES / "batch.jsonl").read_text().splitlines()
        if line.strip()
    ]
    process, address = start_server_process(
        ["--config", str(SAMPLES / "demo.yaml"), "--workers", str(workers)]
    )
    try:
        with RewardClient(address) as client:
            client.wait_ready()
            print(
                f"server at {address}: {len(client.list_verifiers())} verifiers and rewards; "
                f"scoring {len(items)} items\n"
            )
            results = client.score(items)
        print(format_table(items, results))
        print(
            "\nstatus OK: score is the verdict. "
            "Any other status: could not verify (a trainer masks it)."
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    return 0
