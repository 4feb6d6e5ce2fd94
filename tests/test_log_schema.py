"""The logs store's schema, version 2 (fewer indexes for the writer): rows written under
version 1 survive the migration, /api/logs' filters and cursor still answer right, and the
queries that matter use an index, on a real SQLite file and a real PostgreSQL."""

import asyncio
import time

import pytest

from rainbridge.config.schema import StoreSettings
from rainbridge.store.db import PostgresDatabase, SQLiteDatabase
from rainbridge.store.log_sinks import PostgresSink, SQLiteSink
from rainbridge.store.log_writer import LogWriter
from rainbridge.store.migrate import LOCK_IDS, _ensure_table, migrate, migrations
from rainbridge.store.request_log import COLUMNS, query_logs

T0 = 1_700_000_000_000  # ms


def old_row(n: int) -> tuple:
    """A version-1 row: ``n`` even has a virtual key, every third one failed."""
    return (f"old-{n:04d}", T0 + n // 2, "node-a", "vk-1" if n % 2 == 0 else None, "openai",
            "gpt-4o" if n % 3 else "gpt-4o-mini", "chat", False, 500 if n % 3 == 0 else 200, 1.5,
            10, 2, None, None, f'{{"q":{n}}}', f'{{"a":{n}}}')


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path):
    """An unopened store of each engine and a sink factory for it."""
    if request.param == "sqlite":
        path = tmp_path / "logs.db"
        return SQLiteDatabase(path), (lambda: SQLiteSink(path))
    settings = StoreSettings(dsn=request.getfixturevalue("pg_database"))
    return PostgresDatabase(settings), (lambda: PostgresSink(settings, "test"))


async def _at_version_1(db):
    """Migrate to version 1 only, as a store of an older rainbridge would be."""
    first = migrations("logs", db.dialect)[0]
    assert first.version == 1
    async with db.exclusive(LOCK_IDS["logs"]) as tx:
        await _ensure_table(tx)
        await tx.script(first.sql)
        await tx.execute("INSERT INTO schema_migrations (component, version, name, applied_at) VALUES ($1, $2, $3, $4)",
                         "logs", 1, first.name, 0)


def test_migration_keeps_version_1_rows_readable_with_filters_and_cursor(database):
    db, _ = database
    rows = [old_row(n) for n in range(60)]

    async def before():
        await db.open()
        try:
            await _at_version_1(db)
            insert = f"INSERT INTO request_logs ({', '.join(COLUMNS)}) VALUES ({', '.join(f'${i + 1}' for i in range(16))})"
            async with db.transaction() as tx:
                for row in rows:
                    await tx.execute(insert, *row)
            assert await migrate(db, "logs") == [v.version for v in migrations("logs", db.dialect)[1:]]
            got = {}
            got["all"] = await query_logs(db, {}, 100, None, with_content=True)
            got["vk"] = await query_logs(db, {"virtual_key_id": "vk-1"}, 100, None)
            got["errors"] = await query_logs(db, {"errors_only": True, "model": "gpt-4o-mini"}, 100, None)
            got["window"] = await query_logs(db, {"start_ms": T0 + 10, "end_ms": T0 + 20}, 100, None)
            pages, cursor = [], None
            for _ in range(20):  # bounded: 60 rows in pages of 7
                page, cursor = await query_logs(db, {"provider": "openai"}, 7, cursor)
                pages.extend(r["id"] for r in page)
                if cursor is None:
                    break
            got["paged"] = pages
            return got
        finally:
            await db.close()

    got = asyncio.run(before())
    newest_first = sorted(rows, key=lambda r: (r[1], r[0]), reverse=True)
    listed, cursor = got["all"]
    assert cursor is None and [r["id"] for r in listed] == [r[0] for r in newest_first]
    assert listed[0]["request"] == '{"q":59}' and listed[0]["response"] == '{"a":59}' and listed[0]["stream"] is False
    assert [r["id"] for r in got["vk"][0]] == [r[0] for r in newest_first if r[3] == "vk-1"]
    assert [r["id"] for r in got["errors"][0]] == [r[0] for r in newest_first if r[8] == 500 and r[5] == "gpt-4o-mini"]
    assert [r["id"] for r in got["window"][0]] == [r[0] for r in newest_first if T0 + 10 <= r[1] < T0 + 20]
    assert got["paged"] == [r[0] for r in newest_first]


async def migrated(db) -> None:
    """Bring ``db``'s logs schema to the newest version, then close it."""
    await db.open()
    try:
        await migrate(db, "logs")
    finally:
        await db.close()


def test_a_retried_batch_is_written_once_under_the_new_key(database):
    """The (ts, id) key still catches a batch written twice (its commit lost, say)."""
    db, open_sink = database

    asyncio.run(migrated(db))
    sink = open_sink()
    writer = LogWriter(lambda: sink, "node-a", "p-")
    entries = [(time.time(), 0.001, None, "openai", "m", "chat", False, 200, 1, 1, None, None, b"{}", b"{}")] * 40
    batch = writer._rows(entries, sink.text_content)
    assert sink.write(batch) == 0
    assert sink.write(batch[20:] + writer._rows(entries[:5], sink.text_content)) == 0
    if isinstance(sink, SQLiteSink):
        total = sink.conn.execute("SELECT count(*), count(DISTINCT id) FROM request_logs").fetchone()
    else:
        total = sink.cur.execute("SELECT count(*), count(DISTINCT id) FROM request_logs").fetchone()
    sink.close()
    assert total == (45, 45)


def test_sqlite_queries_that_matter_use_an_index(tmp_path):
    """Newest first (and its cursor) read the (ts, id) index backwards, no sort; a virtual
    key filter reads the partial virtual key index."""
    db = SQLiteDatabase(tmp_path / "logs.db")

    async def plans():
        await db.open()
        try:
            await migrate(db, "logs")
            out = {}
            for name, where in (("newest", ""), ("cursor", "WHERE (ts < 5 OR (ts = 5 AND id < 'x'))"),
                                ("vk", "WHERE virtual_key_id = 'vk-1'")):
                rows = await db.fetch(f"EXPLAIN QUERY PLAN SELECT id FROM request_logs {where} ORDER BY ts DESC, id DESC LIMIT 51")
                out[name] = " | ".join(r["detail"] for r in rows)
            return out
        finally:
            await db.close()

    out = asyncio.run(plans())
    assert "request_logs_ts" in out["newest"] and "TEMP B-TREE" not in out["newest"], out
    assert "request_logs_ts" in out["cursor"] and "TEMP B-TREE" not in out["cursor"], out
    assert "request_logs_vk" in out["vk"] and "TEMP B-TREE" not in out["vk"], out


def test_postgres_queries_that_matter_use_an_index(pg_database):
    import psycopg

    db = PostgresDatabase(StoreSettings(dsn=pg_database))

    asyncio.run(migrated(db))
    with psycopg.connect(pg_database) as conn:
        conn.execute("SET enable_seqscan = off")  # an empty table: ask which index it would use
        newest = conn.execute("EXPLAIN SELECT id FROM request_logs ORDER BY ts DESC, id DESC LIMIT 51").fetchall()
        vk = conn.execute("EXPLAIN SELECT id FROM request_logs WHERE virtual_key_id = 'vk-1' "
                          "ORDER BY ts DESC, id DESC LIMIT 51").fetchall()
    newest, vk = " ".join(r[0] for r in newest), " ".join(r[0] for r in vk)
    assert "Scan Backward using request_logs_pkey" in newest and "Sort" not in newest, newest
    assert "Backward using request_logs_vk" in vk and "Sort" not in vk, vk
