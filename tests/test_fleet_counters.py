"""``FleetCounters`` on a real store (SQLite and PostgreSQL), without a cluster: the escrow
runs as a fleet of one, so these check the driver's own rules.

- the usage of a member that died before flushing it, known from gossip, is written under
  that member's node id by a live member, only once, and never lowers a row;
- a slot's ``low`` bound follows the allowance; usage reported by others raises ``others``
  (and ``committed``) but a stale, lower report never lowers them;
- the fleet's usage of a counter this worker never used comes from the usage CRDT.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from rainbridge.counters.fleet import AwaitGrant, FleetCounters, member_to_node, node_to_member
from rainbridge.counters.windows import window_for
from test_counters import open_db, rows

NOW_S = 1_764_000_030.0  # 30 s into a minute
WINDOW = 1_764_000_000_000
KEY = ("vk", "vk_1", "requests", WINDOW)
LID = "vk/vk_1/requests/1m"


def fleet_of_one() -> FleetCounters:
    counters = FleetCounters("n1-b00t", clock=lambda: NOW_S)
    counters.attach(SimpleNamespace(name="n1", boot="b00t", node=None, rpc=None,
                                    on_request=lambda kind, handler: None))  # type: ignore[arg-type]
    slot = counters.slot(KEY, WINDOW + 60_000)
    counters.bind(slot, LID, 100, "1m", False)
    return counters


def test_node_ids_and_member_ids_map_both_ways():
    assert node_to_member("rb-0-w1-9f3a") == "rb-0-w1:9f3a"
    assert member_to_node("rb-0-w1:9f3a") == "rb-0-w1-9f3a"


async def test_a_dead_members_gossiped_usage_is_flushed_once_under_its_node_id(store_config, tmp_path):
    db = await open_db(store_config, tmp_path)
    try:
        counters = fleet_of_one()
        escrow = counters.escrow
        usage = escrow._usage_of((LID, WINDOW))
        usage.set_own("n2:dead", 7)  # died before flushing: only gossip knows its 7
        usage.set_own("n3:live", 4)  # alive: it flushes its own rows
        counters._running = {escrow.me, "n3:live"}
        await counters.flush(db)
        assert [r for r in await rows(db) if r[3] != "n1-b00t"] == [("vk", "vk_1\x1frequests", WINDOW, "n2-dead", 7.0)]
        # Written once: a second flush writes nothing more for it.
        assert counters._orphan_rows() == []
        # A row the dead member wrote itself with more is never lowered (GREATEST).
        await db.execute("UPDATE counters SET value = 9 WHERE node_id = 'n2-dead'")
        usage.set_own("n2:dead", 8)
        await counters.flush(db)
        assert [r[4] for r in await rows(db) if r[3] == "n2-dead"] == [9.0]
    finally:
        counters.close()
        await db.close()


async def test_low_follows_the_allowance_and_others_only_grow():
    counters = fleet_of_one()
    slot = counters.slots[KEY]
    assert slot.low == float("-inf")  # nothing granted yet: admission must ask
    now = int(NOW_S * 1000)
    counters.escrow.set_view(["n1"], now)
    with pytest.raises(AwaitGrant) as waiting:
        counters.reach(slot, 1)
    assert waiting.value.future.done() and waiting.value.future.result() is True  # granted at once
    allowance = counters.escrow.allowance(LID, WINDOW)
    assert allowance.granted == 50  # max(1, ceil(100 / (2 × 1 member)))
    margin = (allowance.last_grant + 1) // 2
    assert slot.low == allowance.granted - allowance.returned - margin == 25
    assert counters.reach(slot, 1) is True  # past low, within the allowance: admitted, topped up
    usage = counters.escrow._usage_of((LID, WINDOW))
    usage.set_own("n2:x", 5)
    counters._after()
    assert (slot.others, slot.committed) == (5, 5)
    assert slot.low == 5 + allowance.granted - allowance.returned - (allowance.last_grant + 1) // 2
    usage.by_member["n2:x"] = 3  # a lower, stale report (the CRDT never does this; forced here)
    counters._after()
    assert (slot.others, slot.committed) == (5, 5)
    counters.close()


async def test_a_budget_whose_windows_moved_is_admitted_on_its_new_windows():
    """Regression: ``bind`` replaced a fleet limit only when its value changed, so a budget
    whose anchor moved (its creation time, rewritten while the fleet started) was still
    admitted on its old windows: allowance asked for and granted on a window the other
    members did not count, and this member's own usage never synced into it."""
    counters = FleetCounters("n1-b00t", clock=lambda: NOW_S)
    counters.attach(SimpleNamespace(name="n1", boot="b00t", node=None, rpc=None,
                                    on_request=lambda kind, handler: None))  # type: ignore[arg-type]
    now = int(NOW_S * 1000)
    lid = "budget/b_1/spend/1h"
    for anchor in (WINDOW - 10_000, WINDOW - 5_000):  # the plan's next refresh: the moved anchor
        start = window_for("1h", now, False, anchor).start_ms
        slot = counters.slot(("budget", "b_1", "spend", start), start + 3_600_000)
        counters.bind(slot, lid, 0.02, "1h", True, 1_000_000, False, anchor)
    assert counters.escrow.window(lid, now)[0] == start
    counters.escrow.set_view(["n1"], now)
    with pytest.raises(AwaitGrant) as waiting:
        counters.reach(slot, 0.001)
    assert waiting.value.future.result() is True
    assert counters.escrow.allowance(lid, start).granted == 10_000  # half of $0.02, in micro-USD
    slot.reserved += 0.001  # admitted: the slot holds its cost, and the allowance counts it
    counters._sync_used()
    assert counters.escrow.allowance(lid, start).used == 1_000
    assert slot.low == 0.005  # (10,000 granted − a margin of 5,000) micro-USD
    counters.close()


async def test_the_fleets_usage_of_a_counter_never_used_here_comes_from_gossip():
    counters = fleet_of_one()
    other = ("team", "t_1", "requests", WINDOW)
    counters.escrow._usage_of(("team/t_1/requests/1m", WINDOW)).set_own("n2:x", 11)
    counters.escrow._usage_of(("budget/b_1/spend/1d", WINDOW)).set_own("n2:x", 2_500_000)
    assert counters.value(other) == 11
    assert counters.value(("budget", "b_1", "spend", WINDOW)) == 2.5  # micro-USD → USD
    assert counters.value(("team", "t_2", "requests", WINDOW)) == 0
    counters.close()


def test_acceptor_group_size_comes_from_the_environment_and_bad_values_keep_the_default(caplog):
    from rainbridge.counters.fleet import FLEET_CONFIG, fleet_config

    assert fleet_config({}) is FLEET_CONFIG and FLEET_CONFIG.acceptors == 15
    wide = fleet_config({"RAINBRIDGE_FLEET_ACCEPTORS": "33"})
    assert wide.acceptors == 33 and wide.reclaim_ms == FLEET_CONFIG.reclaim_ms
    for bad in ("0", "-3", "many", "256"):
        assert fleet_config({"RAINBRIDGE_FLEET_ACCEPTORS": bad}) is FLEET_CONFIG
    assert "RAINBRIDGE_FLEET_ACCEPTORS='many' is not a whole number from 1 to 255" in caplog.text
