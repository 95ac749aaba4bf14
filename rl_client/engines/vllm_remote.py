"""Rollouts from unmodified `vllm serve` processes, one or several, over their OpenAI API.

Start each server with the flags the trainer relies on:

    VLLM_SERVER_DEV_MODE=1 vllm serve MODEL_DIR --logprobs-mode processed_logprobs

- **Generation** (`vllm_http.py`): one `POST /v1/completions` per sample, token ids in and
  out, with the sampled token's logprob. `--logprobs-mode processed_logprobs` makes those the
  logprobs after temperature and top-p, i.e. of the distribution actually sampled.
- **Several servers** (`rollout.remote.urls`): data-parallel dispatch, per prompt group. A
  group's first sample to start picks the server with the fewest requests in flight from this
  engine (least outstanding requests), and the group's other samples follow it, so the
  prompt's keys and values are computed once, in one server's prefix cache. Least outstanding
  rather than round robin: completions differ in length, and a server that drew long ones gets
  fewer new groups while it works through them. Ties go in order from this process's rank, so
  the ranks of a torchrun job, each with few groups, start on different servers.
- **Weight sync** (portable, no NCCL): the weights are written ONCE as safetensors to
  `weights_dir` (a directory every server sees; written under a temporary name, then renamed),
  then every server loads them in place, in parallel: `POST /collective_rpc`
  `reload_weights(weights_path=...)` and `POST /reset_prefix_cache` (dev-mode routes). The
  time of both parts is returned (`WeightSync`) and kept in `last_sync`.
- **Under torchrun** every process has its own engine over the same list (`rank`: the
  dispatch offset) and every process calls `push_weights` after each update: the leader
  (rank 0) passes the gathered full weights, writes and reloads; the others pass None and
  wait for its outcome, which is broadcast to all (the barrier). A failed sync raises on
  every process.
- **Failures**: every call has a deadline (`request_timeout_s`, `sync_timeout_s`); a refused
  connection, a timeout, an HTTP error or a malformed body raises `RemoteEngineError` naming
  the URL. A server failing its reload fails the sync naming it: the servers would otherwise
  sample from different policies, so a sync never half-succeeds quietly.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor

from rl_client.distributed import broadcast_object
from rl_client.engines.base import Completion, SamplingParams, StreamingEngine
from rl_client.engines.vllm_http import RemoteEngineError, VLLMServerClient
from rl_client.engines.weights import export_weights

__all__ = [
    "WEIGHTS_FILE",
    "RemoteEngineError",
    "RemoteVLLMEngine",
    "WeightSync",
    "least_in_flight",
]

WEIGHTS_FILE = "model.safetensors"
T = TypeVar("T")


@dataclass(frozen=True)
class WeightSync:
    """How long one weight sync took: writing the file once, then every server's reload (in
    parallel, so about the slowest server's)."""

    write_s: float
    reload_s: float
    servers: int

    @property
    def total_s(self) -> float:
        return self.write_s + self.reload_s


def least_in_flight(in_flight: Sequence[int], rank: int) -> int:
    """The server with the fewest requests in flight; ties go to the first in order from
    server `rank` mod the count (so processes with few groups start on different servers)."""
    count = len(in_flight)
    return min(range(count), key=lambda i: (in_flight[i], (i - rank) % count))


class RemoteVLLMEngine(StreamingEngine):
    def __init__(
        self,
        urls: str | Sequence[str],
        tokenizer: Any,
        *,
        weights_dir: str | Path,
        model: str | None = None,
        api_key: str | None = None,
        request_timeout_s: float = 300.0,
        sync_timeout_s: float = 300.0,
        max_concurrent_requests: int = 64,
        rank: int = 0,
        leader: bool = True,
    ) -> None:
        """`urls`: one server's root or several; `rank`: this process's place in a torchrun
        job (where its dispatch starts); `leader`: whether this process writes the weights
        and triggers the reloads (rank 0)."""
        urls = [urls] if isinstance(urls, str) else list(urls)
        if not urls:
            raise RemoteEngineError("no vLLM server given")
        self.servers = [VLLMServerClient(url, api_key=api_key) for url in urls]
        self.tokenizer = tokenizer
        self.eos_token_id: int = tokenizer.eos_token_id
        self.pad_token_id: int = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_token_id
        )
        self.weights_dir = Path(weights_dir)
        self.request_timeout_s = request_timeout_s
        self.sync_timeout_s = sync_timeout_s
        self.rank = rank
        self.leader = leader
        self.requests_sent = [0] * len(urls)  # per server, over the engine's life
        self.last_sync: WeightSync | None = None
        self._in_flight = [0] * len(urls)  # per server, this engine's requests
        self._dispatch_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_concurrent_requests, thread_name_prefix="rl-vllm")
        self.model = model or self._served_model()

    @classmethod
    def from_settings(
        cls, settings: Any, tokenizer: Any, *, rank: int = 0, leader: bool = True
    ) -> RemoteVLLMEngine:
        """From `rollout.remote` (`config.RemoteEngineSettings`)."""
        api_key = None
        if settings.api_key_env is not None:
            api_key = os.environ.get(settings.api_key_env)
            if api_key is None:
                raise RemoteEngineError(
                    f"rollout.remote.api_key_env: ${settings.api_key_env} is not set"
                )
        return cls(
            settings.server_urls,
            tokenizer,
            weights_dir=settings.weights_dir,
            model=settings.model,
            api_key=api_key,
            request_timeout_s=settings.request_timeout_s,
            sync_timeout_s=settings.sync_timeout_s,
            max_concurrent_requests=settings.max_concurrent_requests,
            rank=rank,
            leader=leader,
        )

    @property
    def urls(self) -> list[str]:
        return [server.base_url for server in self.servers]

    def _on_every_server(self, what: str, call: Callable[[VLLMServerClient], T]) -> list[T]:
        """`call` on every server at once; one error naming each server that failed."""
        with ThreadPoolExecutor(len(self.servers)) as pool:
            futures = [pool.submit(call, server) for server in self.servers]
        failures = [f.exception() for f in futures if f.exception() is not None]
        if failures and len(self.servers) == 1:
            raise failures[0]
        if failures:
            raise RemoteEngineError(
                f"{what} failed on {len(failures)} of {len(self.servers)} servers: "
                + "; ".join(str(exc) for exc in failures)
            ) from failures[0]
        return [f.result() for f in futures]

    def _served_model(self) -> str:
        names = self._on_every_server(
            "GET /v1/models", lambda server: server.served_model(self.request_timeout_s)
        )
        if len(set(names)) != 1:
            served = ", ".join(f"{u}: {n}" for u, n in zip(self.urls, names, strict=True))
            raise RemoteEngineError(
                f"the servers serve different models ({served}); rollout.remote.urls must "
                "serve one policy"
            )
        return names[0]

    # ---- generation

    def stream(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams
    ) -> Iterator[tuple[int, int, Completion]]:
        """Yields (prompt index, sample index, completion) as each response arrives."""
        routes: dict[int, int] = {}  # prompt index -> server index, set by its first sample
        futures = {
            self._pool.submit(self._sample, routes, p, list(prompt), params): (p, s)
            for p, prompt in enumerate(prompts)
            for s in range(params.n)
        }
        try:
            for future in as_completed(futures):
                prompt_index, sample_index = futures[future]
                yield prompt_index, sample_index, future.result()
        finally:
            for future in futures:
                future.cancel()

    def _sample(
        self, routes: dict[int, int], group: int, prompt: list[int], params: SamplingParams
    ) -> Completion:
        index = self._route(routes, group)
        try:
            return self.servers[index].sample(
                self.model, prompt, params, self.tokenizer, self.request_timeout_s
            )
        finally:
            with self._dispatch_lock:
                self._in_flight[index] -= 1

    def _route(self, routes: dict[int, int], group: int) -> int:
        """The group's server, counted as one more request in flight there. A group's first
        sample picks the server with the fewest in flight (ties: from this rank's offset)."""
        with self._dispatch_lock:
            index = routes.get(group)
            if index is None:
                index = least_in_flight(self._in_flight, self.rank)
                routes[group] = index
            self._in_flight[index] += 1
            self.requests_sent[index] += 1
            return index

    # ---- weights

    def sync_weights(self, model: torch.nn.Module) -> None:
        """The engine interface: `push_weights` with `model`'s weights (a plain or peft
        module; a sharded FSDP2 module needs its full state gathered first, see
        `push_weights`)."""
        self.push_weights(export_weights(model) if self.leader else None)

    def push_weights(self, weights: Iterable[tuple[str, Tensor]] | None) -> WeightSync:
        """Every server samples from `weights` (checkpoint names) from now on.

        Under torchrun every process calls this at the same point: the leader passes the full
        weights (e.g. FSDP2's full state dict gathered to rank 0), the others None. The leader
        writes them once and reloads every server in parallel; its outcome reaches every
        process through one broadcast, which is also the barrier: all return the same timing,
        or all raise `RemoteEngineError`. In one process it is the leader's part alone."""
        outcome: WeightSync | str | None = None
        if self.leader:
            if weights is None:
                raise ValueError("push_weights: the leader must pass the weights")
            try:
                outcome = self._write_and_reload(weights)
            except RemoteEngineError as exc:
                outcome = str(exc)
        outcome = broadcast_object(outcome)
        if isinstance(outcome, str):
            raise RemoteEngineError(outcome if self.leader else f"rank 0's weight sync: {outcome}")
        assert isinstance(outcome, WeightSync)
        self.last_sync = outcome
        return outcome

    def _write_and_reload(self, weights: Iterable[tuple[str, Tensor]]) -> WeightSync:
        from safetensors.torch import save_file

        began = time.perf_counter()
        # CPU copies; tied weights cloned apart (safetensors refuses aliases).
        tensors = {name: t.detach().cpu().clone().contiguous() for name, t in weights}
        partial = self.weights_dir / f".{WEIGHTS_FILE}.partial"
        try:
            self.weights_dir.mkdir(parents=True, exist_ok=True)
            save_file(tensors, str(partial))
            os.replace(partial, self.weights_dir / WEIGHTS_FILE)
        except OSError as exc:
            raise RemoteEngineError(
                f"rollout.remote.weights_dir {self.weights_dir}: {exc}"
            ) from None
        written = time.perf_counter()
        path = str(self.weights_dir.resolve())
        self._on_every_server(
            "weight sync", lambda server: server.reload_weights(path, self.sync_timeout_s)
        )
        return WeightSync(written - began, time.perf_counter() - written, len(self.servers))

    def sleep(self) -> None:
        """The servers live elsewhere: nothing to free here."""

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
