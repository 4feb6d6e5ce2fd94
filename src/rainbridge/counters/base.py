"""The counters interface governance uses, whatever keeps the numbers (one node or a fleet).

A counter is identified by ``Key(scope, id, metric, window_start)``, e.g.
``("vk", "vk_1", "requests", 1732530000000)``. Its value is the sum of every node's slot
(a grow-only counter per window: each node only adds to its own slot), plus what is
reserved by requests in flight. Admission is check-and-reserve over several counters at
once, all or nothing; settlement turns reservations into actual usage.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol


class Key(NamedTuple):
    scope: str  # vk | team | customer | budget
    id: str
    metric: str  # requests | tokens | spend
    window_start: int  # epoch ms


class Need(NamedTuple):
    """One check of an admission: ``amount`` more on ``key`` against ``limit``.

    ``strict``: the amount must fit (used + reserved + amount <= limit), for request and
    token counts. Otherwise there only has to be room left (used + reserved < limit), for
    budgets, whose cost is only known after the answer: a budget is overshot at most by the
    requests in flight when it filled up.
    """

    key: Key
    amount: float
    limit: float
    strict: bool = True


class Reservation:
    __slots__ = ("amounts", "keys", "open")

    def __init__(self, keys: list[Key], amounts: list[float]):
        self.keys = keys
        self.amounts = amounts
        self.open = True


class Counters(Protocol):
    def value(self, key: Key) -> float:
        """Committed usage of every node (without reservations)."""

    def reserved(self, key: Key) -> float: ...

    def reserve(self, needs: list[Need]) -> Reservation | int:
        """Reserve every need, or none: returns the index of the first need that does not fit."""

    def settle(self, reservation: Reservation, actual: list[float]) -> None:
        """Replace the reserved amounts by actual usage (same order as the needs). Once only."""
