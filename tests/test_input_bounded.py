"""Caches keyed by what clients send stay bounded (issue 12: 400 KB model names stayed in
memory; ``pricing._warned`` grew with every unknown name)."""

from __future__ import annotations

import logging
import types

import pytest

from rainbridge.bounded import BoundedCache
from rainbridge.gateway.keys import KeyPool
from rainbridge.gateway.routing import Routes
from rainbridge.governance.pricing import Pricing
from rainbridge.providers.base import ProviderKey


def test_a_full_cache_evicts_its_oldest_entry():
    cache: BoundedCache[str, int] = BoundedCache(3)
    for i, name in enumerate("abcde"):
        cache.put(name, i)
    assert list(cache.items()) == [("c", 2), ("d", 3), ("e", 4)]
    assert cache.get("a") is None
    cache.put("c", 9)  # a known key is replaced, nothing evicted
    assert dict(cache) == {"c": 9, "d": 3, "e": 4}


def test_first_time_is_true_once_per_remembered_key():
    seen: BoundedCache[str, None] = BoundedCache(2)
    assert [seen.first_time(k) for k in ("a", "a", "b", "c", "a")] == [True, False, True, True, True]
    assert len(seen) == 2


def test_a_cache_needs_room_for_one_entry():
    with pytest.raises(ValueError, match="at least 1"):
        BoundedCache(0)


def test_routing_cache_holds_at_most_4096_names():
    provider = types.SimpleNamespace(name="openai", keys=KeyPool([ProviderKey("k", "v", None, 1.0)]))
    routes = Routes({"openai": provider})  # type: ignore[dict-item]
    for i in range(5000):
        assert routes.resolve(f"openai/model-{i}", "openai").model == f"model-{i}"
    assert len(routes._cache) == 4096
    assert ("openai/model-4999", "openai") in routes._cache


def test_key_pool_cache_holds_at_most_4096_models():
    pool = KeyPool([ProviderKey("k", "v", None, 1.0)])
    for i in range(5000):
        assert pool.choose(f"model-{i}") is not None
    assert len(pool._eligible) == 4096


def test_unknown_models_are_warned_about_once_and_remembered_in_bounded_memory(caplog):
    pricing = Pricing()
    with caplog.at_level(logging.WARNING, logger="rainbridge.pricing"):
        for i in range(5000):
            assert pricing.cost("p", f"unknown-{i}", 10, 10) == 0.0
        pricing.cost("p", "unknown-4999", 10, 10)
    warned = [r for r in caplog.records if "no price for model" in r.getMessage()]
    assert len(warned) == 5000
    assert len(pricing._warned) == 4096
    assert len(pricing._cache) == 4096
