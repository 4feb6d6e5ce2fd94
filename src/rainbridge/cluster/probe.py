"""Probing (memberlist's probe / probeNode / handlers of ping, indirect ping and ack),
and the packet helpers it shares with gossip. ``Membership`` builds on this class.

One probe is in flight at a time. At ``timeout_at`` without an ack: indirect pings through
``indirect_checks`` random alive members (asking for nacks), a TCP ping, and the first of
``ping_retransmits`` direct re-sends (memberlist has none; see the config); at ``deadline``
without an ack (or a TCP ack): suspect the member, and raise our health score by the nacks
we missed (Lifeguard). A probe to a suspect carries the Suspect message (buddy system).
A deadline that fires long after it was due means we were stopped (SIGSTOP, a stalled
loop): the acks may sit unread in our socket, so we do not accuse anyone on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rainbridge.cluster.broadcast import (
    COMPOUND_HEADER_OVERHEAD,
    COMPOUND_OVERHEAD,
    USER_MSG_OVERHEAD,
    TransmitLimitedQueue,
)
from rainbridge.cluster.events import EventKind, Outgoing, SendPacket, StartTcpPing
from rainbridge.cluster.merge import MemberTable, NodeEntry
from rainbridge.cluster.messages import (
    Ack,
    Address,
    Alive,
    IndirectPing,
    Nack,
    NodeState,
    PacketMessage,
    Ping,
    Suspect,
    User,
)
from rainbridge.cluster.timers import failed_probe_health_delta, probe_timing

_GONE = (NodeState.DEAD, NodeState.LEFT)


@dataclass(slots=True)
class Probe:
    """The probe in flight (memberlist runs one probeNode at a time)."""

    seq_no: int
    target: str
    incarnation: int
    address: Address
    ping: Ping
    pmax: int
    timeout_at: float  # no ack by then: indirect pings + TCP ping
    deadline: float  # no ack by then: suspect
    indirect_sent: bool = False
    resend_at: float | None = None  # next direct re-send of the ping
    resends_left: int = 0
    expected_nacks: int = 0
    nacks: int = 0
    tcp_ok: bool = False


@dataclass(slots=True)
class Relay:
    """An indirect ping we perform for another member."""

    origin_seq: int
    reply_to: Address
    nack: bool
    expires: float


class Prober(MemberTable):
    """Failure detection on top of the member table."""

    address: Address
    _outgoing: list[Outgoing]
    _user_broadcasts: TransmitLimitedQueue[PacketMessage]
    _packet_overhead: int
    _probe: Probe | None
    _probe_index: int
    _next_probe: float
    _relays: dict[int, Relay]
    _seq_no: int
    _stalled: bool  # this advance follows a gap in which we did not run (see state.py)

    # ------------------------------------------------------------------ probing
    def _probe_next(self, now: float) -> None:
        if self._probe is not None:  # cannot happen with consistent timers; finish it
            self._probe_deadline(now)
        interval, timeout = probe_timing(
            self.config.probe_interval, self.config.probe_timeout, self._awareness.score
        )
        self._next_probe = now + interval
        checked = 0
        while checked < len(self._nodes):
            if self._probe_index >= len(self._nodes):
                self._reset_nodes(now)
                self._probe_index = 0
                checked += 1
                continue
            node = self._nodes[self._probe_index]
            self._probe_index += 1
            if node.name == self.name or node.state in _GONE:
                checked += 1
                continue
            self._probe_node(node, now, interval, timeout)
            return

    def _probe_node(self, node: NodeEntry, now: float, interval: float, timeout: float) -> None:
        self.stats["probes"] += 1
        ping = Ping(
            seq_no=self._next_seq(), node=node.name, source=self.address, source_node=self.name
        )
        self._probe = Probe(
            ping.seq_no,
            node.name,
            node.incarnation,
            node.address,
            ping,
            node.vsn[1],
            timeout_at=now + timeout,
            deadline=now + interval,
        )
        self._send_probe_ping(self._probe, node.state, node.incarnation)

    def _send_probe_ping(self, probe: Probe, state: NodeState, incarnation: int) -> None:
        if state == NodeState.ALIVE:
            self._send(probe.address, probe.ping)
        else:
            # Buddy system: tell a suspect it is suspected so it can refute at once.
            suspect = Suspect(incarnation=incarnation, node=probe.target, sender=self.name)
            self._outgoing.append(SendPacket(probe.address, (probe.ping, suspect)))

    def _probe_timeout(self, now: float) -> None:
        probe = self._probe
        assert probe is not None
        probe.indirect_sent = True
        if now >= probe.deadline:
            return  # we were paused past the deadline; it fails next
        relays = self._random_nodes(
            self.config.indirect_checks,
            lambda n: n.state == NodeState.ALIVE and n.name not in (self.name, probe.target),
        )
        for relay in relays:
            nack = relay.vsn[1] >= 4  # nacks exist from protocol 4 on
            probe.expected_nacks += nack
            self.stats["indirect_pings"] += 1
            self._send(
                relay.address,
                IndirectPing(
                    seq_no=probe.seq_no,
                    target=probe.address,
                    node=probe.target,
                    nack=nack,
                    source=self.address,
                    source_node=self.name,
                ),
            )
        if not self.config.disable_tcp_pings and probe.pmax >= 3:
            self.stats["tcp_pings"] += 1
            self._outgoing.append(
                StartTcpPing(probe.address, probe.seq_no, probe.ping, probe.deadline)
            )
        probe.resends_left = self.config.ping_retransmits
        if probe.resends_left:
            probe.resend_at = now
            self._probe_resend(now)

    def _probe_resend(self, now: float) -> None:
        """Re-send the direct ping; the re-sends are spread evenly over the time between the
        probe timeout and the deadline, so one burst of loss does not take them all."""
        probe = self._probe
        assert probe is not None and probe.resend_at is not None
        step = (probe.deadline - probe.resend_at) / probe.resends_left
        probe.resends_left -= 1
        probe.resend_at = now + step if probe.resends_left and now < probe.deadline else None
        node = self._node_map.get(probe.target)
        if node is None or node.state in _GONE or now >= probe.deadline:
            return
        self.stats["ping_resends"] += 1
        self._send_probe_ping(probe, node.state, node.incarnation)

    def _probe_deadline(self, now: float) -> None:
        probe = self._probe
        assert probe is not None
        self._probe = None
        if probe.tcp_ok:
            self.stats["tcp_ping_rescues"] += 1  # UDP is broken somewhere, TCP works
            self._probe_succeeded(probe)
            return
        if self._stalled:
            # We were not running when the answers were due; the failure is ours (Lifeguard:
            # count it against our own health, as memberlist does when we must refute).
            self.stats["probes_stalled"] += 1
            self._awareness.apply_delta(1)
            return
        self.stats["probe_failures"] += 1
        self._awareness.apply_delta(failed_probe_health_delta(probe.expected_nacks, probe.nacks))
        node = self._node_map.get(probe.target)
        if node is not None:
            node.acks = 0
        self._suspect_node(
            Suspect(incarnation=probe.incarnation, node=probe.target, sender=self.name), now
        )

    def _probe_succeeded(self, probe: Probe) -> None:
        self._awareness.apply_delta(-1)
        node = self._node_map.get(probe.target)
        if node is None or node.state in _GONE:
            return
        node.acks += 1
        if not node.healthy and node.acks >= self.config.success_threshold:
            node.healthy = True
            self._emit(EventKind.HEALTHY, node, f"{node.acks} consecutive acks")

    def _insert_position(self) -> int:
        """A random slot among the members not yet probed this round. memberlist picks any
        slot, so a member that lands behind the probe index waits for the next round (and
        lands anywhere in it): up to two rounds before anyone probes a newcomer, and when
        the members' rounds run in step (same size, same interval, started together) most
        of them miss it at once. Inserting ahead keeps the first probe within one round,
        which bounds how late a newcomer that crashes is detected."""
        return self._rng.randrange(min(self._probe_index, len(self._nodes)), len(self._nodes) + 1)

    def _reset_nodes(self, now: float) -> None:
        """At each wrap of the probe list: reap long-dead members and reshuffle."""
        keep: list[NodeEntry] = []
        for node in self._nodes:
            if (
                node.name != self.name
                and node.state in _GONE
                and now - node.state_change > self.config.gossip_to_the_dead_time
            ):
                del self._node_map[node.name]
                self.stats["reaped"] += 1
            else:
                keep.append(node)
        self._rng.shuffle(keep)
        self._nodes = keep

    def _on_ping(self, ping: Ping, sender: Address) -> Address | None:
        """Ack a ping meant for us; returns where the ack went (None: not for us)."""
        if ping.node and ping.node != self.name:
            self.stats["misdirected_pings"] += 1
            return None
        reply_to = ping.source if ping.source and ping.source[1] > 0 else sender
        self._send(reply_to, Ack(seq_no=ping.seq_no))
        return reply_to

    def _answer_buddy_suspect(self, suspect: Suspect, prober: Address) -> None:
        """A ping to us carried a Suspect about us (buddy system) that is older than our
        incarnation: the prober missed our refutation (its gossip ran out, e.g. while we were
        paused or the prober lost packets). memberlist ignores a stale suspicion, so the
        prober's timer would run out and declare us dead; answer with our current Alive, at
        once and straight to the prober. (A current suspicion is refuted by the merge rules.)"""
        me = self._node_map.get(self.name)
        if me is None or self._left or suspect.incarnation >= me.incarnation:
            return
        self.stats["stale_suspicions_answered"] += 1
        alive = Alive(
            incarnation=me.incarnation, node=me.name, address=me.address, meta=me.meta, vsn=me.vsn
        )
        self._outgoing.append(SendPacket(prober, (alive,)))

    def _on_indirect_ping(self, ind: IndirectPing, sender: Address, now: float) -> None:
        seq_no = self._next_seq()
        reply_to = ind.source if ind.source and ind.source[1] > 0 else sender
        self._relays[seq_no] = Relay(
            ind.seq_no, reply_to, ind.nack, now + self.config.probe_timeout
        )
        self._send(
            ind.target,
            Ping(seq_no=seq_no, node=ind.node, source=self.address, source_node=self.name),
        )

    def _on_ack(self, ack: Ack, now: float) -> None:
        relay = self._relays.pop(ack.seq_no, None)
        if relay is not None:
            self._send(relay.reply_to, Ack(seq_no=relay.origin_seq))
            return
        probe = self._probe
        if probe is not None and probe.seq_no == ack.seq_no:
            self._probe = None
            self._probe_succeeded(probe)

    def _expire_relays(self, now: float) -> None:
        for seq_no, relay in list(self._relays.items()):
            if relay.expires <= now:
                del self._relays[seq_no]
                if relay.nack:
                    self._send(relay.reply_to, Nack(seq_no=relay.origin_seq))

    def _send(self, to: Address, message: PacketMessage) -> None:
        """Send one message with as many broadcasts piggy-backed as fit the packet."""
        limit = (
            self.config.udp_buffer_size
            - self._size(message)
            - COMPOUND_HEADER_OVERHEAD
            - self._packet_overhead
        )
        self._outgoing.append(SendPacket(to, (message, *self._take_broadcasts(limit))))

    def _take_broadcasts(self, limit: int) -> list[PacketMessage]:
        n = len(self._nodes)
        messages, used = self._broadcasts.get(COMPOUND_OVERHEAD, limit, n)
        user, user_used = self._user_broadcasts.get(COMPOUND_OVERHEAD, limit - used, n)
        messages += user
        avail = limit - used - user_used
        if self._delegate is not None and avail > COMPOUND_OVERHEAD + USER_MSG_OVERHEAD:
            payloads = self._delegate.get_broadcasts(COMPOUND_OVERHEAD + USER_MSG_OVERHEAD, avail)
            messages += [User(payload=p) for p in payloads]
        return messages

    def _next_seq(self) -> int:
        self._seq_no = (self._seq_no + 1) & 0xFFFFFFFF  # memberlist's uint32
        return self._seq_no

    def _random_nodes(self, k: int, keep: Callable[[NodeEntry], bool]) -> list[NodeEntry]:
        candidates = [n for n in self._nodes if keep(n)]
        if len(candidates) <= k:
            self._rng.shuffle(candidates)
            return candidates
        return self._rng.sample(candidates, k)
