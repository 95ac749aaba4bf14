"""The reply cache: single flight, failures not stored, LRU order, shielded shared calls."""

from __future__ import annotations

import asyncio

import pytest

from verifier_server.verifiers.judge.cache import ReplyCache


async def test_concurrent_identical_requests_share_one_call() -> None:
    cache: ReplyCache[str] = ReplyCache(10)
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return "verdict"

    results = await asyncio.gather(*(cache.get_or_call("k", call) for _ in range(5)))
    assert calls == 1
    assert [r[0] for r in results] == ["verdict"] * 5
    assert [r[1] for r in results] == [False, True, True, True, True]
    assert await cache.get_or_call("k", call) == ("verdict", True) and calls == 1


async def test_failures_are_not_stored() -> None:
    cache: ReplyCache[str] = ReplyCache(10)
    outcomes = iter([RuntimeError("down"), "verdict"])

    async def call() -> str:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    with pytest.raises(RuntimeError):
        await cache.get_or_call("k", call)
    assert await cache.get_or_call("k", call) == ("verdict", False)


async def test_least_recently_used_is_evicted_and_size_zero_stores_nothing() -> None:
    cache: ReplyCache[str] = ReplyCache(2)

    async def value(v: str) -> str:
        return v

    for key in ["a", "b"]:
        await cache.get_or_call(key, lambda k=key: value(k))
    await cache.get_or_call("a", lambda: value("a"))  # a is now the most recent
    await cache.get_or_call("c", lambda: value("c"))
    assert (await cache.get_or_call("b", lambda: value("new b"))) == ("new b", False)
    assert (await cache.get_or_call("a", lambda: value("?")))[1] is False  # evicted by b

    off: ReplyCache[str] = ReplyCache(0)
    await off.get_or_call("a", lambda: value("a"))
    assert len(off) == 0 and (await off.get_or_call("a", lambda: value("again"))) == (
        "again",
        False,
    )


async def test_a_waiter_giving_up_does_not_cancel_the_shared_call() -> None:
    cache: ReplyCache[str] = ReplyCache(10)
    release = asyncio.Event()

    async def call() -> str:
        await release.wait()
        return "verdict"

    impatient = asyncio.ensure_future(cache.get_or_call("k", call))
    patient = asyncio.ensure_future(cache.get_or_call("k", call))
    await asyncio.sleep(0)
    impatient.cancel()
    release.set()
    assert await patient == ("verdict", True)
