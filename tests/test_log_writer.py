"""The request log writer thread and its sinks, on a real SQLite file and a real PostgreSQL.

(The gateway end to end, writing and reading back through /api/logs: test_request_log.py;
reading pages back with filters and cursors: test_log_pages.py.)
"""

import asyncio
import itertools
import sqlite3
import time

import psycopg
import pytest

from rainbridge.config.schema import StoreSettings
from rainbridge.gateway.record import RequestRecord, log_entry
from rainbridge.store.db import PostgresDatabase, SQLiteDatabase
from rainbridge.store.log_pages import page_rows
from rainbridge.store.log_sinks import PostgresSink, SQLiteSink, Unreachable
from rainbridge.store.log_writer import (
    BATCH_PAUSE_S,
    FLUSH_ENV,
    MAX_BATCHES,
    LogWriter,
    flush_interval,
)
from rainbridge.store.migrate import migrate
from rainbridge.telemetry.health import log_writer_families


def entry(n, model="gpt-4o", request=b'{"messages":[]}', response=b'{"choices":[]}', prompt=12, vk=None):
    """One entry as the gateway makes it (``gateway.record.log_entry``); ``n`` goes in the
    status; ``response`` a list: a stream's frames."""
    record = RequestRecord("chat", content=True)
    record.provider, record.model, record.status, record.virtual_key_id = "openai", model, 200 + n % 300, vk
    record.prompt_tokens, record.completion_tokens = prompt, 3
    record.request_body = request
    if type(response) is list:
        record.stream, record.stream_parts = True, response
    else:
        record.response_body = response
    return log_entry(record, record.started + 0.002, None)


def page_of(writer, entries):
    """The entries' page (the thread's conversion; entries started within a page's span)."""
    [page] = writer._pages(entries)
    return page


async def _migrate(db):
    await db.open()
    try:
        await migrate(db, "logs")
    finally:
        await db.close()


@pytest.fixture(params=["sqlite", "postgres"])
def sink_factory(request, tmp_path):
    """A migrated logs store; yields (engine, open a sink, run SQL)."""
    if request.param == "sqlite":
        path = tmp_path / "logs.db"
        asyncio.run(_migrate(SQLiteDatabase(path)))

        def query(sql):
            with sqlite3.connect(path) as conn:
                return conn.execute(sql).fetchall()

        return request.param, (lambda: SQLiteSink(path)), query
    dsn = request.getfixturevalue("pg_database")
    settings = StoreSettings(dsn=dsn)
    asyncio.run(_migrate(PostgresDatabase(settings)))

    def query(sql):
        with psycopg.connect(dsn) as conn:
            return conn.execute(sql).fetchall()

    return request.param, (lambda: PostgresSink(settings, "test")), query


def stored(query):
    """Every request in the store, decoded from its pages (content included)."""
    rows = []
    for prefix, first, node, page, content in query(
            "SELECT id_prefix, first_row, node_id, rows, content FROM request_log_pages ORDER BY max_ts, id"):
        rows.extend(page_rows(prefix, first, node, page, bytes(content)))
    return rows


def count(query):
    return query("SELECT coalesce(sum(row_count), 0) FROM request_log_pages")[0][0]


def run_writer(writer, entries, timeout=30.0):
    """Start the thread, queue ``entries``, stop (drain) it; bounded in time."""
    async def go():
        writer.start()
        for e in entries:
            writer.record(e)
        await writer.stop(timeout)

    asyncio.run(go())


class RecordingSink(SQLiteSink):
    """A real SQLite sink that notes ``(time.monotonic(), entries)`` of every write in
    ``writes``, and takes ``delay`` seconds first (a database that takes its time)."""

    def __init__(self, path, writes: list, delay: float = 0.0):
        super().__init__(path)
        self.writes, self.delay = writes, delay

    def write(self, pages):
        self.writes.append((time.monotonic(), sum(page.row_count for page in pages)))
        if self.delay:
            time.sleep(self.delay)
        return super().write(pages)


def migrated_sqlite(tmp_path):
    path = tmp_path / "logs.db"
    asyncio.run(_migrate(SQLiteDatabase(path)))
    return path


def test_sqlite_batch_is_all_or_nothing(tmp_path):
    """A batch that fails part way (here: the file may not grow any more) leaves no row of
    it behind, and is written whole, exactly once, when it is retried."""
    path = tmp_path / "logs.db"
    asyncio.run(_migrate(SQLiteDatabase(path)))
    sink = SQLiteSink(path)
    writer = LogWriter(lambda: sink, "node-a", "p-")
    pages = sink.conn.execute("PRAGMA page_count").fetchone()[0]
    sink.conn.execute(f"PRAGMA max_page_count={pages + 20}")  # room for some rows, not 300
    batch = [page_of(writer, [entry(i, request=b"x" * 2000, vk=f"vk-{i % 3}") for i in range(150)]) for _ in range(2)]
    with pytest.raises(Unreachable, match="full"):
        sink.write(batch)
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT count(*) FROM request_log_pages").fetchone()[0] == 0
        assert other.execute("SELECT count(*) FROM request_log_page_keys").fetchone()[0] == 0
    sink.conn.execute("PRAGMA max_page_count=1073741823")
    sink.write(batch)
    sink.close()
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT sum(row_count), count(*) FROM request_log_pages").fetchone() == (300, 2)
        assert other.execute("SELECT count(*) FROM request_log_page_keys").fetchone()[0] == 6
    assert len({row["id"] for row in stored(lambda sql: sqlite3.connect(path).execute(sql).fetchall())}) == 300


def test_writer_keeps_a_failed_batch_and_writes_it_once_the_store_recovers(tmp_path):
    path = tmp_path / "logs.db"
    asyncio.run(_migrate(SQLiteDatabase(path)))
    sink = SQLiteSink(path)
    pages = sink.conn.execute("PRAGMA page_count").fetchone()[0]
    sink.conn.execute(f"PRAGMA max_page_count={pages + 5}")
    sinks = iter([sink])  # then, reconnecting after the failure, sinks without the limit
    writer = LogWriter(lambda: next(sinks, None) or SQLiteSink(path), "node-a", "p-", interval_s=0.05)

    async def go():
        writer.start()
        for i in range(200):
            writer.record(entry(i, request=b"y" * 4000))
        deadline = time.monotonic() + 10
        while writer.failures == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert writer.failures >= 1 and writer.written == 0 and writer.depth == 200  # kept
        await writer.stop(20)

    asyncio.run(go())
    rows = stored(lambda sql: sqlite3.connect(path).execute(sql).fetchall())
    assert len(rows) == len({row["id"] for row in rows}) == 200
    assert writer.written == 200 and writer.dropped == 0 and writer.depth == 0


def test_stop_drains_every_queued_row(sink_factory):
    _, open_sink, query = sink_factory
    # An interval far longer than the test: only the stop can have written them.
    writer = LogWriter(open_sink, "node-a", "p-", interval_s=60.0, batch_rows=700)
    run_writer(writer, [entry(i) for i in range(5000)])
    assert count(query) == 5000
    assert writer.written == 5000 and writer.dropped == 0 and writer.depth == 0
    assert not writer._thread.is_alive()


def test_a_full_queue_drops_the_newest_entries_and_counts_them(sink_factory):
    _, open_sink, query = sink_factory
    writer = LogWriter(open_sink, "node-a", "p-", queue_size=10)
    for i in range(15):  # not started yet: nothing drains the queue
        writer.record(entry(i))
    assert writer.full == 5 and len(writer.queue) == 10
    assert [fields[7] for fields, _ in writer.queue] == [200 + i for i in range(10)]  # the oldest kept
    run_writer(writer, [])
    assert sorted(row["status"] for row in stored(query)) == [200 + i for i in range(10)]
    families = {f.name: f.samples[0].value for f in log_writer_families(writer)}
    assert families["rainbridge_log_writer_dropped"] == 5
    assert families["rainbridge_log_writer_written"] == 10
    assert families["rainbridge_log_writer_queue_depth"] == 0


def test_hostile_values_never_stop_the_writer(sink_factory):
    """NUL bytes, multi-megabyte strings, bytes that are not UTF-8, lone surrogates and
    numbers JSON will not carry: each request is stored or refused and counted; the rest
    are written and the writer goes on."""
    _, open_sink, query = sink_factory
    huge = "m" * 5_000_000
    hostile = [
        entry(1, model="nul\x00model"),  # stored as U+FFFD (PostgreSQL's JSON refuses NUL)
        entry(2, model=huge),
        entry(3, request=b"\xff\xfe not utf-8 \xc3", response=[b"data: \xe2\x82", b"[DONE]"]),
        entry(4, model="lone \udc80 surrogate"),  # cannot be encoded: refused
        entry(5, prompt=2**70),  # beyond 64 bits: refused
        entry(6, request=b"\x00" * 10, response=b"ok \x00 nul bytes"),  # NUL in content
    ]
    good = [entry(100 + i) for i in range(50)]
    writer = LogWriter(open_sink, "node-a", "p-", interval_s=0.05)
    run_writer(writer, good[:25] + hostile + good[25:])
    assert writer.refused == 2 and writer.written == 54
    rows = {row["status"]: row for row in stored(query)}
    assert set(rows) == {201, 202, 203, 206} | {300 + i for i in range(50)}
    assert rows[201]["model"] == "nul\ufffdmodel" and len(rows[202]["model"]) == 5_000_000
    assert rows[203]["request"] == "\ufffd\ufffd not utf-8 \ufffd" and rows[203]["response"] == "data: \ufffd\n[DONE]"
    assert rows[206]["request"] == "\x00" * 10 and rows[206]["response"] == "ok \x00 nul bytes"
    assert rows[300]["request"] == '{"messages":[]}' and rows[300]["response"] == '{"choices":[]}'
    # and it still writes afterwards
    later = LogWriter(open_sink, "node-a", "q-", interval_s=0.05)
    run_writer(later, [entry(250)])
    assert later.written == 1 and count(query) == writer.written + 1


def test_a_page_the_store_refuses_is_dropped_and_counted_and_the_writer_goes_on(tmp_path):
    """A page too big for this SQLite (its length limit lowered) is refused whole: counted,
    never retried; the next one is written."""
    path = tmp_path / "logs.db"
    asyncio.run(_migrate(SQLiteDatabase(path)))
    sink = SQLiteSink(path)
    sink.conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 50_000)
    writer = LogWriter(lambda: sink, "node-a", "p-", interval_s=0.05)

    async def go():
        writer.start()
        for i in range(20):
            writer.record(entry(i, request=b"z" * 5000))  # 100 kB of content: too big
        deadline = time.monotonic() + 10
        while writer.refused < 20 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        writer.record(entry(99))
        await writer.stop(10)

    asyncio.run(go())
    assert writer.refused == 20 and writer.written == 1 and writer.failures == 0
    assert [row["status"] for row in stored(lambda sql: sqlite3.connect(path).execute(sql).fetchall())] == [299]


def test_a_page_written_twice_is_stored_once(sink_factory):
    """A page written again (its commit's answer was lost, say) is skipped whole, its keys
    too; the pages around it are written."""
    _, open_sink, query = sink_factory
    sink = open_sink()
    writer = LogWriter(lambda: sink, "node-a", "p-")
    first = page_of(writer, [entry(i, vk="vk-1") for i in range(100)])
    sink.write([first])
    second = page_of(writer, [entry(i, vk="vk-2") for i in range(100, 150)])
    sink.write([first, second])
    sink.close()
    rows = stored(query)
    assert len(rows) == len({row["id"] for row in rows}) == 150
    assert {row["node_id"] for row in rows} == {"node-a"}
    assert rows[0]["stream"] is False and rows[0]["latency_ms"] == pytest.approx(2.0)
    assert sorted(query("SELECT virtual_key_id FROM request_log_page_keys")) == [("vk-1",), ("vk-2",)]


def test_postgres_unreachable_keeps_the_batch(pg_database):
    settings = StoreSettings(dsn=pg_database)
    asyncio.run(_migrate(PostgresDatabase(settings)))
    sink = PostgresSink(settings, "test")
    writer = LogWriter(lambda: sink, "node-a", "p-")
    page = page_of(writer, [entry(i, vk="vk-1") for i in range(10)])
    sink.conn.close()  # as if the server had gone away
    with pytest.raises(Unreachable):
        sink.write([page])
    other = PostgresSink(settings, "test")
    other.write([page])
    other.close()
    with psycopg.connect(pg_database) as conn:
        assert conn.execute("SELECT sum(row_count) FROM request_log_pages").fetchone()[0] == 10
        assert conn.execute("SELECT count(*) FROM request_log_page_keys").fetchone()[0] == 1


@pytest.mark.parametrize(("raw", "seconds"), [
    (None, 0.25), ("", 0.25), ("2", 2.0), ("0.05", 0.05), ("60", 60.0),
    ("0", 0.25), ("-1", 0.25), ("61", 0.25), ("nan", 0.25), ("inf", 0.25), ("soon", 0.25),
])
def test_flush_interval_from_the_environment(raw, seconds):
    environ = {} if raw is None else {FLUSH_ENV: raw}
    assert flush_interval(environ) == seconds


def test_rows_arriving_during_a_write_wait_for_the_next_interval(tmp_path):
    """Under steady load the writer still writes once per interval, in large batches, not
    whatever trickled in while it was writing."""
    path = migrated_sqlite(tmp_path)
    writes = []
    # A database that takes 0.05 s a write: entries arrive meanwhile. (Batches large enough
    # that a gathering is one write: this is about the gathering.)
    writer = LogWriter(lambda: RecordingSink(path, writes, delay=0.05), "node-a", "p-", interval_s=0.3, batch_rows=5000)

    async def go():
        writer.start()
        deadline = time.monotonic() + 1.5
        n = 0
        while time.monotonic() < deadline:  # ~500 entries a second, steadily
            writer.record(entry(n))
            n += 1
            await asyncio.sleep(0.002)
        await writer.stop(10)
        return n

    total = asyncio.run(go())
    batches = [n for _, n in writes]
    assert sum(batches) == total
    assert len(batches) <= 1.5 / 0.3 + 2, batches  # one write per interval (+ the drain)


def test_a_gathering_is_written_in_batches_with_pauses_between_them(tmp_path):
    """One gathering of 55 entries, batches of 10: six transactions, not one burst; between
    two of them the writer gives the CPU up for ``BATCH_PAUSE_S`` (the interval is long
    enough for the full pause). Every entry is written, once."""
    path = migrated_sqlite(tmp_path)
    writes = []
    writer = LogWriter(lambda: RecordingSink(path, writes), "node-a", "p-", interval_s=0.2, batch_rows=10)

    async def go():
        for i in range(55):
            writer.record(entry(i))
        writer.start()  # (gathers for 0.2 s, then writes the 55)
        deadline = time.monotonic() + 10
        while writer.written < 55 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await writer.stop(10)

    asyncio.run(go())
    assert [n for _, n in writes] == [10, 10, 10, 10, 10, 5]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(writes)]
    assert min(gaps) >= BATCH_PAUSE_S * 0.9, gaps
    assert sorted(row["status"] for row in stored(lambda sql: sqlite3.connect(path).execute(sql).fetchall())) == \
        [200 + i for i in range(55)]


def test_under_heavy_load_batches_grow_instead_of_multiplying(tmp_path):
    """A gathering of more than ``MAX_BATCHES`` batches is written in ``MAX_BATCHES``
    larger ones (each transaction has a cost of its own), all entries once."""
    path = migrated_sqlite(tmp_path)
    writes = []
    writer = LogWriter(lambda: RecordingSink(path, writes), "node-a", "p-", interval_s=0.2, batch_rows=10)
    n = 10 * MAX_BATCHES * 3 + 7  # three times a gathering's batches
    for i in range(n):
        writer.record(entry(i))
    # A full gathering's batches are waiting: the writer goes at once, no gathering wait.
    run_writer(writer, [])
    sizes = [entries for _, entries in writes]
    size = -(-n // MAX_BATCHES)
    assert sizes == [size] * (MAX_BATCHES - 1) + [n - size * (MAX_BATCHES - 1)], sizes
    assert count(lambda sql: sqlite3.connect(path).execute(sql).fetchall()) == n


def test_content_is_stored_as_the_bytes_that_came(sink_factory):
    """Content goes to the page as the request's bytes (no decoding in the writer): UTF-8
    reads back as the same text; a stream's frames are joined by newlines; a request
    logged without content has none (not an empty body)."""
    _, open_sink, query = sink_factory
    sink = open_sink()
    writer = LogWriter(lambda: sink, "node-a", "p-")
    text = '{"content":"héllo ✓ 日本 \U0001f600"}'
    quiet = RequestRecord("chat", content=False)
    quiet.status, quiet.request_body, quiet.response_body = 299, b"secret", b"answer"
    sink.write([page_of(writer, [entry(1, request=text.encode(), response=[b"data: \xc3\xa9", b"[DONE]"]),
                                 log_entry(quiet, quiet.started, None), entry(2, request=b"", response=b"x")])])
    sink.close()
    first, second, third = sorted(stored(query), key=lambda row: row["status"])  # 201, 202, 299
    assert (first["request"], first["response"]) == (text, "data: é\n[DONE]") and first["stream"] is True
    assert (second["request"], second["response"]) == ("", "x")
    assert (third["request"], third["response"]) == (None, None)
