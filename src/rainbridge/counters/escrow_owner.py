"""The owner role of fleet-wide counters (mixed into ``EscrowNode``; the rules are in
``escrow.py``): take a limit over with a ballot (Prepare, Promise), serve asks from what is
free, commit every grant through the limit's acceptor group before sending it, reclaim
unused allowance before refusing."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rainbridge.counters.crdt import ZERO_BALLOT, Ballot, WindowLedger
from rainbridge.counters.epochs import member_name
from rainbridge.counters.escrow_member import WKey, backoff
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




class OwnerRole:
    """Owning limits: what ``EscrowNode`` does for the limits that hash to it."""

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
        for table in (self._pending, self._commits, self._reclaims, self._taken):
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
        self._taken.setdefault((m.lid, m.window), {})[m.member] = m.taken
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
        """Nothing free for these asks: reclaim unused allowance first, refuse after. Only
        members that may hold some are asked: what a member has taken (its usage, and what
        its requests in flight hold, as it last said) cannot come back, so a fleet at its
        limit counting requests in flight is refused at once, not after a round that
        waits on busy members for nothing."""
        r = self._reclaims.get(key)
        if r is not None and r.done_at is not None and now - r.done_at > self.config.deny_cache_ms:
            r = None  # an old round: members may hold unused allowance again
        if r is None:
            led = self.acceptor.ledger(*key)
            usage = self._usage_of(key).by_member
            taken = self._taken.get(key, {})
            targets = {
                m for m in led.granted
                if m not in pend and member_name(m) in self.live
                and led.held(m) > max(usage.get(m, 0), taken.get(m, 0))
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
        self._taken.setdefault(key, {})[m.member] = m.taken
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
