"""The counters interface governance uses, whatever keeps the numbers (one node or a fleet).

A counter is identified by a ``(scope, id, metric, window_start)`` tuple (``Key``), e.g.
``("vk", "vk_1", "requests", 1732530000000)``, and lives in a ``Slot``:

- ``committed``: usage of every node (a grow-only counter per window);
- ``others``: the part of ``committed`` other nodes reported, so this process's own usage
  (what it flushes) is ``committed - others``: the request path adds to one number only;
- ``reserved``: held by this process's requests in flight (never shared).

Governance looks a key's slots up once per window and then works on them directly: admission
checks ``committed + reserved`` against each limit and reserves, all without an ``await``
(so one event loop admits atomically); usage is added to ``committed`` in place. Nothing is
queued per request: the flush looks for slots whose own usage changed.
"""

from __future__ import annotations

from typing import Protocol

INFINITY = float("inf")

# (scope, id, metric, window_start): scope vk | team | customer | budget; metric requests |
# tokens | spend; window_start in epoch ms.
Key = tuple[str, str, str, int]


class Slot:
    __slots__ = ("committed", "end_ms", "flushed", "key", "low", "others", "reserved")

    def __init__(self, key: Key, end_ms: int = 0) -> None:
        self.key = key
        self.end_ms = end_ms  # when the window ends (0: not known yet, e.g. loaded from the store)
        # Request and token counts stay ints (cheap to format into headers); spend is USD.
        self.committed: float = 0  # every node's usage: this process's own plus ``others``
        self.others: float = 0  # what other nodes (and earlier incarnations) reported
        self.reserved: float = 0  # held by requests in flight on this process
        self.flushed: float = 0  # this process's usage as last written to the store
        # Fleet limits (``fleet.py``): up to this value of ``committed`` (plus reservations,
        # for tokens) this process admits on its own allowance; past it, admission asks the
        # fleet. A single node has no such bound.
        self.low: float = INFINITY

    @property
    def own(self) -> float:
        """This process's usage: what it flushes."""
        return self.committed - self.others


class Counters(Protocol):
    shared: bool  # limits are shared with other members (cluster mode)

    def slot(self, key: Key, end_ms: int) -> Slot:
        """The live counter of one window (created empty on first use)."""

    def value(self, key: Key) -> float:
        """Committed usage of every node (without reservations)."""

    def reserved(self, key: Key) -> float: ...

    def bind(self, slot: Slot, lid: str, limit: float, duration: str, cost_reserved: bool,
             scale: int = 1, aligned: bool = True, anchor: int = 0) -> None:
        """The slot counts against the fleet-wide limit ``lid`` (a no-op on a single node)."""

    def reach(self, slot: Slot, cost: float) -> bool:
        """Admission past ``slot.low``: True to admit, False when the fleet refused (may
        raise ``fleet.AwaitGrant``)."""

    def refused(self) -> None:
        """A governed request was refused by a limit (counted by fleet counters for the
        operator; nothing on a single node)."""
