"""Smoke test of the server image: start `verifier-server serve`, score math and code items.

Run inside the image (`make docker` does it under chroot; in a container:
`docker run --rm ... python /opt/verifier-rl/share/smoke.py`). Exits 0 when every item gets
the expected status and score, 1 otherwise, and prints the table either way.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from verifier_server.client import RewardClient
from verifier_server.demo import format_table
from verifier_server.sidecar import start_server_process
from verifier_server.types import Item, RewardSpec, Status

ADD = {"tests": [{"stdin": "1 2\n", "stdout": "3\n"}, {"stdin": "40 2\n", "stdout": "42\n"}]}
PY_ADD = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
CPP_ADD = (
    "```cpp\n#include <iostream>\n"
    "int main() { long a, b; std::cin >> a >> b; std::cout << a + b << '\\n'; }\n```"
)
JS_ADD = (
    "```js\nconst [a, b] = require('fs').readFileSync(0, 'utf8').trim().split(/\\s+/)"
    ".map(Number);\nconsole.log(a + b);\n```"
)
# The server's own files must not be visible inside the sandbox.
PEEK = (
    "```python\ntry:\n    open('/etc/verifier-rl/config.yaml').read()\n    print('visible')\n"
    "except OSError:\n    print('hidden')\n```"
)


def item(id_: str, verifier: str, completion: str, reference: object) -> Item:
    return Item(id=id_, completion=completion, reward=RewardSpec(verifier), reference=reference)


# (item, expected status, expected score)
CASES = [
    (item("math-right", "math", r"so \boxed{\frac{2}{4}}", r"\frac{1}{2}"), Status.OK, 1.0),
    (item("math-wrong", "math", r"\boxed{3}", r"\frac{1}{2}"), Status.OK, 0.0),
    (item("code-python", "code", PY_ADD, {"language": "python", **ADD}), Status.OK, 1.0),
    (item("code-wrong", "code", "```python\nprint(0)\n```", {"language": "python", **ADD}),
     Status.OK, 0.0),
    (item("code-cpp", "code", CPP_ADD, {"language": "cpp", **ADD}), Status.OK, 1.0),
    (item("code-js", "code", JS_ADD, {"language": "javascript", **ADD}), Status.OK, 1.0),
    (item("code-peek", "code", PEEK, {"tests": [{"stdin": "", "stdout": "hidden\n"}]}),
     Status.OK, 1.0),
]  # fmt: skip


def main() -> int:
    config = sys.argv[1] if len(sys.argv) > 1 else "/etc/verifier-rl/config.yaml"
    started = time.monotonic()
    process, address = start_server_process(["--config", config, "--workers", "1"])
    try:
        with RewardClient(address, timeout_s=120) as client:
            client.wait_ready(60)
            ready_s = time.monotonic() - started
            # the image's HEALTHCHECK command (docker/health_probe.py outside the image)
            probe = shutil.which("grpc-health") or str(Path(__file__).with_name("health_probe.py"))
            health = subprocess.run([sys.executable, probe, address], capture_output=True)
            items = [case[0] for case in CASES]
            results = client.score(items)
            names = {v.name for v in client.list_verifiers()}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    print(f"server ready in {ready_s:.1f} s; {len(names)} verifiers and rewards")
    print(f"health probe: {health.stdout.decode().strip()} (exit {health.returncode})\n")
    print(format_table(items, results))
    failed = [
        f"{r.id}: expected {status.name} {score}, got {r.status.name} {r.score} {r.reason} "
        f"{r.details}"
        for (_, status, score), r in zip(CASES, results, strict=True)
        if r.status is not status or r.score != score
    ]
    if health.returncode != 0:
        failed.append(f"the health probe failed: {health.stderr.decode()[-300:]}")
    if "math" not in names or "code" not in names:
        failed.append(f"math or code verifier missing from {sorted(names)}")
    print("\n" + ("\n".join(failed) if failed else "smoke test passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
