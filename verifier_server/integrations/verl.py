"""verl: a custom reward function backed by the server, per sample or per batch.

Per sample (verl's naive manager and its reward loop call it once per response):

    custom_reward_function.path=pkg://verifier_server.integrations.verl
    custom_reward_function.name=compute_score
    +custom_reward_function.reward_kwargs.reward=math

Per batch, one request for the whole batch (verl's `batch` reward manager):

    reward_model.reward_manager=batch custom_reward_function.name=compute_score_batch

`ground_truth` becomes the item's `reference`. verl cannot mask a sample: every result is a
dict `{"score", "verified"}`; an item the server could not verify has score 0.0 and verified
0.0. verl writes "score" into the reward tensor at the response's last token and collects the
other keys into `reward_extra_info`, so the mean of `verified` shows how much of the batch
was trained on an unverified 0.0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from verifier_server.integrations.connection import reward_spec, shared_client
from verifier_server.types import Item, Result, RewardSpec, Status


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None = None,
    *,
    reward: str | Mapping[str, Any] | None = None,
    address: str | None = None,
    token: str | None = None,
    timeout_s: float = 120.0,
    **_: Any,
) -> dict[str, float]:
    """verl's `compute_score` for one response: `{"score": float, "verified": 1.0 or 0.0}`.

    `reward`: the verifier or named reward (`"math"`, or `{"name", "params"}`; default
    $VERIFIER_SERVER_REWARD), set with `+custom_reward_function.reward_kwargs.reward=...`;
    `address`, `token`: as for the client (defaults $VERIFIER_SERVER_ADDRESS,
    $VERIFIER_SERVER_TOKEN). Other keyword arguments verl adds are accepted and unused."""
    return compute_score_batch(
        [data_source], [solution_str], [ground_truth], [extra_info],
        reward=reward, address=address, token=token, timeout_s=timeout_s,
    )[0]  # fmt: skip


def compute_score_batch(
    data_sources: Sequence[str],
    solution_strs: Sequence[str],
    ground_truths: Sequence[Any],
    extra_infos: Sequence[Mapping[str, Any] | None] | None = None,
    *,
    reward: str | Mapping[str, Any] | None = None,
    address: str | None = None,
    token: str | None = None,
    timeout_s: float = 120.0,
    **_: Any,
) -> list[dict[str, float]]:
    """verl's batch form (`reward_model.reward_manager=batch`): the whole batch in one
    request, one `{"score", "verified"}` dict per response, in order."""
    if not len(solution_strs) == len(ground_truths) == len(data_sources):
        raise ValueError(
            f"data_sources, solution_strs and ground_truths differ in length "
            f"({len(data_sources)}, {len(solution_strs)}, {len(ground_truths)})"
        )
    spec: RewardSpec = reward_spec(reward, "reward")
    items = [
        Item(id=str(index), completion=solution, reward=spec, reference=_jsonable(truth))
        for index, (solution, truth) in enumerate(zip(solution_strs, ground_truths, strict=True))
    ]
    results = shared_client(address, token).score(items, timeout_s=timeout_s)
    return [_verl_score(result) for result in results]


def _verl_score(result: Result) -> dict[str, float]:
    verified = result.status == Status.OK
    return {"score": result.score if verified else 0.0, "verified": 1.0 if verified else 0.0}


def _jsonable(value: Any) -> Any:
    """verl keeps non-tensor columns as numpy arrays: ground truths (and lists in them) may
    arrive as arrays, their numbers as numpy scalars."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # an ndarray or a numpy scalar
        return _jsonable(value.tolist())
    return value
