"""The counters interface governance uses, whatever keeps the numbers (one node or a fleet).

A counter is identified by a ``(scope, id, metric, window_start)`` tuple (``Key``), e.g.
``("vk", "vk_1", "requests", 1732530000000)``. Its value is the sum of every node's slot
(a grow-only counter per window: each node only adds to its own slot), plus what is
reserved by requests in flight. Admission is check-and-reserve over several counters at
once, all or nothing; settlement turns reservations into actual usage.
"""

from __future__ import annotations

from typing import Protocol

# (scope, id, metric, window_start): scope vk | team | customer | budget; metric requests |
# tokens | spend; window_start in epoch ms. A plain tuple: made on every request.
Key = tuple[str, str, str, int]


class Reservation:
    __slots__ = ("amounts", "keys", "open", "slots")

    def __init__(self, keys: list[Key], amounts: list[float], slots: list | None = None):
        self.keys = keys
        self.amounts = amounts
        self.slots = slots  # the implementation's counter objects, when it has them
        self.open = True


class Counters(Protocol):
    def value(self, key: Key) -> float:
        """Committed usage of every node (without reservations)."""

    def reserved(self, key: Key) -> float: ...

    def reserve(self, keys: list[Key], amounts: list[float], limits: list[float], strict: list[bool], totals: list[float]) -> Reservation | int:
        """Reserve ``amounts[i]`` on ``keys[i]`` for every i, or nothing.

        ``strict[i]``: the amount must fit (used + reserved + amount <= limit), for request and
        token counts. Otherwise there only has to be room left (used + reserved < limit), for
        budgets, whose cost is only known after the answer: a budget is overshot at most by the
        requests in flight when it filled up. Returns the index of the first check that fails;
        on success ``totals`` receives each counter's used + reserved after reserving.
        """

    def settle(self, reservation: Reservation, actual: list[float]) -> None:
        """Replace the reserved amounts by actual usage (same order as the keys). Once only."""
