"""One `vllm serve` over HTTP: the calls the remote engine makes to a server, each with a
deadline, each failure a `RemoteEngineError` naming the URL and the cause (refused, no answer
within the deadline, an HTTP status, a body that is not what vLLM sends)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from rl_client.engines.base import Completion, SamplingParams


class RemoteEngineError(RuntimeError):
    """A call to a vLLM server failed; the message names the URL and the cause."""


class VLLMServerClient:
    def __init__(self, base_url: str, *, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key

    def call(self, method: str, path: str, body: Any, timeout_s: float) -> Any:
        """One HTTP call with a deadline (a socket timeout, so a server that accepts and never
        answers fails at it); the JSON reply (None for an empty body)."""
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

    def served_model(self, timeout_s: float) -> str:
        """The one model the server serves."""
        reply = self.call("GET", "/v1/models", None, timeout_s)
        try:
            names = [entry["id"] for entry in reply["data"]]
        except (KeyError, TypeError):
            raise RemoteEngineError(f"{self.base_url}/v1/models: unexpected reply") from None
        if len(names) != 1:
            raise RemoteEngineError(
                f"{self.base_url} serves {names}: set rollout.remote.model to one of them"
            )
        return names[0]

    def sample(
        self, model: str, prompt: list[int], params: SamplingParams, tokenizer: Any,
        timeout_s: float,
    ) -> Completion:  # fmt: skip
        """One completion of `prompt`: token ids in and out (nothing re-tokenised), with the
        sampler's logprob of each token; `tokenizer` decodes the text and names EOS."""
        body = {
            "model": model,
            "prompt": prompt,
            "n": 1,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": 0,
            "max_tokens": params.max_new_tokens,
            "stop": list(params.stop_strings),
            "stop_token_ids": [tokenizer.eos_token_id],
            "include_stop_str_in_output": True,
            "logprobs": 0,  # the sampled token's own logprob
            "return_token_ids": True,
        }
        reply = self.call("POST", "/v1/completions", body, timeout_s)
        try:
            choice = reply["choices"][0]
            token_ids = [int(t) for t in choice["token_ids"]]
            logprobs = [float(x) for x in choice["logprobs"]["token_logprobs"]]
            finish_reason = str(choice["finish_reason"])
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
        text = tokenizer.decode(token_ids, skip_special_tokens=True)
        reason = "length" if finish_reason == "length" else "stop"
        return Completion(token_ids, logprobs, text, reason)

    def reload_weights(self, weights_path: str, timeout_s: float) -> None:
        """Loads the safetensors in `weights_path` in place, then drops the prefix cache (its
        blocks hold keys and values of the old weights). Dev-mode routes."""
        body = {
            "method": "reload_weights",
            "kwargs": {"weights_path": weights_path},
            "timeout": timeout_s,
        }
        self.call("POST", "/collective_rpc", body, timeout_s)
        reply = self.call("POST", "/reset_prefix_cache", None, timeout_s)
        if not (isinstance(reply, dict) and reply.get("success") is True):
            raise RemoteEngineError(
                f"{self.base_url}/reset_prefix_cache: the server did not reset it: {reply}"
            )
