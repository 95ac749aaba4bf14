"""OpenRLHF: the `--remote_rm_url` protocol, over HTTP (served by verifier_server.http_api at
`/v1/openrlhf/<reward>`) or as a Python file (`reward_func` here).

OpenRLHF sends `{"query": [...], "prompts": [...], "labels": [...]}`: each query is the prompt
and the response decoded together (special tokens kept), each label the dataset's label for
the prompt. It reads `rewards` (for advantages), `scores` (for dynamic filtering) and
`extra_logs` (logged per sample) from the answer. The completion scored is what follows the
prompt in the query (a tokenizer may put a BOS token before it); the label is the item's
`reference`. A query that does not contain its prompt is refused: scoring it whole would score
the prompt's text too (its format instructions, a worked example's answer). The special tokens
the query ends with (EOS, right padding: `<|im_end|>`, `</s>`, ...) are not the response's
text and are removed; left in, `format` scored every well-formed response 0.0.

OpenRLHF has no way to mask a sample, so an item the server could not verify gets reward and
score 0.0, `extra_logs.verified` 0.0 (1.0 when verified), and its status in `statuses` (a
key OpenRLHF ignores, for people reading the JSON).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from verifier_server.integrations.connection import (
    check_reward,
    describe,
    reward_spec,
    shared_client,
    status_counts,
)
from verifier_server.types import Item, Result, RewardSpec, Status

log = logging.getLogger(__name__)


class ProtocolError(ValueError):
    """A request that does not follow OpenRLHF's protocol; `field` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def items_from_request(body: Any, spec: RewardSpec) -> list[Item]:
    """OpenRLHF's request body -> one item per query. Raises ProtocolError naming the field."""
    if not isinstance(body, Mapping):
        raise ProtocolError("<body>", f"expected a JSON object, got {type(body).__name__}")
    queries = body.get("query")
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        raise ProtocolError("query", "expected a list of strings (prompt and response)")
    prompts = body.get("prompts", [""] * len(queries))
    labels = body.get("labels", [None] * len(queries))
    for name, values in (("prompts", prompts), ("labels", labels)):
        if not isinstance(values, list) or len(values) != len(queries):
            raise ProtocolError(name, f"expected a list of {len(queries)} values, one per query")
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise ProtocolError(f"prompts[{index}]", "expected a string")
    return [
        Item(
            id=str(index),
            completion=_response(query, prompt, index),
            reward=spec,
            prompt=prompt,
            reference=label,
        )
        for index, (query, prompt, label) in enumerate(zip(queries, prompts, labels, strict=True))
    ]


def _response(query: str, prompt: str, index: int) -> str:
    """What follows the first occurrence of `prompt` in `query` (all of it when there is no
    prompt), less the special tokens it ends with."""
    start = query.find(prompt)
    if start < 0:
        raise ProtocolError(
            f"query[{index}]",
            f"does not contain prompts[{index}], so the response cannot be told from the prompt; "
            "send the prompt exactly as the query's decoded text holds it",
        )
    return _without_special_tail(query[start + len(prompt) :])


_SPECIAL = re.compile(
    r"<\|[^<>|\s]{1,64}\|>|<\uff5c[^<>\uff5c\s]{1,64}\uff5c>|</s>|<eos>|<pad>|<end_of_turn>"
)
"""One special token: `<|...|>` (Qwen, Llama 3, GPT), the same with fullwidth bars (DeepSeek),
`</s>`, `<eos>`, `<pad>`, `<end_of_turn>` (Llama 2, Mistral, Gemma)."""


def _without_special_tail(text: str) -> str:
    """`text` less the run of special tokens it ends with, one token at a time from the end
    (linear: a regex searched over the whole text is quadratic on a long run of them)."""
    end = len(text)
    while text.endswith(">", 0, end):
        start = text.rfind("<", max(0, end - 80), end)
        if start < 0 or _SPECIAL.fullmatch(text, start, end) is None:
            break
        end = start
    return text[:end]


def response_from_results(results: Sequence[Result]) -> dict[str, Any]:
    """Results -> OpenRLHF's answer: `rewards`, `scores`, `extra_logs.verified`, `statuses`.
    Raises ValueError when the server refused the reward itself (see `check_reward`)."""
    check_reward(results)
    verified = [r.status == Status.OK for r in results]
    rewards = [r.score if ok else 0.0 for r, ok in zip(results, verified, strict=True)]
    counts = status_counts(results)
    if counts["OK"] < len(results):
        log.warning("openrlhf: %d of %d items not verified (%s)",
                    len(results) - counts["OK"], len(results), describe(counts))  # fmt: skip
    return {
        "rewards": rewards,
        "scores": rewards,
        "extra_logs": {"verified": [1.0 if ok else 0.0 for ok in verified]},
        "statuses": [r.status.name for r in results],
    }


def reward_func(
    queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any], **_: Any
) -> dict[str, Any]:
    """OpenRLHF's file mode: `--remote_rm_url /path/to/verifier_server/integrations/openrlhf.py`
    (print the path with `python -c "import verifier_server.integrations.openrlhf as m;
    print(m.__file__)"`). OpenRLHF passes no settings, so the reward comes from
    $VERIFIER_SERVER_REWARD and the server from $VERIFIER_SERVER_ADDRESS (and the token, if
    any, from $VERIFIER_SERVER_TOKEN)."""
    body = {"query": list(queries), "prompts": list(prompts), "labels": list(labels)}
    items = items_from_request(body, reward_spec(None, "reward"))
    return response_from_results(shared_client().score(items))
