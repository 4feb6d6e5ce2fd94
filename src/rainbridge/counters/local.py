"""Counters of one gateway process, persisted to the config store.

Admission and settlement never ``await``: within one event loop, check-and-reserve is
atomic, which is what makes "200 concurrent requests against a limit of 50 admit exactly
50" hold. Each counter is a ``Slot`` object; governance keeps a reference to the slots of a
key's current windows, so the request path does no dictionary lookups and no bookkeeping
beyond the numbers themselves.

This process's usage (``Slot.own``) is flushed every few seconds (and at shutdown) as
``(scope, key, window, node)`` rows with ``GREATEST`` upserts, so a replayed flush changes
nothing; the flush writes the slots whose own usage moved since the last one (a pass over
the live slots: ended windows are pruned, so they are about one per key and limit). At
start the rows of every other node (including this host's earlier incarnations) are loaded
into ``committed``, so a restart keeps the window's usage.
"""

from __future__ import annotations

import logging
import time

from ..store.db import Database
from .base import Key, Slot

log = logging.getLogger("rainbridge.counters")

RETAIN_MS = 400 * 86_400_000  # windows up to a year (plus slack) are loaded at start
# An ended window's slot is dropped this long after its end (once flushed, with nothing in
# flight): a request admitted just before the end settles on it within that time.
PRUNE_AFTER_END_MS = 3_600_000


def _row_key(key: Key) -> str:
    return f"{key[1]}\x1f{key[2]}"


class LocalCounters:
    def __init__(self, node_id: str):
        self.node_id = node_id
        self.slots: dict[Key, Slot] = {}

    # -- the interface ----------------------------------------------------------------------

    def slot(self, key: Key, end_ms: int) -> Slot:
        s = self.slots.get(key)
        if s is None:
            s = self.slots[key] = Slot(key, end_ms)
        elif not s.end_ms:
            s.end_ms = end_ms
        return s

    def value(self, key: Key) -> float:
        s = self.slots.get(key)
        return s.committed if s is not None else 0.0

    def reserved(self, key: Key) -> float:
        s = self.slots.get(key)
        return s.reserved if s is not None else 0.0

    # -- persistence ------------------------------------------------------------------------

    async def load(self, db: Database, now_ms: int | None = None) -> int:
        """Add every other node's rows of recent windows to ``committed`` (as ``others``)."""
        now_ms = now_ms or int(time.time() * 1000)
        rows = await db.fetch(
            "SELECT scope, counter_key, window_start, SUM(value) AS total FROM counters "
            "WHERE window_start >= $1 AND node_id <> $2 GROUP BY scope, counter_key, window_start",
            now_ms - RETAIN_MS, self.node_id,
        )
        for row in rows:
            owner, _, metric = row["counter_key"].partition("\x1f")
            total = float(row["total"])
            value = int(total) if total.is_integer() else total
            key = (row["scope"], owner, metric, int(row["window_start"]))
            s = self.slots.get(key)
            if s is None:
                s = self.slots[key] = Slot(key)
            s.committed += value
            s.others += value
        return len(rows)

    async def flush(self, db: Database) -> int:
        """Write the own usage of every slot it changed in since the last flush (a slot
        stays changed, and is written next time, when the store is down)."""
        changed = [(s, own) for s in self.slots.values() if (own := s.own) != s.flushed]
        if not changed:
            return 0
        now = int(time.time() * 1000)
        rows = [(s.key[0], _row_key(s.key), s.key[3], self.node_id, float(own), now) for s, own in changed]
        greatest = db.greatest("counters.value", "excluded.value")
        await db.executemany(
            "INSERT INTO counters (scope, counter_key, window_start, node_id, value, updated_at) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (scope, counter_key, window_start, node_id) "
            f"DO UPDATE SET value = {greatest}, updated_at = excluded.updated_at",
            rows,
        )
        for s, own in changed:
            s.flushed = own
        return len(rows)

    def prune(self, now_ms: int) -> None:
        """Forget the slots of windows that ended a while ago (flushed, nothing in flight);
        one loaded from the store and never used again goes once it is too old to load."""
        ended = now_ms - PRUNE_AFTER_END_MS
        too_old = now_ms - RETAIN_MS
        for key, s in list(self.slots.items()):
            if s.reserved or s.own != s.flushed:
                continue  # in flight, or not written yet
            if (s.end_ms < ended) if s.end_ms else (key[3] < too_old):
                del self.slots[key]
