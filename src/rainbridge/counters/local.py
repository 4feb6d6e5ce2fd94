"""Counters of one gateway process, persisted to the config store.

Admission and settlement never ``await``: within one event loop, check-and-reserve is
atomic, which is what makes "200 concurrent requests against a limit of 50 admit exactly
50" hold. Each counter is a ``Slot`` object; governance keeps a reference to the slots of a
key's current windows, so the request path does no dictionary lookups and no bookkeeping
beyond the numbers themselves.

This process's usage (``Slot.own``) is flushed every few seconds (and at shutdown) as
``(scope, key, window, node)`` rows with ``GREATEST`` upserts (``MAX`` on SQLite), so a
replayed flush changes nothing; the flush writes the slots whose own usage moved since the
last one (a pass over the live slots: ended windows are pruned, so they are about one per
key and limit). Each row also carries its window's end (``window_end``, version 2 of the
schema), so that:

- ``load`` reads only the rows of windows still open (not a year of history) from every
  other node, including this host's earlier incarnations (another ``node_id``: never
  double-counted), and is idempotent: it keeps the largest value seen per (counter, node)
  and adds only what grew, so loading twice, or periodically, changes nothing by itself;
- ``delete_ended`` removes the rows of windows that ended more than ``PRUNE_AFTER_END_MS``
  ago, ``CLEANUP_BATCH`` rows per statement; ``maintain`` (the gateway's periodic task) runs
  it every ``CLEANUP_INTERVAL_MS``, and again at the next tick while batches come back full.

Rows written before version 2 have ``window_end = 0`` (end unknown): they keep the old rule,
loaded and kept for ``RETAIN_MS`` after their window's start.
"""

from __future__ import annotations

import logging
import time

from ..store.db import Database
from .base import Key, Slot

log = logging.getLogger("rainbridge.counters")

RETAIN_MS = 400 * 86_400_000  # rows without a window end: loaded and kept this long
# An ended window's slot is dropped this long after its end (once flushed, with nothing in
# flight): a request admitted just before the end settles on it within that time.
PRUNE_AFTER_END_MS = 3_600_000
CLEANUP_INTERVAL_MS = 60_000  # how often ``maintain`` deletes ended windows' rows
CLEANUP_BATCH = 1000  # rows per DELETE: short statements, no long lock on the table


def _upsert(greatest: str) -> str:
    return (
        "INSERT INTO counters (scope, counter_key, window_start, window_end, node_id, value, "
        "updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) "
        "ON CONFLICT (scope, counter_key, window_start, node_id) DO UPDATE SET "
        f"value = {greatest}(counters.value, excluded.value), "
        f"window_end = {greatest}(counters.window_end, excluded.window_end), "
        "updated_at = excluded.updated_at"
    )


# Idempotent flush: a row only grows (a replayed or reordered flush changes nothing).
UPSERT_SQL = {"postgres": _upsert("GREATEST"), "sqlite": _upsert("MAX")}
DELETE_ENDED_SQL = (
    "DELETE FROM counters WHERE (scope, counter_key, window_start, node_id) IN ("
    "SELECT scope, counter_key, window_start, node_id FROM counters "
    "WHERE (window_end > 0 AND window_end < $1) OR (window_end = 0 AND window_start < $2) "
    "LIMIT $3)"
)


def row_key(key: Key) -> str:
    return f"{key[1]}\x1f{key[2]}"


class LocalCounters:
    shared = False  # one process: no other member to coordinate with

    def __init__(self, node_id: str):
        self.node_id = node_id
        self.slots: dict[Key, Slot] = {}
        # The largest value loaded per (counter, other node): loading assigns maxima.
        self.loaded: dict[Key, dict[str, float]] = {}
        self._next_cleanup_ms = 0
        self.cleanup_batch = CLEANUP_BATCH

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

    def bind(self, slot: Slot, lid: str, limit: float, duration: str, cost_reserved: bool,
             scale: int = 1, aligned: bool = True, anchor: int = 0) -> None:
        """Limits of one process need no coordination."""

    def reach(self, slot: Slot, cost: float) -> bool:
        return True

    def refused(self) -> None:
        pass

    # -- persistence ------------------------------------------------------------------------

    async def load(self, db: Database, now_ms: int | None = None) -> int:
        """Bring every other node's rows of open windows into ``committed`` (as ``others``):
        per (counter, node) the value rises to the row's, never adds twice. Returns how
        many counters changed."""
        now_ms = now_ms or int(time.time() * 1000)
        rows = await db.fetch(
            "SELECT scope, counter_key, window_start, window_end, node_id, value FROM counters "
            "WHERE node_id <> $1 AND (window_end > $2 OR (window_end = 0 AND window_start >= $3))",
            self.node_id, now_ms, now_ms - RETAIN_MS,
        )
        changed: set[Key] = set()
        for row in rows:
            owner, _, metric = row["counter_key"].partition("\x1f")
            key = (row["scope"], owner, metric, int(row["window_start"]))
            raw = float(row["value"])
            value = int(raw) if raw.is_integer() else raw
            seen = self.loaded.setdefault(key, {})
            grown = value - seen.get(row["node_id"], 0)
            if grown <= 0:
                continue
            seen[row["node_id"]] = value
            s = self.slot(key, int(row["window_end"]))
            s.committed += grown
            s.others += grown
            changed.add(key)
        return len(changed)

    async def flush(self, db: Database) -> int:
        """Write the own usage of every slot it changed in since the last flush (a slot
        stays changed, and is written next time, when the store is down)."""
        changed = [(s, own) for s in self.slots.values() if (own := s.own) != s.flushed]
        if not changed:
            return 0
        now = int(time.time() * 1000)
        rows = [
            (s.key[0], row_key(s.key), s.key[3], s.end_ms, self.node_id, float(own), now)
            for s, own in changed
        ]
        await db.executemany(UPSERT_SQL[db.dialect], rows)
        for s, own in changed:
            s.flushed = own
        return len(rows)

    async def delete_ended(self, db: Database, now_ms: int, batch: int = CLEANUP_BATCH) -> int:
        """Delete up to ``batch`` rows of windows that ended ``PRUNE_AFTER_END_MS`` ago (any
        node's: a dead node's rows go too); returns how many. Safe on every replica at once."""
        return await db.execute(DELETE_ENDED_SQL, now_ms - PRUNE_AFTER_END_MS, now_ms - RETAIN_MS, batch)

    async def maintain(self, db: Database, now_ms: int | None = None) -> None:
        """The periodic task: flush, forget ended slots, and now and then delete ended
        windows' rows (at the next call again while a batch comes back full)."""
        now_ms = now_ms or int(time.time() * 1000)
        await self.flush(db)
        self.prune(now_ms)
        if now_ms >= self._next_cleanup_ms:
            deleted = await self.delete_ended(db, now_ms, self.cleanup_batch)
            full = deleted >= self.cleanup_batch
            self._next_cleanup_ms = now_ms + (0 if full else CLEANUP_INTERVAL_MS)

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
                self.loaded.pop(key, None)
