"""This member's inference traffic in three running totals (requests, errors, latency),
read by the dashboard and by other members' status pages; rates come from two reads.

Deliberately tiny: two adds and one subtraction per request, no labels (per-label numbers
are the Prometheus metrics' job)."""

from __future__ import annotations

import time


class Traffic:
    __slots__ = ("errors", "latency_s", "requests", "started")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0  # answered with a status >= 400 (or cut before an answer)
        self.latency_s = 0.0  # sum of request durations, seconds
        self.started = time.time()

    def note(self, status: int, started: float) -> None:
        """One finished request: its status and its ``time.perf_counter()`` start."""
        self.requests += 1
        if status >= 400 or status == 0:
            self.errors += 1
        self.latency_s += time.perf_counter() - started

    def snapshot(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "latency_ms_total": int(self.latency_s * 1000),
            "uptime_s": int(time.time() - self.started),
        }
