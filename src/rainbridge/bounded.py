"""A dict with a fixed maximum size, for caches keyed by what clients send.

Model names, paths and key values come from requests: a cache keyed by them must not grow
with what an attacker sends. When full, the oldest entry goes (insertion order, O(1));
reads cost what a plain dict lookup costs, so it sits on the hot path. Each owner (a
``Routes``, a ``KeyPool``, a ``Pricing``) builds its own: nothing here is module-level.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(OrderedDict, Generic[K, V]):
    """``put`` evicts the oldest entry when ``limit`` entries are held; ``get`` is dict's."""

    def __init__(self, limit: int):
        super().__init__()
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit

    def put(self, key: K, value: V) -> V:
        if key not in self and len(self) >= self.limit:
            self.popitem(last=False)
        self[key] = value
        return value

    def first_time(self, key: K) -> bool:
        """True once per key while it is remembered (a bounded "seen" set: warn once)."""
        if key in self:
            return False
        self.put(key, None)  # type: ignore[arg-type]
        return True
