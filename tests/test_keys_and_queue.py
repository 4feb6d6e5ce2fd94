"""Weighted key choice and the per-provider queue."""

import asyncio
import random
from collections import Counter

import pytest

from rainbridge.errors import QueueFull
from rainbridge.gateway.keys import KeyPool
from rainbridge.gateway.queue import ProviderQueue
from rainbridge.providers.base import ProviderKey


def key(name, weight=1.0, models=None):
    return ProviderKey(name, f"sk-{name}", frozenset(models) if models is not None else None, weight)


def test_weighted_choice_follows_weights():
    pool = KeyPool([key("a", 3.0), key("b", 1.0)], random.Random(7))
    counts = Counter(pool.choose("m").name for _ in range(20000))
    assert 0.72 < counts["a"] / 20000 < 0.78


def test_only_keys_serving_the_model_are_chosen():
    pool = KeyPool([key("a", models=["gpt-4o"]), key("b", models=["*x"]), key("c")], random.Random(1))
    names = {pool.choose("gpt-4o").name for _ in range(200)}
    assert names == {"a", "c"}
    assert {pool.choose("other").name for _ in range(50)} == {"c"}


def test_blacklisted_model_is_never_served():
    k = ProviderKey("a", "sk", None, 1.0, blacklist=frozenset({"o1"}))
    pool = KeyPool([k])
    assert pool.choose("o1") is None
    assert pool.choose("gpt") is k


def test_exclusion_rotates_and_runs_out():
    a, b = key("a"), key("b")
    pool = KeyPool([a, b], random.Random(3))
    assert pool.choose("m", [a]) is b
    assert pool.choose("m", [a, b]) is None


def test_zero_weights_still_choose_uniformly():
    pool = KeyPool([key("a", 0.0), key("b", 0.0)], random.Random(5))
    counts = Counter(pool.choose("m").name for _ in range(2000))
    assert counts["a"] > 800 and counts["b"] > 800


async def test_queue_admits_up_to_concurrency_then_waits_in_order():
    q = ProviderQueue("p", concurrency=2, buffer_size=10, drop_excess=False)
    await q.acquire()
    await q.acquire()
    order = []

    async def waiter(i):
        await q.acquire()
        order.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(3)]
    await asyncio.sleep(0)
    assert q.waiting == 3 and not order
    q.release()
    await asyncio.sleep(0)
    q.release()
    await asyncio.sleep(0)
    assert order == [0, 1]
    q.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]
    assert q.active == 2


async def test_queue_full_with_drop_excess_refuses_at_once():
    q = ProviderQueue("p", concurrency=1, buffer_size=1, drop_excess=True)
    await q.acquire()
    waiting = asyncio.create_task(q.acquire())
    await asyncio.sleep(0)
    with pytest.raises(QueueFull) as info:
        await q.acquire()
    assert info.value.status == 429
    q.release()
    await waiting
    q.release()
    assert q.active == 0


async def test_cancelled_waiter_gives_its_slot_away():
    q = ProviderQueue("p", concurrency=1, buffer_size=5, drop_excess=False)
    await q.acquire()
    first = asyncio.create_task(q.acquire())
    second = asyncio.create_task(q.acquire())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    q.release()
    await asyncio.wait_for(second, 1)
    assert q.active == 1 and q.waiting == 0
