"""Counters of one gateway process, persisted to the config store.

Admission and settlement never ``await``: within one event loop, check-and-reserve is
atomic, which is what makes "200 concurrent requests against a limit of 50 admit exactly
50" hold. This node's usage lives in its own slot per counter and is flushed every few
seconds (and at shutdown) as ``(scope, key, window, node)`` rows with ``GREATEST`` upserts,
so a replayed flush changes nothing. At start the rows of every node (including this
process's earlier incarnations) are loaded as a base, so a restart keeps the window's usage.
"""

from __future__ import annotations

import logging
import time

from ..store.base import StoreUnavailable
from ..store.db import Database
from .base import Key, Need, Reservation

log = logging.getLogger("rainbridge.counters")

RETAIN_MS = 400 * 86_400_000  # windows up to a year (plus slack) are loaded at start


def _row_key(key: Key) -> str:
    return f"{key.id}\x1f{key.metric}"


class LocalCounters:
    def __init__(self, node_id: str):
        self.node_id = node_id
        self.own: dict[Key, float] = {}  # this process's slot
        self.base: dict[Key, float] = {}  # other nodes' slots (and earlier incarnations)
        self._reserved: dict[Key, float] = {}
        self._dirty: set[Key] = set()

    # -- the interface ----------------------------------------------------------------------

    def value(self, key: Key) -> float:
        return self.own.get(key, 0.0) + self.base.get(key, 0.0)

    def reserved(self, key: Key) -> float:
        return self._reserved.get(key, 0.0)

    def reserve(self, needs: list[Need]) -> Reservation | int:
        own, base, reserved = self.own, self.base, self._reserved
        for i, (key, amount, limit, strict) in enumerate(needs):
            current = own.get(key, 0.0) + base.get(key, 0.0) + reserved.get(key, 0.0)
            if (current + amount > limit) if strict else (current >= limit):
                return i
        keys = []
        amounts = []
        for key, amount, _limit, _strict in needs:
            reserved[key] = reserved.get(key, 0.0) + amount
            keys.append(key)
            amounts.append(amount)
        return Reservation(keys, amounts)

    def settle(self, reservation: Reservation, actual: list[float]) -> None:
        if not reservation.open:
            return
        reservation.open = False
        own, reserved, dirty = self.own, self._reserved, self._dirty
        for key, held, used in zip(reservation.keys, reservation.amounts, actual, strict=True):
            left = reserved.get(key, 0.0) - held
            if left <= 1e-9:
                reserved.pop(key, None)
            else:
                reserved[key] = left
            if used:
                own[key] = own.get(key, 0.0) + used
                dirty.add(key)

    # -- persistence ------------------------------------------------------------------------

    async def load(self, db: Database, now_ms: int | None = None) -> int:
        """Read every node's rows of recent windows as this process's base."""
        now_ms = now_ms or int(time.time() * 1000)
        rows = await db.fetch(
            "SELECT scope, counter_key, window_start, SUM(value) AS total FROM counters "
            "WHERE window_start >= $1 AND node_id <> $2 GROUP BY scope, counter_key, window_start",
            now_ms - RETAIN_MS, self.node_id,
        )
        for row in rows:
            owner, _, metric = row["counter_key"].partition("\x1f")
            self.base[Key(row["scope"], owner, metric, int(row["window_start"]))] = float(row["total"])
        return len(rows)

    async def flush(self, db: Database) -> int:
        """Write this node's changed slots; keep them dirty if the store is down."""
        if not self._dirty:
            return 0
        dirty, self._dirty = self._dirty, set()
        now = int(time.time() * 1000)
        rows = [(k.scope, _row_key(k), k.window_start, self.node_id, self.own[k], now) for k in dirty]
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
        """Forget windows that started more than ``oldest_window_ms`` ago (already flushed)."""
        cutoff = now_ms - oldest_window_ms
        for table in (self.own, self.base):
            for key in [k for k in table if k.window_start < cutoff and k not in self._dirty]:
                del table[key]
