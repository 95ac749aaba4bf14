"""The generated code matches protos/, and the contract stands alone (a Node client)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NODE_CLIENT = ROOT / "tests" / "node" / "client.js"


def test_generated_code_is_not_stale() -> None:
    process = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert process.returncode == 0, process.stdout + process.stderr


def node(target: str, *args: str, stdin: object = None) -> list[dict]:
    if shutil.which("node") is None or not (NODE_CLIENT.parent / "node_modules").exists():
        pytest.fail("node and tests/node/node_modules are required: run `make setup`")
    process = subprocess.run(
        ["node", str(NODE_CLIENT), target, *args],
        input=None if stdin is None else json.dumps(stdin),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode == 0, process.stdout + process.stderr
    return [
        json.loads(line) if line.startswith(("{", "[")) else line
        for line in process.stdout.splitlines()
    ]


@pytest.mark.integration
def test_node_client_built_from_protos_alone(server) -> None:
    [listing] = node(server.address, "list")
    names = {v["name"] for v in listing["verifiers"]}
    assert {"format", "json_schema", "composite"} <= names

    request = {
        "items": [
            {
                "id": "a",
                "completion": "<think>x</think><answer>4</answer>",
                "reward": {"name": "format"},
            },
            {
                "id": "b",
                "completion": '{"n": 1}',
                "reward": {"name": "json_schema", "params": {"extract": "raw"}},
                "reference": {"type": "object", "required": ["n"]},
            },
            {"id": "c", "completion": "x", "reward": {"name": "nope"}},
        ]
    }
    [response] = node(server.address, "score", stdin=request)
    by_id = {r["id"]: r for r in response["results"]}
    assert by_id["a"]["status"] == "STATUS_OK" and by_id["a"]["score"] == 1
    assert by_id["b"]["status"] == "STATUS_OK" and by_id["b"]["score"] == 1
    assert (
        by_id["c"]["status"] == "STATUS_INVALID_REQUEST"
        and by_id["c"]["details"]["field"] == "items[2].reward.name"
    )

    streamed = node(
        server.unix, "stream", stdin=[request, {"items": [{**request["items"][0], "id": "d"}]}]
    )
    assert sorted(r["id"] for response in streamed for r in response["results"]) == [
        "a",
        "b",
        "c",
        "d",
    ]

    assert node(server.address, "health") == ["SERVING"]
    assert node(server.address, "health", "verifier.v1.VerifierService/format") == ["SERVING"]
