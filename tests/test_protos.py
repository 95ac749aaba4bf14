"""The generated code matches protos/, and the contract stands alone (a Node client)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from server_process import ServerProcess, server_env

ROOT = Path(__file__).resolve().parents[1]
NODE_PACKAGE = ROOT / "clients" / "node"
NODE_CLIENT = NODE_PACKAGE / "bin" / "verifier-client.js"


def test_generated_code_is_not_stale() -> None:
    process = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert process.returncode == 0, process.stdout + process.stderr


def require_node() -> None:
    if shutil.which("node") is None or not (NODE_PACKAGE / "node_modules").exists():
        pytest.fail("node and clients/node/node_modules are required: run `make setup`")


def node(target: str, *args: str, stdin: object = None, cli: Path = NODE_CLIENT) -> list[dict]:
    require_node()
    process = subprocess.run(
        ["node", str(cli), target, *args],
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


def node_script(script: str, target: str, env: dict[str, str] | None = None) -> dict:
    """Runs `script` (a Node function body with `lib` and `target` bound) and parses its output."""
    require_node()
    program = (
        f"const lib = require({json.dumps(str(NODE_PACKAGE))}); "
        f"const target = {json.dumps(target)}; "
        f"(async () => {{ {script} }})().then((out) => console.log(JSON.stringify(out)), "
        "(e) => { console.log(JSON.stringify({thrown: e.constructor.name, message: e.message, "
        "code: e.code})); });"
    )
    process = subprocess.run(
        ["node", "-e", program], capture_output=True, text=True, timeout=60, env=env
    )
    assert process.returncode == 0, process.stdout + process.stderr
    return json.loads(process.stdout.splitlines()[-1])


@pytest.mark.integration
def test_node_library_speaks_plain_json(server) -> None:
    out = node_script(
        """
        const c = lib.connect(target);
        const scored = await c.score({items: [
          {id: 'ok', completion: '{"n": 2}', reward: {name: 'json_schema',
           params: {extract: 'raw'}}, reference: {type: 'object', required: ['n']}},
          {id: 'bad', completion: '{"m": 2}', reward: {name: 'json_schema',
           params: {extract: 'raw'}}, reference: {type: 'object', required: ['n']}}]});
        const listed = await c.listVerifiers();
        const health = await c.health();
        c.close();
        return {scored, health,
                schema: listed.verifiers.find((v) => v.name === 'json_schema').params_schema};
        """,
        server.address,
    )
    by_id = {r["id"]: r for r in out["scored"]["results"]}
    assert by_id["ok"]["status"] == "STATUS_OK" and by_id["ok"]["score"] == 1
    assert by_id["bad"]["status"] == "STATUS_OK" and by_id["bad"]["score"] == 0
    assert isinstance(by_id["bad"]["details"], dict)  # a plain object, not a Struct
    assert out["health"] == "SERVING"
    assert out["schema"]["type"] == "object"  # params_schema unwrapped to plain JSON


@pytest.mark.integration
def test_node_library_names_a_misspelt_field_before_sending(server) -> None:
    out = node_script(
        "const c = lib.connect(target); try { return await c.score({items: "
        "[{id: 'x', completion: 'y', reward: {name: 'format'}, refrence: 1}]}); } "
        "finally { c.close(); }",
        server.address,
    )
    assert out["thrown"] == "TypeError"
    assert 'no field "refrence"' in out["message"] and "items[0]" in out["message"]


@pytest.mark.integration
def test_node_library_sends_the_bearer_token(tmp_path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("server: {auth: {tokens_env: VERIFIER_TEST_TOKENS}}\n")
    env = server_env()
    env["VERIFIER_TEST_TOKENS"] = "s3cret-token-0123456789"
    proc = ServerProcess(["--config", str(config)], env=env)
    try:
        request = "{items: [{id: 'a', completion: 'x', reward: {name: 'format'}}]}"
        script = (
            "const c = lib.connect(target, %s); try { return await c.score(%s); } "
            "finally { c.close(); }"
        )
        denied = node_script(script % ("{}", request), proc.address)
        with_token = "{metadata: {authorization: 'Bearer s3cret-token-0123456789'}}"
        allowed = node_script(script % (with_token, request), proc.address)
    finally:
        proc.stop()
    assert denied["code"] == 16  # UNAUTHENTICATED
    assert allowed["results"][0]["status"] == "STATUS_OK"


@pytest.mark.integration
def test_node_package_packs_its_protos_and_runs_outside_the_repository(server, tmp_path) -> None:
    require_node()
    if (NODE_PACKAGE / "protos" / "verifier").exists():
        shutil.rmtree(NODE_PACKAGE / "protos" / "verifier")  # left by an earlier `npm pack`
    pack = subprocess.run(
        ["npm", "pack", "--json", "--pack-destination", str(tmp_path)],
        cwd=NODE_PACKAGE,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert pack.returncode == 0, pack.stderr
    [info] = json.loads(pack.stdout)
    packed = {f["path"] for f in info["files"]}
    assert {"index.js", "bin/verifier-client.js", "protos/verifier/v1/verifier.proto"} <= packed
    assert "protos/grpc/health/v1/health.proto" in packed
    shutil.rmtree(NODE_PACKAGE / "protos" / "verifier")  # the copy is for the tarball only

    subprocess.run(
        ["tar", "-xzf", str(tmp_path / info["filename"]), "-C", str(tmp_path)], check=True
    )
    installed = tmp_path / "package"  # outside the repository: ../../protos does not exist
    (installed / "node_modules").symlink_to(NODE_PACKAGE / "node_modules")
    cli = installed / "bin" / "verifier-client.js"
    assert node(server.address, "health", cli=cli) == ["SERVING"]
    [response] = node(
        server.address,
        "score",
        cli=cli,
        stdin={
            "items": [
                {
                    "id": "a",
                    "completion": "<think>x</think><answer>4</answer>",
                    "reward": {"name": "format"},
                }
            ]
        },
    )
    assert response["results"][0]["score"] == 1
