"""Usage counters against a real store (SQLite and PostgreSQL): what a flush writes, what a
restarted process loads back, and which slots are forgotten."""

import msgspec

from rainbridge.config.schema import StoreConfig
from rainbridge.counters.local import PRUNE_AFTER_END_MS, LocalCounters
from rainbridge.store import open_database
from rainbridge.store.migrate import migrate

MINUTE = 60_000
T0 = 1_764_000_000_000  # a whole minute, in the recent past of any test run's clock
REQUESTS = ("vk", "vk_1", "requests", T0)
SPEND = ("budget", "b_1", "spend", T0)


async def open_db(store_config, tmp_path):
    db = open_database(msgspec.convert(store_config, StoreConfig), tmp_path, "config.db")
    await db.open()
    await migrate(db, "config")
    return db


async def rows(db):
    found = await db.fetch("SELECT scope, counter_key, window_start, node_id, value FROM counters ORDER BY scope, node_id")
    return [(r["scope"], r["counter_key"], int(r["window_start"]), r["node_id"], float(r["value"])) for r in found]


async def test_flush_writes_only_slots_whose_own_usage_moved_and_a_restart_adds_it_back(store_config, tmp_path):
    db = await open_db(store_config, tmp_path)
    try:
        first = LocalCounters("node-a")
        requests = first.slot(REQUESTS, T0 + MINUTE)
        spend = first.slot(SPEND, T0 + 86_400_000)
        requests.committed += 3
        spend.committed += 0.25
        assert await first.flush(db) == 2
        assert await first.flush(db) == 0  # nothing moved since
        requests.committed += 1
        assert await first.flush(db) == 1
        assert await rows(db) == [("budget", "b_1\x1fspend", T0, "node-a", 0.25), ("vk", "vk_1\x1frequests", T0, "node-a", 4.0)]

        # A new process (another node id) starts from the others' usage and flushes only its own.
        second = LocalCounters("node-b")
        assert await second.load(db, now_ms=T0 + 1000) == 2
        again = second.slot(REQUESTS, T0 + MINUTE)
        assert again.committed == 4 and type(again.committed) is int and again.own == 0
        assert await second.flush(db) == 0
        again.committed += 2
        assert await second.flush(db) == 1
        assert (await rows(db))[-1] == ("vk", "vk_1\x1frequests", T0, "node-b", 2.0)
        assert again.committed == 6 and again.own == 2
    finally:
        await db.close()


async def test_prune_forgets_ended_windows_once_flushed_and_idle(store_config, tmp_path):
    db = await open_db(store_config, tmp_path)
    try:
        c = LocalCounters("node-a")
        ended = c.slot(REQUESTS, T0 + MINUTE)
        busy = c.slot(("vk", "vk_1", "tokens", T0), T0 + MINUTE)
        current = c.slot(SPEND, T0 + 86_400_000)
        ended.committed += 1
        busy.reserved += 10  # a request still in flight
        current.committed += 0.5
        after_end = T0 + MINUTE + PRUNE_AFTER_END_MS + 1
        c.prune(after_end)
        assert REQUESTS in c.slots  # not written yet: kept
        await c.flush(db)
        c.prune(after_end)
        assert set(c.slots) == {busy.key, SPEND}
        busy.reserved -= 10
        c.prune(after_end)
        assert set(c.slots) == {SPEND}  # its window is still open
    finally:
        await db.close()
