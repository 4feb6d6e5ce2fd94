"""Per-provider concurrency limit with a waiting queue (``concurrency``, ``buffer_size``).

A slot is taken without an ``await`` when one is free, so the common case costs a compare
and an increment. When all slots are busy the request waits in FIFO order; if
``buffer_size`` requests already wait and ``drop_excess_requests`` is on, it is refused
with 429 at once, otherwise it waits too (backpressure, as Bifrost does).
"""

from __future__ import annotations

import asyncio
from collections import deque

from ..errors import QueueFull


class ProviderQueue:
    def __init__(self, provider: str, concurrency: int, buffer_size: int, drop_excess: bool):
        self.provider = provider
        self.concurrency = concurrency
        self.buffer_size = buffer_size
        self.drop_excess = drop_excess
        self.active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> None:
        if self.active < self.concurrency and not self._waiters:
            self.active += 1
            return
        if self.drop_excess and len(self._waiters) >= self.buffer_size:
            raise QueueFull(
                f"provider {self.provider} is at its concurrency limit ({self.concurrency}) and "
                f"its queue is full ({self.buffer_size} waiting); retry later",
                code="queue_full",
                headers=[(b"retry-after", b"1")],
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # release() hands its slot over by resolving this future
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot arrived as we were cancelled: pass it on
            else:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.active -= 1
