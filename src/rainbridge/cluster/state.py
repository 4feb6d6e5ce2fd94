"""SWIM + Lifeguard membership as a sans-IO state machine (memberlist's ``state.go``).

``Membership`` never touches sockets, clocks or global randomness: every input carries the
current time ``now`` (seconds, any monotonic origin) and randomness comes from the injected
``random.Random``. After any call, the I/O driver drains:

- ``take_outgoing()``: ``SendPacket`` (UDP; several messages → a compound message),
  ``StartPushPull`` / ``StartTcpPing`` (TCP exchanges whose outcome comes back through
  ``push_pull_result`` / ``tcp_ping_result``), ``SendReliable`` (a user message on TCP);
- ``take_events()``: ``MemberEvent`` JOIN / LEAVE / UPDATE (+ informational kinds);

and calls ``tick(now)`` at ``next_deadline()``. Inputs received late (the process was
paused) first run every timer that fell due before them, as a real process would.

Inbound traffic: UDP messages → ``handle_packet`` (one call per message of a compound, in
order); a TCP push-pull → ``handle_push_pull`` (send back what it returns); a TCP ping →
``handle_stream_ping`` (send back the Ack, or nothing); a TCP user message →
``handle_stream_user``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from rainbridge.cluster.awareness import Awareness
from rainbridge.cluster.broadcast import (
    COMPOUND_HEADER_OVERHEAD,
    TransmitLimitedQueue,
    estimate_size,
)
from rainbridge.cluster.config import MembershipConfig
from rainbridge.cluster.events import (
    META_MAX_SIZE,
    Delegate,
    Member,
    MemberEvent,
    Outgoing,
    SendPacket,
    SendReliable,
    StartPushPull,
    UnknownMemberError,
)
from rainbridge.cluster.merge import FailedMember, NodeEntry, Vsn, verify_protocol
from rainbridge.cluster.messages import (
    DEFAULT_VSN,
    Ack,
    Address,
    Alive,
    Dead,
    Err,
    IndirectPing,
    Nack,
    NodeState,
    PacketMessage,
    Ping,
    PushNodeState,
    PushPull,
    Suspect,
    User,
)
from rainbridge.cluster.probe import Probe, Prober, Relay
from rainbridge.cluster.suspicion import Suspicion
from rainbridge.cluster.timers import (
    push_pull_scale,
    reconnect_probability,
)

if TYPE_CHECKING:
    from random import Random  # injected; never the module's global state

_GONE = (NodeState.DEAD, NodeState.LEFT)


class Membership(Prober):
    """One member's view of the cluster and the protocol that keeps it current."""

    def __init__(
        self,
        config: MembershipConfig,
        name: str,
        address: Address,
        meta: bytes | None,
        rng: Random,
        now: float,
        delegate: Delegate | None = None,
        *,
        vsn: Vsn = DEFAULT_VSN,
        packet_overhead: int = 0,
        message_size: Callable[[PacketMessage], int] = estimate_size,
        address_allowed: Callable[[Address], bool] | None = None,
    ) -> None:
        """``packet_overhead``: bytes the driver adds to every UDP packet (label header,
        encryption, CRC) and that piggy-backing must leave free. ``message_size``: the
        codec's exact encoded size, if it offers one. ``address_allowed``: the allowed
        address space, applied to members' advertised addresses and to join targets."""
        self.config = config
        self.name = name
        self.address = address
        self._rng = rng
        self._delegate = delegate
        self._packet_overhead = packet_overhead
        self._size = message_size
        self._address_allowed = address_allowed
        self._nodes: list[NodeEntry] = []
        self._node_map: dict[str, NodeEntry] = {}
        self._suspicions: dict[str, Suspicion] = {}
        self._failed: dict[str, FailedMember] = {}
        self._broadcasts: TransmitLimitedQueue[PacketMessage] = TransmitLimitedQueue(
            config.retransmit_mult, config.broadcast_queue_depth
        )
        self._user_broadcasts: TransmitLimitedQueue[PacketMessage] = TransmitLimitedQueue(
            config.retransmit_mult, config.broadcast_queue_depth
        )
        self._awareness = Awareness(config.awareness_max_multiplier)
        self._events: list[MemberEvent] = []
        self._outgoing: list[Outgoing] = []
        self._incarnation = 0
        self._seq_no = 0
        self._left = False
        self._probe: Probe | None = None
        self._probe_index = 0
        self._relays: dict[int, Relay] = {}
        self._pinged_by: Address | None = None  # the last message was a ping to us from there
        self._seeds: dict[Address, None] = {}  # join targets, retried while we are alone
        self.stats: Counter[str] = Counter()
        self.last_rejection: str | None = None  # why the last push-pull was not merged
        self._now = now
        self._stalled = False
        # Random first ticks (memberlist's stagger) so members do not act in lockstep.
        self._next_probe = now + rng.random() * config.probe_interval
        self._next_gossip = now + rng.random() * config.gossip_interval
        self._next_push_pull = now + rng.random() * config.push_pull_interval
        self._next_reconnect = now + (1 + rng.random()) * config.reconnect_interval
        meta = self._checked_meta(meta)
        self._alive_node(
            Alive(
                incarnation=self._next_incarnation(), node=name, address=address, meta=meta, vsn=vsn
            ),
            now,
            bootstrap=True,
        )

    # ================================================================== inputs
    def handle_packet(self, message: PacketMessage, sender: Address, now: float) -> None:
        """One message received over UDP from ``sender`` (the packet's source address)."""
        self._advance(now)
        self.stats["messages_in"] += 1
        pinged_by, self._pinged_by = self._pinged_by, None
        if isinstance(message, Ping):
            self._pinged_by = self._on_ping(message, sender)
        elif isinstance(message, IndirectPing):
            self._on_indirect_ping(message, sender, now)
        elif isinstance(message, Ack):
            self._on_ack(message, now)
        elif isinstance(message, Nack):
            if self._probe is not None and self._probe.seq_no == message.seq_no:
                self._probe.nacks += 1
        elif isinstance(message, Suspect):
            if pinged_by is not None and message.node == self.name:
                self._answer_buddy_suspect(message, pinged_by)
            self._suspect_node(message, now)
        elif isinstance(message, Alive):
            self._alive_node(message, now)
        elif isinstance(message, Dead):
            self._dead_node(message, now)
        elif isinstance(message, User):
            if self._delegate is not None:
                self._delegate.notify_msg(message.payload)
        elif isinstance(message, Err):
            self.stats["errors_in"] += 1

    def handle_push_pull(self, remote: PushPull, sender: Address, now: float) -> PushPull:
        """A peer opened a push-pull: merge its state; return ours (sent back on the stream).

        Our reply is taken before merging, as memberlist does. Incompatible protocol
        versions are not merged (``stats["push_pull_rejected"]``)."""
        self._advance(now)
        self.stats["push_pulls_served"] += 1
        reply = self._local_state(remote.join)
        self._merge_remote(remote, now)
        return reply

    def push_pull_result(self, remote: PushPull | None, peer: Address, now: float) -> None:
        """The answer to our ``StartPushPull`` to ``peer`` (None: it failed)."""
        self._advance(now)
        if remote is None:
            self.stats["push_pull_failures"] += 1
            return
        self._merge_remote(remote, now)

    def handle_stream_ping(self, ping: Ping, sender: Address, now: float) -> Ack | None:
        """A ping over TCP (another member's fallback probe): the Ack to send back, or None
        if the ping is meant for another node name."""
        self._advance(now)
        if ping.node and ping.node != self.name:
            return None
        return Ack(seq_no=ping.seq_no)

    def handle_stream_user(self, message: User, sender: Address, now: float) -> None:
        """A reliable user message arrived over TCP."""
        self._advance(now)
        if self._delegate is not None:
            self._delegate.notify_msg(message.payload)

    def tcp_ping_result(self, seq_no: int, ok: bool, now: float) -> None:
        """Outcome of our ``StartTcpPing``; counts only if it arrives by its deadline."""
        probe = self._probe
        if ok and probe is not None and probe.seq_no == seq_no and now <= probe.deadline:
            probe.tcp_ok = True
        self._advance(now)

    def tick(self, now: float) -> None:
        """Run every timer that is due at ``now``."""
        self._advance(now)

    def join(self, addresses: Iterable[Address], now: float) -> int:
        """Push-pull (join=True) with each address, skipping our own; returns how many."""
        self._advance(now)
        started = 0
        for address in dict.fromkeys(addresses):
            if address == self.address or not self._allowed(address):
                continue
            self._seeds[address] = None
            self._start_push_pull(address, join=True)
            started += 1
        return started

    def leave(self, now: float) -> None:
        """Graceful leave: gossip Dead(from=ourselves), stop probing, push-pull, reconnect.

        Keep driving the machine until ``leave_propagated`` (or a timeout), then stop."""
        self._advance(now)
        if self._left:
            return
        self._left = True
        self._probe = None
        me = self._node_map[self.name]
        self._dead_node(Dead(incarnation=me.incarnation, node=self.name, sender=self.name), now)

    def update_meta(self, meta: bytes | None, now: float) -> None:
        """New metadata (None: ask the delegate): new incarnation, alive broadcast."""
        self._advance(now)
        me = self._node_map[self.name]
        self._alive_node(
            Alive(
                incarnation=self._next_incarnation(),
                node=self.name,
                address=me.address,
                meta=self._checked_meta(meta),
                vsn=me.vsn,
            ),
            now,
            bootstrap=True,
        )

    def queue_broadcast(self, payload: bytes, name: str | None = None) -> None:
        """Gossip an application payload to the cluster (delivered to ``notify_msg``).

        Sent by this node ``retransmit_limit`` times; receivers do not re-gossip it (the
        application decides, as Serf does). A named broadcast replaces the queued one with
        the same name."""
        message = User(payload=payload)
        self._user_broadcasts.queue(message, self._size(message), name=name)

    def send_user(self, to_name: str, payload: bytes, reliable: bool) -> None:
        """Send a user message to one member: over TCP if ``reliable``, else one UDP packet
        (memberlist SendReliable / SendBestEffort)."""
        node = self._node_map.get(to_name)
        if node is None or node.state in _GONE:
            raise UnknownMemberError(f"no live member named {to_name!r}")
        message = User(payload=payload)
        if reliable:
            self._outgoing.append(SendReliable(node.address, message))
            return
        if self._size(message) > self.config.udp_buffer_size - self._packet_overhead:
            raise ValueError("user message too large for a packet; send it reliable=True")
        self._outgoing.append(SendPacket(node.address, (message,)))

    # ================================================================== outputs
    def take_outgoing(self) -> list[Outgoing]:
        out, self._outgoing = self._outgoing, []
        self.stats["outgoing"] += len(out)
        return out

    def take_events(self) -> list[MemberEvent]:
        events, self._events = self._events, []
        return events

    def next_deadline(self) -> float | None:
        """When ``tick`` must next be called (clock time; may already be past)."""
        timers = self._timers()
        return min(t[0] for t in timers) if timers else None

    # ================================================================== queries
    def members(self) -> list[Member]:
        """Everyone in the table, including ourselves and not-yet-reaped dead/left members."""
        return sorted((n.member() for n in self._nodes), key=lambda m: m.name)

    def member(self, name: str) -> Member | None:
        node = self._node_map.get(name)
        return node.member() if node is not None else None

    def member_at(self, address: Address) -> Member | None:
        """The member advertising ``address`` (e.g. to see whether it takes CRCs: vsn[1] >= 5)."""
        for node in self._nodes:
            if node.address == address:
                return node.member()
        return None

    def num_alive(self) -> int:
        """Members alive or suspect, ourselves included (memberlist NumMembers)."""
        return sum(1 for n in self._nodes if n.state not in _GONE)

    def failed_members(self) -> dict[str, Address]:
        """Failed (not left) members we still try to reconnect to."""
        return {name: f.address for name, f in self._failed.items()}

    @property
    def incarnation(self) -> int:
        return self._node_map[self.name].incarnation

    @property
    def local_health(self) -> int:
        """Lifeguard health score: 0 is healthy, up to awareness_max_multiplier - 1."""
        return self._awareness.score

    @property
    def health_multiplier(self) -> int:
        return self._awareness.multiplier

    @property
    def has_left(self) -> bool:
        return self._left

    @property
    def leave_propagated(self) -> bool:
        """After ``leave``: our Dead message has been sent its full retransmit count, or
        there is nobody to tell."""
        others = any(n.name != self.name and n.state not in _GONE for n in self._nodes)
        return self._left and (self.name not in self._broadcasts or not others)

    # ================================================================== timers
    def _timers(self) -> list[tuple[float, int, Callable[[float], None]]]:
        timers: list[tuple[float, int, Callable[[float], None]]] = []
        probe = self._probe
        if probe is not None:
            if not probe.indirect_sent:
                timers.append((probe.timeout_at, 0, self._probe_timeout))
            elif probe.resend_at is not None:
                timers.append((probe.resend_at, 0, self._probe_resend))
            timers.append((probe.deadline, 1, self._probe_deadline))
        if self._relays:
            timers.append((min(r.expires for r in self._relays.values()), 2, self._expire_relays))
        if self._suspicions:
            timers.append(
                (min(s.deadline for s in self._suspicions.values()), 3, self._expire_suspicions)
            )
        timers.append((self._next_gossip, 4, self._gossip))
        if not self._left:
            timers.append((self._next_probe, 5, self._probe_next))
            if self.config.push_pull_interval > 0:
                timers.append((self._next_push_pull, 6, self._push_pull))
            if self.config.reconnect_interval > 0:
                timers.append((self._next_reconnect, 7, self._reconnect))
        return timers

    def _advance(self, now: float) -> None:
        now = max(now, self._now)
        # Our timers run at least every gossip interval; a longer gap means this process was
        # stopped (SIGSTOP, a blocked loop) and what it was waiting for may sit unread in its
        # socket. Timers that fell due meanwhile are judged with that in mind.
        self._stalled = now - self._now > self.config.gossip_interval + self.config.probe_timeout
        self._now = now
        while True:
            due = min(self._timers(), key=lambda t: (t[0], t[1]))
            if due[0] > now:
                return
            due[2](now)

    def _expire_suspicions(self, now: float) -> None:
        for name, suspicion in list(self._suspicions.items()):
            if suspicion.deadline <= now and self._stalled and not suspicion.extended:
                # We slept through the deadline: read the refutation that may be waiting
                # before declaring the member dead (once; the next expiry is final).
                suspicion.deadline, suspicion.extended = now + self.config.probe_timeout, True
                self.stats["suspicions_extended"] += 1
                continue
            if suspicion.deadline <= now and self._suspicions.get(name) is suspicion:
                del self._suspicions[name]
                self._suspicion_expired(name, suspicion, now)

    # ------------------------------------------------------------------ gossip
    def _gossip(self, now: float) -> None:
        self._next_gossip = now + self.config.gossip_interval
        dead_cutoff = now - self.config.gossip_to_the_dead_time
        targets = self._random_nodes(
            self.config.gossip_nodes,
            lambda n: (
                n.name != self.name
                and (
                    n.state in (NodeState.ALIVE, NodeState.SUSPECT)
                    or (n.state == NodeState.DEAD and n.state_change >= dead_cutoff)
                )
            ),
        )
        limit = self.config.udp_buffer_size - COMPOUND_HEADER_OVERHEAD - self._packet_overhead
        for node in targets:
            messages = self._take_broadcasts(limit)
            if not messages:
                return
            self.stats["gossip_packets"] += 1
            self._outgoing.append(SendPacket(node.address, tuple(messages)))

    # ------------------------------------------------------------------ push-pull, reconnect
    def _push_pull(self, now: float) -> None:
        self._next_push_pull = now + push_pull_scale(
            self.config.push_pull_interval, len(self._nodes)
        )
        peers = self._random_nodes(1, lambda n: n.name != self.name and n.state == NodeState.ALIVE)
        if peers:
            self._start_push_pull(peers[0].address, join=False)

    def _reconnect(self, now: float) -> None:
        """Serf's reconnect: about once per interval cluster-wide, push-pull with a random
        failed member, so partitions heal without operator action. While we know nobody
        else, retry the join targets instead (Serf's retry-join)."""
        self._next_reconnect = now + self.config.reconnect_interval
        if self.num_alive() == 1 and self._seeds:
            self.stats["join_retries"] += 1
            for address in self._seeds:
                self._start_push_pull(address, join=True)
        expired = [
            name
            for name, f in self._failed.items()
            if now - f.since > self.config.reconnect_timeout
        ]
        for name in expired:
            del self._failed[name]
        if not self._failed:
            return
        if self._rng.random() >= reconnect_probability(len(self._failed), self.num_alive()):
            return
        name = self._rng.choice(sorted(self._failed))
        self.stats["reconnects"] += 1
        self._start_push_pull(self._failed[name].address, join=True)

    def _start_push_pull(self, to: Address, join: bool) -> None:
        self.stats["push_pulls"] += 1
        self._outgoing.append(StartPushPull(to, join, self._local_state(join)))

    def _local_state(self, join: bool) -> PushPull:
        nodes = tuple(
            PushNodeState(
                name=n.name,
                address=n.address,
                meta=n.meta,
                incarnation=n.incarnation,
                state=n.state,
                vsn=n.vsn,
            )
            for n in self._nodes
        )
        user = self._delegate.local_state(join) if self._delegate is not None else b""
        return PushPull(join=join, nodes=nodes, user_state=user)

    def _merge_remote(self, remote: PushPull, now: float) -> None:
        error = verify_protocol(remote.nodes, self._nodes)
        if error is not None:
            self.stats["push_pull_rejected"] += 1
            self.last_rejection = error
            return
        self._merge_state(remote.nodes, now)
        if remote.user_state and self._delegate is not None:
            self._delegate.merge_remote_state(remote.user_state, remote.join)

    # ------------------------------------------------------------------ helpers
    def _allowed(self, address: Address) -> bool:
        return self._address_allowed is None or self._address_allowed(address)

    def _checked_meta(self, meta: bytes | None) -> bytes:
        if meta is None:
            meta = self._delegate.node_meta(META_MAX_SIZE) if self._delegate is not None else b""
        if len(meta) > META_MAX_SIZE:
            raise ValueError(f"node metadata is {len(meta)} bytes; the limit is {META_MAX_SIZE}")
        return meta
