"""Counters of one gateway process, persisted to the config store.

Admission and settlement never ``await``: within one event loop, check-and-reserve is
atomic, which is what makes "200 concurrent requests against a limit of 50 admit exactly
50" hold. Each counter is a ``Slot`` object; governance keeps a reference to the slots of a
key's current windows, so the request path does no dictionary lookups at all.

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
from .base import Key, Reservation

log = logging.getLogger("rainbridge.counters")

RETAIN_MS = 400 * 86_400_000  # windows up to a year (plus slack) are loaded at start


class Slot:
    __slots__ = ("committed", "own", "reserved")

    def __init__(self) -> None:
        self.committed = 0.0  # every node's usage: this process's own plus what others report
        self.reserved = 0.0  # held by requests in flight on this process
        self.own = 0.0  # this process's usage: what it flushes


def _row_key(key: Key) -> str:
    return f"{key[1]}\x1f{key[2]}"


class LocalCounters:
    def __init__(self, node_id: str):
        self.node_id = node_id
        self.slots: dict[Key, Slot] = {}
        self._dirty: set[Key] = set()

    def slot(self, key: Key) -> Slot:
        s = self.slots.get(key)
        if s is None:
            s = self.slots[key] = Slot()
        return s

    # -- the interface ----------------------------------------------------------------------

    def value(self, key: Key) -> float:
        s = self.slots.get(key)
        return s.committed if s is not None else 0.0

    def reserved(self, key: Key) -> float:
        s = self.slots.get(key)
        return s.reserved if s is not None else 0.0

    def reserve(self, keys: list[Key], amounts: list[float], limits: list[float], strict: list[bool], totals: list[float]) -> Reservation | int:
        return self.reserve_slots(keys, [self.slot(k) for k in keys], amounts, limits, strict, totals)

    def reserve_slots(self, keys: list[Key], slots: list[Slot], amounts: list[float], limits: list[float], strict: list[bool], totals: list[float]) -> Reservation | int:
        i = 0
        for s, amount, limit, whole in zip(slots, amounts, limits, strict, strict=True):
            current = s.committed + s.reserved
            if (current + amount > limit) if whole else (current >= limit):
                return i
            i += 1
        append = totals.append
        for s, amount in zip(slots, amounts, strict=True):
            reserved = s.reserved = s.reserved + amount
            append(s.committed + reserved)
        return Reservation(keys, amounts, slots)

    def settle(self, reservation: Reservation, actual: list[float]) -> None:
        if not reservation.open:
            return
        reservation.open = False
        add_dirty = self._dirty.add
        for key, s, held, used in zip(reservation.keys, reservation.slots, reservation.amounts, actual, strict=True):
            left = s.reserved - held
            s.reserved = left if left > 1e-9 else 0.0
            if used:
                s.committed += used
                s.own += used
                add_dirty(key)

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
            self.slot((row["scope"], owner, metric, int(row["window_start"]))).committed += float(row["total"])
        return len(rows)

    async def flush(self, db: Database) -> int:
        """Write this process's changed slots; keep them dirty if the store is down."""
        if not self._dirty:
            return 0
        dirty, self._dirty = self._dirty, set()
        now = int(time.time() * 1000)
        rows = [(k[0], _row_key(k), k[3], self.node_id, self.slots[k].own, now) for k in dirty]
        greatest = db.greatest("counters.value", "excluded.value")
        try:
            await db.executemany(
                "INSERT INTO counters (scope, counter_key, window_start, node_id, value, updated_at) "
                "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (scope, counter_key, window_start, node_id) "
                f"DO UPDATE SET value = {greatest}, updated_at = excluded.updated_at",
                rows,
            )
        except StoreUnavailable:
            self._dirty |= dirty
            raise
        return len(rows)

    def prune(self, now_ms: int, oldest_window_ms: int) -> None:
        """Forget windows that started more than ``oldest_window_ms`` ago (flushed, idle)."""
        cutoff = now_ms - oldest_window_ms
        for key in [k for k, s in self.slots.items() if k[3] < cutoff and k not in self._dirty and not s.reserved]:
            del self.slots[key]
