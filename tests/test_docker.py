"""The deployment files in docker/ agree with each other and with the code: configs load,
probes hit the served port, the security settings are the tested least set. (Building and
smoke-testing the image is `make docker`; the sandbox under those settings is tested in
tests/sandboxes/test_restricted.py.)"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import yaml

from rl_client.config import TrainConfig, load_config
from verifier_server.config import load_config as load_server_config

DOCKER = Path(__file__).resolve().parents[1] / "docker"
sys.path.insert(0, str(DOCKER / "seccomp"))
from generate import OCI_OUT, SANDBOX_CAPS  # noqa: E402

CAPS = sorted(cap.removeprefix("CAP_") for cap in SANDBOX_CAPS)


def k8s_docs() -> dict[str, dict]:
    return {
        doc["kind"]: doc for doc in yaml.safe_load_all((DOCKER / "k8s" / "pod.yaml").read_text())
    }


def test_server_image_serves_its_health_checked_port_with_its_config() -> None:
    text = (DOCKER / "server.Dockerfile").read_text()
    assert "EXPOSE 50051" in text
    assert '"--port", "50051"' in text and '"grpc-health", "127.0.0.1:50051"' in text
    for source, _ in re.findall(r"^COPY (docker/\S+) (\S+)$", text, re.M):
        assert (DOCKER.parent / source).exists(), source
    load_server_config(DOCKER / "server-config.yaml")


def test_images_copy_every_package_the_project_installs() -> None:
    # A package missing from an image fails only when a verifier imports it at start-up (it
    # happened: rm_encoding), so the Dockerfiles and their build-context filters are checked
    # against pyproject's package list.
    include = tomllib.loads((DOCKER.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {p.rstrip("*") for p in include["packages"]["find"]["include"]}
    for name in ("server", "trainer"):
        dockerfile = (DOCKER / f"{name}.Dockerfile").read_text()
        ignore = (DOCKER / f"{name}.Dockerfile.dockerignore").read_text().splitlines()
        copied = {m for m in re.findall(r"^COPY (\w+) /src/\1$", dockerfile, re.M)}
        assert copied == packages, name
        assert {f"!{p}/**" for p in packages} <= set(ignore), name
        assert re.search(r"^COPY pyproject.toml README.md LICENSE /src/$", dockerfile, re.M)
        assert {"!LICENSE", "!README.md", "!pyproject.toml"} <= set(ignore), name


def test_compose_sidecar_has_the_tested_security_settings(tmp_path: Path) -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    verifier = compose["services"]["verifier"]
    seccomp = next(o for o in verifier["security_opt"] if o.startswith("seccomp="))
    assert (DOCKER / seccomp.removeprefix("seccomp=")).exists()
    assert verifier["cap_drop"] == ["ALL"] and sorted(verifier["cap_add"]) == CAPS
    assert "privileged" not in verifier
    # the container's own cgroup, writable, is the slots' parent
    assert verifier["cgroup"] == "private" and "writable-cgroups=true" in verifier["security_opt"]
    assert verifier["environment"]["VERIFIER_RL_SANDBOX_CGROUP_PARENT"] == "/"
    assert compose["networks"]["rl"]["internal"] is True
    train = load_config(TrainConfig, DOCKER / "compose" / "train.yaml")
    assert train.reward.address == "verifier:50051"
    assert train.rollout.remote is not None and train.rollout.remote.base_url == "http://vllm:8000"


def test_k8s_sidecar_probes_its_grpc_port_and_runs_unprivileged(tmp_path: Path) -> None:
    docs = k8s_docs()
    config_map, pod = docs["ConfigMap"], docs["Pod"]
    (sidecar,) = pod["spec"]["initContainers"]
    assert sidecar["restartPolicy"] == "Always"
    port = sidecar["ports"][0]["containerPort"]
    assert sidecar["args"][sidecar["args"].index("--port") + 1] == str(port)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert sidecar[probe]["grpc"]["port"] == port
    context = sidecar["securityContext"]
    assert context["privileged"] is False and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert sorted(context["capabilities"]["add"]) == CAPS
    assert Path(context["seccompProfile"]["localhostProfile"]).name == OCI_OUT.name
    # an unmasked /proc, which Kubernetes allows only in a user namespace, whose 65,536 uids
    # the sandbox's default range fits; a writable cgroup from the runtime class
    assert context["procMount"] == "Unmasked" and pod["spec"]["hostUsers"] is False
    assert pod["spec"]["runtimeClassName"] == docs["RuntimeClass"]["metadata"]["name"]
    policy = docs["NetworkPolicy"]["spec"]  # no ingress rules: nothing may connect
    assert policy["podSelector"]["matchLabels"] == pod["metadata"]["labels"]
    assert policy["policyTypes"] == ["Ingress"] and "ingress" not in policy
    (tmp_path / "train.yaml").write_text(config_map["data"]["train.yaml"])
    train = load_config(TrainConfig, tmp_path / "train.yaml")
    assert train.reward.address == f"127.0.0.1:{port}"
    (tmp_path / "server.yaml").write_text(config_map["data"]["server.yaml"])
    assert load_server_config(tmp_path / "server.yaml").sandbox.cgroup_parent == "/"
