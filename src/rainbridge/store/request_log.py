"""The request log: written in batches off the request path, queried with filters and cursors.

``LogWriter.record`` never blocks and never awaits: it appends to a bounded queue, and a
background task writes batches with one ``executemany``. When the queue is full the entry
is dropped and counted (a slow or unreachable database must not slow requests down); a
batch that fails to write is kept and retried with backoff.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import deque
from typing import Any

from .base import StoreUnavailable
from .db import Database

log = logging.getLogger("rainbridge.logs")

COLUMNS = (
    "id", "ts", "node_id", "virtual_key_id", "provider", "model", "endpoint", "stream", "status",
    "latency_ms", "prompt_tokens", "completion_tokens", "cost", "error_type", "request", "response",
)
INSERT = (
    f"INSERT INTO request_logs ({', '.join(COLUMNS)}) VALUES "
    f"({', '.join(f'${i + 1}' for i in range(len(COLUMNS)))}) ON CONFLICT (id) DO NOTHING"
)


class LogWriter:
    def __init__(self, db: Database, queue_size: int = 10_000, batch_size: int = 500, interval_s: float = 0.5, retention_days: int = 365):
        self.db = db
        self.queue: deque[tuple] = deque()
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.retention_days = retention_days
        self.dropped = 0
        self.written = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._cleanup: asyncio.Task | None = None
        self._stopping = False

    def record(self, row: tuple) -> None:
        """Queue one row (in ``COLUMNS`` order); drop and count it when the queue is full."""
        if len(self.queue) >= self.queue_size:
            self.dropped += 1
            return
        self.queue.append(row)
        if len(self.queue) >= self.batch_size:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())
        self._cleanup = asyncio.get_running_loop().create_task(self._retention())

    async def _run(self) -> None:
        delay = 0.5
        while True:
            if not self.queue:
                if self._stopping:
                    return
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self.interval_s)
                except TimeoutError:
                    pass
                continue
            batch = [self.queue.popleft() for _ in range(min(self.batch_size, len(self.queue)))]
            try:
                await self.db.executemany(INSERT, batch)
            except StoreUnavailable as exc:
                self.queue.extendleft(reversed(batch))  # keep them, oldest first
                while len(self.queue) > self.queue_size:
                    self.queue.pop()
                    self.dropped += 1
                if self._stopping:
                    log.warning("request log: %d entries not written at shutdown: %s", len(self.queue), exc)
                    return
                log.warning("request log write failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            delay = 0.5
            self.written += len(batch)

    async def _retention(self) -> None:
        while True:
            try:
                cutoff = int((time.time() - self.retention_days * 86400) * 1000)
                removed = await self.db.execute("DELETE FROM request_logs WHERE ts < $1", cutoff)
                if removed:
                    log.info("request log: removed %d entries older than %d days", removed, self.retention_days)
            except StoreUnavailable as exc:
                log.warning("request log retention cleanup failed: %s", exc)
            await asyncio.sleep(3600)

    async def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued (for up to ``timeout`` seconds), then stop."""
        self._stopping = True
        self._wake.set()
        if self._cleanup is not None:
            self._cleanup.cancel()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout)
            except TimeoutError:
                log.warning("request log: gave up flushing %d entries at shutdown", len(self.queue))


def encode_cursor(ts: int, row_id: str) -> str:
    return base64.urlsafe_b64encode(f"{ts}:{row_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        ts, _, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        return int(ts), row_id
    except (ValueError, UnicodeDecodeError):
        raise ValueError("cursor is not one this API returned") from None


async def query_logs(db: Database, filters: dict[str, Any], limit: int, cursor: str | None, with_content: bool = False) -> tuple[list[dict], str | None]:
    """Newest first. ``filters``: start_ms, end_ms, provider, model, virtual_key_id, status, errors_only."""
    where, args = [], []

    def add(clause: str, value: Any) -> None:
        args.append(value)
        where.append(clause.replace("?", f"${len(args)}"))

    if filters.get("start_ms") is not None:
        add("ts >= ?", filters["start_ms"])
    if filters.get("end_ms") is not None:
        add("ts < ?", filters["end_ms"])
    for column in ("provider", "model", "virtual_key_id", "status"):
        if filters.get(column) is not None:
            add(f"{column} = ?", filters[column])
    if filters.get("errors_only"):
        where.append("status >= 400")
    if cursor:
        ts, row_id = decode_cursor(cursor)
        args.extend((ts, row_id))
        where.append(f"(ts < ${len(args) - 1} OR (ts = ${len(args) - 1} AND id < ${len(args)}))")
    columns = COLUMNS if with_content else COLUMNS[:-2]
    sql = f"SELECT {', '.join(columns)} FROM request_logs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    args.append(limit + 1)
    sql += f" ORDER BY ts DESC, id DESC LIMIT ${len(args)}"
    rows = await db.fetch(sql, *args)
    more = len(rows) > limit
    rows = rows[:limit]
    for row in rows:
        row["stream"] = bool(row["stream"])
    next_cursor = encode_cursor(rows[-1]["ts"], rows[-1]["id"]) if more and rows else None
    return rows, next_cursor
