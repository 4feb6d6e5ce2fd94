"""One ``EscrowNode`` driven by hand, message by message (no simulator): the commit and
fencing rules at the level of single messages."""

from __future__ import annotations

from random import Random

from rainbridge.counters import rendezvous
from rainbridge.counters.crdt import Ballot, WindowLedger
from rainbridge.counters.escrow import EscrowNode, Limit
from rainbridge.counters.escrow_messages import (
    Accept,
    Accepted,
    Ask,
    Deny,
    Grant,
    Prepare,
    Promise,
    Reclaim,
    Return,
)

LIMIT = Limit("vk_a:requests:10s", 50, "10s")
T = 1_800_000_000_000
W = T  # the window open at T


def _epoch1(*names: str) -> dict[int, list[str]]:
    """Roster epoch 1 of these members (first incarnations): nothing before it to verify."""
    return {1: [f"{n}:1" for n in names]}


def _owner_and_others() -> tuple[str, list[str]]:
    roster = ["a", "b", "c"]
    owner = rendezvous.owner(LIMIT.lid, roster)
    return owner, [n for n in roster if n != owner]


def _active_owner() -> tuple[EscrowNode, list[str]]:
    owner, others = _owner_and_others()
    node = EscrowNode(owner, 1, [LIMIT], _epoch1(owner, *others), Random(0), T)
    prepares = [s for s in node.take_outgoing() if isinstance(s.message, Prepare)]
    assert {s.to for s in prepares} == set(others)
    ballot = prepares[0].message.ballot
    node.handle(Promise(LIMIT.lid, ballot, True, ballot), others[0], T + 1)
    assert node.owns(LIMIT.lid)
    node.take_outgoing()
    return node, others


def _sent(node: EscrowNode, kind: type) -> list:
    return [s for s in node.take_outgoing() if isinstance(s.message, kind)]


def test_grant_is_sent_only_after_a_majority_accepted_it():
    node, (b, _) = _active_owner()
    node.handle(Ask(LIMIT.lid, W, f"{b}:1", 1, 0, 0, 0), b, T + 2)
    accepts = [s for s in node.take_outgoing() if isinstance(s.message, Accept)]
    assert accepts and not _sent(node, Grant)
    accept = accepts[0].message
    node.handle(Accepted(LIMIT.lid, accept.ballot, W, accept.seq, True, accept.ballot), accepts[0].to, T + 3)
    grants = _sent(node, Grant)
    assert [(g.to, g.message.member) for g in grants] == [(b, f"{b}:1")]
    assert grants[0].message.granted == 50 // 6 + 1  # ceil(50 / (2 × 3))


def _all_granted_to(node: EscrowNode, member: str) -> None:
    """``member`` asks for the whole limit and gets it (committed with one ack)."""
    node.handle(Ask(LIMIT.lid, W, f"{member}:1", LIMIT.limit, 0, 0, 0), member, T + 2)
    accept = next(s for s in node.take_outgoing() if isinstance(s.message, Accept))
    msg = accept.message
    node.handle(Accepted(LIMIT.lid, msg.ballot, W, msg.seq, True, msg.ballot), accept.to, T + 3)
    assert [g.message.granted for g in _sent(node, Grant)] == [LIMIT.limit]


def test_an_owner_refuses_at_once_when_what_members_hold_is_taken_by_requests_in_flight():
    """Regression: members' requests in flight were not part of the usage the owner saw, so
    every refusal waited for a reclaim round on the members holding them (busy members: the
    admissions waiting there timed out, and the gateway answered 503 instead of 429)."""
    node, (b, c) = _active_owner()
    _all_granted_to(node, b)
    node.handle(Return(LIMIT.lid, W, f"{b}:1", 0, 10, LIMIT.limit), b, T + 4)  # 10 done, 40 in flight
    node.handle(Ask(LIMIT.lid, W, f"{c}:1", 1, 0, 0, 0, 0), c, T + 5)
    out = node.take_outgoing()
    assert not [s for s in out if isinstance(s.message, Reclaim)]
    assert [(s.to, s.message.member) for s in out if isinstance(s.message, Deny)] == [(c, f"{c}:1")]


def test_an_owner_reclaims_before_refusing_when_a_member_holds_allowance_it_has_not_taken():
    node, (b, c) = _active_owner()
    _all_granted_to(node, b)
    node.handle(Return(LIMIT.lid, W, f"{b}:1", 0, 10, LIMIT.limit - 1), b, T + 4)  # one unit unused
    node.handle(Ask(LIMIT.lid, W, f"{c}:1", 1, 0, 0, 0, 0), c, T + 5)
    out = node.take_outgoing()
    assert [(s.to, s.message.member) for s in out if isinstance(s.message, Reclaim)] == [(b, f"{b}:1")]
    assert not [s for s in out if isinstance(s.message, Deny)]


def test_a_late_ack_of_an_earlier_commit_does_not_commit_the_next_one():
    node, (b, c) = _active_owner()
    node.handle(Ask(LIMIT.lid, W, f"{b}:1", 1, 0, 0, 0), b, T + 2)
    first = next(s.message for s in node.take_outgoing() if isinstance(s.message, Accept))
    ack_first = Accepted(LIMIT.lid, first.ballot, W, first.seq, True, first.ballot)
    node.handle(ack_first, b, T + 3)
    node.take_outgoing()
    node.handle(Ask(LIMIT.lid, W, f"{c}:1", 1, 0, 0, 0), c, T + 4)
    second = next(s.message for s in node.take_outgoing() if isinstance(s.message, Accept))
    assert second.seq != first.seq
    node.handle(ack_first, b, T + 5)  # the network duplicated the old ack
    assert not _sent(node, Grant)
    node.handle(Accepted(LIMIT.lid, second.ballot, W, second.seq, True, second.ballot), b, T + 6)
    assert [g.message.member for g in _sent(node, Grant)] == [f"{c}:1"]


def test_owner_stops_granting_once_an_acceptor_promised_a_newer_ballot():
    node, (b, c) = _active_owner()  # c: the member that took over
    node.handle(Ask(LIMIT.lid, W, f"{b}:1", 1, 0, 0, 0), b, T + 2)
    accept = next(s.message for s in node.take_outgoing() if isinstance(s.message, Accept))
    newer = Ballot(1, accept.ballot.round + 1, c)
    node.handle(Accepted(LIMIT.lid, accept.ballot, W, accept.seq, False, newer), b, T + 3)
    assert not node.owns(LIMIT.lid)
    assert not _sent(node, Grant)


def test_acceptor_refuses_an_older_ballot_and_keeps_the_newer_ledger():
    owner, (b, c) = _owner_and_others()
    acceptor = EscrowNode(b, 1, [LIMIT], _epoch1(owner, b, c), Random(1), T)
    acceptor.set_view([owner, b, c], T)
    acceptor.take_outgoing()
    new, old = Ballot(1, 5, owner), Ballot(1, 4, c)
    acceptor.handle(Prepare(LIMIT.lid, new), owner, T + 1)
    assert _sent(acceptor, Promise)[0].message.ok
    stale = WindowLedger({f"{c}:1": 40}, {}, old)
    acceptor.handle(Accept(LIMIT.lid, old, W, stale, 1), c, T + 2)
    reply = _sent(acceptor, Accepted)[0].message
    assert not reply.ok and reply.promised == new
    assert acceptor.acceptor.windows(LIMIT.lid).get(W) is None  # nothing of it merged


def test_an_owner_that_learns_a_limit_from_an_ask_grants_without_waiting_for_a_tick():
    """Regression: the owner learned the limit (``resolve``) from the first Ask but took up
    its ownership only at its next tick (up to ``gossip_ms`` later), dropping that Ask: the
    first request of a fresh limit waited up to ~1.5 s for its grant, past the gateway's
    1 s wait (503 ``limit_coordination_timeout``)."""
    owner, (b, c) = _owner_and_others()
    node = EscrowNode(owner, 1, [], _epoch1(owner, b, c), Random(0), T,
                      resolve=lambda lid: LIMIT if lid == LIMIT.lid else None)
    node.take_outgoing()
    node.handle(Ask(LIMIT.lid, W, f"{b}:1", 1, 0, 0, 0), b, T + 1)
    prepares = _sent(node, Prepare)
    assert {s.to for s in prepares} == {b, c}  # at once, not at the next tick
    ballot = prepares[0].message.ballot
    node.handle(Promise(LIMIT.lid, ballot, True, ballot), c, T + 2)
    grants = []
    for step in range(3):  # the takeover's re-commit of the window first, then the grant's
        out = node.take_outgoing()
        grants = [s for s in out if isinstance(s.message, Grant)]
        accept = next((s for s in out if isinstance(s.message, Accept)), None)
        if grants or accept is None:
            break
        msg = accept.message
        node.handle(Accepted(LIMIT.lid, msg.ballot, W, msg.seq, True, msg.ballot), accept.to, T + 3 + step)
    assert [(g.to, g.message.member) for g in grants] == [(b, f"{b}:1")]  # the Ask was kept
