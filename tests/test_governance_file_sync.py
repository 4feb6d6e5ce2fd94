"""The workers and replicas of a fleet start together and each syncs the same config file
into the shared store at once. A file budget's windows count from its owner's creation
time: whichever sync runs last must leave it there (a budget whose anchor moved while the
fleet started had its windows move too, and members that admitted on different windows
each spent the whole budget)."""

from __future__ import annotations

import asyncio
import itertools

import msgspec

from rainbridge.config.schema import StoreConfig
from rainbridge.governance.model import Budget, VirtualKey
from rainbridge.store import ConfigStore, governance_repo, open_database
from rainbridge.store.governance_repo import GovernanceRepo

SYNCS = 8


def file_key() -> VirtualKey:
    budget = Budget(id="vk-b:fleet", max_limit=0.02, reset_duration="1h")
    return VirtualKey(id="vk-b", name="b", value_hash="h" * 64, budgets=[budget])


async def test_syncs_of_the_file_at_once_leave_each_budget_anchored_where_its_key_was_created(
        store_config, tmp_path, monkeypatch):
    clock = itertools.count(1_800_000_000_000, 1000)  # every sync stamps a different time
    monkeypatch.setattr(governance_repo, "now_ms", lambda: next(clock))
    config = msgspec.convert(store_config, StoreConfig)
    store = await ConfigStore.open(open_database(config, tmp_path, "config.db"), None, wait_s=5)
    dbs = [open_database(config, tmp_path, "config.db") for _ in range(SYNCS)]  # one pool per "worker"
    try:
        for db in dbs:
            await db.open()
        await asyncio.gather(*(GovernanceRepo(db).sync_from_file([], [], [file_key()]) for db in dbs))
        _, _, (vk,) = await GovernanceRepo(store.db).load()
        assert [b.created_at for b in vk.budgets] == [vk.created_at]
    finally:
        for db in dbs:
            await db.close()
        await store.close()
