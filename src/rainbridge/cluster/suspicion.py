"""A Lifeguard suspicion timer, sans-IO: it holds a deadline instead of a running timer.

The timer starts at ``high`` (``low`` when no confirmations are expected) and shrinks
logarithmically towards ``low`` as independent members confirm the suspicion
(memberlist ``suspicion.go``). The owner reads ``deadline`` and fires it from ``tick``.
"""

from __future__ import annotations

from rainbridge.cluster.timers import suspicion_total_timeout


class Suspicion:
    __slots__ = ("_confirmed_by", "deadline", "extended", "high", "k", "low", "n", "start")

    def __init__(self, sender: str, k: int, low: float, high: float, start: float) -> None:
        self.k = k
        self.low = low
        self.high = high
        self.start = start
        self.n = 0
        self.extended = False  # given a grace period because we slept through the deadline
        # The accuser is not a confirmation: our own suspicion may be gossiped back to us.
        self._confirmed_by = {sender}
        self.deadline = start + suspicion_total_timeout(0, k, low, high)

    def confirm(self, sender: str) -> bool:
        """Count ``sender``'s independent suspicion. True if it was new (re-gossip it)."""
        if self.n >= self.k or sender in self._confirmed_by:
            return False
        self._confirmed_by.add(sender)
        self.n += 1
        self.deadline = self.start + suspicion_total_timeout(self.n, self.k, self.low, self.high)
        return True
