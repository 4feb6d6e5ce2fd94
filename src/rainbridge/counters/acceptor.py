"""The acceptor side of fleet-wide counters: one member's promised ballots and the grant
ledgers it merged (see ``escrow.py`` for why grants go through a majority of acceptors).

Pure bookkeeping, no messages sent from here: ``EscrowNode`` asks it whether to promise or
accept and replies with what it returns. The two rules:

- ``promise(lid, ballot)``: never go back to an older ballot (fencing a deposed owner);
- ledgers only ever merge (``WindowLedger.merge``, a join), so accepting twice, late or out
  of order changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from rainbridge.counters.crdt import ZERO_BALLOT, Ballot, WindowLedger

Snapshot = tuple[tuple[int, WindowLedger], ...]  # (window start, ledger) of one limit


class Acceptor:
    __slots__ = ("ledgers", "promised")

    def __init__(self) -> None:
        self.promised: dict[str, Ballot] = {}
        self.ledgers: dict[str, dict[int, WindowLedger]] = {}

    def promised_for(self, lid: str) -> Ballot:
        return self.promised.get(lid, ZERO_BALLOT)

    def promise(self, lid: str, ballot: Ballot) -> bool:
        """Promise ``ballot`` (or keep promising it); False if a newer one was promised."""
        if ballot < self.promised_for(lid):
            return False
        self.promised[lid] = ballot
        return True

    def ledger(self, lid: str, window: int) -> WindowLedger:
        per = self.ledgers.setdefault(lid, {})
        led = per.get(window)
        if led is None:
            led = per[window] = WindowLedger()
        return led

    def windows(self, lid: str) -> dict[int, WindowLedger]:
        return self.ledgers.get(lid, {})

    def snapshot(self, lid: str) -> Snapshot:
        """Copies of one limit's ledgers, safe to hand to a message."""
        return tuple((ws, led.copy()) for ws, led in self.windows(lid).items())

    def absorb(self, lid: str, ledgers: Snapshot, promised: Ballot = ZERO_BALLOT) -> None:
        """Merge ledgers (and a newer promise) learnt from a peer."""
        if promised > self.promised_for(lid):
            self.promised[lid] = promised
        for ws, led in ledgers:
            self.ledger(lid, ws).merge(led)

    def state(self, lids: Iterable[str]) -> tuple[tuple[str, Ballot, Snapshot], ...]:
        """Every limit's promise and ledgers, for a member that syncs after a restart."""
        return tuple((lid, self.promised_for(lid), self.snapshot(lid)) for lid in lids)

    def forget(self, ended: Callable[[str, int], bool]) -> None:
        """Drop the ledgers of windows ``ended(lid, window)`` says are over."""
        for lid, per in self.ledgers.items():
            for ws in [ws for ws in per if ended(lid, ws)]:
                del per[ws]
