"""verl: a custom reward function backed by the server, per sample or per batch.

verl 0.9's reward loop calls the function once per response, all of a batch's calls at once
(one asyncio task each). `compute_score_async` gathers the calls that arrive within
`linger_s` of each other on one event loop into one request:

    reward.custom_reward_function.path=pkg://verifier_server.integrations.verl
    reward.custom_reward_function.name=compute_score_async
    +reward.custom_reward_function.reward_kwargs.reward=math

`compute_score` is the same per sample, blocking, one request per call (verl's sync
signature, for the naive manager of older releases); `compute_score_batch` is the batch form
of older releases' `batch` reward manager (`reward_model.reward_manager=batch`), one request
per batch.

`ground_truth` becomes the item's `reference`. verl cannot mask a sample: every result is a
dict `{"score", "verified"}`; an item the server could not verify has score 0.0 and verified
0.0. verl writes "score" into the reward tensor at the response's last token and collects the
other keys into `reward_extra_info`, so the mean of `verified` shows how much of the batch
was trained on an unverified 0.0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from verifier_server.client import AsyncRewardClient
from verifier_server.integrations.connection import (
    MAX_BATCH_ITEMS,
    check_reward,
    endpoint,
    reward_spec,
    shared_client,
)
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
    $VERIFIER_SERVER_REWARD), set with `+reward.custom_reward_function.reward_kwargs.reward=...`
    (verl 0.9; `+custom_reward_function.reward_kwargs.reward=...` in earlier releases);
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
    check_reward(results)
    return [_verl_score(result) for result in results]


async def compute_score_async(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None = None,
    *,
    reward: str | Mapping[str, Any] | None = None,
    address: str | None = None,
    token: str | None = None,
    timeout_s: float = 120.0,
    linger_s: float = 0.05,
    **_: Any,
) -> dict[str, float]:
    """verl's async `compute_score`: the same result as `compute_score`, but the calls that
    reach one event loop within `linger_s` of the first go to the server as one request."""
    item = Item(id="", completion=solution_str, reward=reward_spec(reward, "reward"),
                reference=_jsonable(ground_truth))  # fmt: skip
    address, token = endpoint(address, token)
    loop = asyncio.get_running_loop()
    key = (id(loop), address, token)
    batcher = _batchers.get(key)
    if batcher is None or batcher.loop is not loop:
        batcher = _batchers[key] = _Batcher(
            loop, AsyncRewardClient(address, token=token, max_batch_items=MAX_BATCH_ITEMS)
        )
    result = await batcher.score(item, timeout_s, linger_s)
    check_reward([result])
    return _verl_score(result)


class _Batcher:
    """Items awaited on one event loop, sent together: the first arrival starts a window of
    `linger_s`, and everything that arrived by its end is one request."""

    def __init__(self, loop: asyncio.AbstractEventLoop, client: AsyncRewardClient) -> None:
        self.loop = loop
        self.client = client
        self.waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self.timeout_s = 0.0
        # The loop holds tasks weakly: a flush nobody references could be collected mid-run,
        # leaving its callers waiting forever.
        self.flushing: set[asyncio.Task[None]] = set()

    async def score(self, item: Item, timeout_s: float, linger_s: float) -> Result:
        future: asyncio.Future[Result] = self.loop.create_future()
        if not self.waiting:
            self.loop.call_later(linger_s, self._start_flush)
        self.waiting.append((item, future))
        self.timeout_s = max(self.timeout_s, timeout_s)
        return await future

    def _start_flush(self) -> None:
        task = self.loop.create_task(self._flush())
        self.flushing.add(task)
        task.add_done_callback(self.flushing.discard)

    async def _flush(self) -> None:
        batch, self.waiting, timeout_s, self.timeout_s = self.waiting, [], self.timeout_s, 0.0
        items = [Item(id=str(n), completion=i.completion, reward=i.reward, reference=i.reference)
                 for n, (i, _) in enumerate(batch)]  # fmt: skip
        try:
            results = await self.client.score(items, timeout_s=timeout_s)
        except Exception as exc:  # a rejected request: every caller sees the error
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


_batchers: dict[tuple[int, str, str | None], _Batcher] = {}


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
