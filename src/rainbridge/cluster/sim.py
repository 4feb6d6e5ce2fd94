"""A deterministic simulated network and virtual clock for ``Membership`` (like trio's
FakeNet + MockClock): many members in one process, no sockets, no real time.

Everything random — packet loss, delays, duplication, the members' own choices — derives
from one seed, so a run is reproducible bit for bit. Faults:

- per-link ``LinkProfile``: loss, delay range (a spread reorders packets), duplication;
- ``partition(groups)`` / ``heal()``: members in different groups cannot exchange anything;
- ``crash`` (stops answering, like SIGKILL), ``pause``/``resume`` (like SIGSTOP/SIGCONT:
  traffic queues up and is processed on resume, timers fire late), ``restart`` under the
  same name (a new process: incarnation starts over), ``slow`` (a node that processes every
  incoming message late, e.g. CPU-starved);
- TCP exchanges (push-pull, TCP ping, reliable user messages) are request/response with the
  link's delay; a lost segment costs a retransmission timeout instead of the message; they
  fail across partitions and to crashed members.

``run_until(t)`` advances the virtual clock event by event, calling each member's ``tick``
at its ``next_deadline()``.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from random import Random

from rainbridge.cluster.config import MembershipConfig
from rainbridge.cluster.events import (
    Delegate,
    MemberEvent,
    Outgoing,
    SendPacket,
    SendReliable,
    StartPushPull,
    StartTcpPing,
)
from rainbridge.cluster.messages import Address, NodeState, PacketMessage
from rainbridge.cluster.state import Membership


@dataclass(frozen=True, slots=True)
class LinkProfile:
    loss: float = 0.0  # probability a packet (or TCP segment: one RTO of delay) is lost
    delay: tuple[float, float] = (0.0005, 0.002)  # one-way delay range, seconds
    duplicate: float = 0.0  # probability a packet is delivered twice


@dataclass(eq=False)
class SimNode:
    name: str
    address: Address
    membership: Membership
    crashed: bool = False
    paused: bool = False
    slow: float = 0.0  # extra processing delay of every inbound message
    pending: list[Callable[[], None]] = field(default_factory=list)
    tick_at: float | None = None
    events: list[tuple[float, MemberEvent]] = field(default_factory=list)


@dataclass(eq=False)
class _Exchange:
    done: bool = False


class SimNetwork:
    def __init__(
        self,
        seed: int = 0,
        config: MembershipConfig | None = None,
        *,
        link: LinkProfile | None = None,
        tcp_rto: float = 1.0,
        start: float = 0.0,
    ) -> None:
        self.rng = Random(seed)
        self.config = config or MembershipConfig.lan()
        self.link = link or LinkProfile()
        self.tcp_rto = tcp_rto
        self.now = start
        self.nodes: dict[str, SimNode] = {}
        self.log: list[tuple[float, str, MemberEvent]] = []
        self.packets_sent = 0
        self.packets_lost = 0
        self._links: dict[tuple[str, str], LinkProfile] = {}
        self._by_address: dict[Address, SimNode] = {}
        self._groups: dict[str, int] = {}
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._host_ids = itertools.count(1)

    # ------------------------------------------------------------------ set-up
    def add_node(
        self,
        name: str,
        address: Address | None = None,
        *,
        config: MembershipConfig | None = None,
        meta: bytes = b"",
        delegate: Delegate | None = None,
    ) -> SimNode:
        if address is None:
            i = next(self._host_ids)
            address = (f"10.0.{i // 250}.{i % 250}", 7946)
        membership = Membership(
            config or self.config,
            name,
            address,
            meta,
            Random(self.rng.getrandbits(64)),
            self.now,
            delegate,
        )
        node = SimNode(name, address, membership)
        self.nodes[name] = node
        self._by_address[address] = node
        self._after(node)
        return node

    def join(self, name: str, seeds: Iterable[str | Address]) -> None:
        node = self.nodes[name]
        addresses = [s if isinstance(s, tuple) else self.nodes[s].address for s in seeds]
        node.membership.join(addresses, self.now)
        self._after(node)

    def cluster(self, n: int, *, prefix: str = "n", seed_name: str | None = None) -> list[str]:
        """Add ``n`` members that all join through the first one."""
        names = [f"{prefix}{i}" for i in range(n)]
        for name in names:
            self.add_node(name)
        for name in names[1:]:
            self.join(name, [seed_name or names[0]])
        return names

    # ------------------------------------------------------------------ faults
    def set_link(self, a: str, b: str, profile: LinkProfile, *, both: bool = True) -> None:
        self._links[(a, b)] = profile
        if both:
            self._links[(b, a)] = profile

    def partition(self, *groups: Iterable[str]) -> None:
        """Members in different groups cannot reach each other (unlisted: reach all)."""
        self._groups = {name: i for i, group in enumerate(groups) for name in group}

    def heal(self) -> None:
        self._groups = {}

    def crash(self, name: str) -> None:
        self.nodes[name].crashed = True

    def pause(self, name: str, duration: float | None = None) -> None:
        self.nodes[name].paused = True
        if duration is not None:
            self.at(self.now + duration, lambda: self.resume(name))

    def resume(self, name: str) -> None:
        node = self.nodes[name]
        if node.crashed or not node.paused:
            return
        node.paused = False
        pending, node.pending = node.pending, []
        for work in pending:
            work()
        node.membership.tick(self.now)
        self._after(node)

    def slow(self, name: str, delay: float) -> None:
        self.nodes[name].slow = delay

    def restart(
        self,
        name: str,
        *,
        address: Address | None = None,
        meta: bytes = b"",
        join: Iterable[str | Address] = (),
        config: MembershipConfig | None = None,
        delegate: Delegate | None = None,
    ) -> SimNode:
        """Crash ``name`` and start a new process under the same name (same address unless
        given), joining through ``join``."""
        old = self.nodes[name]
        old.crashed = True
        if self._by_address.get(old.address) is old:
            del self._by_address[old.address]
        node = self.add_node(
            name, address or old.address, config=config, meta=meta, delegate=delegate
        )
        if join:
            self.join(name, join)
        return node

    def leave(self, name: str) -> None:
        node = self.nodes[name]
        node.membership.leave(self.now)
        self._after(node)

    def inject(self, name: str, message: PacketMessage, sender: str) -> None:
        """Hand ``name`` a message as if ``sender`` had sent it over UDP, now (queued
        while ``name`` is paused)."""
        node, src = self.nodes[name], self.nodes[sender]
        self._receiver(node, (message,), src.address)()

    # ------------------------------------------------------------------ clock
    def at(self, when: float, work: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (when, next(self._seq), work))

    def run_until(self, when: float, *, stop: Callable[[], bool] | None = None) -> bool:
        """Advance the clock to ``when`` (or until ``stop()`` holds; then return True)."""
        while self._queue and self._queue[0][0] <= when:
            t, _, work = heapq.heappop(self._queue)
            self.now = t
            work()
            if stop is not None and stop():
                return True
        self.now = max(self.now, when)
        return stop() if stop is not None else False

    def run_for(self, duration: float, *, stop: Callable[[], bool] | None = None) -> bool:
        return self.run_until(self.now + duration, stop=stop)

    # ------------------------------------------------------------------ inspection
    def live(self) -> list[str]:
        return [n.name for n in self.nodes.values() if not n.crashed]

    def view(self, observer: str) -> dict[str, NodeState]:
        return {m.name: m.state for m in self.nodes[observer].membership.members()}

    def alive_set(self, observer: str) -> set[str]:
        return {name for name, s in self.view(observer).items() if s == NodeState.ALIVE}

    def sees(self, subject: str, state: NodeState, observers: Iterable[str] | None = None) -> bool:
        """Every observer (default: all live members but the subject) sees ``state``
        (DEAD/LEFT also hold once the member has been reaped from the table)."""
        names = self.live() if observers is None else list(observers)
        for observer in names:
            if observer == subject:
                continue
            seen = self.view(observer).get(subject)
            if seen is None and state in (NodeState.DEAD, NodeState.LEFT):
                continue
            if seen != state:
                return False
        return True

    def converged(self, expected: Iterable[str] | None = None) -> bool:
        """Every live member sees exactly ``expected`` (default: the live ones) alive."""
        want = set(self.live() if expected is None else expected)
        return all(self.alive_set(name) == want for name in want)

    def total(self, stat: str) -> int:
        return sum(n.membership.stats[stat] for n in self.nodes.values())

    # ------------------------------------------------------------------ plumbing
    def _current(self, node: SimNode) -> bool:
        return not node.crashed and self.nodes.get(node.name) is node

    def _deliver(self, node: SimNode, work: Callable[[], None]) -> None:
        """Run ``work`` on ``node`` now, or when it resumes."""
        if not self._current(node):
            return
        if node.paused:
            node.pending.append(work)
            return
        work()
        self._after(node)

    def _after(self, node: SimNode) -> None:
        m = node.membership
        for event in m.take_events():
            node.events.append((self.now, event))
            self.log.append((self.now, node.name, event))
        for out in m.take_outgoing():
            self._dispatch(node, out)
        deadline = m.next_deadline()
        if deadline is None:
            return
        deadline = max(deadline, self.now)
        if node.tick_at is None or deadline < node.tick_at:
            node.tick_at = deadline
            self.at(deadline, lambda: self._tick(node, deadline))

    def _tick(self, node: SimNode, when: float) -> None:
        if node.tick_at != when or not self._current(node):
            return
        node.tick_at = None
        if node.paused:
            return  # resume() ticks
        node.membership.tick(self.now)
        self._after(node)

    def _profile(self, src: SimNode, dst: SimNode | None) -> LinkProfile:
        if dst is None:
            return self.link
        return self._links.get((src.name, dst.name), self.link)

    def _reachable(self, src: SimNode, dst: SimNode) -> bool:
        a, b = self._groups.get(src.name), self._groups.get(dst.name)
        return a is None or b is None or a == b

    def _dispatch(self, src: SimNode, out: Outgoing) -> None:
        if isinstance(out, SendPacket):
            self._send_packet(src, out.to, out.messages)
        elif isinstance(out, StartPushPull):
            self._exchange(
                src,
                out.to,
                self.now + self.config.tcp_timeout,
                serve=lambda dst, now: dst.membership.handle_push_pull(out.state, src.address, now),
                done=lambda reply, now: src.membership.push_pull_result(reply, out.to, now),
            )
        elif isinstance(out, StartTcpPing):
            self._exchange(
                src,
                out.to,
                out.deadline,
                serve=lambda dst, now: dst.membership.handle_stream_ping(
                    out.ping, src.address, now
                ),
                done=lambda ack, now: src.membership.tcp_ping_result(
                    out.seq_no, ack is not None, now
                ),
            )
        elif isinstance(out, SendReliable):
            self._exchange(
                src,
                out.to,
                self.now + self.config.tcp_timeout,
                serve=lambda dst, now: dst.membership.handle_stream_user(
                    out.message, src.address, now
                ),
                done=None,
            )

    def _send_packet(self, src: SimNode, to: Address, messages: tuple[PacketMessage, ...]) -> None:
        dst = self._by_address.get(to)
        profile = self._profile(src, dst)
        copies = 2 if profile.duplicate and self.rng.random() < profile.duplicate else 1
        for _ in range(copies):
            self.packets_sent += 1
            if profile.loss and self.rng.random() < profile.loss:
                self.packets_lost += 1
                continue
            if dst is None or not self._reachable(src, dst):
                continue
            delay = self.rng.uniform(*profile.delay) + dst.slow
            self.at(self.now + delay, self._receiver(dst, messages, src.address))

    def _receiver(
        self, dst: SimNode, messages: tuple[PacketMessage, ...], sender: Address
    ) -> Callable[[], None]:
        def handle() -> None:
            for message in messages:
                dst.membership.handle_packet(message, sender, self.now)

        return lambda: self._deliver(dst, handle)

    def _tcp_delay(self, profile: LinkProfile) -> float:
        delay = self.rng.uniform(*profile.delay)
        rto = self.tcp_rto
        while profile.loss and self.rng.random() < profile.loss and rto < 60:
            delay += rto
            rto *= 2
        return delay

    def _exchange(
        self,
        src: SimNode,
        to: Address,
        deadline: float,
        serve: Callable[[SimNode, float], object],
        done: Callable[[object, float], None] | None,
    ) -> None:
        """A TCP request/response: ``serve`` on the peer, ``done(reply or None)`` back home
        (None on refusal, partition, or no reply by ``deadline``)."""
        dst = self._by_address.get(to)
        state = _Exchange()

        def finish(reply: object) -> None:
            if state.done:
                return
            state.done = True
            if done is not None:
                self._deliver(src, lambda: done(reply, self.now))

        if done is not None:
            self.at(deadline, lambda: finish(None))
        if dst is None or dst.crashed:  # connection refused
            self.at(self.now + 2 * self.rng.uniform(*self.link.delay), lambda: finish(None))
            return
        if not self._reachable(src, dst):
            return  # the deadline fails it
        profile = self._profile(src, dst)

        def request() -> None:
            if not self._reachable(src, dst) or state.done:
                return

            def work() -> None:
                reply = serve(dst, self.now)
                if not self._reachable(src, dst):
                    return
                self.at(self.now + self._tcp_delay(profile) + src.slow, lambda: finish(reply))

            self._deliver(dst, work)

        self.at(self.now + self._tcp_delay(profile) + dst.slow, request)
