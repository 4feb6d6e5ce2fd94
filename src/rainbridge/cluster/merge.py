"""The member table and its merge rules (memberlist's aliveNode / suspectNode / deadNode).

Every update about a member carries an incarnation number, which only that member raises
(when it refutes a suspicion or changes its metadata). An update is applied when it is
newer in the order (incarnation, rank), rank ALIVE < SUSPECT < DEAD < LEFT:

========================  ==========================================================
update                    applied when
========================  ==========================================================
Alive(i)                  i > current incarnation (any state); a new name always
Suspect(i)                current ALIVE and i >= inc; current SUSPECT and i > inc
                          (bump) or a new confirmer at i == inc; DEAD/LEFT and i > inc
Dead(i) (from another)    current ALIVE/SUSPECT and i >= inc; DEAD/LEFT and i > inc
Dead(i) from itself=LEFT  current ALIVE/SUSPECT/DEAD and i >= inc; LEFT and i > inc
========================  ==========================================================

That is memberlist's table for every case it handles, plus the cases where memberlist
drops an update and so lets the final state depend on arrival order: a newer Suspect for
a suspect (memberlist keeps the old incarnation) or for a dead member, a newer Dead for a
dead/left member, a Left for a member we had declared dead (memberlist keeps it "failed"
and Serf would retry it for a day), and the Alive of an incarnation first seen in a
Suspect/Dead (its metadata is kept; memberlist keeps the older metadata). Closing them
makes merging order-independent (a join on that order), which the property test in
``tests/test_cluster_state.py`` checks.

Rules about ourselves differ: an accusation (Suspect/Dead) with incarnation >= ours is
refuted with a higher incarnation; after a graceful leave nothing revives us. A push-pull
entry claiming a member DEAD is merged as a Suspect (it gets the chance to refute); LEFT
is merged as a Left. A different address under a known name is a conflict (ignored)
unless the member left, or has been dead longer than ``dead_node_reclaim_time``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from rainbridge.cluster.awareness import Awareness
from rainbridge.cluster.broadcast import TransmitLimitedQueue
from rainbridge.cluster.events import Delegate, EventKind, Member, MemberEvent
from rainbridge.cluster.messages import (
    Address,
    Alive,
    Dead,
    NodeState,
    PacketMessage,
    PushNodeState,
    Suspect,
)
from rainbridge.cluster.suspicion import Suspicion
from rainbridge.cluster.timers import expected_confirmations, suspicion_bounds

if TYPE_CHECKING:
    from random import Random  # injected; never the module's global state

    from rainbridge.cluster.config import MembershipConfig

Vsn = tuple[int, int, int, int, int, int]
_RANK = {NodeState.ALIVE: 0, NodeState.SUSPECT: 1, NodeState.DEAD: 2, NodeState.LEFT: 3}
# A member's Alive that is news of a join (never known, or back from dead/left) is gossiped
# this many times memberlist's transmit limit. A member that every copy misses learns of
# the join only at its next push-pull (30 s on a LAN): at 30 % loss, N = 10, that left 27
# of 400 joins past 10 gossip rounds with the limit; with twice it, none (the simulator,
# bench/join_tail_sim.py). Joins are rare, so the cost is a few packets each.
JOIN_TRANSMIT_FACTOR = 2
_GONE = (NodeState.DEAD, NodeState.LEFT)


@dataclass(slots=True)
class NodeEntry:
    """Our mutable view of one member (memberlist's nodeState)."""

    name: str
    address: Address
    meta: bytes
    incarnation: int
    state: NodeState
    state_change: float
    vsn: Vsn
    acks: int = 0  # consecutive successful probes since it last came back
    healthy: bool = True
    meta_incarnation: int = 0  # incarnation of the Alive our meta and vsn came from

    def member(self) -> Member:
        return Member(
            self.name,
            self.address,
            self.meta,
            self.incarnation,
            self.state,
            self.state_change,
            self.vsn,
            self.healthy,
        )


@dataclass(slots=True)
class FailedMember:
    address: Address
    since: float


class _Sizer(Protocol):
    def __call__(self, message: PacketMessage, /) -> int: ...


class MemberTable:
    """The member table plus the rules that change it. ``Membership`` builds on this."""

    config: MembershipConfig
    name: str
    _rng: Random
    _delegate: Delegate | None
    _nodes: list[NodeEntry]
    _node_map: dict[str, NodeEntry]
    _suspicions: dict[str, Suspicion]
    _failed: dict[str, FailedMember]
    _broadcasts: TransmitLimitedQueue[PacketMessage]
    _awareness: Awareness
    _events: list[MemberEvent]
    _incarnation: int
    _left: bool
    _size: _Sizer
    stats: Counter[str]

    def _allowed(self, address: Address) -> bool:
        return True

    # -- helpers ---------------------------------------------------------------------
    def _queue(self, message: Alive | Suspect | Dead, factor: int = 1) -> None:
        self._broadcasts.queue(message, self._size(message), name=message.node, factor=factor)

    def _emit(self, kind: EventKind, node: NodeEntry, reason: str = "") -> None:
        self._events.append(MemberEvent(kind, node.member(), reason))

    def _next_incarnation(self, beat: int = 0) -> int:
        self._incarnation = max(self._incarnation + 1, beat + 1)
        return self._incarnation

    def _returning(self, node: NodeEntry) -> None:
        """``node`` came back: it must earn ``healthy`` again (success_threshold)."""
        if self.config.success_threshold > 0 and node.name != self.name:
            node.acks = 0
            node.healthy = False

    def _refute(self, me: NodeEntry, accused: int) -> None:
        """Beat an accusation about ourselves: higher incarnation, alive broadcast."""
        me.incarnation = self._next_incarnation(beat=accused)
        self._awareness.apply_delta(1)  # having to refute means we may be the slow one
        self._queue(
            Alive(
                incarnation=me.incarnation,
                node=me.name,
                address=me.address,
                meta=me.meta,
                vsn=me.vsn,
            )
        )
        self.stats["refutations"] += 1

    # -- alive -----------------------------------------------------------------------
    def _alive_node(self, a: Alive, now: float, *, bootstrap: bool = False) -> None:
        is_local = a.node == self.name
        if is_local and self._left:
            return  # a queued alive about us must not undo our leave
        pmin, pmax = a.vsn[0], a.vsn[1]
        if pmin == 0 or pmax == 0 or pmin > pmax:
            self.stats["rejected_alive"] += 1
            return
        node = self._node_map.get(a.node)
        fresh = node is None
        updates_node = False
        if node is None:
            if not self._allowed(a.address):
                self.stats["rejected_alive"] += 1
                return
            node = NodeEntry(
                a.node,
                a.address,
                a.meta,
                a.incarnation,
                NodeState.DEAD,
                now,
                a.vsn,
                meta_incarnation=a.incarnation,
            )
            self._nodes.insert(self._insert_position(), node)
            self._node_map[a.node] = node
            if a.node in self._failed:  # reaped, but we remember it failed
                self._returning(node)
        elif node.address != a.address:
            if not self._allowed(a.address):
                self.stats["rejected_alive"] += 1
                return
            reclaim = self.config.dead_node_reclaim_time
            can_reclaim = reclaim > 0 and now - node.state_change > reclaim
            if not (node.state == NodeState.LEFT or (node.state == NodeState.DEAD and can_reclaim)):
                self.stats["conflicts"] += 1
                if self._delegate is not None:
                    other = Member(
                        a.node, a.address, a.meta, a.incarnation, NodeState.ALIVE, now, a.vsn, True
                    )
                    self._delegate.notify_conflict(node.member(), other)
                return
            updates_node = True  # the name is reclaimed from another address
        if not fresh and not updates_node:
            if not is_local and a.incarnation <= node.incarnation:
                if a.incarnation > node.meta_incarnation:
                    self._late_alive(node, a)
                return
            if is_local and a.incarnation < node.incarnation:
                return
        self._suspicions.pop(a.node, None)
        old_state, old_meta = node.state, node.meta
        if is_local and not bootstrap:
            # Someone gossips an alive about us that we did not send (e.g. our previous
            # life before a restart): ignore our own echo, otherwise out-number it.
            if a.incarnation == node.incarnation and a.meta == node.meta and a.vsn == node.vsn:
                return
            self._refute(node, a.incarnation)
            return
        self._queue(a, JOIN_TRANSMIT_FACTOR if fresh or node.state in _GONE else 1)  # see above
        node.vsn, node.incarnation, node.meta, node.address = (
            a.vsn,
            a.incarnation,
            a.meta,
            a.address,
        )
        node.meta_incarnation = a.incarnation
        if node.state != NodeState.ALIVE:
            node.state = NodeState.ALIVE
            node.state_change = now
        if old_state in _GONE:
            self._failed.pop(a.node, None)
            if not fresh:
                self._returning(node)
            self._emit(EventKind.JOIN, node)
        elif old_state == NodeState.SUSPECT:
            self._returning(node)
            self._emit(EventKind.RECOVER, node, "refuted")
            if old_meta != node.meta:
                self._emit(EventKind.UPDATE, node)
        elif old_meta != node.meta:
            self._emit(EventKind.UPDATE, node)

    def _late_alive(self, node: NodeEntry, a: Alive) -> None:
        """The Alive of an incarnation we first learned from a Suspect/Dead: it cannot
        change the state, but its metadata is the member's current one. (memberlist drops
        it and keeps stale metadata until the member's next incarnation.)"""
        old_meta = node.meta
        node.meta, node.vsn, node.meta_incarnation = a.meta, a.vsn, a.incarnation
        if old_meta != node.meta and node.state not in _GONE:
            self._emit(EventKind.UPDATE, node)

    # -- suspect ---------------------------------------------------------------------
    def _insert_position(self) -> int:
        """Where a newly learned member goes in the probe list: a random slot (the prober
        narrows it to the part of the current round not yet probed)."""
        return self._rng.randrange(len(self._nodes) + 1)

    def _suspect_node(self, s: Suspect, now: float) -> None:
        node = self._node_map.get(s.node)
        if node is None or s.incarnation < node.incarnation:
            return
        suspicion = self._suspicions.get(s.node)
        if suspicion is not None:
            newer = s.incarnation > node.incarnation
            if newer:
                node.incarnation = s.incarnation
            # Re-gossip new confirmations so independent suspicions keep flowing.
            if suspicion.confirm(s.sender) or newer:
                self._queue(s)
            return
        is_local = s.node == self.name
        old_state = node.state
        if old_state in _GONE:
            if is_local or s.incarnation <= node.incarnation:
                return
        elif is_local:
            self._refute(node, s.incarnation)
            return
        self._queue(s)
        node.incarnation = s.incarnation
        node.state = NodeState.SUSPECT
        node.state_change = now
        n = len(self._nodes)
        k = expected_confirmations(self.config.suspicion_mult, n)
        low, high = suspicion_bounds(
            self.config.suspicion_mult,
            self.config.suspicion_max_timeout_mult,
            n,
            self.config.probe_interval,
        )
        self._suspicions[s.node] = Suspicion(s.sender, k, low, high, now)
        self._returning(node)
        self.stats["suspicions"] += 1
        if old_state in _GONE:
            self._failed.pop(s.node, None)
            self._emit(EventKind.JOIN, node, f"suspected at a newer incarnation by {s.sender}")
        else:
            self._emit(EventKind.SUSPECT, node, f"suspected by {s.sender}")

    def _suspicion_expired(self, name: str, suspicion: Suspicion, now: float) -> None:
        node = self._node_map.get(name)
        if node is None or node.state != NodeState.SUSPECT:
            return
        self._dead_node(
            Dead(incarnation=node.incarnation, node=name, sender=self.name),
            now,
            reason=f"suspicion timed out ({suspicion.n} confirmations)",
        )

    # -- dead / left -----------------------------------------------------------------
    def _dead_node(self, d: Dead, now: float, *, reason: str = "") -> None:
        node = self._node_map.get(d.node)
        if node is None or d.incarnation < node.incarnation:
            return
        is_local = d.node == self.name
        new_state = NodeState.LEFT if d.node == d.sender else NodeState.DEAD
        if node.state in _GONE:
            if is_local or (d.incarnation, _RANK[new_state]) <= (
                node.incarnation,
                _RANK[node.state],
            ):
                return
            node.incarnation = d.incarnation
            if node.state != new_state:
                node.state, node.state_change = new_state, now
            self._queue(d)
            self._track_failed(node, now)
            return
        self._suspicions.pop(d.node, None)
        if is_local and not self._left:
            self._refute(node, d.incarnation)
            return
        self._queue(d)
        node.incarnation = d.incarnation
        node.state = new_state
        node.state_change = now
        self._track_failed(node, now)
        if new_state == NodeState.LEFT:
            self.stats["leaves"] += 1
            self._emit(EventKind.LEAVE, node, "left")
        else:
            self.stats["deaths"] += 1
            self._emit(EventKind.LEAVE, node, reason or f"declared dead by {d.sender}")

    def _track_failed(self, node: NodeEntry, now: float) -> None:
        if node.state == NodeState.DEAD and node.name != self.name:
            self._failed[node.name] = FailedMember(node.address, now)
        else:
            self._failed.pop(node.name, None)

    # -- push-pull -------------------------------------------------------------------
    def _merge_state(self, remote: tuple[PushNodeState, ...], now: float) -> None:
        for r in remote:
            if r.state == NodeState.ALIVE:
                self._alive_node(
                    Alive(
                        incarnation=r.incarnation,
                        node=r.name,
                        address=r.address,
                        meta=r.meta,
                        vsn=r.vsn,
                    ),
                    now,
                )
            elif r.state == NodeState.LEFT:
                self._dead_node(Dead(incarnation=r.incarnation, node=r.name, sender=r.name), now)
            else:  # a remote DEAD is only a suspicion here: let the member refute it
                self._suspect_node(
                    Suspect(incarnation=r.incarnation, node=r.name, sender=self.name), now
                )


def verify_protocol(remote: tuple[PushNodeState, ...], local: list[NodeEntry]) -> str | None:
    """memberlist ``verifyProtocol``: every member's current protocol and delegate versions
    must fall inside the range all alive members understand. Returns the error or None."""
    maxpmin, minpmax, maxdmin, mindmax = 0, 255, 0, 255
    vsns = [r.vsn for r in remote if r.state == NodeState.ALIVE]
    vsns += [n.vsn for n in local if n.state == NodeState.ALIVE]
    for v in vsns:
        maxpmin, minpmax = max(maxpmin, v[0]), min(minpmax, v[1])
        maxdmin, mindmax = max(maxdmin, v[3]), min(mindmax, v[4])
    everyone = [(r.name, r.vsn) for r in remote] + [(n.name, n.vsn) for n in local]
    for name, v in everyone:
        if not maxpmin <= v[2] <= minpmax:
            return f"member {name!r} protocol version {v[2]} is outside [{maxpmin}, {minpmax}]"
        if not maxdmin <= v[5] <= mindmax:
            return (
                f"member {name!r} delegate protocol version {v[5]} is outside "
                f"[{maxdmin}, {mindmax}]"
            )
    return None
