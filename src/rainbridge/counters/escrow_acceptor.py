"""The acceptor role of fleet-wide counters and its roster epochs (mixed into
``EscrowNode``; the rules are in ``escrow.py`` and ``epochs.py``): judge ballots (promise,
accept, or refuse an older epoch), move to newer roster epochs, and verify against the
previous group before acting (sync requests and replies)."""

from __future__ import annotations

from collections.abc import Iterable

from rainbridge.counters.crdt import Ballot
from rainbridge.counters.epochs import member_name
from rainbridge.counters.escrow_messages import (
    Accept,
    Accepted,
    Prepare,
    Promise,
    RosterNews,
    SyncReply,
    SyncRequest,
)


class AcceptorRole:
    """Holding limits' ledgers: what ``EscrowNode`` does as a member of acceptor groups."""

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
