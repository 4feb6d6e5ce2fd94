"""The counters interface governance uses, whatever keeps the numbers (one node or a fleet).

A counter is identified by a ``(scope, id, metric, window_start)`` tuple (``Key``), e.g.
``("vk", "vk_1", "requests", 1732530000000)``, and lives in a ``Slot``:

- ``committed``: usage of every node (a grow-only counter per window: each node only adds
  to its own share, ``own``, and learns the others' from the store or the fleet);
- ``reserved``: held by this process's requests in flight (never shared).

Governance looks a key's slots up once per window and then works on them directly: admission
checks ``committed + reserved`` against each limit and reserves, all without an ``await``
(so one event loop admits atomically). Usage is recorded with ``add``, or, on the request
path, by adding to ``committed`` and ``own`` in place and calling ``mark`` when the slot was
clean: either way the slot is queued once for the next flush.
"""

from __future__ import annotations

from typing import Protocol

# (scope, id, metric, window_start): scope vk | team | customer | budget; metric requests |
# tokens | spend; window_start in epoch ms.
Key = tuple[str, str, str, int]


class Slot:
    __slots__ = ("committed", "dirty", "key", "own", "reserved")

    def __init__(self, key: Key) -> None:
        self.key = key
        # Request and token counts stay ints (cheap to format into headers); spend is USD.
        self.committed: float = 0  # every node's usage: this process's own plus what others report
        self.reserved: float = 0  # held by requests in flight on this process
        self.own: float = 0  # this process's usage: what it flushes
        self.dirty = False  # changed since the last flush


class Counters(Protocol):
    def slot(self, key: Key) -> Slot:
        """The live counter of one window (created empty on first use)."""

    def add(self, slot: Slot, amount: float) -> None:
        """Usage this process saw: counts in ``committed`` and ``own`` and is flushed."""

    def mark(self, slot: Slot) -> None:
        """``own`` of a clean slot was changed directly (the hot path adds in place)."""

    def value(self, key: Key) -> float:
        """Committed usage of every node (without reservations)."""

    def reserved(self, key: Key) -> float: ...
