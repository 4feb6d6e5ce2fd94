"""Durable counters on a real store (SQLite and PostgreSQL, the ``store_config`` fixture):
idempotent loading by per-node maxima, only open windows loaded, ended windows' rows
deleted in bounded batches, and the upsert that only lets a row grow."""

import pytest

from rainbridge.counters.local import (
    CLEANUP_INTERVAL_MS,
    PRUNE_AFTER_END_MS,
    RETAIN_MS,
    UPSERT_SQL,
    LocalCounters,
)
from test_counters import open_db

MINUTE = 60_000
DAY = 86_400_000
NOW = 1_764_000_030_000  # the tests' clock: 30 s into the minute T0
T0 = NOW - 30_000
REQUESTS = ("vk", "vk_1", "requests", T0)
TOKENS = ("vk", "vk_1", "tokens", T0)


async def flushed(node: str, db, key, value, end_ms) -> LocalCounters:
    counters = LocalCounters(node)
    counters.slot(key, end_ms).committed += value
    assert await counters.flush(db) == 1
    return counters


async def insert(db, node: str, window_start: int, window_end: int, value: float = 1.0) -> None:
    await db.execute(
        "INSERT INTO counters (scope, counter_key, window_start, window_end, node_id, value, updated_at) "
        "VALUES ('vk', $1, $2, $3, $4, $5, 0)",
        f"vk_{window_start}\x1frequests", window_start, window_end, node, value,
    )


async def stored(db) -> set[tuple[str, int, int]]:
    found = await db.fetch("SELECT node_id, window_start, window_end FROM counters")
    return {(r["node_id"], int(r["window_start"]), int(r["window_end"])) for r in found}


async def test_loading_twice_changes_nothing_and_a_reload_adds_only_growth(store_config, tmp_path):
    db = await open_db(store_config, tmp_path)
    try:
        a = await flushed("a-1", db, REQUESTS, 3, T0 + MINUTE)
        await flushed("c-1", db, REQUESTS, 2, T0 + MINUTE)
        b = LocalCounters("b-1")
        own = b.slot(REQUESTS, T0 + MINUTE)
        own.committed += 1  # b's own usage, before it loads
        assert await b.load(db, now_ms=NOW) == 1
        assert (own.committed, own.others, own.own) == (6, 5, 1)
        assert await b.load(db, now_ms=NOW) == 0  # the same rows again: nothing changes
        assert (own.committed, own.others, own.own) == (6, 5, 1)
        a.slots[REQUESTS].committed += 4  # a's row becomes 7: a reload adds the 4, not 7
        await a.flush(db)
        assert await b.load(db, now_ms=NOW) == 1
        assert (own.committed, own.others, own.own) == (10, 9, 1)
        assert b.loaded[REQUESTS] == {"a-1": 7, "c-1": 2}
    finally:
        await db.close()


async def test_load_reads_only_open_windows(store_config, tmp_path):
    db = await open_db(store_config, tmp_path)
    try:
        await flushed("a-1", db, REQUESTS, 3, T0 + MINUTE)  # open
        await flushed("a-1", db, ("vk", "vk_1", "requests", T0 - MINUTE), 5, T0)  # ended at T0
        await flushed("a-1", db, ("budget", "b_1", "spend", T0 - 300 * DAY), 0.5, NOW + DAY)  # long, open
        await insert(db, "old-version", T0 - 10 * DAY, 0)  # no end recorded, recent start: kept rule
        await insert(db, "old-version", NOW - RETAIN_MS - 1, 0)  # no end, too old
        b = LocalCounters("b-1")
        assert await b.load(db, now_ms=NOW) == 3
        assert set(b.slots) == {
            REQUESTS,
            ("budget", "b_1", "spend", T0 - 300 * DAY),
            ("vk", f"vk_{T0 - 10 * DAY}", "requests", T0 - 10 * DAY),
        }
        assert b.slots[REQUESTS].end_ms == T0 + MINUTE  # the end comes with the row
    finally:
        await db.close()


async def test_ended_windows_rows_are_deleted_in_bounded_batches_and_open_ones_kept(store_config, tmp_path):
    db = await open_db(store_config, tmp_path)
    try:
        long_ended = NOW - PRUNE_AFTER_END_MS - 1
        for i in range(5):
            await insert(db, f"gone-{i}", long_ended - MINUTE, long_ended)
        await insert(db, "old-version", NOW - RETAIN_MS - 1, 0)  # no end, past the old rule
        keep = {
            ("a-1", T0, T0 + MINUTE),  # open
            ("a-1", T0 - MINUTE, T0),  # ended only just now: settlements may still land
            ("old-version", T0 - 10 * DAY, 0),  # no end recorded, inside the old rule
        }
        for node, start, end in keep:
            await insert(db, node, start, end)
        counters = LocalCounters("b-1")
        batches = [await counters.delete_ended(db, NOW, batch=4) for _ in range(3)]
        assert batches == [4, 2, 0]
        assert await stored(db) == keep
    finally:
        await db.close()


async def test_maintain_deletes_periodically_and_again_while_batches_are_full(store_config, tmp_path):
    db = await open_db(store_config, tmp_path)
    try:
        ended = NOW - PRUNE_AFTER_END_MS - 1
        counters = LocalCounters("b-1")
        counters.cleanup_batch = 2
        for i in range(3):
            await insert(db, f"gone-{i}", ended - MINUTE, ended)
        await counters.maintain(db, now_ms=NOW)  # a full batch: 1 row left, go on next time
        assert len(await stored(db)) == 1
        await counters.maintain(db, now_ms=NOW + 2000)
        assert await stored(db) == set()
        await insert(db, "gone-late", ended - MINUTE, ended)
        await counters.maintain(db, now_ms=NOW + 4000)  # within the interval: not yet
        assert len(await stored(db)) == 1
        await counters.maintain(db, now_ms=NOW + 2000 + CLEANUP_INTERVAL_MS)
        assert await stored(db) == set()
    finally:
        await db.close()


def test_the_upsert_takes_the_maximum_in_each_dialect():
    assert "value = GREATEST(counters.value, excluded.value)" in UPSERT_SQL["postgres"]
    assert "value = MAX(counters.value, excluded.value)" in UPSERT_SQL["sqlite"]
    assert "window_end = GREATEST(" in UPSERT_SQL["postgres"] and "window_end = MAX(" in UPSERT_SQL["sqlite"]


async def test_a_replayed_or_stale_flush_never_lowers_a_row(store_config, tmp_path):
    db = await open_db(store_config, tmp_path)
    try:
        row = ["vk", "vk_1\x1frequests", T0, T0 + MINUTE, "a-1", 5.0, 1]
        await db.executemany(UPSERT_SQL[db.dialect], [row])
        stale = [*row[:3], 0, row[4], 3.0, 2]  # an older flush arriving late, end unknown
        await db.executemany(UPSERT_SQL[db.dialect], [stale, stale])
        found = await db.fetch("SELECT value, window_end FROM counters")
        assert [(float(r["value"]), int(r["window_end"])) for r in found] == [(5.0, T0 + MINUTE)]
    finally:
        await db.close()


@pytest.mark.parametrize("key", [TOKENS])
async def test_a_restart_loads_its_previous_incarnation_once(store_config, tmp_path, key):
    db = await open_db(store_config, tmp_path)
    try:
        await flushed("host-boot1", db, key, 40, T0 + MINUTE)
        restarted = LocalCounters("host-boot2")
        await restarted.load(db, now_ms=NOW)
        await restarted.load(db, now_ms=NOW)
        slot = restarted.slots[key]
        assert (slot.committed, slot.own) == (40, 0)
        assert await restarted.flush(db) == 0  # nothing of its own to write: no double count
    finally:
        await db.close()
