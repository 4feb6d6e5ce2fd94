"""The logs store's schema: rows written under version 1 survive the migrations (version 2:
fewer indexes; version 3: pages, and the old table kept for reading), /api/logs' filters and
cursor still answer right, and the queries that matter use an index, on a real SQLite file
and a real PostgreSQL."""

import asyncio

import pytest

from rainbridge.config.schema import StoreSettings
from rainbridge.store.db import PostgresDatabase, SQLiteDatabase
from rainbridge.store.log_sinks import PostgresSink, SQLiteSink
from rainbridge.store.migrate import LOCK_IDS, _ensure_table, migrate, migrations
from rainbridge.store.request_log import COLUMNS, PAGES_PER_FETCH, query_logs

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


PAGE_WALK = ("SELECT p.id FROM request_log_pages p {where} ORDER BY p.max_ts DESC, p.id DESC LIMIT {n}")
KEY_WALK = ("SELECT p.id FROM request_log_pages p JOIN request_log_page_keys k ON k.page_id = p.id AND k.max_ts = p.max_ts "
            "WHERE k.virtual_key_id = 'vk-1' ORDER BY k.max_ts DESC, k.page_id DESC LIMIT {n}")


def test_sqlite_queries_that_matter_use_an_index(tmp_path):
    """Newest first (and its cursor) read the (ts, id) index backwards, no sort; a virtual
    key filter reads the partial virtual key index. The page walk reads the pages' (max_ts,
    id) index backwards, and a virtual key's pages through its own index."""
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
            for name, sql in (("pages", PAGE_WALK.format(where="", n=PAGES_PER_FETCH)),
                              ("pages after", PAGE_WALK.format(where="WHERE (p.max_ts < 5 OR (p.max_ts = 5 AND p.id < 'x'))",
                                                               n=PAGES_PER_FETCH)),
                              ("key pages", KEY_WALK.format(n=PAGES_PER_FETCH))):
                out[name] = " | ".join(r["detail"] for r in await db.fetch(f"EXPLAIN QUERY PLAN {sql}"))
            return out
        finally:
            await db.close()

    out = asyncio.run(plans())
    for name, index in (("newest", "request_logs_ts"), ("cursor", "request_logs_ts"), ("vk", "request_logs_vk"),
                        ("pages", "request_log_pages_ts"), ("pages after", "request_log_pages_ts"),
                        ("key pages", "sqlite_autoindex_request_log_page_keys")):
        assert index in out[name] and "TEMP B-TREE" not in out[name], (name, out[name])


def test_postgres_queries_that_matter_use_an_index(pg_database):
    import psycopg

    db = PostgresDatabase(StoreSettings(dsn=pg_database))

    asyncio.run(migrated(db))
    with psycopg.connect(pg_database) as conn:
        conn.execute("SET enable_seqscan = off")  # empty tables: ask which index it would use
        conn.execute("SET enable_sort = off")  # (and whether it can list in order without sorting)
        plans = {name: " ".join(r[0] for r in conn.execute(f"EXPLAIN {sql}").fetchall()) for name, sql in (
            ("newest", "SELECT id FROM request_logs ORDER BY ts DESC, id DESC LIMIT 51"),
            ("vk", "SELECT id FROM request_logs WHERE virtual_key_id = 'vk-1' ORDER BY ts DESC, id DESC LIMIT 51"),
            ("pages", PAGE_WALK.format(where="", n=PAGES_PER_FETCH)),
            ("key pages", KEY_WALK.format(n=PAGES_PER_FETCH)),
        )}
    for name, index in (("newest", "request_logs_pkey"), ("vk", "request_logs_vk"), ("pages", "request_log_pages_ts"),
                        ("key pages", "request_log_page_keys_pkey")):
        assert f"Backward using {index}" in plans[name] and "Sort" not in plans[name], (name, plans[name])


def test_postgres_pages_are_compressed_with_lz4(pg_database):
    """This server (PostgreSQL 15, built with lz4) compresses a page's rows and bodies with
    lz4, not the default pglz that cost ~5x the server CPU per page."""
    import psycopg

    asyncio.run(migrated(PostgresDatabase(StoreSettings(dsn=pg_database))))
    with psycopg.connect(pg_database) as conn:
        methods = dict(conn.execute("SELECT attname, attcompression FROM pg_attribute WHERE attrelid = "
                                    "'request_log_pages'::regclass AND attname IN ('rows', 'content')").fetchall())
    assert methods == {"rows": "l", "content": "l"}
