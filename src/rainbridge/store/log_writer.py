"""The request log's writer: the event loop only appends; a plain thread writes pages.

``LogWriter.record`` runs on the event loop and does one bounded ``deque.append`` of the
``(fields, content)`` pair ``gateway.record.log_entry`` built; no lock, no wake-up, no
await. When the queue is full the entry is dropped and counted. A thread with its own
synchronous connection (``log_sinks``) wakes every ``interval_s`` and writes what is queued,
``batch_rows`` entries a transaction, as pages (``log_pages``: the requests that
started within a quarter of a second of each other): a page is one orjson call and one row
for the database, so a request costs the writer about a microsecond, and the thread's
database I/O runs without the GIL. The batches of one gathering are spread over up to half
the interval (``BATCH_PAUSE_S`` between them): on a machine with few cores any burst of CPU
beside the requests delays the ones it overlaps in proportion to its length (measured in
``bench/README.md``), so the writer works in bites of ~0.1 ms instead of one burst a tick.
Pages that cannot be written because the database is unreachable are kept (ids and all, so
a retry cannot duplicate them) and retried with backoff; entries orjson cannot encode, and
pages the database refuses, are dropped and counted, never retried forever and never fatal.
``stop`` drains: every queued entry is written before it returns (within its timeout).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping

from .log_pages import Page, build_pages
from .log_sinks import Refused, Sink, Unreachable

log = logging.getLogger("rainbridge.logs")

RETENTION_EVERY_S = 3600.0
FLUSH_ENV = "RAINBRIDGE_LOG_FLUSH_SECONDS"
FLUSH_DEFAULT_S = 0.25
BATCH_ROWS = 128  # entries a transaction (and at most a page): ~0.1-0.3 ms of the writer's CPU
BATCH_PAUSE_S = 0.002  # between two batches of one gathering
# At most this many batches a gathering: under heavy load batches grow instead (each
# transaction, and each start after a pause, costs the writer ~0.1-0.3 ms of CPU of its own).
MAX_BATCHES = 8


def flush_interval(environ: Mapping[str, str]) -> float:
    """Seconds the writer gathers rows before it writes them (``FLUSH_ENV``, 0 < s <= 60).
    Longer: fewer, larger transactions (less work per row for the database and for us),
    later rows in ``/api/logs``."""
    raw = environ.get(FLUSH_ENV, "").strip()
    if not raw:
        return FLUSH_DEFAULT_S
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value <= 60:
        log.warning("%s=%r is not a number of seconds in (0, 60]; using %g", FLUSH_ENV, raw, FLUSH_DEFAULT_S)
        return FLUSH_DEFAULT_S
    return value


class LogWriter:
    def __init__(self, open_sink: Callable[[], Sink], node_id: str, id_prefix: str, queue_size: int = 10_000,
                 batch_rows: int = BATCH_ROWS, interval_s: float = FLUSH_DEFAULT_S, retention_days: int = 365):
        self.open_sink = open_sink  # called in the writer thread: the connection is its own
        self.node_id = node_id
        self.id_prefix = id_prefix  # + a hex counter: unique, time-ordered-enough ids
        self.queue: deque[tuple] = deque()
        self.queue_size = queue_size
        self.batch_rows = batch_rows
        self.interval_s = interval_s
        self.retention_days = retention_days
        self.full = 0  # dropped because the queue was full (counted by the event loop only)
        self.refused = 0  # dropped: not encodable, or refused by the database (by the writer only)
        self.written = 0
        self.failures = 0  # batches that could not be written (the database unreachable)
        self.pending: list[Page] | None = None  # pages built, not yet written
        self._count = 0
        self._stop = threading.Event()  # set by stop(): write what is queued, then exit
        self._abandon = threading.Event()  # set when stop() gives up waiting
        self._thread: threading.Thread | None = None

    @property
    def dropped(self) -> int:
        return self.full + self.refused

    @property
    def depth(self) -> int:
        """Entries waiting: queued plus the batch being written."""
        pending = self.pending
        return len(self.queue) + (sum(page.row_count for page in pending) if pending else 0)

    def record(self, entry: tuple) -> None:
        """On the event loop: queue one entry; drop and count it when the queue is full."""
        queue = self.queue
        if len(queue) < self.queue_size:
            queue.append(entry)
        else:
            self.full += 1

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rainbridge-log-writer", daemon=True)
        self._thread.start()

    async def stop(self, timeout: float = 5.0) -> None:
        """Write every queued entry (for up to ``timeout`` seconds), then stop the thread."""
        self._stop.set()
        thread = self._thread
        if thread is None:
            return
        await asyncio.to_thread(thread.join, timeout)
        if thread.is_alive():
            self._abandon.set()
            await asyncio.to_thread(thread.join, 5.0)

    # -- the writer thread --------------------------------------------------------------

    def _run(self) -> None:
        sink: Sink | None = None
        delay = 0.5
        next_cleanup = time.monotonic() + 60.0  # not in the start-up rush
        try:
            while True:
                if self.pending is None:
                    # Gather for an interval after every write (under load too: writing what
                    # came in meanwhile at once would make many small batches), unless a full
                    # gathering's batches are waiting. A stop wakes it at once: drain.
                    if not self._stop.is_set() and len(self.queue) < self.batch_rows * MAX_BATCHES:
                        self._stop.wait(self.interval_s)
                    if not self.queue:
                        if self._stop.is_set():
                            return
                        if time.monotonic() < next_cleanup or sink is None:
                            continue
                try:
                    if sink is None:
                        sink = self.open_sink()
                    self._write_all(sink)
                    if time.monotonic() >= next_cleanup:
                        next_cleanup = time.monotonic() + RETENTION_EVERY_S
                        self._cleanup(sink)
                    delay = 0.5
                except Unreachable as exc:
                    self.failures += 1
                    if sink is not None:
                        sink.close()
                        sink = None
                    if self._abandon.is_set():
                        log.warning("request log: %d entries not written at shutdown: %s", self.depth, exc)
                        return
                    log.warning("request log write failed (%s); retrying in %.1fs", exc, delay)
                    self._abandon.wait(delay)
                    delay = min(delay * 2, 10.0)
                except Exception:  # a bug: lose this batch, not the writer
                    lost = sum(page.row_count for page in self.pending or ())
                    self.refused += lost
                    self.pending = None
                    log.exception("request log writer: %d entries lost", lost)
                    if sink is not None:
                        sink.close()
                        sink = None
                    self._abandon.wait(delay)
        finally:
            if sink is not None:
                sink.close()

    def _write_all(self, sink: Sink) -> None:
        """Write what was queued when it began (entries that come in meanwhile wait for the
        next interval), ``batch_rows`` entries a transaction (more when over ``MAX_BATCHES``
        batches are queued), with ``BATCH_PAUSE_S`` between two transactions."""
        queue = self.queue
        left = len(queue)
        # Batches spread over at most half the interval, so the writer keeps up at any load.
        batches = max(1, min(MAX_BATCHES, -(-left // self.batch_rows)))
        size = -(-left // batches)
        pause = min(BATCH_PAUSE_S, self.interval_s / 2 / batches) if batches > 1 else 0.0
        while self.pending is not None or left > 0:
            if self.pending is None:
                take = min(left, size)
                left -= take
                self.pending = self._pages([queue.popleft() for _ in range(take)])
            if self.pending:
                count = sum(page.row_count for page in self.pending)
                try:
                    sink.write(self.pending)  # Unreachable: kept in pending for the retry
                    self.written += count
                except Refused as exc:
                    self.refused += count
                    log.warning("request log: %d entries refused by the store: %s", count, exc)
            self.pending = None
            if left and pause:
                self._stop.wait(pause)  # (no pause once stop() asks for a drain)

    def _pages(self, entries: list[tuple]) -> list[Page]:
        """Entries -> pages; the ones that cannot be encoded are counted as refused."""
        first = self._count + 1
        self._count += len(entries)
        pages, refused = build_pages(entries, self.id_prefix, first, self.node_id)
        self.refused += refused
        return pages

    def _cleanup(self, sink: Sink) -> None:
        cutoff = int((time.time() - self.retention_days * 86400) * 1000)
        removed = sink.delete_older(cutoff)
        if removed:
            log.info("request log: removed %d entries older than %d days", removed, self.retention_days)
