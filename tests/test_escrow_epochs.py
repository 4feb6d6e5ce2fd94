"""Roster epochs (``counters/epochs.py``): when a member may act as a limit's acceptor after
the roster changed, and the escrow node's sealing of older epochs."""

from __future__ import annotations

from random import Random

from rainbridge.counters import rendezvous
from rainbridge.counters.crdt import Ballot, WindowLedger
from rainbridge.counters.epochs import Epochs
from rainbridge.counters.escrow import EscrowConfig, EscrowNode, Limit
from rainbridge.counters.escrow_messages import (
    Accept,
    Accepted,
    Prepare,
    Promise,
    RosterNews,
    SyncReply,
    SyncRequest,
)

LID = "vk_a:requests:10s"
LIMIT = Limit(LID, 50, "10s")
T = 1_800_000_000_000
OLD = ("a:1", "b:1", "c:1")
NEW = (*OLD, "d:1", "e:1", "f:1", "g:1")  # four joiners: they alone are a majority of seven


def _joiner(force_ms: int = 10_000) -> Epochs:
    ep = Epochs("d:1", size=15)
    ep.learn([(1, OLD), (2, NEW)], T)
    return ep


def test_epoch_one_needs_no_answers():
    ep = Epochs("a:1", size=15)
    ep.learn([(1, OLD)], T)
    assert ep.verify(LID, T, 10_000) is None and ep.ready(LID)


def test_joiners_alone_never_verify_a_joiner():
    ep = _joiner()
    for j in ("e:1", "f:1", "g:1"):  # the other joiners, sealed but never in epoch 1's group
        ep.note_reply(j, 2, {})
    missing = ep.verify(LID, T + 1, 10_000)
    assert missing == {"a:1", "b:1", "c:1"} and not ep.ready(LID)


def test_a_sealed_covering_majority_of_the_previous_group_verifies():
    ep = _joiner()
    ep.note_reply("a:1", 2, {LID: 1})
    assert ep.verify(LID, T + 1, 10_000) == {"b:1", "c:1"}
    ep.note_reply("b:1", 1, {LID: 1})  # answered before it moved to epoch 2: not sealed
    assert not ep.ready(LID) and ep.verify(LID, T + 2, 10_000) == {"b:1", "c:1"}
    ep.note_reply("b:1", 2, {LID: 1})
    assert ep.verify(LID, T + 3, 10_000) is None and ep.ready(LID) and ep.verified[LID] == 2


def test_an_epoch_nobody_was_verified_in_is_skipped_for_the_one_before():
    ep = Epochs("d:1", size=15)
    ep.learn([(1, OLD), (2, (*OLD, "x:1")), (3, NEW)], T)
    # Epoch 2's group {a, b, c, x}: a, b and c moved on to 3 without ever being verified in
    # 2, so nothing was committed in 2; their epoch-1 state is what counts.
    for m in ("a:1", "b:1", "c:1"):
        ep.note_reply(m, 3, {LID: 1})
    assert ep.verify(LID, T + 1, 10_000) is None and ep.ready(LID)


def test_silent_members_count_as_empty_only_once_removed_and_after_force_ms():
    ep = Epochs("a:2", size=15)  # a restarted: its old incarnation a:1 is gone
    ep.learn([(1, OLD), (2, ("a:2", "b:1", "c:1"))], T)
    ep.note_reply("b:1", 2, {LID: 1})
    assert ep.verify(LID, T + 9_999, 10_000) == {"a:1", "c:1"}  # c is still listed: wait for it
    ep2 = Epochs("a:2", size=15)
    ep2.learn([(1, ("a:1", "b:1", "c:1")), (2, ("a:2", "b:1"))], T)  # c left the roster too
    assert ep2.verify(LID, T + 9_999, 10_000) == {"a:1", "b:1", "c:1"}
    ep2.note_reply("b:1", 2, {LID: 1})
    assert ep2.verify(LID, T + 9_999, 10_000) == {"a:1", "c:1"}
    assert ep2.verify(LID, T + 10_000, 10_000) is None and ep2.forced == 1


# ------------------------------------------------------------------ the node


def _node(name: str, rosters: dict[int, tuple[str, ...]]) -> EscrowNode:
    node = EscrowNode(name, 1, [LIMIT], rosters, Random(0), T, EscrowConfig(acceptors=15))
    node.take_outgoing()
    return node


def test_a_member_in_a_newer_epoch_refuses_an_older_ballot_and_sends_the_news():
    node = _node("a", {1: OLD})
    node.set_epochs({1: OLD, 2: NEW}, T + 1)
    sync = [s for s in node.take_outgoing() if isinstance(s.message, SyncRequest)]
    assert {s.to for s in sync} == {"b", "c"}  # it asks its old group before it acts
    old = Ballot(1, 3, "b")
    node.handle(Accept(LID, old, T, WindowLedger({"b:1": 9}, {}, old), 1), "b", T + 2)
    out = node.take_outgoing()
    refusals = [s.message for s in out if isinstance(s.message, Accepted)]
    assert refusals and not refusals[0].ok
    news = [s for s in out if isinstance(s.message, RosterNews)]
    assert [s.to for s in news] == ["b"] and dict(news[0].message.rosters)[2] == NEW
    assert node.acceptor.windows(LID).get(T) is None  # nothing of the old ballot merged


def test_a_joiner_ignores_prepares_until_the_old_group_answered_sealed():
    joiner = _node("d", {1: OLD, 2: NEW})
    assert not joiner.synced
    owner = rendezvous.owner(LID, [m.split(":")[0] for m in NEW if m != "d:1"])
    joiner.set_view([m.split(":")[0] for m in NEW if m != "d:1"], T)
    joiner.take_outgoing()
    ballot = Ballot(2, 1, owner)
    joiner.handle(Prepare(LID, ballot), owner, T + 1)
    assert not [s for s in joiner.take_outgoing() if isinstance(s.message, Promise)]
    granted = WindowLedger({"a:1": 20}, {}, Ballot(1, 4, "a"))
    for m in ("a", "b"):
        joiner.handle(SyncReply(7, f"{m}:1", 2, ((2, NEW),), ((LID, Ballot(1, 4, "a"), 1, ((T, granted),)),)), m, T + 2)
    assert joiner.synced
    joiner.handle(Prepare(LID, ballot), owner, T + 3)
    promise = next(s.message for s in joiner.take_outgoing() if isinstance(s.message, Promise))
    assert promise.ok and dict(promise.ledgers)[T].granted == {"a:1": 20}  # the old grant travels on


def test_a_sync_request_from_a_newer_epoch_seals_the_replier_first():
    node = _node("b", {1: OLD})
    node.handle(SyncRequest(3, ((1, OLD), (2, NEW))), "d", T + 1)
    reply = next(s.message for s in node.take_outgoing() if isinstance(s.message, SyncReply))
    assert reply.epoch == 2 and node.epoch == 2 and reply.member == "b:1"
    assert dict((lid, v) for lid, _, v, _ in reply.states)[LID] == 1
