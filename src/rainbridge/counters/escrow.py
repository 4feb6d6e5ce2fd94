"""Fleet-wide limits by escrow: a sans-IO state machine per member (owner, acceptor, member).

Not wired into the request path yet: this is the core, proven in ``escrow_sim.py``. Parts:
``crdt.py`` (usage and ledger merges), ``rendezvous.py`` (owner choice), ``acceptor.py``
(promises and ledgers), ``escrow_member.py`` (admission against allowances),
``escrow_messages.py``; this module composes them and runs the owner.

The rules
- Usage is a state-based CRDT per (limit, window, member-incarnation), merged by max and read
  as the sum (``crdt.UsageMap``). Units are integers (requests, tokens, micro-USD).
- Each limit ``lid`` has an **owner**: the rendezvous-hash winner among the live,
  non-draining members this member sees (``rendezvous.owner``). The owner grants
  **allowances** from ``limit − Σ outstanding`` (outstanding = granted − returned, per window,
  in the max-merged ``crdt.WindowLedger``), so Σ admitted ≤ Σ outstanding ≤ limit.
- A **member** admits locally while ``used + cost ≤ granted − returned`` (one compare); it
  asks for a top-up when its spare allowance falls below half of its last grant. An
  admission short of allowance waits (``wait_ms``, ≈ 50 ms) for a grant, then is refused.
- The owner grants ``min(free, max(waiting units, max(1, ceil(free / (2 × live members)))))``.
  Small limits therefore degrade to one unit per ask: the owner admits request by request.
- Before refusing, the owner **reclaims**: every member holding unused allowance hands it
  back (``Return``: cumulative ``returned``); only when a reclaim round has completed (or
  timed out) with nothing free does it send ``Deny``. So 200 requests against a limit of 50
  admit exactly 50 however the load is spread. Idle members hand allowance back unasked; a
  window's leftovers vanish with the window.

Fencing (owner epochs)
Each limit's ledger lives on an **acceptor group**: the first ``acceptors`` (5) members of
the roster by rendezvous rank, so a commit costs a round trip to 2-3 members whatever the
fleet's size. Grants are committed before they are sent: the owner pushes the window's
ledger (``Accept``) and sends ``Grant`` only once a majority of the group has merged it. A
would-be owner first collects ``Promise``\\ s (with their ledgers) from a majority of the
group for a higher ``Ballot`` (round, name) and adopts the grants of the highest ballot
among them (``WindowLedger.merge``): every committed grant is in that quorum, so it never
re-grants beyond ``limit − Σ granted``, and a deposed owner's uncommitted grants are not
summed in. Every acceptor that promised the new ballot refuses the old owner's ``Accept``,
so the old owner can commit nothing more. On taking over, the new owner re-commits what it
adopted and re-sends every member its grant (an accepted but undelivered grant is not
lost). A (re)started acceptor neither promises nor owns before a majority of the other
acceptors of its groups have sent it their ballots and ledgers (``SyncRequest``). Acceptors
only promise a new ballot while the current owner looks dead to them or the candidate is
the owner by their own view (members whose views differ would otherwise pre-empt each other
forever and grant nothing).

Partitions, crashes, clocks
- Partition: the side holding a majority of a limit's acceptor group keeps granting it (the
  member that side hashes to takes over once failure detection removes the old owner from
  its view); the other side commits nothing and spends only the allowances its members
  already hold (safe). With N ≤ 5 the group is the whole fleet, so "the majority side
  continues". (The issue's "the owner's side continues" holds when the owner is on that
  side; an owner cut off from its group stalls, since it cannot tell a partition from the
  others' crash.)
- Owner crash: grants stall until failure detection moves ownership, then one Prepare
  round resumes them. The crashed incarnation's unused allowance stays counted as
  outstanding until the window ends (under-admission, never overshoot).
- Clocks: each member computes windows from its own clock. An owner still serves a window
  ``2 × skew_ms`` past its end and one starting up to ``2 × skew_ms`` ahead, so a boundary
  request from a member whose clock is off lands in its own window's ledger; ledgers are
  dropped only ``6 × skew_ms`` after the end (later than any owner may still serve them).
- Retries (asks, accepts, prepares) back off from 15 ms (100 ms) doubling to 1 s (2 s).

The bound: for request counts Σ admitted ≤ Σ outstanding ≤ limit per window, at every
instant (tested for every seed under loss, duplication, reordering, a partition, owner
crash and restart, ±2 s skew). Tokens and spend will reserve an estimate at admission and
settle the real amount, so overshoot is at most what requests in flight use beyond their
reservation.

Left for the wiring slice: a transport (the cluster service's point-to-point channel or
gossip piggy-back, coalesced per key) and the awaited request/reply helper; a ``cap`` on
governance's ``Slot`` fed from ``Allowance`` (the hot path keeps its synchronous shape, the
bounded wait becomes an ``await`` only when short of allowance); tokens and spend with
reserve/settle (a settle below the reservation frees units: members must then re-ask
despite a cached refusal); a timer heap instead of scanning allowances in
``next_deadline``; the roster from cluster membership (acceptor groups move when it
changes: a hand-over must copy the ledger to the new group first); durability
(per-(key, window, member) rows with ``GREATEST`` upserts, and the promised ballot
persisted: today an acceptor that restarts and syncs from a majority that missed a newer
ballot could, in a concurrent election, accept an older owner's commit); operator status.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rainbridge.counters import rendezvous
from rainbridge.counters.acceptor import Acceptor
from rainbridge.counters.crdt import ZERO_BALLOT, Ballot, UsageMap, WindowLedger
from rainbridge.counters.epochs import Epochs, member_name
from rainbridge.counters.escrow_member import (
    Allowance,
    EscrowConfig,
    Limit,
    MemberSide,
    WKey,
    backoff,
)
from rainbridge.counters.escrow_messages import (
    Accept,
    Accepted,
    Ask,
    Deny,
    FullState,
    Grant,
    Message,
    Prepare,
    Promise,
    Reclaim,
    Return,
    RosterNews,
    Send,
    SyncReply,
    SyncRequest,
    UsageDelta,
)

__all__ = ["Allowance", "EscrowConfig", "EscrowNode", "Limit", "backoff", "grant_size"]

if TYPE_CHECKING:
    from random import Random  # injected; never the module's global state


@dataclass(eq=False, slots=True)
class _Ownership:
    ballot: Ballot = ZERO_BALLOT
    active: bool = False
    promises: set[str] = field(default_factory=set)
    retry_at: int = 0
    seen_round: int = 0
    tries: int = 0


@dataclass(eq=False, slots=True)
class _Commit:
    ballot: Ballot
    ledger: WindowLedger
    grants: dict[str, int]  # member → cumulative grant to send once committed
    acks: set[str]
    sent_at: int
    new_units: bool
    seq: int
    tries: int = 0


@dataclass(eq=False, slots=True)
class _ReclaimRound:
    started: int
    waiting: set[str]
    done_at: int | None = None
    # Asks refused after this round: served again if a late hand-back frees units.
    denied: dict[str, tuple[int, int]] = field(default_factory=dict)


def grant_size(free: int, want: int, live: int) -> int:
    """Units the owner grants one ask: enough for what waits, at least a fair share of
    half of what is free, never more than is free."""
    if free <= 0:
        return 0
    share = max(1, math.ceil(free / (2 * max(1, live))))
    return min(free, max(want, share))


class EscrowNode:
    """One member: it admits against its allowances, acts as acceptor for every limit's
    ledger, and owns the limits that hash to it. Drive it like ``cluster/state.py``: call
    ``admit`` / ``handle`` / ``set_view``, drain ``take_outgoing`` and ``take_results``, call
    ``tick(now)`` at ``next_deadline()``. Times are this member's wall clock in ms."""

    def __init__(
        self,
        name: str,
        incarnation: int,
        limits: Iterable[Limit],
        rosters: Mapping[int, Iterable[str]],
        rng: Random,
        now: int,
        config: EscrowConfig | None = None,
        *,
        resolve: Callable[[str], Limit | None] | None = None,
    ) -> None:
        """``rosters``: the roster epochs known so far (epoch → member ids ``name:boot``),
        from the one master that numbers them (``epochs.py``); each limit's acceptor group
        is drawn from the newest. ``resolve``: the definition of a limit this member has not
        met yet (a message for it arrived first), or None when it does not exist here."""
        self.name = name
        self.me = f"{name}:{incarnation}"
        self.limits = {lim.lid: lim for lim in limits}
        self.config = config or EscrowConfig()
        self._resolve = resolve
        self.epochs = Epochs(self.me, self.config.acceptors)
        self.epochs.learn(rosters.items(), now)
        # Each limit's acceptor group (member names): the first few of the current roster
        # by rendezvous rank.
        self.acceptors = {lid: self._group(lid) for lid in self.limits}
        self.draining = False
        self.live = frozenset(member_name(m) for m in self.roster) | {name}
        self.stats: Counter[str] = Counter()
        self._rng = rng
        self._outgoing: list[Send] = []
        self._inbox: deque[tuple[Message, str]] = deque()
        self.member = MemberSide(
            self.me, self.limits, self.config, self._send, self.owner_of, self.stats
        )
        self._usage: dict[WKey, UsageMap] = {}
        self.acceptor = Acceptor()
        self._own: dict[str, _Ownership] = {}
        self._pending: dict[WKey, dict[str, tuple[int, int]]] = {}
        self._commits: dict[WKey, _Commit] = {}
        self._reclaims: dict[WKey, _ReclaimRound] = {}
        self._handlers = {
            Ask: self._on_ask, Grant: self.member.on_grant, Deny: self.member.on_deny,
            Reclaim: self.member.on_reclaim, Return: self._on_return, UsageDelta: self._on_usage_delta,
            Prepare: self._on_prepare, Promise: self._on_promise, Accept: self._on_accept,
            Accepted: self._on_accepted, SyncRequest: self._on_sync_request,
            SyncReply: self._on_sync_reply, FullState: self._on_full_state,
        }
        self._handlers[RosterNews] = self._on_roster_news
        self._commit_seq = 0
        self._sync_nonce = rng.getrandbits(32)
        self._sync_at = now
        self._told: dict[str, int] = {}  # member name → newest epoch we sent it news of
        self._next_gossip = now + rng.randrange(self.config.gossip_ms)
        self._verify_all(now)
        self._refresh(now)
        self._pump(now)

    # ------------------------------------------------------------------ driver interface
    def take_outgoing(self) -> list[Send]:
        out, self._outgoing = self._outgoing, []
        return out

    def take_results(self) -> list[tuple[object, bool, str, int]]:
        """``(ticket, admitted, lid, window)`` of admissions that waited."""
        out, self.member.results = self.member.results, []
        return out

    def set_view(self, live: Iterable[str], now: int) -> None:
        """The live, non-draining members this member's failure detector sees."""
        self.live = frozenset(live) | ({self.name} if not self.draining else frozenset())
        self.member.owner_moved()
        self._refresh(now)
        self._pump(now)

    def drain(self, now: int) -> None:
        """Leaving (SIGTERM): stop owning, hand every unused unit back. Admissions still
        work against what it holds; the caller stops sending it new ones."""
        self.draining = True
        self.live = self.live - {self.name}
        self._refresh(now)
        self.member.give_back_all()
        self._pump(now)

    def add_limit(self, limit: Limit, now: int) -> None:
        """Learn (or update the value of) a limit; its acceptor group comes from the roster."""
        known = self.limits.get(limit.lid)
        self.limits[limit.lid] = limit
        if known is None:
            self.acceptors[limit.lid] = self._group(limit.lid)
            self._verify(limit.lid, now)
            self._refresh(now)
            self._pump(now)

    def set_epochs(self, rosters: Mapping[int, Iterable[str]], now: int) -> None:
        """Roster epochs from the master (``epochs.py``); a newer one seals the older ones."""
        self._learn(tuple(rosters.items()), now)
        self._pump(now)

    @property
    def roster(self) -> tuple[str, ...]:
        """Member ids of the current roster epoch."""
        return self.epochs.roster

    @property
    def epoch(self) -> int:
        return self.epochs.epoch

    @property
    def synced(self) -> bool:
        """Verified for every known limit whose acceptor group it is in (readiness)."""
        ep = self.epochs
        return ep.epoch > 0 and all(ep.ready(lid) or not ep.in_group(lid) for lid in self.limits)

    def _group(self, lid: str) -> tuple[str, ...]:
        return tuple(member_name(m) for m in self.epochs.group(lid))

    def handle(self, message: Message, sender: str, now: int) -> None:
        self._inbox.append((message, sender))
        self._pump(now)

    def next_deadline(self) -> int:
        c = self.config
        times = [self._next_gossip]
        if not self.synced:
            times.append(self._sync_at + c.sync_retry_ms)
            if self._sync_at < self.epochs.adopted_at + c.force_ms:
                times.append(self.epochs.adopted_at + c.force_ms)
        for o in self._own.values():
            if not o.active:
                times.append(o.retry_at)
        times.extend(cm.sent_at + self._accept_wait(cm) for cm in self._commits.values())
        times.extend(r.started + c.reclaim_ms for r in self._reclaims.values() if r.done_at is None)
        times.extend(self.member.deadlines())
        return min(times)

    def tick(self, now: int) -> None:
        c = self.config
        force_at = self.epochs.adopted_at + c.force_ms
        if not self.synced and (now >= self._sync_at + c.sync_retry_ms
                                or self._sync_at < force_at <= now):
            self._verify_all(now)
        self._refresh(now)
        for key, cm in list(self._commits.items()):
            if now >= cm.sent_at + self._accept_wait(cm):
                cm.tries += 1
                self._send_accept(key, cm, now)
        for key, r in list(self._reclaims.items()):
            if r.done_at is None and now >= r.started + c.reclaim_ms:
                r.done_at = now
                self._serve(key, now)
        self.member.tick(now)
        if now >= self._next_gossip:
            self._next_gossip = now + c.gossip_ms
            self._gossip(now)
            self._collect(now)
        self._pump(now)

    # ------------------------------------------------------------------ admission (member)
    def admit(self, lid: str, now: int, ticket: object, cost: int = 1) -> bool | None:
        """True: admitted; False: refused; None: waiting for a grant (the verdict comes
        out of ``take_results`` within ``wait_ms``)."""
        verdict = self.member.admit(lid, now, ticket, cost)
        self._pump(now)
        return verdict

    def window(self, lid: str, now: int) -> tuple[int, int]:
        return self.member.window(lid, now)

    def fleet_usage(self, lid: str, window: int) -> int:
        """This member's view of the fleet's usage of a window (the CRDT's sum)."""
        self._collect_one((lid, window))
        u = self._usage.get((lid, window))
        return u.total() if u is not None else 0

    def allowance(self, lid: str, window: int) -> Allowance | None:
        return self.member.allow.get((lid, window))

    def allowances(self) -> list[tuple[WKey, Allowance]]:
        return list(self.member.allow.items())

    def _accept_wait(self, cm: _Commit) -> int:
        return backoff(self.config.accept_retry_ms, cm.tries, self.config.retry_cap_ms)

    @property
    def live(self) -> frozenset[str]:
        return self._live

    @live.setter
    def live(self, members: frozenset[str]) -> None:
        self._live = members
        self._owners: dict[str, str | None] = {}  # owner per limit in this view (hashing is O(members))

    def owner_of(self, lid: str) -> str | None:
        owners = self._owners
        if lid in owners:
            return owners[lid]
        owner = owners[lid] = rendezvous.owner(lid, self._live)
        return owner

    def owns(self, lid: str) -> bool:
        o = self._own.get(lid)
        return o is not None and o.active

    def _refresh(self, now: int) -> None:
        """Take up or give up ownership as the view says."""
        for lid in self.limits:
            mine = self._may_own(lid) and not self.draining and self.owner_of(lid) == self.name
            o = self._own.get(lid)
            if not mine:
                if o is not None:
                    self._step_down(lid, None, now, forget=True)
                continue
            if o is None:
                o = self._own[lid] = _Ownership(retry_at=now)
            if not o.active and now >= o.retry_at:
                self._prepare(lid, o, now)

    def _prepare(self, lid: str, o: _Ownership, now: int) -> None:
        promised = self.acceptor.promised_for(lid)
        epoch = self.epochs.epoch
        seen = promised.round if promised.epoch == epoch else 0
        o.ballot = Ballot(epoch, max(seen, o.seen_round) + 1, self.name)
        self.acceptor.promise(lid, o.ballot)
        o.promises = {self.name} & set(self.acceptors[lid]) if self.epochs.ready(lid) else set()
        wait = backoff(self.config.prepare_retry_ms, o.tries, 2 * self.config.retry_cap_ms)
        o.retry_at = now + int(wait * (1 + self._rng.random()))
        o.tries += 1
        self.stats["prepares"] += 1
        for n in self.acceptors[lid]:
            if n != self.name:
                self._send(n, Prepare(lid, o.ballot))
        self._maybe_activate(lid, o, now)

    def _maybe_activate(self, lid: str, o: _Ownership, now: int) -> None:
        if o.active or len(o.promises) < self.majority(lid):
            return
        o.active = True
        o.tries = 0
        self.stats["takeovers"] += 1
        # Adopt what the majority knew (highest ballot's grants) under our ballot, re-commit
        # it and re-send every member its grant.
        for ws, led in list(self.acceptor.windows(lid).items()):
            led.ballot = o.ballot
            if self._servable(lid, ws, now):
                grants = {m: g for m, g in led.granted.items() if g and member_name(m) in self.live}
                self._start_commit((lid, ws), grants, now, new_units=False)
        for key in list(self._pending):
            if key[0] == lid:
                self._serve(key, now)

    def _step_down(self, lid: str, promised: Ballot | None, now: int, forget: bool = False) -> None:
        o = self._own.get(lid)
        if o is None:
            return
        if forget:
            del self._own[lid]
        else:
            o.active = False
            if promised is not None and promised.epoch == o.ballot.epoch:
                o.seen_round = max(o.seen_round, promised.round)
            o.retry_at = now + int(self.config.prepare_retry_ms * (1 + self._rng.random()))
        for table in (self._pending, self._commits, self._reclaims):
            for key in [k for k in table if k[0] == lid]:
                del table[key]

    def _end_of(self, lid: str, ws: int) -> int:
        return self.limits[lid].window_at(ws)[1]

    def _servable(self, lid: str, ws: int, now: int) -> bool:
        """Grants for this window are still (or already) allowed (clock-skew slack)."""
        slack = 2 * self.config.skew_ms
        return ws <= now + slack and self._end_of(lid, ws) + slack > now

    def _on_ask(self, m: Ask, sender: str, now: int) -> None:
        o = self._own.get(m.lid)
        if o is None or m.lid not in self.limits:
            return  # not the owner in this view: the member re-asks whoever it sees
        self._usage_of((m.lid, m.window)).set_own(m.member, m.used)
        led = self.acceptor.ledger(m.lid, m.window)
        if m.returned > led.returned.get(m.member, 0):
            led.returned[m.member] = m.returned
        if not self._servable(m.lid, m.window, now):
            self._send(sender, Deny(m.lid, m.window, m.member))
            return
        self._pending.setdefault((m.lid, m.window), {})[m.member] = (m.want, m.granted)
        if o.active:
            self._serve((m.lid, m.window), now)

    def _serve(self, key: WKey, now: int) -> None:
        """Grant what the pending asks of one window need, reclaim, or refuse."""
        o = self._own.get(key[0])
        pend = self._pending.get(key)
        if o is None or not o.active or not pend or key in self._commits:
            return
        led = self.acceptor.ledger(*key)
        if led.ballot != o.ballot:
            if led.ballot > o.ballot:
                self._step_down(key[0], led.ballot, now)
                return
            led.ballot = o.ballot  # a window no acceptor of our quorum had: nothing granted
        free = self._free(key, led)
        live = len(self.live)
        grants: dict[str, int] = {}
        new_units = False
        for member, (want, seen) in list(pend.items()):
            current = led.granted.get(member, 0)
            if seen > current:  # the ledger lost it (its acceptors restarted): count it again
                free = max(0, free - (seen - current))
                led.granted[member] = current = seen
            if seen < current:  # a grant it has not seen yet: send it again
                grants[member] = current
                del pend[member]
                continue
            units = grant_size(free, want, live)
            if units:
                free -= units
                new_units = True
                grants[member] = led.granted[member] = current + units
                del pend[member]
        if grants:
            self._start_commit(key, grants, now, new_units=new_units)
        if pend:
            self._exhausted(key, pend, now)

    def _free(self, key: WKey, led: WindowLedger) -> int:
        """What may still be granted: the limit minus what members hold, minus the usage of
        incarnations the ledger does not know (a previous life's, loaded from the store or
        gossiped): what they admitted is never granted again."""
        usage = self._usage_of(key).by_member
        granted = led.granted
        taken = led.outstanding() + sum(
            used for member, used in usage.items() if member not in granted
        )
        return max(0, self.limits[key[0]].limit - taken)

    def _exhausted(self, key: WKey, pend: dict[str, tuple[int, int]], now: int) -> None:
        """Nothing free for these asks: reclaim unused allowance first, refuse after."""
        r = self._reclaims.get(key)
        if r is not None and r.done_at is not None and now - r.done_at > self.config.deny_cache_ms:
            r = None  # an old round: members may hold unused allowance again
        if r is None:
            led = self.acceptor.ledger(*key)
            usage = self._usage_of(key).by_member
            targets = {
                m for m in led.granted
                if m not in pend and member_name(m) in self.live
                and led.held(m) > usage.get(m, 0)
            }
            r = self._reclaims[key] = _ReclaimRound(now, targets)
            self.stats["reclaims"] += 1
            for m in sorted(targets):
                self._send(member_name(m), Reclaim(key[0], key[1], m))
            if not targets:
                r.done_at = now
        if r.done_at is None:
            return
        for member in list(pend):
            r.denied[member] = pend.pop(member)
            self.stats["denies"] += 1
            self._send(member_name(member), Deny(key[0], key[1], member))

    def _on_return(self, m: Return, sender: str, now: int) -> None:
        key = (m.lid, m.window)
        self._usage_of(key).set_own(m.member, m.used)
        if m.lid not in self._own:
            return
        led = self.acceptor.ledger(*key)
        if m.returned > led.returned.get(m.member, 0):
            led.returned[m.member] = m.returned
        r = self._reclaims.get(key)
        if r is not None and r.done_at is None:
            r.waiting.discard(m.member)
            if not r.waiting:
                r.done_at = now
        elif r is not None and r.denied and self._free(key, led) > 0:
            # A hand-back that came after the round refused someone: serve them now
            # (the grant lifts their cached refusal).
            self.stats["late_returns"] += 1
            pend = self._pending.setdefault(key, {})
            for member, (want, _) in r.denied.items():
                # As if it had seen its current grant: it gets new units, not a re-send.
                pend.setdefault(member, (max(want, 1), led.granted.get(member, 0)))
            r.denied.clear()
        self._serve(key, now)

    def _start_commit(self, key: WKey, grants: dict[str, int], now: int, new_units: bool) -> None:
        o = self._own[key[0]]
        acks = {self.name} & set(self.acceptors[key[0]]) if self.epochs.ready(key[0]) else set()
        self._commit_seq += 1
        ledger = self.acceptor.ledger(*key).copy()
        cm = _Commit(o.ballot, ledger, grants, acks, -1, new_units, self._commit_seq)
        self._commits[key] = cm
        self.stats["commits"] += 1
        self._send_accept(key, cm, now)
        self._maybe_committed(key, cm, now)

    def _send_accept(self, key: WKey, cm: _Commit, now: int) -> None:
        """First to just enough live acceptors for a majority, then, if acks are missing,
        to every acceptor not acked yet."""
        lid = key[0]
        first = cm.sent_at == -1
        cm.sent_at = now
        msg = Accept(lid, cm.ballot, key[1], cm.ledger, cm.seq)
        group = self.acceptors[lid]
        if first:
            need = self.majority(lid) - len(cm.acks)
            live = [n for n in group if n in self.live and n not in cm.acks]
            if len(live) >= need:
                for n in live[:need]:
                    self._send(n, msg)
                return
        for n in group:
            if n not in cm.acks:
                self._send(n, msg)

    def _on_accepted(self, m: Accepted, sender: str, now: int) -> None:
        key = (m.lid, m.window)
        cm = self._commits.get(key)
        if cm is None or m.ballot != cm.ballot or m.seq != cm.seq:
            return  # an answer to an earlier commit (late or duplicated)
        if not m.ok:
            self._step_down(m.lid, m.promised, now)
            return
        cm.acks.add(sender)
        self._maybe_committed(key, cm, now)

    def _maybe_committed(self, key: WKey, cm: _Commit, now: int) -> None:
        if len(cm.acks) < self.majority(key[0]) or self._commits.get(key) is not cm:
            return
        del self._commits[key]
        for member, granted in cm.grants.items():
            self.stats["grants"] += 1
            self._send(member_name(member), Grant(key[0], key[1], member, granted))
        if cm.new_units:
            self._reclaims.pop(key, None)  # new allowance is out: a later refusal reclaims again
        self._serve(key, now)

    # ------------------------------------------------------------------ acceptor
    def _acceptor_for(self, lid: str, ballot: Ballot, sender: str, now: int) -> bool | None:
        """Whether to judge a ballot of ``lid`` as its acceptor: True yes; False refuse (an
        older epoch: sealed); None ignore (a newer epoch not learnt yet, or not verified
        yet: the sender retries)."""
        ep = self.epochs
        if ballot.epoch < ep.epoch:
            self._tell(sender, ballot.epoch)
            return False
        if ballot.epoch > ep.epoch or not ep.in_group(lid):
            return None
        if not ep.ready(lid):
            self._verify(lid, now)
            return None if not ep.ready(lid) else True
        return True

    def _on_prepare(self, m: Prepare, sender: str, now: int) -> None:
        judge = self._acceptor_for(m.lid, m.ballot, sender, now)
        if judge is None:
            return
        promised = self.acceptor.promised_for(m.lid)
        if not judge:
            self._send(sender, Promise(m.lid, m.ballot, False, promised))
            return
        if not self._may_take_over(m.lid, promised, sender) or not self.acceptor.promise(m.lid, m.ballot):
            self._send(sender, Promise(m.lid, m.ballot, False, promised))
            return
        self._yield_to(m.lid, m.ballot, now)
        self._send(sender, Promise(m.lid, m.ballot, True, m.ballot, self.acceptor.snapshot(m.lid)))

    def _may_take_over(self, lid: str, promised: Ballot, sender: str) -> bool:
        """Stickiness: while the current owner looks live here, only the member this view
        hashes to may replace it (two members with different views would otherwise keep
        pre-empting each other's ballots and grant nothing)."""
        current = promised.owner
        return (
            not current or current == sender or current not in self.live
            or self.owner_of(lid) == sender
        )

    def _on_accept(self, m: Accept, sender: str, now: int) -> None:
        judge = self._acceptor_for(m.lid, m.ballot, sender, now)
        if judge is None:
            return
        promised = self.acceptor.promised_for(m.lid)
        if not judge or not self.acceptor.promise(m.lid, m.ballot):
            self._send(sender, Accepted(m.lid, m.ballot, m.window, m.seq, False, promised))
            return
        self._yield_to(m.lid, m.ballot, now)
        if sender != self.name:
            self.acceptor.ledger(m.lid, m.window).merge(m.ledger)
        self._send(sender, Accepted(m.lid, m.ballot, m.window, m.seq, True, m.ballot))

    def _yield_to(self, lid: str, ballot: Ballot, now: int) -> None:
        """Another member holds a newer ballot: stop granting under ours."""
        o = self._own.get(lid)
        if o is not None and o.ballot < ballot:
            self._step_down(lid, ballot, now)

    def _on_promise(self, m: Promise, sender: str, now: int) -> None:
        o = self._own.get(m.lid)
        if o is None or o.active or m.ballot != o.ballot:
            return
        if not m.ok:
            if m.promised.epoch == o.ballot.epoch:
                o.seen_round = max(o.seen_round, m.promised.round)
            return
        self.acceptor.absorb(m.lid, m.ledgers)
        o.promises.add(sender)
        self._maybe_activate(m.lid, o, now)

    # ------------------------------------------------------------------ sync and gossip
    def majority(self, lid: str) -> int:
        return len(self.acceptors[lid]) // 2 + 1

    # ------------------------------------------------------------------ roster epochs
    def _may_own(self, lid: str) -> bool:
        """An owner in its limit's acceptor group must be verified there (its own promise
        and acks count); one outside it only needs to know the epoch."""
        ep = self.epochs
        return ep.epoch > 0 and (ep.ready(lid) or not ep.in_group(lid))

    def _learn(self, rosters: Iterable[tuple[int, Iterable[str]]], now: int) -> None:
        """Remember rosters; move to a newer epoch: seal the older ones (every ballot of
        ours is now old: step down), re-draw the groups, verify for the new one."""
        if not self.epochs.learn(rosters, now):
            return
        self.stats["epochs"] += 1
        for lid in list(self._own):
            self._step_down(lid, None, now, forget=True)
        self.acceptors = {lid: self._group(lid) for lid in self.limits}
        self._sync_nonce += 1
        self._verify_all(now)
        self._refresh(now)

    def _verify_all(self, now: int) -> None:
        """Verify every known limit for the current epoch, asking whoever's answer is missing
        (once per ``sync_retry_ms``)."""
        self._sync_at = now
        ask: set[str] = set()
        for lid in self.limits:
            missing = self.epochs.verify(lid, now, self.config.force_ms)
            if missing:
                ask |= missing
        self._ask_sync(ask)

    def _verify(self, lid: str, now: int) -> None:
        missing = self.epochs.verify(lid, now, self.config.force_ms)
        if missing and now >= self._sync_at + self.config.sync_retry_ms:
            self._sync_at = now
            self._ask_sync(missing)

    def _ask_sync(self, members: Iterable[str]) -> None:
        request = SyncRequest(self._sync_nonce, self.epochs.recent())
        for name in sorted({member_name(m) for m in members} - {self.name}):
            self._send(name, request)

    def _tell(self, name: str, their_epoch: int) -> None:
        """``name`` used an older epoch: send it the newer rosters (once per epoch)."""
        if name != self.name and self._told.get(name, 0) < self.epochs.epoch:
            self._told[name] = self.epochs.epoch
            self._send(name, RosterNews(self.epochs.recent()))

    def _on_roster_news(self, m: RosterNews, sender: str, now: int) -> None:
        self._learn(m.rosters, now)

    def _on_sync_request(self, m: SyncRequest, sender: str, now: int) -> None:
        self._learn(m.rosters, now)  # sealing: the asker's epoch first
        ep = self.epochs
        lids = set(self.limits) | set(self.acceptor.ledgers) | set(ep.verified)
        states = tuple(
            (lid, self.acceptor.promised_for(lid), ep.verified.get(lid, 0), self.acceptor.snapshot(lid))
            for lid in sorted(lids)
        )
        self._send(sender, SyncReply(m.nonce, self.me, ep.epoch, ep.recent(), states))

    def _on_sync_reply(self, m: SyncReply, sender: str, now: int) -> None:
        if member_name(m.member) != sender:
            return
        self._learn(m.rosters, now)
        for lid, promised, _, ledgers in m.states:
            self.acceptor.absorb(lid, ledgers, promised)
        self.epochs.note_reply(m.member, m.epoch, {lid: v for lid, _, v, _ in m.states if v})
        was = self.synced
        for lid in self.limits:
            self.epochs.verify(lid, now, self.config.force_ms)
        if self.synced and not was:
            self.stats["verified"] += 1
        self._refresh(now)

    def _usage_of(self, key: WKey) -> UsageMap:
        u = self._usage.get(key)
        if u is None:
            u = self._usage[key] = UsageMap()
        return u

    def _collect_one(self, key: WKey) -> None:
        a = self.member.allow.get(key)
        if a is not None and a.reported_usage():
            self._usage_of(key).set_own(self.me, a.reported_usage())

    def _collect(self, now: int) -> None:
        """Own usage into the usage CRDT; forget windows long ended."""
        gc = 6 * self.config.skew_ms
        for key in self.member.allow:
            self._collect_one(key)
        self.member.forget(lambda end: end + gc < now)
        for key in list(self._usage):
            if self._end_of(*key) + gc < now:
                del self._usage[key]
        self.acceptor.forget(lambda lid, ws: self._end_of(lid, ws) + gc < now)
        for table in (self._pending, self._commits, self._reclaims):
            for key in [k for k in table if self._end_of(*k) + gc < now]:
                del table[key]

    def _gossip(self, now: int) -> None:
        """Coalesced usage deltas to the owners, and one push-pull of the usage CRDT."""
        for lid, ws, used in self.member.moved_usage():
            owner = self.owner_of(lid)
            if owner is not None:
                self._send(owner, UsageDelta(lid, ws, self.me, used))
        peers = sorted(self.live - {self.name})
        if peers:
            self._send(self._rng.choice(peers), self._full_state(reply=False))

    def full_state(self) -> FullState:
        """The usage CRDT of every window held, as push-pull carries it (the operator
        view measures its encoded size)."""
        return self._full_state(reply=False)

    def _full_state(self, reply: bool) -> FullState:
        for key in self.member.allow:
            self._collect_one(key)
        usage = tuple(
            (lid, ws, tuple(u.by_member.items())) for (lid, ws), u in self._usage.items()
        )
        return FullState(usage, reply)

    def _known(self, lid: str, now: int) -> bool:
        """Whether this member knows limit ``lid``, learning it through ``resolve`` if it
        can (a message about it came before any of its own requests used it)."""
        if lid in self.limits:
            return True
        limit = self._resolve(lid) if self._resolve is not None else None
        if limit is None:
            return False
        self.limits[lid] = limit
        self.acceptors[lid] = self._group(lid)
        self._verify(lid, now)
        # Take up its ownership now when it hashes here (an Ask for it may be on its way or
        # be this very message): otherwise the Ask is dropped and ownership waits for the
        # next tick, up to ``gossip_ms`` later, which outlasts an admission's wait for its grant.
        self._refresh(now)
        return True

    def _on_full_state(self, m: FullState, sender: str, now: int) -> None:
        for lid, ws, entries in m.usage:
            if self._known(lid, now):
                u = self._usage_of((lid, ws))
                for member, used in entries:
                    u.set_own(member, used)
        if not m.reply:
            self._send(sender, self._full_state(reply=True))

    # ------------------------------------------------------------------ plumbing
    def _send(self, to: str, message: Message) -> None:
        if to == self.name:
            self._inbox.append((message, to))
        else:
            self.stats["sent"] += 1
            self._outgoing.append(Send(to, message))

    def _pump(self, now: int) -> None:
        """Handle queued messages, including the ones this member sent itself."""
        while self._inbox:
            message, sender = self._inbox.popleft()
            self._dispatch(message, sender, now)

    def _dispatch(self, m: Message, sender: str, now: int) -> None:
        lid = getattr(m, "lid", None)
        if lid is not None and not self._known(lid, now):
            return  # a limit this member does not know (yet): the sender retries
        self._handlers[type(m)](m, sender, now)

    def _on_usage_delta(self, m: UsageDelta, sender: str, now: int) -> None:
        self._usage_of((m.lid, m.window)).set_own(m.member, m.used)
