"""Fleet-wide limits by escrow: a sans-IO state machine per member (owner, acceptor, member).

The core, proven in ``escrow_sim.py`` and driven on the event loop by ``fleet.py``. Parts:
``crdt.py`` (usage and ledger merges), ``rendezvous.py`` (owner choice), ``acceptor.py``
(promises and ledgers), ``epochs.py`` (roster epochs), ``escrow_member.py`` (admission
against allowances), ``escrow_owner.py`` and ``escrow_acceptor.py`` (the two roles),
``escrow_messages.py``; this module composes them and drives the timers and gossip.

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
  timed out) with nothing free does it send ``Deny``. Asks and Returns say what the member
  has **taken** (usage plus what its requests in flight hold), so a member whose allowance
  is all taken is not asked: a fleet at its limit, counting requests in flight, is refused
  at once. So 200 requests against a limit of 50
  admit exactly 50 however the load is spread. Idle members hand allowance back unasked; a
  window's leftovers vanish with the window.

Fencing (owner epochs)
Each limit's ledger lives on an **acceptor group**: the first ``acceptors`` members of
the current roster epoch by rendezvous rank, so a commit costs a round trip to 2-3 members whatever the
fleet's size. Grants are committed before they are sent: the owner pushes the window's
ledger (``Accept``) and sends ``Grant`` only once a majority of the group has merged it. A
would-be owner first collects ``Promise``\\ s (with their ledgers) from a majority of the
group for a higher ``Ballot`` (epoch, round, name) and adopts the grants of the highest ballot
among them (``WindowLedger.merge``): every committed grant is in that quorum, so it never
re-grants beyond ``limit − Σ granted``, and a deposed owner's uncommitted grants are not
summed in. Every acceptor that promised the new ballot refuses the old owner's ``Accept``,
so the old owner can commit nothing more. On taking over, the new owner re-commits what it
adopted and re-sends every member its grant (an accepted but undelivered grant is not
lost). Rosters change only through numbered epochs (``epochs.py``): a joiner, a restarted
member (a new incarnation, so a new epoch) and every member moving to a new epoch neither
promise nor accept before they merged the ledgers of a sealed majority of the previous
group (``SyncRequest``), and a member in a newer epoch refuses every older ballot. Acceptors
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
crash and restart, bulk scale-ups, ±2 s skew). Tokens and spend will reserve an estimate at admission and
settle the real amount, so overshoot is at most what requests in flight use beyond their
reservation.

Left: a timer heap instead of scanning allowances in ``next_deadline``.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from rainbridge.counters import rendezvous
from rainbridge.counters.acceptor import Acceptor
from rainbridge.counters.crdt import UsageMap
from rainbridge.counters.epochs import Epochs, member_name
from rainbridge.counters.escrow_acceptor import AcceptorRole
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
from rainbridge.counters.escrow_owner import (
    OwnerRole,
    _Commit,
    _Ownership,
    _ReclaimRound,
    grant_size,
)

__all__ = ["Allowance", "EscrowConfig", "EscrowNode", "Limit", "backoff", "grant_size"]

if TYPE_CHECKING:
    from random import Random  # injected; never the module's global state


class EscrowNode(OwnerRole, AcceptorRole):
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
        self._taken: dict[WKey, dict[str, int]] = {}  # member → allowance taken, as it last said
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
        """Learn (or update the value or windows of) a limit; its acceptor group comes from
        the roster."""
        known = self.limits.get(limit.lid)
        self.limits[limit.lid] = limit
        self.member.windows_changed(limit.lid)
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

    # ------------------------------------------------------------------ sync and gossip
    def majority(self, lid: str) -> int:
        return len(self.acceptors[lid]) // 2 + 1

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
        for table in (self._pending, self._commits, self._reclaims, self._taken):
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
