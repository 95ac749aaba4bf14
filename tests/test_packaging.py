"""The distributions a user installs: built with `python -m build` (tools/build_dists.py), then
installed into fresh virtual environments that share nothing with this one."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLIENT_DEPENDENCIES = {"grpcio", "grpcio-health-checking", "protobuf"}

# Run inside the fresh venv: a real server from the installed wheel scores math and Python code.
SERVE_AND_SCORE = """
import json
from verifier_server import Item, RewardSpec
from verifier_server.client import RewardClient
from verifier_server.sidecar import start_server_process

process, address = start_server_process(["--workers", "1"])
try:
    with RewardClient(address, timeout_s=60) as client:
        client.wait_ready()
        results = client.score([
            Item(id="math", completion="so \\\\boxed{\\\\frac{1}{2}}",
                 reward=RewardSpec("math"), reference="0.5"),
            Item(id="code", completion="```python\\nprint(int(input()) * 2)\\n```",
                 reward=RewardSpec("code"),
                 reference={"language": "python",
                            "tests": [{"stdin": "21\\n", "stdout": "42\\n"}]}),
        ])
    print(json.dumps({r.id: [r.status.name, r.score, r.reason] for r in results}))
finally:
    process.terminate()
    process.wait(30)
"""


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "tools/build_dists.py", "--outdir", str(out), "--no-isolation"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return {
        "wheel": next(out.glob("verifier_rl-*.whl")),
        "sdist": next(out.glob("verifier_rl-*.tar.gz")),
        "client_wheel": next(out.glob("verifier_rl_client-*.whl")),
        "client_sdist": next(out.glob("verifier_rl_client-*.tar.gz")),
    }


def fresh_venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    return path / "bin"


def pip_install(bin_dir: Path, *what: str) -> None:
    # --no-compile: byte-compiling sympy and friends is most of an install's time.
    done = subprocess.run(
        [bin_dir / "python", "-m", "pip", "install", "-q", "--no-compile", *what],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def requires(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        [meta] = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        message = Parser().parsestr(zf.read(meta).decode())
    return {
        r.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip()
        for r in message.get_all("Requires-Dist", [])
        if "extra ==" not in r
    }


@pytest.mark.slow
@pytest.mark.timeout(600)  # includes building the four distributions
def test_distributions_carry_what_a_user_runs(dists: dict[str, Path]) -> None:
    with zipfile.ZipFile(dists["wheel"]) as zf:
        names = set(zf.namelist())
    assert "verifier_rl-0.1.0.dist-info/licenses/LICENSE" in names
    assert {"verifier_server/samples/demo.yaml", "verifier_server/py.typed"} <= names
    assert "verifier_server/_proto/verifier/v1/verifier_pb2.pyi" in names
    assert "verifier_server/verifiers/code/harness.py" in names  # runs inside the sandbox
    assert not any(n.startswith("tests/") for n in names)
    with tarfile.open(dists["sdist"]) as tf:
        members = {m.split("/", 1)[-1] for m in tf.getnames()}
    assert {"LICENSE", "pyproject.toml", "README.md", "verifier_server/cli.py"} <= members

    with zipfile.ZipFile(dists["client_wheel"]) as zf:
        packages = {n.split("/")[1] for n in zf.namelist() if n.startswith("verifier_server/")}
    assert packages == {"__init__.py", "py.typed", "types.py", "convert.py", "client.py", "_proto"}
    assert requires(dists["client_wheel"]) == CLIENT_DEPENDENCIES
    assert "torch" not in requires(dists["wheel"])  # the server core has no torch


@pytest.mark.slow
@pytest.mark.timeout(900)  # a fresh install resolves and unpacks every dependency
def test_the_wheel_installs_into_a_fresh_venv_and_serves(dists, tmp_path) -> None:
    bin_dir = fresh_venv(tmp_path / "venv")
    pip_install(bin_dir, str(dists["wheel"]))

    demo = subprocess.run(
        [bin_dir / "verifier-server", "demo", "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # not the repository: nothing may come from the source tree
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert any(
        line.split()[:4] == ["format-ok", "format", "OK", "1.000"]
        for line in demo.stdout.splitlines()
    )

    scored = subprocess.run(
        [bin_dir / "python", "-c", SERVE_AND_SCORE],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout.splitlines()[-1]) == {
        "math": ["OK", 1.0, ""],
        "code": ["OK", 1.0, ""],
    }, scored.stderr


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(600)
def test_the_client_distribution_needs_only_grpc_and_protobuf(dists, tmp_path, server) -> None:
    bin_dir = fresh_venv(tmp_path / "venv")
    pip_install(bin_dir, str(dists["client_wheel"]))
    listed = subprocess.run(
        [bin_dir / "python", "-m", "pip", "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(listed.stdout)}
    # typing-extensions is grpcio's own dependency.
    allowed = CLIENT_DEPENDENCIES | {"verifier-rl-client", "typing-extensions", "pip", "setuptools"}
    assert CLIENT_DEPENDENCIES | {"verifier-rl-client"} <= installed <= allowed

    script = (
        "from verifier_server import Item, RewardSpec\n"
        "from verifier_server.client import RewardClient\n"
        f"with RewardClient({server.address!r}, timeout_s=30) as c:\n"
        "    c.wait_ready()\n"
        "    [r] = c.score([Item(id='a', completion='<think>x</think><answer>4</answer>',\n"
        "                        reward=RewardSpec('format'))])\n"
        "    print(r.status.name, r.score)\n"
    )
    run = subprocess.run(
        [bin_dir / "python", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["OK", "1.0"]
