"""Lifeguard's local health ("awareness"): how well this node keeps up with the protocol.

A score in [0, max_multiplier - 1]; 0 is healthy. Missed nacks and having to refute raise
it, successful probes lower it; probe interval and timeout scale by ``score + 1``
(memberlist ``awareness.go``).
"""

from __future__ import annotations

from rainbridge.cluster.timers import clamp_health_score, health_multiplier


class Awareness:
    __slots__ = ("max_multiplier", "score")

    def __init__(self, max_multiplier: int) -> None:
        self.max_multiplier = max_multiplier
        self.score = 0

    def apply_delta(self, delta: int) -> None:
        self.score = clamp_health_score(self.score + delta, self.max_multiplier)

    @property
    def multiplier(self) -> int:
        return health_multiplier(self.score)

    def scale(self, timeout: float) -> float:
        return timeout * self.multiplier
