"""The membership state machine driven by hand: merge rules, refutation, probing,
the broadcast queue, and a property test that merging is order-independent."""

from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rainbridge.cluster.broadcast import TransmitLimitedQueue, estimate_size
from rainbridge.cluster.config import MembershipConfig
from rainbridge.cluster.events import (
    Delegate,
    EventKind,
    SendPacket,
    SendReliable,
    StartPushPull,
    StartTcpPing,
    UnknownMemberError,
)
from rainbridge.cluster.merge import verify_protocol
from rainbridge.cluster.messages import (
    Ack,
    Alive,
    Dead,
    IndirectPing,
    Nack,
    NodeState,
    Ping,
    PushNodeState,
    PushPull,
    Suspect,
    User,
)
from rainbridge.cluster.state import Membership

ME = ("10.0.0.1", 7946)
LAN = MembershipConfig.lan()
# No periodic work in the way of hand-driven tests unless a test asks for it.
QUIET = LAN.replace(push_pull_interval=0, reconnect_interval=0)


def addr(i: int) -> tuple[str, int]:
    return (f"10.0.0.{i}", 7946)


def make(config=QUIET, *, delegate=None, name="me", now=0.0, **kw) -> Membership:
    m = Membership(config, name, ME, b"", Random(7), now, delegate, **kw)
    m.take_events()
    return m


def alive(name, inc, i, meta=b""):
    return Alive(incarnation=inc, node=name, address=addr(i), meta=meta)


def with_members(m: Membership, count: int, now=0.0) -> list[str]:
    names = [f"n{i}" for i in range(2, 2 + count)]
    for i, name in enumerate(names, start=2):
        m.handle_packet(alive(name, 1, i), addr(i), now)
    m.take_events()
    m.take_outgoing()
    return names


def state(m: Membership, name: str):
    member = m.member(name)
    return (member.state, member.incarnation) if member else None


def kinds(m: Membership):
    return [(e.kind, e.member.name) for e in m.take_events()]


def packets(m: Membership):
    return [o for o in m.take_outgoing() if isinstance(o, SendPacket)]


def sent_messages(m: Membership, kind):
    return [msg for p in packets(m) for msg in p.messages if isinstance(msg, kind)]


# --------------------------------------------------------------------------- merge rules


def test_new_member_joins_and_older_incarnations_are_ignored():
    m = make()
    m.handle_packet(alive("a", 5, 2, b"v1"), addr(2), 0.0)
    assert state(m, "a") == (NodeState.ALIVE, 5)
    assert kinds(m) == [(EventKind.JOIN, "a")]
    for inc in (4, 5):  # older or equal: ignored, even with other metadata
        m.handle_packet(alive("a", inc, 2, b"other"), addr(2), 0.0)
    assert m.member("a").meta == b"v1" and kinds(m) == []
    m.handle_packet(alive("a", 6, 2, b"v2"), addr(2), 0.0)
    assert m.member("a").meta == b"v2"
    assert kinds(m) == [(EventKind.UPDATE, "a")]
    assert m.member_at(addr(2)).name == "a" and m.member_at(addr(77)) is None


def test_suspect_then_refuted_by_a_newer_alive():
    m = make()
    with_members(m, 3)
    m.handle_packet(Suspect(incarnation=0, node="n2", sender="n3"), addr(3), 0.0)
    assert state(m, "n2") == (NodeState.ALIVE, 1)  # older incarnation: ignored
    m.handle_packet(Suspect(incarnation=1, node="n2", sender="n3"), addr(3), 0.0)
    assert state(m, "n2") == (NodeState.SUSPECT, 1)
    assert kinds(m) == [(EventKind.SUSPECT, "n2")]
    m.handle_packet(alive("n2", 1, 2), addr(2), 0.0)
    assert state(m, "n2") == (NodeState.SUSPECT, 1)  # same incarnation does not refute
    m.handle_packet(alive("n2", 2, 2), addr(2), 0.0)
    assert state(m, "n2") == (NodeState.ALIVE, 2)
    assert kinds(m) == [(EventKind.RECOVER, "n2")]


def test_dead_comes_back_only_with_a_higher_incarnation():
    m = make()
    with_members(m, 2)
    m.handle_packet(Dead(incarnation=1, node="n2", sender="n3"), addr(3), 0.0)
    assert state(m, "n2") == (NodeState.DEAD, 1)
    events = m.take_events()
    assert [(e.kind, e.member.state, e.reason) for e in events] == [
        (EventKind.LEAVE, NodeState.DEAD, "declared dead by n3")
    ]
    assert m.failed_members() == {"n2": addr(2)}
    m.handle_packet(alive("n2", 1, 2), addr(2), 0.0)
    assert state(m, "n2") == (NodeState.DEAD, 1)
    m.handle_packet(Suspect(incarnation=1, node="n2", sender="n3"), addr(3), 0.0)
    assert state(m, "n2") == (NodeState.DEAD, 1)
    m.handle_packet(alive("n2", 2, 2), addr(2), 0.0)
    assert state(m, "n2") == (NodeState.ALIVE, 2)
    assert kinds(m) == [(EventKind.JOIN, "n2")]
    assert m.failed_members() == {}


def test_push_pull_merges_remote_dead_as_suspect_and_left_as_left():
    m = make()
    with_members(m, 3)
    remote = PushPull(
        join=False,
        nodes=(
            PushNodeState(
                name="n2", address=addr(2), meta=b"", incarnation=1, state=NodeState.DEAD
            ),
            PushNodeState(
                name="n3", address=addr(3), meta=b"", incarnation=1, state=NodeState.LEFT
            ),
            PushNodeState(
                name="n9", address=addr(9), meta=b"", incarnation=3, state=NodeState.ALIVE
            ),
            PushNodeState(
                name="n8", address=addr(8), meta=b"", incarnation=3, state=NodeState.DEAD
            ),
        ),
    )
    reply = m.handle_push_pull(remote, addr(4), 0.0)
    assert state(m, "n2") == (NodeState.SUSPECT, 1)  # a chance to refute, not dead at once
    assert state(m, "n3") == (NodeState.LEFT, 1)
    assert state(m, "n9") == (NodeState.ALIVE, 3)
    assert m.member("n8") is None  # unknown and not alive: nothing to learn
    # The reply is our state from before the merge (memberlist sends before merging).
    assert {n.name: n.state for n in reply.nodes} == {
        "me": NodeState.ALIVE,
        "n2": NodeState.ALIVE,
        "n3": NodeState.ALIVE,
        "n4": NodeState.ALIVE,
    }


def test_left_stays_left():
    m = make()
    with_members(m, 3)
    m.handle_packet(Dead(incarnation=1, node="n2", sender="n2"), addr(2), 0.0)
    assert state(m, "n2") == (NodeState.LEFT, 1)
    assert [(e.kind, e.reason) for e in m.take_events()] == [(EventKind.LEAVE, "left")]
    assert m.failed_members() == {}  # no reconnect attempts to a member that left
    for msg in (
        Suspect(incarnation=1, node="n2", sender="n3"),
        Dead(incarnation=1, node="n2", sender="n3"),
        alive("n2", 1, 2),
    ):
        m.handle_packet(msg, addr(3), 0.0)
        assert state(m, "n2") == (NodeState.LEFT, 1)
    m.handle_push_pull(
        PushPull(
            join=False,
            nodes=(
                PushNodeState(
                    name="n2", address=addr(2), meta=b"", incarnation=1, state=NodeState.DEAD
                ),
            ),
        ),
        addr(3),
        0.0,
    )
    assert state(m, "n2") == (NodeState.LEFT, 1)
    m.handle_packet(alive("n2", 2, 2), addr(2), 0.0)  # it rejoined
    assert state(m, "n2") == (NodeState.ALIVE, 2)


def test_a_leave_after_a_failure_upgrades_dead_to_left():
    m = make()
    with_members(m, 2)
    m.handle_packet(Dead(incarnation=1, node="n2", sender="n3"), addr(3), 0.0)
    m.handle_packet(Dead(incarnation=1, node="n2", sender="n2"), addr(3), 0.0)
    assert state(m, "n2") == (NodeState.LEFT, 1)
    assert m.failed_members() == {}


def test_suspicion_times_out_to_dead_faster_with_confirmations():
    m = make()
    with_members(m, 9)  # N = 10: min 4 s, max 24 s, k = 2
    m.handle_packet(Suspect(incarnation=1, node="n5", sender="n2"), addr(2), 0.0)
    assert m.member("n5").state == NodeState.SUSPECT
    m.tick(23.9)
    assert m.member("n5").state == NodeState.SUSPECT
    m.handle_packet(Suspect(incarnation=1, node="n6", sender="n2"), addr(2), 0.0)
    # n6: two independent confirmations drive its timer to the 4 s minimum.
    m2 = make()
    with_members(m2, 9)
    m2.handle_packet(Suspect(incarnation=1, node="n6", sender="n2"), addr(2), 0.0)
    m2.handle_packet(Suspect(incarnation=1, node="n6", sender="n2"), addr(2), 0.5)  # dup
    m2.handle_packet(Suspect(incarnation=1, node="n6", sender="n3"), addr(3), 1.0)
    m2.handle_packet(Suspect(incarnation=1, node="n6", sender="n4"), addr(4), 2.0)
    m2.tick(3.99)
    assert m2.member("n6").state == NodeState.SUSPECT
    m2.tick(4.0)
    assert m2.member("n6").state == NodeState.DEAD
    leave = [e for e in m2.take_events() if e.kind == EventKind.LEAVE]
    assert leave[0].reason == "suspicion timed out (2 confirmations)"
    m.tick(24.0)
    assert m.member("n5").state == NodeState.DEAD


@pytest.mark.parametrize("accusation", [Suspect, Dead])
def test_refutation_raises_incarnation_and_health_score(accusation):
    m = make()
    with_members(m, 3)
    assert m.incarnation == 1 and m.local_health == 0
    m.handle_packet(accusation(incarnation=0, node="me", sender="n2"), addr(2), 0.0)
    assert m.incarnation == 1  # older than us: nothing to refute
    m.handle_packet(accusation(incarnation=4, node="me", sender="n2"), addr(2), 0.0)
    assert m.incarnation == 5
    assert m.member("me").state == NodeState.ALIVE
    assert m.local_health == 1 and m.health_multiplier == 2
    m.tick(1.0)  # the alive rides the next gossip round
    refutes = [a for a in sent_messages(m, Alive) if a.node == "me"]
    assert refutes and refutes[0].incarnation == 5


def test_alive_about_ourselves_from_a_previous_life_is_outnumbered():
    m = make()
    with_members(m, 2)
    m.handle_packet(Alive(incarnation=1, node="me", address=ME, meta=b""), addr(2), 0.0)
    assert m.incarnation == 1  # our own echo
    m.handle_packet(Alive(incarnation=9, node="me", address=ME, meta=b"old"), addr(2), 0.0)
    assert m.incarnation == 10 and m.member("me").meta == b""


def test_address_conflicts_and_reclaiming_a_name():
    class Conflicts(Delegate):
        seen: list = []

        def notify_conflict(self, existing, other):
            self.seen.append((existing.address, other.address))

    d = Conflicts()
    m = make(delegate=d)
    with_members(m, 2)
    m.handle_packet(alive("n2", 5, 99), addr(99), 0.0)
    assert m.member("n2").address == addr(2)  # a live member keeps its address
    assert d.seen == [(addr(2), addr(99))]
    m.handle_packet(Dead(incarnation=1, node="n2", sender="n2"), addr(2), 0.0)
    m.handle_packet(alive("n2", 1, 99), addr(99), 1.0)  # left: the name may move
    assert (m.member("n2").address, m.member("n2").state) == (addr(99), NodeState.ALIVE)
    # A dead (not left) member's name moves only after dead_node_reclaim_time.
    m = make(QUIET.replace(dead_node_reclaim_time=10.0))
    with_members(m, 2)
    m.handle_packet(Dead(incarnation=1, node="n3", sender="n2"), addr(2), 0.0)
    m.handle_packet(alive("n3", 2, 98), addr(98), 5.0)
    assert m.member("n3").state == NodeState.DEAD
    m.handle_packet(alive("n3", 1, 98), addr(98), 11.0)
    assert (m.member("n3").address, m.member("n3").state) == (addr(98), NodeState.ALIVE)


def test_address_space_filter_and_protocol_sanity():
    m = make(address_allowed=lambda a: a[0].startswith("10."))
    m.handle_packet(Alive(incarnation=1, node="x", address=("192.168.1.1", 7946)), addr(2), 0.0)
    m.handle_packet(
        Alive(incarnation=1, node="y", address=addr(3), vsn=(0, 0, 0, 0, 0, 0)), addr(3), 0.0
    )
    assert m.member("x") is None and m.member("y") is None
    assert m.join([("192.168.1.1", 7946), ME, addr(5), addr(5)], 0.0) == 1
    assert [o.to for o in m.take_outgoing() if isinstance(o, StartPushPull)] == [addr(5)]


def test_verify_protocol():
    ok = PushNodeState(
        name="a",
        address=addr(2),
        meta=b"",
        incarnation=1,
        state=NodeState.ALIVE,
        vsn=(1, 5, 2, 2, 5, 4),
    )
    assert verify_protocol((ok,), []) is None
    ours = PushNodeState(
        name="b",
        address=addr(3),
        meta=b"",
        incarnation=1,
        state=NodeState.ALIVE,
        vsn=(1, 5, 2, 0, 0, 0),
    )
    error = verify_protocol((ok, ours), [])
    assert error is not None and "delegate protocol version" in error
    m = make(vsn=(1, 5, 2, 0, 0, 0))  # delegate versions that do not overlap Serf's 2..5
    m.handle_push_pull(PushPull(join=True, nodes=(ok,)), addr(2), 0.0)
    assert m.member("a") is None and m.stats["push_pull_rejected"] == 1


# --------------------------------------------------------------------------- leave / meta / user


def test_graceful_leave():
    m = make()
    with_members(m, 3)
    m.leave(0.0)
    assert m.member("me").state == NodeState.LEFT and m.has_left
    assert kinds(m) == [(EventKind.LEAVE, "me")]
    assert not m.leave_propagated
    m.handle_packet(Suspect(incarnation=5, node="me", sender="n2"), addr(2), 0.1)
    assert m.incarnation == 1  # no refuting after a leave
    for t in range(1, 30):
        m.tick(t * 0.2)
    deads = [d for d in sent_messages(m, Dead) if d.node == "me"]
    assert deads and all(d.sender == "me" for d in deads)
    assert m.leave_propagated
    assert m.stats["probes"] == 0


def test_update_meta_bumps_incarnation():
    class D(Delegate):
        def node_meta(self, limit):
            return b"from-delegate"

    m = make(delegate=D())
    m.update_meta(b"v2", 0.0)
    assert (m.incarnation, m.member("me").meta) == (2, b"v2")
    assert kinds(m) == [(EventKind.UPDATE, "me")]
    m.update_meta(None, 0.0)
    assert m.member("me").meta == b"from-delegate"
    with pytest.raises(ValueError, match="512"):
        m.update_meta(b"x" * 513, 0.0)


def test_user_messages_and_broadcasts():
    got = []

    class D(Delegate):
        def notify_msg(self, payload):
            got.append(payload)

        def get_broadcasts(self, overhead, limit):
            return [b"from-delegate"]

    m = make(delegate=D())
    with_members(m, 2)
    m.send_user("n2", b"hello", reliable=True)
    m.send_user("n2", b"hi", reliable=False)
    out = m.take_outgoing()
    assert out == [
        SendReliable(addr(2), User(payload=b"hello")),
        SendPacket(addr(2), (User(payload=b"hi"),)),
    ]
    with pytest.raises(UnknownMemberError):
        m.send_user("nobody", b"x", reliable=False)
    with pytest.raises(ValueError, match="reliable=True"):
        m.send_user("n2", b"x" * 2000, reliable=False)
    m.queue_broadcast(b"state-1", name="s")
    m.queue_broadcast(b"state-2", name="s")  # replaces state-1
    m.tick(0.25)
    payloads = [u.payload for u in sent_messages(m, User)]
    assert b"state-2" in payloads and b"state-1" not in payloads and b"from-delegate" in payloads
    m.handle_packet(User(payload=b"in"), addr(2), 0.3)
    m.handle_stream_user(User(payload=b"in-tcp"), addr(2), 0.3)
    assert got == [b"in", b"in-tcp"]


# --------------------------------------------------------------------------- probing


def first_probe(m: Membership):
    """Tick until the first probe goes out; return (time, ping packet)."""
    t = 0.0
    while t < 2.0:
        t += 0.01
        m.tick(t)
        for p in packets(m):
            if isinstance(p.messages[0], Ping):
                return t, p
    raise AssertionError("no probe")


def probe_acked(m: Membership, t: float) -> tuple[float, str]:
    """Tick until the next probe goes out, ack it; (time, the probed member)."""
    end = t + 60
    while t < end:
        t += 0.05
        m.tick(t)
        for p in packets(m):
            if isinstance(p.messages[0], Ping):
                m.handle_packet(Ack(seq_no=p.messages[0].seq_no), p.to, t)
                return t, p.messages[0].node
    raise AssertionError("no probe")


def test_a_member_learned_mid_round_is_probed_within_that_round():
    """Six members, four probed, then a newcomer: it is among the next three probes (the
    two members left in the round and itself), for every seed. memberlist inserts it at
    any slot, so about half the time it would wait for the next round."""
    for seed in range(20):
        m = Membership(QUIET, "me", ME, b"", Random(seed), 0.0, None)
        names = with_members(m, 6)
        t, probed, following = 0.0, [], []
        for _ in range(4):
            t, name = probe_acked(m, t)
            probed.append(name)
        assert len(set(probed)) == 4 and set(probed) <= set(names)
        m.handle_packet(alive("new", 1, 20), addr(20), t)
        m.take_events()
        for _ in range(3):
            t, name = probe_acked(m, t)
            following.append(name)
        assert "new" in following, f"seed {seed}: {probed} then {following}"
        assert set(following) == set(names) - set(probed) | {"new"}, f"seed {seed}"


def test_probe_ack_keeps_member_alive_and_heals_health():
    m = make()
    with_members(m, 4)
    m._awareness.apply_delta(2)
    t, p = first_probe(m)
    ping = p.messages[0]
    assert ping.source == ME and ping.source_node == "me"
    m.handle_packet(Ack(seq_no=ping.seq_no), p.to, t + 0.01)
    assert m.local_health == 1
    assert m.stats["probes"] == 1 and m.stats["probe_failures"] == 0


def test_failed_probe_goes_indirect_then_suspects():
    m = make()
    names = with_members(m, 5)
    t, p = first_probe(m)
    target = next(n for n in names if m.member(n).address == p.to)
    seq = p.messages[0].seq_no
    m.tick(t + 0.49)
    assert sent_messages(m, IndirectPing) == []
    m.tick(t + 0.5)  # probe timeout: 3 relays + TCP ping
    out = m.take_outgoing()
    ind = [
        msg
        for o in out
        if isinstance(o, SendPacket)
        for msg in o.messages
        if isinstance(msg, IndirectPing)
    ]
    assert len(ind) == 3 and all(i.nack and i.node == target and i.seq_no == seq for i in ind)
    assert [(o.to, o.seq_no, o.deadline) for o in out if isinstance(o, StartTcpPing)] == [
        (p.to, seq, pytest.approx(t + 1.0))
    ]
    m.handle_packet(Nack(seq_no=seq), addr(2), t + 0.7)
    m.tcp_ping_result(seq, False, t + 0.8)
    m.tick(t + 1.0)
    assert m.member(target).state == NodeState.SUSPECT
    assert m.local_health == 2  # 3 nacks expected, 1 received


def test_tcp_ping_rescues_a_probe():
    m = make()
    with_members(m, 3)
    t, p = first_probe(m)
    m.tick(t + 0.5)
    m.take_outgoing()
    m.tcp_ping_result(p.messages[0].seq_no, True, t + 0.6)
    m.tick(t + 1.0)
    assert all(s.state == NodeState.ALIVE for s in m.members())
    assert m.stats["tcp_ping_rescues"] == 1


def test_buddy_system_ping_carries_the_suspicion():
    m = make()
    with_members(m, 1)  # only n2 to probe
    m.handle_packet(Suspect(incarnation=1, node="n2", sender="n9"), addr(9), 0.0)
    _, p = first_probe(m)
    assert p.messages[1:] == (Suspect(incarnation=1, node="n2", sender="me"),)


def test_a_stale_suspicion_riding_on_a_ping_is_answered_with_our_current_alive():
    m = make()  # everything at t=0: no timer (gossip, probe) sends in between
    with_members(m, 2)
    m.handle_packet(Suspect(incarnation=1, node="me", sender="n2"), addr(2), 0.0)
    assert m.incarnation == 2  # refuted; say n2 missed the refutation's gossip
    m.take_outgoing()
    current = Alive(incarnation=2, node="me", address=ME, meta=b"")
    # n2 probes us with its old suspicion (buddy system): ack, then our Alive straight back
    ping = Ping(seq_no=9, node="me", source=addr(2), source_node="n2")
    m.handle_packet(ping, addr(2), 0.0)
    m.handle_packet(Suspect(incarnation=1, node="me", sender="n2"), addr(2), 0.0)
    sent = [(p.to, p.messages[0]) for p in packets(m)]
    assert sent == [(addr(2), Ack(seq_no=9)), (addr(2), current)]
    assert m.incarnation == 2 and m.stats["stale_suspicions_answered"] == 1
    # the same stale suspicion as plain gossip (no ping before it) is ignored, as memberlist does
    m.handle_packet(Suspect(incarnation=1, node="me", sender="n3"), addr(3), 0.0)
    assert packets(m) == [] and m.stats["stale_suspicions_answered"] == 1
    # a current suspicion on a ping is refuted (new incarnation), not answered with the old one
    m.handle_packet(Ping(seq_no=10, node="me"), addr(3), 0.0)
    m.handle_packet(Suspect(incarnation=2, node="me", sender="n3"), addr(3), 0.0)
    assert m.incarnation == 3 and m.stats["stale_suspicions_answered"] == 1


def test_relaying_an_indirect_ping():
    m = make()
    with_members(m, 2)
    m.handle_packet(
        IndirectPing(
            seq_no=77, target=addr(3), node="n3", nack=True, source=addr(2), source_node="n2"
        ),
        addr(2),
        0.0,
    )
    (ping,) = sent_messages(m, Ping)
    m.handle_packet(Ack(seq_no=ping.seq_no), addr(3), 0.1)
    acks = [(p.to, p.messages[0]) for p in packets(m) if isinstance(p.messages[0], Ack)]
    assert acks == [(addr(2), Ack(seq_no=77))]
    # Without an ack, a nack after the probe timeout.
    m.handle_packet(IndirectPing(seq_no=78, target=addr(3), node="n3", nack=True), addr(2), 1.0)
    m.take_outgoing()
    m.tick(1.5)
    assert Nack(seq_no=78) in sent_messages(m, Nack)


def test_pings_for_another_name_are_ignored():
    m = make()
    m.handle_packet(Ping(seq_no=1, node="someone-else"), addr(2), 0.0)
    m.handle_packet(Ping(seq_no=2, node="me"), addr(2), 0.0)
    assert [p.messages[0] for p in packets(m)] == [Ack(seq_no=2)]
    assert m.handle_stream_ping(Ping(seq_no=3, node="x"), addr(2), 0.0) is None
    assert m.handle_stream_ping(Ping(seq_no=3, node="me"), addr(2), 0.0) == Ack(seq_no=3)


def answer_probes(m: Membership, start: float, until: float) -> None:
    """Drive the clock in 10 ms steps, acking every ping at once."""
    now = start
    while now < until:
        now += 0.01
        m.tick(now)
        for p in packets(m):
            if isinstance(p.messages[0], Ping):
                m.handle_packet(Ack(seq_no=p.messages[0].seq_no), p.to, now)


def test_success_threshold_gates_a_returning_member():
    m = make(QUIET.replace(success_threshold=2))
    with_members(m, 1)
    assert m.member("n2").healthy  # first sight: healthy at once
    m.handle_packet(Dead(incarnation=1, node="n2", sender="n9"), addr(9), 0.0)
    m.handle_packet(alive("n2", 2, 2), addr(2), 0.0)
    assert not m.member("n2").healthy
    m.take_events()
    answer_probes(m, 0.0, 1.05)  # one probe of n2 (the first is staggered within 1 s)
    assert not m.member("n2").healthy
    answer_probes(m, 1.05, 3.0)
    assert m.member("n2").healthy
    assert (EventKind.HEALTHY, "n2") in kinds(m)


# --------------------------------------------------------------------------- broadcast queue


def test_queue_named_broadcasts_replace_older_ones():
    q = TransmitLimitedQueue(retransmit_mult=2, max_depth=100)
    q.queue("a1", 10, name="a")
    q.queue("b1", 10, name="b")
    q.queue("a2", 10, name="a")
    assert len(q) == 2 and "a" in q
    msgs, used = q.get(2, 1000, num_nodes=9)
    assert sorted(msgs) == ["a2", "b1"] and used == 24


def test_queue_sends_least_transmitted_first_then_largest_then_newest():
    q = TransmitLimitedQueue(retransmit_mult=3, max_depth=100)
    q.queue("old", 10)
    q.get(0, 100, num_nodes=9)  # "old" now has 1 transmission
    q.queue("small", 5)
    q.queue("big", 20)
    q.queue("small-newer", 5)
    assert q.transmits() == [(None, 0)] * 3 + [(None, 1)]
    msgs, _ = q.get(0, 1000, num_nodes=9)
    assert msgs == ["big", "small-newer", "small", "old"]
    msgs, _ = q.get(0, 26, num_nodes=9)  # limited space: skip what does not fit
    assert msgs == ["big", "small-newer"]


def test_queue_transmit_limit_and_bound():
    q = TransmitLimitedQueue(retransmit_mult=4, max_depth=3)
    q.queue("x", 10)
    limit = 4 * 1  # retransmit_limit(4, N=9)
    counts = 0
    while len(q):
        msgs, _ = q.get(0, 100, num_nodes=9)
        counts += len(msgs)
    assert counts == limit
    for i in range(5):
        q.queue(f"m{i}", 10)
    assert len(q) == 3
    msgs, _ = q.get(0, 100, num_nodes=9)
    assert msgs == ["m4", "m3", "m2"]  # the newest survive


def test_piggyback_respects_the_packet_size():
    m = make(packet_overhead=40)
    with_members(m, 60)  # 60 alive broadcasts queued... and taken below
    for i in range(60):
        m.handle_packet(alive(f"x{i}", 1, 100 + i, meta=b"m" * 100), addr(100 + i), 0.0)
    m.handle_packet(Ping(seq_no=9, node="me"), addr(2), 0.0)
    (p,) = packets(m)
    size = sum(estimate_size(msg) + 2 for msg in p.messages) + 2 + 40
    assert len(p.messages) > 5 and size <= 1400


# --------------------------------------------------------------------------- property


NAMES = ["a", "b", "c"]
SENDERS = ["s1", "s2", "s3"]


def _meta(name: str, inc: int) -> bytes:
    return f"{name}@{inc}".encode()  # a member never sends two different alives per incarnation


update = st.one_of(
    st.builds(
        lambda n, i: alive(n, i, NAMES.index(n) + 2, _meta(n, i)),
        st.sampled_from(NAMES),
        st.integers(1, 4),
    ),
    st.builds(
        lambda n, i, s: Suspect(incarnation=i, node=n, sender=s),
        st.sampled_from(NAMES),
        st.integers(1, 4),
        st.sampled_from(SENDERS),
    ),
    st.builds(
        lambda n, i, s: Dead(incarnation=i, node=n, sender=s),
        st.sampled_from(NAMES),
        st.integers(1, 4),
        st.sampled_from([*SENDERS, "self"]),
    ),
)


def _table(updates) -> dict:
    m = make()
    for i, name in enumerate(NAMES, start=2):
        m.handle_packet(alive(name, 1, i, _meta(name, 1)), addr(i), 0.0)
    for u in updates:
        if isinstance(u, Dead) and u.sender == "self":
            u = Dead(incarnation=u.incarnation, node=u.node, sender=u.node)  # a graceful leave
        m.handle_packet(u, addr(9), 0.0)
    return {x.name: (x.state, x.incarnation, x.meta, x.address) for x in m.members()}


@settings(max_examples=300, deadline=None)
@given(st.lists(update, max_size=12), st.randoms(use_true_random=False))
def test_merging_is_order_independent(updates, rnd):
    """Known members, updates that a real cluster can produce (one alive content per
    incarnation, fixed addresses): any arrival order gives the same member table."""
    shuffled = list(updates)
    rnd.shuffle(shuffled)
    assert _table(updates) == _table(shuffled)


# --------------------------------------------------------------------------- contract with the codec


def test_estimated_sizes_bound_the_codecs_encoding():
    """Piggy-backing budgets with ``estimate_size``: it must never under-count."""
    codec = pytest.importorskip("rainbridge.cluster.codec")
    r = Random(5)
    for _ in range(2000):
        name = "x" * r.randrange(1, 300)
        ip = r.choice(["10.0.0.1", "fe80::1"])
        source = r.choice([None, (ip, r.choice([1, 7946, 65535]))])
        n = r.choice([0, 1, 127, 128, 255, 256, 65535, 65536, 2**31, 2**32 - 1])
        blob = b"m" * r.choice([0, 10, 31, 32, 255, 256, 512])
        for msg in (
            Ping(seq_no=n, node=name, source=source, source_node=r.choice(["", "me"])),
            IndirectPing(seq_no=n, target=(ip, 7946), node=name, source=source),
            Ack(seq_no=n, payload=blob),
            Nack(seq_no=n),
            Suspect(incarnation=n, node=name, sender="s"),
            Dead(incarnation=n, node=name, sender=name),
            Alive(incarnation=n, node=name, address=(ip, 7946), meta=blob),
            User(payload=blob),
        ):
            assert 0 <= estimate_size(msg) - len(codec.encode_message(msg)) <= 16, msg
