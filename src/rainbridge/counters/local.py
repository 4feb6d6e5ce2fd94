"""Counters of one gateway process, persisted to the config store.

Admission and settlement never ``await``: within one event loop, check-and-reserve is
atomic, which is what makes "200 concurrent requests against a limit of 50 admit exactly
50" hold. Each counter is a ``Slot`` object; governance keeps a reference to the slots of a
key's current windows, so the request path does no dictionary lookups at all, and a changed
slot is queued for the flush once (a flag, not a set of keys hashed on every request).

This process's usage (``own``) is flushed every few seconds (and at shutdown) as
``(scope, key, window, node)`` rows with ``GREATEST`` upserts, so a replayed flush changes
nothing. At start the rows of every other node (including this host's earlier
incarnations) are loaded into ``committed``, so a restart keeps the window's usage.
"""

from __future__ import annotations

import logging
import time

from ..store.base import StoreUnavailable
from ..store.db import Database
from .base import Key, Slot

log = logging.getLogger("rainbridge.counters")

RETAIN_MS = 400 * 86_400_000  # windows up to a year (plus slack) are loaded at start


def _row_key(key: Key) -> str:
    return f"{key[1]}\x1f{key[2]}"


class LocalCounters:
    def __init__(self, node_id: str):
        self.node_id = node_id
        self.slots: dict[Key, Slot] = {}
        self._dirty: list[Slot] = []

    # -- the interface ----------------------------------------------------------------------

    def slot(self, key: Key) -> Slot:
        s = self.slots.get(key)
        if s is None:
            s = self.slots[key] = Slot(key)
        return s

    def add(self, slot: Slot, amount: float) -> None:
        slot.committed += amount
        slot.own += amount
        if not slot.dirty:
            self.mark(slot)

    def mark(self, slot: Slot) -> None:
        slot.dirty = True
        self._dirty.append(slot)

    def value(self, key: Key) -> float:
        s = self.slots.get(key)
        return s.committed if s is not None else 0.0

    def reserved(self, key: Key) -> float:
        s = self.slots.get(key)
        return s.reserved if s is not None else 0.0

    # -- persistence ------------------------------------------------------------------------

    async def load(self, db: Database, now_ms: int | None = None) -> int:
        """Add every other node's rows of recent windows to ``committed``."""
        now_ms = now_ms or int(time.time() * 1000)
        rows = await db.fetch(
            "SELECT scope, counter_key, window_start, SUM(value) AS total FROM counters "
            "WHERE window_start >= $1 AND node_id <> $2 GROUP BY scope, counter_key, window_start",
            now_ms - RETAIN_MS, self.node_id,
        )
        for row in rows:
            owner, _, metric = row["counter_key"].partition("\x1f")
            total = float(row["total"])
            self.slot((row["scope"], owner, metric, int(row["window_start"]))).committed += int(total) if total.is_integer() else total
        return len(rows)

    async def flush(self, db: Database) -> int:
        """Write this process's changed slots; keep them dirty if the store is down."""
        if not self._dirty:
            return 0
        dirty, self._dirty = self._dirty, []
        for s in dirty:
            s.dirty = False  # a change from here on queues the slot again
        now = int(time.time() * 1000)
        rows = [(s.key[0], _row_key(s.key), s.key[3], self.node_id, float(s.own), now) for s in dirty]
        greatest = db.greatest("counters.value", "excluded.value")
        try:
            await db.executemany(
                "INSERT INTO counters (scope, counter_key, window_start, node_id, value, updated_at) "
                "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (scope, counter_key, window_start, node_id) "
                f"DO UPDATE SET value = {greatest}, updated_at = excluded.updated_at",
                rows,
            )
        except StoreUnavailable:
            for s in dirty:
                if not s.dirty:
                    s.dirty = True
                    self._dirty.append(s)
            raise
        return len(rows)

    def prune(self, now_ms: int, oldest_window_ms: int) -> None:
        """Forget windows that started more than ``oldest_window_ms`` ago (flushed, idle)."""
        cutoff = now_ms - oldest_window_ms
        for key in [k for k, s in self.slots.items() if k[3] < cutoff and not s.dirty and not s.reserved]:
            del self.slots[key]
