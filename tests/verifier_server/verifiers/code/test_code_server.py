"""Code items through a real server: hostile programs next to honest ones in one batch."""

from __future__ import annotations

import pytest
from server_process import ServerProcess, children_of

from verifier_server import Item, RewardSpec
from verifier_server.client import RewardClient
from verifier_server.types import Status

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CODE = RewardSpec(
    "code", {"timeout_s": 20, "time_limit_s": 0.5, "memory_mb": 128, "compile_time_limit_s": 2}
)
ECHO_TESTS = {"tests": [{"stdin": "hello", "stdout": "hello"}, {"stdin": "1 2", "stdout": "1 2"}]}
HOSTILE = {
    "fork_bomb": "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass",
    "memory_bomb": "a = []\nwhile True: a.append(b'x' * 10**7)",
    "output_flood": "while True: print('x' * 10000)",
    "sleeper": "import time\ntime.sleep(60)",
    "early_exit": "import sys\nsys.exit(0)",
    "kill_everything": "import os\nos.kill(-1, 9)",
}


def fenced(code: str) -> str:
    return f"```python\n{code}\n```"


def test_hostile_items_do_not_disturb_their_neighbours(
    server: ServerProcess, client: RewardClient
) -> None:
    descendants_before = len(children_of(server.process.pid))
    honest = [
        Item(
            id=f"honest-{n}",
            completion=fenced("import sys\nprint(sys.stdin.read().strip())"),
            reward=CODE,
            reference={"tests": [{"stdin": f"item {n}", "stdout": f"item {n}"}]},
        )
        for n in range(100)
    ]
    hostile = [
        Item(id=name, completion=fenced(code), reward=CODE, reference=ECHO_TESTS)
        for name, code in HOSTILE.items()
    ]
    batch = honest[:50] + hostile + honest[50:]
    results = {r.id: r for r in client.score(batch, timeout_s=120)}
    for item in honest:
        assert (results[item.id].status, results[item.id].score) == (Status.OK, 1.0), results[
            item.id
        ]
    for name in HOSTILE:
        assert (results[name].status, results[name].score) == (Status.OK, 0.0), results[name]
    assert results["memory_bomb"].reason == "memory_limit"
    assert results["sleeper"].reason == "time_limit"
    assert results["output_flood"].reason == "output_limit"
    assert client.health() == "SERVING"
    # the runs are gone; only the server's workers and their warm slots remain
    assert len(children_of(server.process.pid)) == descendants_before


FUNCTION_TEST = {
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n"
    "    assert candidate(-1, 1) == 0\n",
    "entry_point": "add",
}
FORGERIES = {
    "exit_before_serving": "import os\nos._exit(0)",
    "child_writes_verdicts": "import os, time\nif os.fork() == 0:\n    time.sleep(0.2)\n"
    '    for fd in range(32):\n        try: os.write(fd, b\'{"verdict": "passed"}\\n\')\n'
    "        except OSError: pass\n    os._exit(0)\ndef add(a, b): return 0",
    "always_equal": "class E:\n    def __eq__(self, o): return True\ndef add(a, b): return E()",
    "reads_the_spec": "import json\nspec = json.load(open('/work/spec.json'))\n"
    "def add(a, b): return 0",
}


def test_function_tests_through_the_server(client: RewardClient) -> None:
    honest = [
        Item(id=f"honest-{n}", completion=fenced("def add(a, b):\n    return a + b"),
             reward=CODE, reference=FUNCTION_TEST)
        for n in range(10)
    ]  # fmt: skip
    forged = [
        Item(id=name, completion=fenced(code), reward=CODE, reference=FUNCTION_TEST)
        for name, code in FORGERIES.items()
    ]
    results = {r.id: r for r in client.score(honest[:5] + forged + honest[5:], timeout_s=120)}
    for item in honest:
        assert (results[item.id].status, results[item.id].score) == (Status.OK, 1.0)
    for name in FORGERIES:
        assert (results[name].status, results[name].score) == (Status.OK, 0.0), results[name]


def test_code_is_listed_with_its_params(client: RewardClient) -> None:
    info = {v.name: v for v in client.list_verifiers()}["code"]
    properties = info.params_schema["properties"]
    assert {"time_limit_s", "memory_mb", "compare", "scoring", "extract"} <= set(properties)
