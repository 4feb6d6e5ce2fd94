"""The roster master (``counters/fleet_epochs.py``) on a real store (SQLite and PostgreSQL):
epochs are numbered once, in order, by whoever proposes; a partial view never shrinks the
roster; a removed incarnation never comes back. And ``RosterView``: which incarnations a
member adds and removes, from its membership list."""

from __future__ import annotations

import asyncio
import itertools

from rainbridge.cluster.boot import boot_started_ms, new_boot_id, newer_boot
from rainbridge.counters.fleet_epochs import ROSTER_FORGET_S, RosterView, sync
from test_counters import open_db

NOW = 1_800_000_000_000


async def test_the_first_proposal_is_epoch_one_and_the_same_view_writes_nothing(store_config, tmp_path):
    db = await open_db(store_config, tmp_path)
    try:
        assert await sync(db, 0, {"a:1"}, set(), NOW) == [(1, ("a:1",))]
        assert await sync(db, 1, {"a:1"}, set(), NOW + 1) == []
        assert await db.fetchval("SELECT COUNT(*) FROM fleet_epochs") == 1
    finally:
        await db.close()


async def test_a_member_that_has_not_heard_of_others_does_not_remove_them(store_config, tmp_path):
    db = await open_db(store_config, tmp_path)
    try:
        await sync(db, 0, {"a:1", "b:1", "c:1"}, set(), NOW)
        # d just started and sees only itself and a: it adds itself, removes nobody.
        got = await sync(db, 0, {"a:1", "d:1"}, set(), NOW + 1)
        assert got == [(1, ("a:1", "b:1", "c:1")), (2, ("a:1", "b:1", "c:1", "d:1"))]
    finally:
        await db.close()


async def test_a_removed_incarnation_is_never_added_back(store_config, tmp_path):
    db = await open_db(store_config, tmp_path)
    try:
        await sync(db, 0, {"a:1", "b:1"}, set(), NOW)
        assert await sync(db, 1, {"a:1"}, {"b:1"}, NOW + 1) == [(2, ("a:1",))]  # b drains
        # c has not seen b's drain yet and still lists it alive: the roster stays without b.
        assert await sync(db, 2, {"a:1", "b:1", "c:1"}, set(), NOW + 2) == [(3, ("a:1", "c:1"))]
        assert await sync(db, 3, {"a:1", "b:1", "c:1"}, set(), NOW + 3) == []
    finally:
        await db.close()


async def test_concurrent_proposals_get_consecutive_epochs_and_end_on_the_union(store_config, tmp_path):
    db = await open_db(store_config, tmp_path)
    try:
        members = [f"m{i}:1" for i in range(8)]
        await asyncio.gather(*(sync(db, 0, {m}, set(), NOW + i) for i, m in enumerate(members)))
        rows = await sync(db, 0, set(), set(), NOW + 9)
        assert [e for e, _ in rows] == list(range(1, len(rows) + 1))  # no gap, no duplicate
        assert rows[-1][1] == tuple(sorted(members))
        for (_, before), (_, after) in itertools.pairwise(rows):
            assert set(before) < set(after)  # joins only: every epoch grows the roster
    finally:
        await db.close()


def _view(now: float = 100.0) -> RosterView:
    return RosterView("a:1", started_s=now)


D1, D2 = new_boot_id(1_000), new_boot_id(2_000)  # d's boots, started a second apart


def test_draining_left_and_replaced_incarnations_are_gone_and_alive_ones_added():
    view = _view()
    # b:1 draining, c:1 left; e:1 suspect counts as alive
    view.update({"a:1", f"d:{D2}", "e:1"}, set(), {"b:1", "c:1"}, ["a:1", f"d:{D1}"], 101)
    assert view.alive == {"a:1", f"d:{D2}", "e:1"}
    assert view.gone == {"b:1", "c:1", f"d:{D1}"}  # d's older boot: d runs as D2 now


def test_an_incarnation_seen_then_replaced_by_another_boot_is_gone_whatever_the_boot_ids():
    view = _view()
    view.update({"a:1", "d:x"}, set(), set(), ["a:1", "d:x"], 101)
    view.update({"a:1", "d:y"}, set(), set(), ["a:1", "d:x"], 102)  # our list moved on
    assert "d:x" in view.gone and "d:y" in view.alive


def test_a_member_whose_list_still_shows_the_old_boot_never_removes_the_new_one():
    """Rolling restart race: d restarted, the roster already lists its new boot, our list
    still shows the old one (draining, left or even alive): our view lags, keep the new one."""
    for state in ("alive", "leaving", "dead"):
        view = _view()
        old = {f"d:{D1}"}
        view.update({"a:1"} | (old if state == "alive" else set()), old if state == "dead" else set(),
                    old if state == "leaving" else set(), ["a:1", f"d:{D2}"], 101)
        assert f"d:{D2}" not in view.gone, state


def test_an_unseen_incarnation_whose_boot_has_no_time_is_not_taken_for_a_replaced_one():
    view = _view()
    view.update({"a:1", "d:2"}, set(), set(), ["a:1", "d:1"], 101)  # boots of an older build
    assert "d:1" not in view.gone  # left to the forget time


def test_boot_ids_order_by_start_time_and_reject_what_is_not_one():
    assert newer_boot(new_boot_id(2_000), new_boot_id(1_999))
    assert not newer_boot(new_boot_id(1_999), new_boot_id(2_000))
    assert not newer_boot(new_boot_id(2_000), new_boot_id(2_000))
    assert boot_started_ms(new_boot_id()) is not None and len(new_boot_id()) == 15
    for bad in ("4aefd462", "", "+0000000007d0abcd"[:15], "0000000_7d0abcd", " 000000007d0abc", "0000000007D0ABCD"[:15]):
        assert boot_started_ms(bad) is None, bad


def test_a_dead_incarnation_is_gone_only_after_the_forget_time():
    view = _view()
    view.update({"a:1"}, {"b:1"}, set(), ["a:1", "b:1"], 101)
    assert "b:1" not in view.gone and "b:1" not in view.alive
    view.update({"a:1"}, {"b:1"}, set(), ["a:1", "b:1"], 101 + ROSTER_FORGET_S + 1)
    assert "b:1" in view.gone


def test_an_incarnation_nobody_here_heard_of_is_gone_only_once_this_member_ran_long():
    view = _view(now=100.0)
    view.update({"a:1"}, set(), set(), ["a:1", "z:1"], 150)
    assert "z:1" not in view.gone  # just started: z may be there, unseen yet
    view.update({"a:1"}, set(), set(), ["a:1", "z:1"], 100 + ROSTER_FORGET_S + 1)
    assert "z:1" in view.gone
