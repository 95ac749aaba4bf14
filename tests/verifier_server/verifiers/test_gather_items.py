"""`gather_items`, the per-item isolation of async verifiers: a bug one item reaches fails that
item only (once, four completions each failed their whole judge / openai_grader batch)."""

from __future__ import annotations

import asyncio

import pytest

from verifier_server.types import Item, Result, RewardSpec, Status
from verifier_server.verifiers.base import gather_items


def _item(id: str) -> Item:
    return Item(id=id, prompt="p", completion=id, reward=RewardSpec("judge", {}))


async def _score(item: Item) -> Result:
    await asyncio.sleep(0)
    if item.completion == "crash":
        raise OverflowError("int too large to convert to float")
    return Result(id=item.id, score=1.0)


async def test_an_exception_fails_only_its_own_item() -> None:
    results = await gather_items([_item("a"), _item("crash"), _item("b")], _score)
    assert [(r.id, r.status, r.score) for r in results] == [
        ("a", Status.OK, 1.0),
        ("crash", Status.VERIFIER_ERROR, 0.0),
        ("b", Status.OK, 1.0),
    ]
    assert results[1].reason == "verifier_exception"
    assert results[1].details["error"] == "OverflowError: int too large to convert to float"


async def test_cancellation_is_not_an_items_failure() -> None:
    async def cancelled(item: Item) -> Result:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await gather_items([_item("a")], cancelled)
