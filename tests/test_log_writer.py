"""The request log writer thread and its sinks, on a real SQLite file and a real PostgreSQL.

(The gateway end to end, writing and reading back through /api/logs: test_request_log.py.)
"""

import asyncio
import sqlite3
import time

import psycopg
import pytest

from rainbridge.config.schema import StoreSettings
from rainbridge.store.db import PostgresDatabase, SQLiteDatabase
from rainbridge.store.log_sinks import PostgresSink, SQLiteSink, Unreachable
from rainbridge.store.log_writer import FLUSH_ENV, LogWriter, flush_interval
from rainbridge.store.migrate import migrate
from rainbridge.telemetry.health import log_writer_families


def entry(n, model="gpt-4o", request=b'{"messages":[]}', response=b'{"choices":[]}', prompt=12):
    """One entry as ``gateway.record.log_entry`` makes it (``n`` goes in the status)."""
    return (time.time(), 0.002, None, "openai", model, "chat", False, 200 + n % 300, prompt, 3, None, None, request, response)


def rows_of(writer, entries, sink):
    return writer._rows(entries, sink.text_content)  # the thread's conversion, used here to build batches


async def _migrate(db):
    await db.open()
    try:
        await migrate(db, "logs")
    finally:
        await db.close()


@pytest.fixture(params=["sqlite", "postgres"])
def sink_factory(request, tmp_path):
    """A migrated logs store; yields (open a sink, count rows, fetch rows by SQL)."""
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


def count(query):
    return query("SELECT count(*) FROM request_logs")[0][0]


def run_writer(writer, entries, timeout=30.0):
    """Start the thread, queue ``entries``, stop (drain) it; bounded in time."""
    async def go():
        writer.start()
        for e in entries:
            writer.record(e)
        await writer.stop(timeout)

    asyncio.run(go())


def test_sqlite_batch_is_all_or_nothing(tmp_path):
    """A batch that fails part way (here: the file may not grow any more) leaves no row of
    it behind, and is written whole, exactly once, when it is retried."""
    path = tmp_path / "logs.db"
    asyncio.run(_migrate(SQLiteDatabase(path)))
    sink = SQLiteSink(path)
    writer = LogWriter(lambda: sink, "node-a", "p-")
    pages = sink.conn.execute("PRAGMA page_count").fetchone()[0]
    sink.conn.execute(f"PRAGMA max_page_count={pages + 20}")  # room for some rows, not 300
    batch = rows_of(writer, [entry(i, request=b"x" * 2000) for i in range(300)], sink)
    with pytest.raises(Unreachable, match="full"):
        sink.write(batch)
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT count(*) FROM request_logs").fetchone()[0] == 0
    sink.conn.execute("PRAGMA max_page_count=1073741823")
    assert sink.write(batch) == 0
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT count(*), count(DISTINCT id) FROM request_logs").fetchone() == (300, 300)
    sink.close()


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
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT count(*), count(DISTINCT id) FROM request_logs").fetchone() == (200, 200)
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
    assert [e[7] for e in writer.queue] == [200 + i for i in range(10)]  # the oldest kept
    run_writer(writer, [])
    assert sorted(s for (s,) in query("SELECT status FROM request_logs")) == [200 + i for i in range(10)]
    families = {f.name: f.samples[0].value for f in log_writer_families(writer)}
    assert families["rainbridge_log_writer_dropped"] == 5
    assert families["rainbridge_log_writer_written"] == 10
    assert families["rainbridge_log_writer_queue_depth"] == 0


def test_hostile_values_never_stop_the_writer(sink_factory):
    """NUL bytes, multi-megabyte strings, bytes that are not UTF-8, lone surrogates and
    numbers no column holds: each row is stored or refused and counted; the rest are
    written and the writer goes on."""
    engine, open_sink, query = sink_factory
    huge = "m" * 5_000_000
    hostile = [
        entry(1, model="nul\x00model"),  # PostgreSQL text refuses NUL; SQLite stores it
        entry(2, model=huge),
        entry(3, request=b"\xff\xfe not utf-8 \xc3", response=[b"data: \xe2\x82", b"[DONE]"]),
        entry(4, model="lone \udc80 surrogate"),  # cannot be encoded: refused by both
        entry(5, prompt=2**70),  # out of BIGINT range: refused by both
        entry(6, request=b"\x00" * 10, response=b"ok \x00 nul bytes"),  # NUL in content
    ]
    good = [entry(100 + i) for i in range(50)]
    writer = LogWriter(open_sink, "node-a", "p-", interval_s=0.05)
    run_writer(writer, good[:25] + hostile + good[25:])
    refused = {4, 5} | ({1, 6} if engine == "postgres" else set())
    assert writer.refused == len(refused) and writer.written == 56 - len(refused)
    statuses = {s for (s,) in query("SELECT status FROM request_logs")}
    assert statuses == {200 + n for n in range(1, 7) if n not in refused} | {300 + i for i in range(50)}
    assert query("SELECT length(model) FROM request_logs WHERE status = 202") == [(5_000_000,)]
    request, response = query("SELECT request, response FROM request_logs WHERE status = 203")[0]
    assert request == "\ufffd\ufffd not utf-8 \ufffd" and response == "data: \ufffd\n[DONE]"
    # and it still writes afterwards
    later = LogWriter(open_sink, "node-a", "q-", interval_s=0.05)
    run_writer(later, [entry(250)])
    assert later.written == 1 and count(query) == writer.written + 1


def test_postgres_copy_writes_a_batch_and_falls_back_to_insert_on_conflict(pg_database):
    settings = StoreSettings(dsn=pg_database)
    asyncio.run(_migrate(PostgresDatabase(settings)))
    sink = PostgresSink(settings, "test")
    writer = LogWriter(lambda: sink, "node-a", "p-")
    first = rows_of(writer, [entry(i) for i in range(100)], sink)
    assert sink.write(first) == 0 and sink.fallbacks == 0  # one COPY
    # A batch written again (its commit was lost, say): COPY hits the primary key, the
    # row-by-row INSERT ... ON CONFLICT DO NOTHING writes the new rows, skips the old.
    again = first[50:] + rows_of(writer, [entry(i) for i in range(100, 150)], sink)
    assert sink.write(again) == 0 and sink.fallbacks == 1
    # And a row PostgreSQL refuses (NUL in text) costs only itself.
    mixed = rows_of(writer, [entry(150), entry(151, model="a\x00b"), entry(152)], sink)
    assert sink.write(mixed) == 1 and sink.fallbacks == 2
    with psycopg.connect(pg_database) as conn:
        total, distinct, node = conn.execute("SELECT count(*), count(DISTINCT id), min(node_id) FROM request_logs").fetchone()
        stream, latency = conn.execute("SELECT stream, latency_ms FROM request_logs LIMIT 1").fetchone()
    assert (total, distinct, node) == (152, 152, "node-a")
    assert stream is False and latency == pytest.approx(2.0)
    sink.close()


def test_postgres_unreachable_keeps_the_batch(pg_database):
    settings = StoreSettings(dsn=pg_database)
    asyncio.run(_migrate(PostgresDatabase(settings)))
    sink = PostgresSink(settings, "test")
    writer = LogWriter(lambda: sink, "node-a", "p-")
    rows = rows_of(writer, [entry(i) for i in range(10)], sink)
    sink.conn.close()  # as if the server had gone away
    with pytest.raises(Unreachable):
        sink.write(rows)
    other = PostgresSink(settings, "test")
    assert other.write(rows) == 0
    other.close()
    with psycopg.connect(pg_database) as conn:
        assert conn.execute("SELECT count(*) FROM request_logs").fetchone()[0] == 10


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
    path = tmp_path / "logs.db"
    asyncio.run(_migrate(SQLiteDatabase(path)))
    batches = []

    class Counting(SQLiteSink):
        def write(self, rows):
            batches.append(len(rows))
            time.sleep(0.05)  # a database that takes its time: rows arrive meanwhile
            return super().write(rows)

    writer = LogWriter(lambda: Counting(path), "node-a", "p-", interval_s=0.3)

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
    assert sum(batches) == total
    assert len(batches) <= 1.5 / 0.3 + 2, batches  # one write per interval (+ the drain)


def test_postgres_copy_sends_utf8_content_as_it_came(pg_database):
    """Content goes to COPY as the request's bytes (no decoding in the writer): UTF-8 is
    stored as the same text in one COPY; a stream's frames are joined by newlines."""
    settings = StoreSettings(dsn=pg_database)
    asyncio.run(_migrate(PostgresDatabase(settings)))
    sink = PostgresSink(settings, "test")
    writer = LogWriter(lambda: sink, "node-a", "p-")
    text = '{"content":"héllo ✓ 日本 \U0001f600"}'
    rows = rows_of(writer, [entry(1, request=text.encode(), response=[b"data: \xc3\xa9", b"[DONE]"])], sink)
    assert type(rows[0][-2]) is bytes  # not decoded by the writer
    assert sink.write(rows) == 0 and sink.fallbacks == 0
    sink.close()
    with psycopg.connect(pg_database) as conn:
        assert conn.execute("SELECT request, response FROM request_logs").fetchone() == (text, "data: é\n[DONE]")
