"""`verifier-server demo`: start a real server as a subprocess on a
free loopback port, score the bundled sample batch through the client, print a table, stop."""

from __future__ import annotations

import json
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from verifier_server.client import RewardClient
from verifier_server.sidecar import start_server_process
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
