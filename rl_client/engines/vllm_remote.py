"""Rollouts from an unmodified `vllm serve`, over its OpenAI-compatible HTTP API.

Start the server with the flags the trainer relies on:

    VLLM_SERVER_DEV_MODE=1 vllm serve MODEL_DIR --logprobs-mode processed_logprobs

- **Generation**: `POST /v1/completions` with the prompt as token ids (token in, token out:
  nothing is re-tokenised), `logprobs: 0` (the sampled token's own logprob) and
  `return_token_ids: true`. `--logprobs-mode processed_logprobs` makes those logprobs the ones
  after temperature and top-p, i.e. of the distribution actually sampled; without it vLLM
  returns raw logprobs and the trainer's `logprob_drift` shows it at once.
- **Streaming**: one request per sample, many in flight; `stream` yields each completion as
  its response arrives.
- **Weight sync** (portable, no NCCL): the trainer writes the weights as safetensors to
  `weights_dir` (a directory both sides see; written under a temporary name, then renamed),
  then asks the server to load them in place, `POST /collective_rpc` with
  `{"method": "reload_weights", "kwargs": {"weights_path": ...}}`, and resets its prefix
  cache (`POST /reset_prefix_cache`). Both routes exist only with `VLLM_SERVER_DEV_MODE=1`.
  vLLM's NCCL weight-transfer endpoints (GPU to GPU) are not used here.
- **Failures**: every call has a deadline (`request_timeout_s`, `sync_timeout_s`: a socket
  timeout, so a server that accepts and never answers fails at it); a refused connection,
  a timeout, an HTTP error or a malformed body raises `RemoteEngineError` naming the URL and
  what happened. A sync never hangs silently and never half-succeeds quietly.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch

from rl_client.engines.base import Completion, SamplingParams, StreamingEngine
from rl_client.engines.weights import export_weights

WEIGHTS_FILE = "model.safetensors"


class RemoteEngineError(RuntimeError):
    """A call to the vLLM server failed; the message names the URL and the cause."""


class RemoteVLLMEngine(StreamingEngine):
    def __init__(
        self,
        base_url: str,
        tokenizer: Any,
        *,
        weights_dir: str | Path,
        model: str | None = None,
        api_key: str | None = None,
        request_timeout_s: float = 300.0,
        sync_timeout_s: float = 300.0,
        max_concurrent_requests: int = 64,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.tokenizer = tokenizer
        self.eos_token_id: int = tokenizer.eos_token_id
        self.pad_token_id: int = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_token_id
        )
        self.weights_dir = Path(weights_dir)
        self.api_key = api_key
        self.request_timeout_s = request_timeout_s
        self.sync_timeout_s = sync_timeout_s
        self._pool = ThreadPoolExecutor(max_concurrent_requests, thread_name_prefix="rl-vllm")
        self.model = model or self._served_model()

    @classmethod
    def from_settings(cls, settings: Any, tokenizer: Any) -> RemoteVLLMEngine:
        """From `rollout.remote` (`config.RemoteEngineSettings`)."""
        api_key = None
        if settings.api_key_env is not None:
            api_key = os.environ.get(settings.api_key_env)
            if api_key is None:
                raise RemoteEngineError(
                    f"rollout.remote.api_key_env: ${settings.api_key_env} is not set"
                )
        return cls(
            settings.base_url,
            tokenizer,
            weights_dir=settings.weights_dir,
            model=settings.model,
            api_key=api_key,
            request_timeout_s=settings.request_timeout_s,
            sync_timeout_s=settings.sync_timeout_s,
            max_concurrent_requests=settings.max_concurrent_requests,
        )

    # ---- HTTP

    def _call(self, method: str, path: str, body: Any, timeout_s: float) -> Any:
        """One HTTP call with a deadline; the JSON reply (None for an empty body)."""
        url = f"{self.base_url}{path}"
        headers = {"Content-Type": "application/json"}
        if self.api_key is not None:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode(errors="replace")
            raise RemoteEngineError(f"{method} {url}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)  # URLError wraps the socket's error
            if isinstance(reason, TimeoutError):
                raise RemoteEngineError(
                    f"{method} {url}: no answer within {timeout_s:g} s"
                ) from None
            raise RemoteEngineError(f"{method} {url}: cannot connect: {reason}") from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            raise RemoteEngineError(
                f"{method} {url}: the reply is not JSON: {raw[:200]!r}"
            ) from None

    def _served_model(self) -> str:
        reply = self._call("GET", "/v1/models", None, self.request_timeout_s)
        try:
            names = [entry["id"] for entry in reply["data"]]
        except (KeyError, TypeError):
            raise RemoteEngineError(f"{self.base_url}/v1/models: unexpected reply") from None
        if len(names) != 1:
            raise RemoteEngineError(
                f"{self.base_url} serves {names}: set rollout.remote.model to one of them"
            )
        return names[0]

    # ---- generation

    def stream(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams
    ) -> Iterator[tuple[int, int, Completion]]:
        """Yields (prompt index, sample index, completion) as each response arrives."""
        futures = {
            self._pool.submit(self._sample, list(prompt), params): (p, s)
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

    def _sample(self, prompt: list[int], params: SamplingParams) -> Completion:
        body = {
            "model": self.model,
            "prompt": prompt,
            "n": 1,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": 0,
            "max_tokens": params.max_new_tokens,
            "stop": list(params.stop_strings),
            "stop_token_ids": [self.eos_token_id],
            "include_stop_str_in_output": True,
            "logprobs": 0,
            "return_token_ids": True,
        }
        reply = self._call("POST", "/v1/completions", body, self.request_timeout_s)
        try:
            choice = reply["choices"][0]
            token_ids = [int(t) for t in choice["token_ids"]]
            logprobs = [float(x) for x in choice["logprobs"]["token_logprobs"]]
            finish_reason = choice["finish_reason"]
        except (KeyError, IndexError, TypeError, ValueError):
            raise RemoteEngineError(
                f"{self.base_url}/v1/completions: a reply without token_ids and logprobs "
                f"(is this vLLM?): {json.dumps(reply)[:300]}"
            ) from None
        if len(logprobs) != len(token_ids):
            raise RemoteEngineError(
                f"{self.base_url}/v1/completions: {len(token_ids)} tokens but "
                f"{len(logprobs)} logprobs"
            )
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        reason = "length" if finish_reason == "length" else "stop"
        return Completion(token_ids, logprobs, text, reason)  # type: ignore[arg-type]

    # ---- weights

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Writes the weights to `weights_dir` and has the server load them in place."""
        from safetensors.torch import save_file

        self.weights_dir.mkdir(parents=True, exist_ok=True)
        partial = self.weights_dir / f".{WEIGHTS_FILE}.partial"
        tensors = {name: t.cpu().clone().contiguous() for name, t in export_weights(model)}
        save_file(tensors, str(partial))
        os.replace(partial, self.weights_dir / WEIGHTS_FILE)
        body = {
            "method": "reload_weights",
            "kwargs": {"weights_path": str(self.weights_dir.resolve())},
            "timeout": self.sync_timeout_s,
        }
        self._call("POST", "/collective_rpc", body, self.sync_timeout_s)
        reply = self._call("POST", "/reset_prefix_cache", None, self.sync_timeout_s)
        if not (isinstance(reply, dict) and reply.get("success") is True):
            raise RemoteEngineError(
                f"{self.base_url}/reset_prefix_cache: the server did not reset it: {reply}"
            )

    def sleep(self) -> None:
        """The server lives elsewhere: nothing to free here."""

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
