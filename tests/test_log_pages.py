"""Reading the request log's pages back (``store/request_log.py``), on a real SQLite file and
a real PostgreSQL: every ``/api/logs`` answer, followed cursor by cursor, equals a plain sort
of every stored request with the same filter — with requests out of start order across pages
(a long stream is written when it ends), rows of the request-per-row table of schema 1-2
mixed in, and walks cut short by ``SCAN_ROWS``."""

import asyncio
import random

import pytest

from rainbridge.config.schema import StoreSettings
from rainbridge.gateway.record import RequestRecord, log_entry
from rainbridge.store import request_log
from rainbridge.store.db import PostgresDatabase, SQLiteDatabase
from rainbridge.store.log_pages import PAGE_BYTES, build_pages, page_rows
from rainbridge.store.log_sinks import PostgresSink, SQLiteSink
from rainbridge.store.log_writer import LogWriter
from rainbridge.store.migrate import migrate
from rainbridge.store.request_log import COLUMNS, query_logs

T0 = 1_700_000_000_000  # ms
KEYS = (None, "vk-1", "vk-2")


def requests(seed: int, n: int = 500) -> list[tuple[float, tuple]]:
    """(when it ended, its log entry): started at even milliseconds, mostly short, one in
    ten a stream of up to a minute."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        record = RequestRecord("chat", content=True)
        start_ms = T0 + 2 * rng.randrange(5000)
        record.wall_started = (start_ms + 0.5) / 1000
        record.provider = rng.choice(("openai", "anthropic"))
        record.model = rng.choice(("gpt-4o", "claude"))
        record.virtual_key_id = rng.choice(KEYS)
        record.status = rng.choice((200, 200, 200, 429, 502))
        record.request_body, record.response_body = f'{{"q":{i}}}'.encode(), f'{{"a":{i}}}'.encode()
        took = rng.uniform(1, 60) if rng.random() < 0.1 else rng.uniform(0.001, 0.5)
        out.append((record.wall_started + took, log_entry(record, record.started + took, None)))
    return out


def legacy_row(n: int) -> tuple:
    """A row of the request-per-row table (schema 1-2), at an odd millisecond."""
    return (f"old-{n:04d}", T0 + 2 * (n * 37 % 5000) + 1, "node-old", KEYS[n % 3], "openai", "gpt-4o", "chat", False,
            502 if n % 4 == 0 else 200, 1.5, 10, 2, None, None, f'{{"q":"old{n}"}}', f'{{"a":"old{n}"}}')


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    """A logs store holding 60 legacy rows and 500 requests in pages of 1 to 40, written
    in the order the requests ended: (the Database, every stored row)."""
    if request.param == "sqlite":
        path = tmp_path / "logs.db"
        db, open_sink = SQLiteDatabase(path), (lambda: SQLiteSink(path))
    else:
        settings = StoreSettings(dsn=request.getfixturevalue("pg_database"))
        db, open_sink = PostgresDatabase(settings), (lambda: PostgresSink(settings, "test"))
    legacy = [legacy_row(n) for n in range(60)]

    async def prepare():
        await db.open()
        await migrate(db, "logs")
        insert = f"INSERT INTO request_logs ({', '.join(COLUMNS)}) VALUES ({', '.join(f'${i + 1}' for i in range(16))})"
        async with db.transaction() as tx:
            for row in legacy:
                await tx.execute(insert, *row)
        await db.close()

    asyncio.run(prepare())
    sink = open_sink()
    writer = LogWriter(lambda: sink, "node-a", "p-")
    ended = [e for _, e in sorted(requests(7), key=lambda r: r[0])]
    rng = random.Random(3)
    pages = []
    while ended:
        size = rng.randint(1, 40)
        pages.extend(writer._pages(ended[:size]))  # (one or more: by start time)
        del ended[:size]
    sink.write(pages)
    sink.close()
    everything = [dict(zip(COLUMNS, row, strict=True)) for row in legacy]
    for page in pages:
        everything.extend(page_rows(page.id_prefix, page.first_row, page.node_id, page.rows, page.content))
    return db, everything  # (closed: each read opens it in its own event loop)


def expected(rows, filters):
    kept = [r for r in rows if all(r[k] == v for k, v in filters.items() if k in ("provider", "model", "virtual_key_id", "status"))
            and (not filters.get("errors_only") or r["status"] >= 400)
            and r["ts"] >= filters.get("start_ms", 0) and r["ts"] < filters.get("end_ms", 2**62)]
    return [r["id"] for r in sorted(kept, key=lambda r: (r["ts"], r["id"]), reverse=True)]


def follow(db, filters, limit, with_content=False):
    """Every answer's rows, cursor after cursor (bounded)."""
    async def go():
        await db.open()
        try:
            got, cursor = [], None
            for _ in range(2000):
                rows, cursor = await query_logs(db, filters, limit, cursor, with_content)
                got.extend(rows)
                if cursor is None:
                    return got
            raise AssertionError("the cursor never ended")
        finally:
            await db.close()

    return asyncio.run(go())


FILTERS = [
    {},
    {"virtual_key_id": "vk-1"},
    {"errors_only": True},
    {"provider": "anthropic", "status": 200},
    {"start_ms": T0 + 2000, "end_ms": T0 + 4000},
    {"virtual_key_id": "vk-2", "errors_only": True, "model": "claude"},
    {"model": "none-such"},
]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(f) or "none")
def test_every_answer_followed_by_its_cursor_is_the_sorted_log(store, filters):
    db, everything = store
    want = expected(everything, filters)
    assert want or filters.get("model") == "none-such"
    for limit in (1, 7, 100):
        assert [r["id"] for r in follow(db, filters, limit)] == want, limit


def test_walks_cut_short_by_the_scan_budget_still_list_everything_in_order(store, monkeypatch):
    """With a budget of one decoded request a read (every fetch of pages ends the walk), an
    answer may hold fewer rows than asked for (even none), but following the cursors lists
    exactly the sorted log."""
    db, everything = store
    monkeypatch.setattr(request_log, "SCAN_ROWS", 1)
    monkeypatch.setattr(request_log, "PAGES_PER_FETCH", 2)
    for filters in (FILTERS[0], FILTERS[1], FILTERS[5]):
        assert [r["id"] for r in follow(db, filters, 10)] == expected(everything, filters), filters


def test_rows_come_back_whole_with_their_content(store):
    db, everything = store
    by_id = {r["id"]: r for r in everything}
    listed = follow(db, {}, 37, with_content=True)
    assert len(listed) == len(everything)
    for row in listed:
        assert set(row) == set(COLUMNS)
        want = by_id[row["id"]]
        assert {k: row[k] for k in COLUMNS if k != "latency_ms"} == {k: want[k] for k in COLUMNS if k != "latency_ms"}
        assert row["latency_ms"] == pytest.approx(want["latency_ms"])
    sample = next(r for r in listed if r["id"].startswith("p-"))
    n = sample["request"][5:-1]
    assert sample["response"] == f'{{"a":{n}}}' and isinstance(sample["stream"], bool)
    listed = follow(db, {}, 50)
    assert all("request" not in row and "_page" not in row for row in listed)


def test_the_sql_view_lists_every_request_as_the_api_does(store):
    """``request_log_entries`` (for operators' SQL) unpacks the pages into the rows /api/logs
    lists, the rows of schema 1-2 included; PostgreSQL gives content as bytes."""
    db, everything = store

    async def view():
        await db.open()
        try:
            return await db.fetch("SELECT * FROM request_log_entries")
        finally:
            await db.close()

    rows = asyncio.run(view())
    if db.dialect == "postgres":
        for row in rows:
            for body in ("request", "response"):
                raw = row.pop(f"{body}_body")
                row[body] = None if raw is None else bytes(raw).decode("utf-8", "replace")
    assert len(rows) == len(everything)
    by_id = {r["id"]: r for r in everything}
    for row in rows:
        want = by_id[row["id"]]
        row["stream"] = bool(row["stream"])
        assert {k: row[k] for k in COLUMNS if k != "latency_ms"} == {k: want[k] for k in COLUMNS if k != "latency_ms"}
        assert row["latency_ms"] == pytest.approx(want["latency_ms"])


def test_a_page_holds_at_most_page_bytes_of_content_and_every_request_in_order():
    """Big bodies (each cut at CONTENT_CAP) split a batch into more pages, so a read of one
    body loads at most PAGE_BYTES; nothing is lost or reordered."""
    records = []
    for i in range(200):
        record = RequestRecord("chat", content=True)
        record.wall_started = T0 / 1000 + i / 10_000  # all within one page's span
        record.status, record.request_body, record.response_body = 200, b"q" * 10**6, b"a%d" % i + b" " * 10**6
        records.append(log_entry(record, record.started, None))
    pages, refused = build_pages(records, "p-", 1, "node")
    assert refused == 0 and [page.row_count for page in pages] == [64, 64, 64, 8]  # 128 KiB each
    assert all(len(page.content) <= PAGE_BYTES for page in pages)
    rows = [row for page in pages for row in page_rows(page.id_prefix, page.first_row, page.node_id, page.rows, page.content)]
    assert [row["response"].rstrip() for row in rows] == [f"a{i}" for i in range(200)]
    assert [row["id"] for row in rows] == [f"p-{i:x}" for i in range(1, 201)]
