"""News of a join is gossiped ``JOIN_TRANSMIT_FACTOR`` times memberlist's transmit limit
(a member that misses every copy would learn of the join only at its next push-pull);
other membership news, the limit. Counted on the packets a member really sends."""

from random import Random

from rainbridge.cluster.broadcast import TransmitLimitedQueue
from rainbridge.cluster.config import MembershipConfig
from rainbridge.cluster.merge import JOIN_TRANSMIT_FACTOR
from rainbridge.cluster.messages import Alive, Dead, NodeState
from rainbridge.cluster.state import Membership
from rainbridge.cluster.timers import retransmit_limit

ME = ("10.0.0.1", 7946)
# gossip only: no push-pull, no reconnects, no probes (nobody here would answer one)
QUIET = MembershipConfig.lan().replace(push_pull_interval=0, reconnect_interval=0,
                                       probe_interval=3600.0)


def _addr(i: int) -> tuple[str, int]:
    return (f"10.0.0.{i}", 7946)


class _Clock:
    now = 0.0


def _member_with(count: int) -> tuple[Membership, _Clock]:
    m = Membership(QUIET, "me", ME, b"", Random(3), 0.0, None)
    for i in range(2, 2 + count):
        m.handle_packet(Alive(incarnation=1, node=f"n{i}", address=_addr(i), meta=b""), _addr(i), 0.0)
    m.take_events()
    clock = _Clock()
    _copies_sent(m, "n2", clock)  # the formation's own news, out of the way
    return m, clock


def _copies_sent(m: Membership, node: str, clock: _Clock, rounds: int = 200) -> int:
    """Packets carrying an Alive about ``node`` in ``rounds`` gossip rounds (more than
    enough for its broadcast to be used up)."""
    count = 0
    for _ in range(rounds):
        clock.now += QUIET.gossip_interval
        m.tick(clock.now)
        for out in m.take_outgoing():
            messages = getattr(out, "messages", ())
            count += sum(1 for x in messages if isinstance(x, Alive) and x.node == node)
    return count


def test_the_queue_sends_an_item_factor_times_the_limit():
    q = TransmitLimitedQueue(retransmit_mult=4, max_depth=10)
    q.queue("join", 10, name="a", factor=2)
    q.queue("update", 10, name="b")
    sent = {"join": 0, "update": 0}
    for _ in range(100):
        messages, _ = q.get(0, 100, num_nodes=9)
        for x in messages:
            sent[x] += 1
    assert sent == {"join": 2 * 4, "update": 4}


def test_a_newcomers_alive_goes_out_factor_times_a_metadata_update_once():
    m, clock = _member_with(9)
    limit = retransmit_limit(QUIET.retransmit_mult, 10)
    m.handle_packet(Alive(incarnation=1, node="new", address=_addr(50), meta=b""), _addr(50), clock.now)
    assert _copies_sent(m, "new", clock) == JOIN_TRANSMIT_FACTOR * limit == 16
    m.handle_packet(Alive(incarnation=2, node="n3", address=_addr(3), meta=b"v2"), _addr(3), clock.now)
    assert _copies_sent(m, "n3", clock) == limit


def test_a_member_back_from_the_dead_is_news_of_a_join():
    m, clock = _member_with(9)
    limit = retransmit_limit(QUIET.retransmit_mult, 10)
    m.handle_packet(Dead(incarnation=1, node="n4", sender="n5"), _addr(5), clock.now)
    assert m.member("n4").state == NodeState.DEAD
    _copies_sent(m, "n4", clock)  # the Dead's copies are out of the way
    m.handle_packet(Alive(incarnation=2, node="n4", address=_addr(4), meta=b""), _addr(4), clock.now)
    assert m.member("n4").state == NodeState.ALIVE
    assert _copies_sent(m, "n4", clock) == JOIN_TRANSMIT_FACTOR * limit
