"""Roster epochs: how a fleet changes the acceptor groups of its limits without losing a grant.

Why: each limit's grant ledger lives on an acceptor group drawn from the roster (the fleet's
member incarnations). When members see different rosters, an old owner keeps committing to
the old group while joiners form a quorum of the new one that never saw those commits, and
a new owner re-grants units that are still held (``bench/README.md``, "Bulk scale-ups").
Rosters must change in one agreed order, and a new group must take the ledgers over from
the old one before it acts. This is Vertical Paxos with the store as configuration master:

- **One sequence.** Roster epochs ``1, 2, …`` come from a single master (PostgreSQL in the
  gateway, ``fleet_epochs.py``; a list in the simulator): every member agrees what epoch
  ``e`` holds. Rosters list member *incarnations* (``name:boot``): a restart is a new member
  and so a new epoch, and a member never has to trust what it remembers across a crash.
- **Sealing.** Ballots start with their epoch. A member that learns epoch ``e`` refuses every
  promise and accept of an older epoch, so an old group commits nothing more once enough of
  it has moved on.
- **Verification.** A member is an acceptor of limit ``L`` in epoch ``e`` only once it is
  *verified* for ``L`` there. Starting at ``g = e - 1``, it merges the ledgers of a
  majority of ``G_g(L)`` (the group of ``L`` in epoch ``g``) that are *sealed* past ``g``.
  Every commit of ``g`` reached a majority of members verified in ``g``, so one of them is
  among those answers, with its ledger. If an answer was verified for ``L`` in an epoch
  ≥ ``g``, its ledger also holds every commit before ``g`` (it was verified the same way):
  done. If none was, nothing was committed in ``g`` at all, and the walk goes on with
  ``g - 1``. Every commit before ``e`` is then in its ledger; commits in ``e`` meet every
  later prepare in the usual majority intersection, since a verified incarnation never
  forgets what it accepted. Epoch 1 has nothing before it.
- **Liveness.** Members that epoch ``e``'s roster no longer lists (dead for good, left,
  replaced by their own restart) and that never answer count as answering with nothing
  once ``force_ms`` has passed since this member adopted ``e``: a fleet that lost most of an
  old group moves on. That is the one case where a committed grant may be lost (as when a
  majority of any Paxos group is lost); it is counted in ``forced``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rainbridge.counters import rendezvous

KEEP = 64  # roster epochs remembered (the walk back rarely goes past one or two)
RosterList = tuple[tuple[int, tuple[str, ...]], ...]  # (epoch, member ids), as messages carry them


def member_name(member: str) -> str:
    """``"n3:2"`` → ``"n3"`` (the member-incarnation id's member name)."""
    return member.rpartition(":")[0]


class Epochs:
    """One member's rosters by epoch, its verification per limit, and what the members it
    asked said about themselves. Pure bookkeeping: ``EscrowNode`` sends the messages."""

    __slots__ = ("_groups", "adopted_at", "epoch", "forced", "me", "replies", "rosters", "size", "verified")

    def __init__(self, me: str, size: int) -> None:
        self.me = me
        self.size = size  # members per acceptor group
        self.rosters: dict[int, tuple[str, ...]] = {}
        self.epoch = 0  # the newest epoch learnt: every older one is sealed here
        self.adopted_at = 0
        self.verified: dict[str, int] = {}  # lid → newest epoch this member was verified for it
        # member id → (its epoch, its verified map) when it last answered a SyncRequest
        self.replies: dict[str, tuple[int, Mapping[str, int]]] = {}
        self.forced = 0  # verifications that counted silent removed members as empty
        self._groups: dict[tuple[str, int], tuple[str, ...]] = {}

    def learn(self, rosters: Iterable[tuple[int, Iterable[str]]], now: int) -> bool:
        """Remember rosters; True when a newer epoch became current (the caller re-draws
        its groups and steps down from older ballots)."""
        for e, members in rosters:
            if e > 0 and e not in self.rosters:
                self.rosters[e] = tuple(sorted(members))
        for e in sorted(self.rosters)[:-KEEP]:
            del self.rosters[e]
        newest = max(self.rosters, default=0)
        if newest <= self.epoch:
            return False
        self.epoch = newest
        self.adopted_at = now
        self._groups = {k: v for k, v in self._groups.items() if k[1] in self.rosters}
        listed = {m for members in self.rosters.values() for m in members}
        self.replies = {m: r for m, r in self.replies.items() if m in listed}  # bounded by the rosters kept
        return True

    def recent(self) -> RosterList:
        """The current and the previous roster, as sync requests and news carry them."""
        return tuple((e, self.rosters[e]) for e in (self.epoch - 1, self.epoch) if e in self.rosters)

    @property
    def roster(self) -> tuple[str, ...]:
        return self.rosters.get(self.epoch, ())

    def group(self, lid: str, epoch: int | None = None) -> tuple[str, ...]:
        """Member ids of ``lid``'s acceptor group in ``epoch`` (default: the current one)."""
        e = self.epoch if epoch is None else epoch
        g = self._groups.get((lid, e))
        if g is None:
            g = self._groups[(lid, e)] = tuple(rendezvous.ranking(lid, self.rosters.get(e, ()))[: self.size])
        return g

    def in_group(self, lid: str) -> bool:
        return self.me in self.group(lid)

    def ready(self, lid: str) -> bool:
        """May act as acceptor of ``lid`` now (verified in the current epoch)."""
        return self.epoch > 0 and self.verified.get(lid) == self.epoch

    def note_reply(self, member: str, epoch: int, verified: Mapping[str, int]) -> None:
        known = self.replies.get(member)
        if known is None or epoch >= known[0]:
            self.replies[member] = (epoch, verified)

    def verify(self, lid: str, now: int, force_ms: int) -> set[str] | None:
        """Mark ``lid`` verified if the answers so far allow it: None when done (or when
        this member is not in the group), else the member ids whose answers are missing."""
        e = self.epoch
        if e == 0 or not self.in_group(lid):
            return None
        if self.verified.get(lid) == e:
            return None
        forcing = now - self.adopted_at >= force_ms
        current = set(self.roster)
        g = e - 1
        used_force = False
        while g >= 1:
            if g not in self.rosters:
                return set()  # history this member does not hold: the caller asks the master
            group = self.group(lid, g)
            need = len(group) // 2 + 1
            sealed = silent = 0
            covered = False
            missing = set()
            for mid in group:
                info = self._answer(mid)
                if info is None:
                    if forcing and mid not in current:
                        silent += 1  # removed from the roster and silent: see "Liveness"
                    missing.add(mid)
                    continue
                epoch, verified = info
                if epoch <= g:
                    missing.add(mid)  # not sealed past g yet: ask again
                    continue
                sealed += 1
                covered = covered or verified.get(lid, 0) >= g
            if sealed + silent < need:
                return missing
            used_force = used_force or sealed < need
            if covered:
                break
            g -= 1  # a sealed majority never verified in g: nothing was committed in g
        self.verified[lid] = e
        self.forced += used_force
        return None

    def _answer(self, mid: str) -> tuple[int, Mapping[str, int]] | None:
        if mid == self.me:
            return self.epoch, self.verified
        return self.replies.get(mid)
