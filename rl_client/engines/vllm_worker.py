"""Methods added to vLLM's worker (`worker_extension_cls`), called through `collective_rpc`.

The weights travel as one safetensors blob: vLLM's message encoding carries bytes as they
are (untyped utility arguments lose their tensor type), and no function has to be pickled,
so the engine runs without `VLLM_ALLOW_INSECURE_SERIALIZATION`. This module is imported
inside vLLM's worker process: it must not import the trainer.
"""

from __future__ import annotations

from typing import Any


class WeightReceiver:
    def rl_load_weights(self, payload: bytes) -> int:
        """Loads checkpoint-named tensors in place through the worker's `reload_weights`
        (which also redoes vLLM's post-load processing of the weights)."""
        from safetensors.torch import load

        weights = load(payload)
        worker: Any = self
        worker.reload_weights(weights_iterator=iter(weights.items()))
        return len(weights)
