"""A seeded, virtual-clock simulation of fleet-wide counters (``escrow.py``), like
``cluster/sim.py`` is for membership: many ``EscrowNode``\\ s in one process, no sockets, no
real time, reproducible bit for bit from the seed.

Faults: per-message loss, duplication and a delay range (a wide range reorders); partitions
(``partition(groups)`` / ``heal()``); ``crash`` and ``restart`` (a new incarnation: a new
roster epoch); ``join`` (scale-up: a new roster epoch); a fixed clock offset per member
(skew). The simulator is the roster master (``epochs``): each member learns a new epoch after
its own failure-detection delay, or sooner from the messages of members that did. Membership is not simulated here (the
cluster's SWIM is, in ``cluster/sim.py``): each member's view of who is live follows the
truth after a random failure-detection delay, so views disagree for a while, as they do.

Every admission is recorded under the window the admitting member computed, so
``violations()`` checks the invariant Σ admitted ≤ limit per (limit, window).

For the scale study (``bench/escrow_scale.py``) it also counts messages sent by type
(``messages``, and their wire size in ``bytes`` when given a ``sizer``), delivered per
(receiver, type, limit) in ``delivered``, notes when each window's limit was reached
(``reached``, and ``on_reached``), and with ``trace`` logs every verdict with the time it
was asked and answered (``verdicts``).
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from random import Random

from rainbridge.counters.escrow import EscrowConfig, EscrowNode, Limit
from rainbridge.counters.escrow_messages import Message, Send

START_MS = 1_800_000_000_000  # a round epoch: windows of 10 s start at t = 0


@dataclass(frozen=True, slots=True)
class Faults:
    loss: float = 0.0  # probability a message is lost
    duplicate: float = 0.0  # probability a message is delivered twice
    delay: tuple[float, float] = (0.0005, 0.002)  # one-way delay range, seconds
    detect: tuple[float, float] = (0.5, 1.5)  # failure detection (and rejoin) delay, seconds
    skew_ms: int = 0  # each member's clock is off by a uniform value in ±skew_ms


class SimMember:
    __slots__ = ("crashed", "incarnation", "name", "node", "skew_ms", "tick_at")

    def __init__(self, name: str, node: EscrowNode, skew_ms: int, incarnation: int) -> None:
        self.name = name
        self.node = node
        self.skew_ms = skew_ms
        self.incarnation = incarnation
        self.crashed = False
        self.tick_at: float | None = None


class EscrowSim:
    def __init__(
        self,
        n: int,
        limits: Iterable[Limit],
        seed: int = 0,
        faults: Faults | None = None,
        config: EscrowConfig | None = None,
        *,
        strict: bool = False,
        trace: bool = False,
        sizer: Callable[[Message], int] | None = None,
    ) -> None:
        """``strict``: after every event, record the largest Σ (granted − returned) the
        members (crashed ones included) hold per window, in ``peak_outstanding``.
        ``trace``: log ``(asked, answered, member, lid, window, admitted)`` of every verdict
        in ``verdicts``. ``sizer``: a message's size on the wire, summed by type in
        ``bytes``."""
        self.rng = Random(seed)
        self.strict = strict
        self.peak_outstanding: Counter[tuple[str, int]] = Counter()
        self.processes: list[SimMember] = []
        self.faults = faults or Faults()
        self.config = config or EscrowConfig()
        self.limits = {lim.lid: lim for lim in limits}
        self.now = 0.0
        self.names = [f"n{i}" for i in range(n)]
        self.epochs: dict[int, tuple[str, ...]] = {1: tuple(f"{name}:1" for name in self.names)}
        self.members: dict[str, SimMember] = {}
        self.admitted: Counter[tuple[str, int]] = Counter()
        self.admitted_by: Counter[tuple[str, str, int]] = Counter()  # (member, lid, window)
        self.refused: Counter[tuple[str, int]] = Counter()
        self.requests: Counter[str] = Counter()
        self.unserved = 0  # requests sent to a crashed member
        self.messages: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()
        self.delivered: Counter[tuple[str, str, str | None]] = Counter()  # (to, type, lid)
        self.reached: dict[tuple[str, int], float] = {}  # (lid, window) → when Σ hit the limit
        self.on_reached: Callable[[str, int], None] | None = None
        self.verdicts: list[tuple[float, float, str, str, int, bool]] | None = [] if trace else None
        self._sizer = sizer
        self._asked: dict[int, float] = {}  # ticket → when asked (trace only)
        self._groups: dict[str, int] = {}
        self._draining: set[str] = set()
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._tickets = itertools.count()
        for name in self.names:
            skew = self.rng.randint(-self.faults.skew_ms, self.faults.skew_ms)
            self._start(name, skew, incarnation=1)
        for m in self.members.values():
            self._refresh_view(m)

    # ------------------------------------------------------------------ set-up and faults
    def _start(self, name: str, skew_ms: int, incarnation: int) -> SimMember:
        now_ms = self._clock(skew_ms)
        node = EscrowNode(
            name, incarnation, self.limits.values(), self.epochs,
            Random(self.rng.getrandbits(64)), now_ms, self.config,
        )
        m = self.members[name] = SimMember(name, node, skew_ms, incarnation)
        self.processes.append(m)
        node.set_view(self._truth(name), now_ms)
        self._after(m)
        return m

    def partition(self, *groups: Iterable[str]) -> None:
        self._groups = {name: i for i, group in enumerate(groups) for name in group}
        self._views_follow()

    def heal(self) -> None:
        self._groups = {}
        self._views_follow()

    def crash(self, name: str) -> None:
        self.members[name].crashed = True
        self._views_follow()

    def drain(self, name: str) -> None:
        """``name`` announces it drains (every live member's view drops it at once) and
        hands its allowances back."""
        self._draining.add(name)
        for m in self.members.values():
            if self._current(m) and m.name != name:
                self._refresh_view(m)
        m = self.members[name]
        m.node.drain(self._clock(m.skew_ms))
        self._after(m)

    def restart(self, name: str) -> None:
        """A new process under the same name: a new incarnation with empty state, and so a
        new roster epoch (the old incarnation replaced by the new one)."""
        old = self.members[name]
        old.crashed = True
        gone, new = f"{name}:{old.incarnation}", f"{name}:{old.incarnation + 1}"
        self._new_epoch([m for m in self.epochs[max(self.epochs)] if m != gone] + [new])
        self._start(name, old.skew_ms, old.incarnation + 1)
        self._views_follow()
        self._epoch_follows(skip={name})

    def join(self, *names: str) -> None:
        """Scale-up: new members start at once (empty, knowing the new roster epoch); each
        existing member learns the new epoch, and sees them live, after its own
        failure-detection delay (or sooner, from a member that learnt it)."""
        self.names = [*self.names, *names]
        self._new_epoch([*self.epochs[max(self.epochs)], *(f"{n}:1" for n in names)])
        for name in names:
            self._start(name, self.rng.randint(-self.faults.skew_ms, self.faults.skew_ms), 1)
        self._epoch_follows(skip=set(names))
        # Each joiner started seeing only those started before it: like every member, it
        # sees the others after its failure detection's delay.
        lo, hi = self.faults.detect
        for name in names:
            m = self.members[name]
            self.at(self.now + self.rng.uniform(lo, hi), lambda m=m: self._refresh_view(m))

    def _new_epoch(self, members: Iterable[str]) -> None:
        self.epochs[max(self.epochs) + 1] = tuple(members)

    def _epoch_follows(self, skip: set[str]) -> None:
        lo, hi = self.faults.detect
        for m in list(self.members.values()):
            if self._current(m) and m.name not in skip:
                self.at(self.now + self.rng.uniform(lo, hi), lambda m=m: self._learn_roster(m))

    def _learn_roster(self, m: SimMember) -> None:
        if self._current(m):
            m.node.set_epochs(self.epochs, self._clock(m.skew_ms))
            self._refresh_view(m)

    def owner_of(self, lid: str) -> str | None:
        """The owner a majority-side member would pick now (truth, not a view)."""
        from rainbridge.counters.rendezvous import owner

        live = [n for n, m in self.members.items() if not m.crashed and n not in self._draining]
        return owner(lid, live)

    # ------------------------------------------------------------------ load
    def request(self, name: str, lid: str) -> None:
        m = self.members[name]
        self.requests[lid] += 1
        if m.crashed:
            self.unserved += 1
            return
        now_ms = self._clock(m.skew_ms)
        ws = m.node.window(lid, now_ms)[0]
        ticket = next(self._tickets)
        verdict = m.node.admit(lid, now_ms, ticket)
        if verdict is True:
            self._record(name, lid, ws, True)
        elif verdict is False:
            self._record(name, lid, ws, False)
        elif self.verdicts is not None:
            self._asked[ticket] = self.now
        self._after(m)

    def load(
        self, lid: str, rate: float, start: float, end: float, *, hot: str | None = None,
        hot_share: float = 0.0, targets: list[str] | None = None,
    ) -> None:
        """Poisson arrivals at ``rate``/s over [start, end); each to a random member (or to
        ``hot`` with probability ``hot_share``)."""
        names = targets or self.names
        t = start
        while True:
            t += self.rng.expovariate(rate)
            if t >= end:
                return
            if hot is not None and self.rng.random() < hot_share:
                target = hot
            else:
                target = self.rng.choice(names)
            self.at(t, lambda target=target: self.request(target, lid))

    # ------------------------------------------------------------------ clock
    def at(self, when: float, work: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (when, next(self._seq), work))

    def run_until(self, when: float) -> None:
        while self._queue and self._queue[0][0] <= when:
            t, _, work = heapq.heappop(self._queue)
            self.now = t
            work()
            if self.strict:
                self._track_outstanding()
        self.now = max(self.now, when)

    # ------------------------------------------------------------------ results
    def violations(self) -> dict[tuple[str, int], int]:
        """(lid, window) → admitted, wherever more than the limit was admitted."""
        return {k: v for k, v in self.admitted.items() if v > self.limits[k[0]].limit}

    def window_starts(self, lid: str, start: float, end: float) -> list[int]:
        """Window starts (ms) that lie wholly inside [start, end) of simulated time."""
        length = self.window_len(lid)
        first = START_MS + int(start * 1000)
        first += -first % length
        return list(range(first, START_MS + int(end * 1000) - length + 1, length))

    def _track_outstanding(self) -> None:
        totals: Counter[tuple[str, int]] = Counter()
        for m in self.processes:
            for key, a in m.node.allowances():
                totals[key] += a.granted - a.returned
        for key, v in totals.items():
            if v > self.peak_outstanding[key]:
                self.peak_outstanding[key] = v

    def window_len(self, lid: str) -> int:
        node = next(iter(self.members.values())).node
        ws, end = node.window(lid, START_MS)
        return end - ws

    def summary(self, start: float, end: float) -> dict[str, float]:
        """Coordination cost and under-admission over the windows wholly inside
        [start, end): messages per admitted request (all, and without the background
        push-pull), and how far admissions fell short of min(limit, requests offered)."""
        admitted = short = target = 0
        for lid, lim in self.limits.items():
            for ws in self.window_starts(lid, start, end):
                got = self.admitted[(lid, ws)]
                offered = got + self.refused[(lid, ws)]
                admitted += got
                target += min(lim.limit, offered)
                short += max(0, min(lim.limit, offered) - got)
        total = sum(self.messages.values())
        background = self.messages["FullState"]
        return {
            "admitted": admitted,
            "messages_per_admitted": total / max(1, admitted),
            "coordination_per_admitted": (total - background) / max(1, admitted),
            "under_admission_pct": 100 * short / max(1, target),
        }

    def stat(self, name: str) -> int:
        return sum(m.node.stats[name] for m in self.members.values())

    # ------------------------------------------------------------------ plumbing
    def _clock(self, skew_ms: int) -> int:
        return START_MS + round(self.now * 1000) + skew_ms

    def _sim_time(self, m: SimMember, local_ms: int) -> float:
        return (local_ms - m.skew_ms - START_MS) / 1000

    def _current(self, m: SimMember) -> bool:
        return not m.crashed and self.members.get(m.name) is m

    def _reachable(self, a: str, b: str) -> bool:
        ga, gb = self._groups.get(a), self._groups.get(b)
        return ga is None or gb is None or ga == gb

    def _truth(self, observer: str) -> set[str]:
        return {
            n for n, m in self.members.items()
            if not m.crashed and n not in self._draining and self._reachable(observer, n)
        } | {observer}

    def _views_follow(self) -> None:
        """Each live member's view catches up with the truth after a detection delay."""
        lo, hi = self.faults.detect
        for m in self.members.values():
            if self._current(m):
                self.at(self.now + self.rng.uniform(lo, hi), lambda m=m: self._refresh_view(m))

    def _refresh_view(self, m: SimMember) -> None:
        if not self._current(m):
            return
        m.node.set_view(self._truth(m.name), self._clock(m.skew_ms))
        self._after(m)

    def _record(self, name: str, lid: str, ws: int, ok: bool, asked: float | None = None) -> None:
        if ok:
            self.admitted[(lid, ws)] += 1
            self.admitted_by[(name, lid, ws)] += 1
            if self.admitted[(lid, ws)] == self.limits[lid].limit:
                self.reached[(lid, ws)] = self.now
                if self.on_reached is not None:
                    self.on_reached(lid, ws)
        else:
            self.refused[(lid, ws)] += 1
        if self.verdicts is not None:
            self.verdicts.append((self.now if asked is None else asked, self.now, name, lid, ws, ok))

    def _after(self, m: SimMember) -> None:
        node = m.node
        for ticket, ok, lid, ws in node.take_results():
            self._record(m.name, lid, ws, ok, self._asked.pop(ticket, None))  # type: ignore[call-overload]
        for send in node.take_outgoing():
            self._send(m, send)
        if not self._current(m):
            return
        when = max(self._sim_time(m, node.next_deadline()), self.now)
        if m.tick_at is None or when < m.tick_at:
            m.tick_at = when
            self.at(when, lambda: self._tick(m, when))

    def _tick(self, m: SimMember, when: float) -> None:
        if m.tick_at != when or not self._current(m):
            return
        m.tick_at = None
        m.node.tick(self._clock(m.skew_ms))
        self._after(m)

    def _send(self, src: SimMember, send: Send) -> None:
        f = self.faults
        kind = type(send.message).__name__
        self.messages[kind] += 1
        if self._sizer is not None:
            self.bytes[kind] += self._sizer(send.message)
        copies = 2 if f.duplicate and self.rng.random() < f.duplicate else 1
        for _ in range(copies):
            if f.loss and self.rng.random() < f.loss:
                continue
            if not self._reachable(src.name, send.to):
                continue
            delay = self.rng.uniform(*f.delay)
            self.at(self.now + delay, lambda: self._deliver(send.to, send.message, src.name))

    def _deliver(self, to: str, message: Message, sender: str) -> None:
        m = self.members.get(to)
        if m is None or not self._current(m) or not self._reachable(sender, to):
            return
        self.delivered[(to, type(message).__name__, getattr(message, "lid", None))] += 1
        m.node.handle(message, sender, self._clock(m.skew_ms))
        self._after(m)


def fault_scenario(
    seed: int, limits: Iterable[Limit], *, until: float = 45.0, strict: bool = False
) -> EscrowSim:
    """The seeded fault run: 3-20 members, 4x the limits' rate for 40 s (uniform or 80 % on
    one member), loss up to 25 %, duplication up to 5 %, delays up to 30 ms (reordering),
    ±2 s clock skew; a 1/3 : 2/3 partition at 7-14 s, then the owner of the first limit
    crashes at 17 s and restarts at 21 s."""
    limits = list(limits)
    r = Random(seed)
    n = r.randint(3, 20)
    faults = Faults(
        loss=r.uniform(0, 0.25), duplicate=r.uniform(0, 0.05),
        delay=(0.0005, r.uniform(0.002, 0.03)), skew_ms=2000,
    )
    sim = EscrowSim(n, limits, seed=seed, faults=faults, strict=strict)
    hot = r.choice(sim.names) if r.random() < 0.5 else None
    for lim in limits:
        sim.load(lim.lid, 4 * lim.limit / (sim.window_len(lim.lid) / 1000), 0, 40,
                 hot=hot, hot_share=0.8)
    names = list(sim.names)
    r.shuffle(names)
    cut = len(names) // 3
    sim.run_until(7)
    sim.partition(names[:cut], names[cut:])
    sim.run_until(14)
    sim.heal()
    sim.run_until(17)
    victim = sim.owner_of(limits[0].lid)
    if victim is not None:
        sim.crash(victim)
        sim.run_until(21)
        sim.restart(victim)
    sim.run_until(until)
    return sim


def chaos_scenario(seed: int, limits: Iterable[Limit], *, strict: bool = False) -> EscrowSim:
    """3-9 members, loss up to 30 %, 5 % duplicates, delays up to 30 ms, ±2 s skew, slow and
    uneven failure detection (0.2-2 s); every 0.3-2.5 s a random partition, heal, crash or
    restart, for 38 s of 4x load."""
    limits = list(limits)
    r = Random(seed)
    n = r.randint(3, 9)
    faults = Faults(
        loss=r.uniform(0, 0.3), duplicate=0.05, delay=(0.0005, 0.03), skew_ms=2000,
        detect=(0.2, 2.0),
    )
    sim = EscrowSim(n, limits, seed=seed, faults=faults, strict=strict)
    for lim in limits:
        sim.load(lim.lid, 4 * lim.limit / (sim.window_len(lim.lid) / 1000), 0, 40)
    t = 0.5
    while t < 38:
        t += r.uniform(0.3, 2.5)
        sim.run_until(t)
        event = r.random()
        names = list(sim.names)
        r.shuffle(names)
        if event < 0.3:
            cut = r.randint(1, n - 1)
            sim.partition(names[:cut], names[cut:])
        elif event < 0.5:
            sim.heal()
        elif event < 0.7:
            sim.crash(names[0])
        else:
            dead = [name for name, m in sim.members.items() if m.crashed]
            if dead:
                sim.restart(r.choice(dead))
    sim.run_until(45)
    return sim


def scale_up_scenario(seed: int, limits: Iterable[Limit], *, acceptors: int = 15,
                      fleet: int = 15) -> EscrowSim:
    """An autoscaler's bulk scale-up under 4x load: 2-6 members, loss up to 20 %, ±2 s skew,
    uneven failure detection; at 1-9 s a batch of new members joins at once, then a
    minority of the first members crashes, then a second batch joins, up to ``fleet``
    members in all."""
    limits = list(limits)
    r = Random(seed)
    n = r.randint(2, 6)
    faults = Faults(loss=r.uniform(0, 0.2), duplicate=0.02, delay=(0.0005, 0.03), skew_ms=2000,
                    detect=(0.2, 2.0))
    sim = EscrowSim(n, limits, seed=seed, faults=faults, config=EscrowConfig(acceptors=acceptors))
    for lim in limits:
        sim.load(lim.lid, 4 * lim.limit / (sim.window_len(lim.lid) / 1000), 0, 40)
    t = r.uniform(1, 9)
    sim.run_until(t)
    first = list(sim.names)
    batch = r.randint(1, max(1, fleet - n - 1))
    sim.join(*[f"j{i}" for i in range(batch)])
    t += r.uniform(0, 3)
    sim.run_until(t)
    for name in r.sample(first, r.randint(0, (len(first) - 1) // 2)):
        sim.crash(name)
    t += r.uniform(0, 5)
    sim.run_until(t)
    sim.join(*[f"k{i}" for i in range(r.randint(0, max(0, fleet - n - batch)))])
    sim.run_until(45)
    return sim
