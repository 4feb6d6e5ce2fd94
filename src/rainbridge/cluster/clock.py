"""Wall-clock offsets between members, measured NTP-style over the cluster's request/reply.

Why: rate-limit windows are cut from each member's own wall clock (the escrow tolerates
``EscrowConfig.skew_ms`` of skew), so an operator must see how far apart the clocks are.

Estimate: this member asks a member for its wall time (request ``clock``, empty payload;
the reply is the member's wall time in µs, ``>q``). With ``sent`` our wall time at the
send, ``rtt`` the round trip (monotonic clock) and ``remote`` its reading, taken somewhere
within the round trip: ``offset = remote − (sent + rtt / 2)``, and the true offset lies
within ``± rtt / 2`` (``error``), whatever the delays each way. Of a member's last
``SAMPLES`` samples the one with the lowest RTT is shown: queueing only widens the bound.

Work, bounded for big fleets: every ``interval`` seconds (5) this member probes at most
``per_round`` (3) members, those probed longest ago first (never probed first), so a
member answers about ``per_round`` probes per interval whatever the fleet's size, and a
fleet of N is measured fully every ``ceil(N / per_round)`` rounds. A lost probe is not
retried (a retry's round trip would only widen the bound); the next round tries again.

Warning: when a member's clock is surely more than ``WARN_SKEW_S`` (1 s) off ours
(``|offset| − error > 1 s``), once per member per ``WARN_EVERY_S`` (10 minutes).
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from .rpc import RequestError

log = logging.getLogger("rainbridge.cluster")

KIND = "clock"
SAMPLES = 8  # per member: the lowest-RTT one of these is the estimate
INTERVAL_S = 5.0
PER_ROUND = 3
TIMEOUT_S = 1.0
WARN_SKEW_S = 1.0
WARN_EVERY_S = 600.0
_MICROS = struct.Struct(">q")

# request(member, kind, payload, timeout) -> reply payload (ClusterService.request)
Request = Callable[[str, str, bytes, float], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class Sample:
    offset: float  # seconds: the member's wall clock minus ours
    error: float  # seconds: the true offset is within offset ± error
    taken: float  # our monotonic time


def estimate(sent: float, rtt: float, remote: float) -> tuple[float, float]:
    """``(offset, error)`` in seconds from our wall time at the send, the round trip and
    the member's wall time (see the module docstring)."""
    half = max(0.0, rtt) / 2
    return remote - (sent + half), half


def encode_time(wall: float) -> bytes:
    return _MICROS.pack(round(wall * 1_000_000))


def decode_time(payload: bytes) -> float:
    """Seconds; ``ValueError`` when the payload is not 8 bytes."""
    if len(payload) != _MICROS.size:
        raise ValueError(f"a clock reply is {_MICROS.size} bytes, got {len(payload)}")
    return _MICROS.unpack(payload)[0] / 1_000_000


class _Member:
    __slots__ = ("identity", "samples", "tried_at", "warned_at")

    def __init__(self, identity: str) -> None:
        self.identity = identity  # node id (name + boot): a restart starts over
        self.samples: deque[Sample] = deque(maxlen=SAMPLES)
        self.tried_at = -math.inf
        self.warned_at: float | None = None


class ClockOffsets:
    """Samples per member and the estimate, warning and scheduling rules (no I/O)."""

    def __init__(self, *, warn_skew: float = WARN_SKEW_S, warn_every: float = WARN_EVERY_S) -> None:
        self.warn_skew = warn_skew
        self.warn_every = warn_every
        self._members: dict[str, _Member] = {}

    def tried(self, name: str, identity: str, now: float) -> None:
        """A probe of the member starts (``pick`` puts it at the back of the line)."""
        self._member(name, identity).tried_at = now

    def record(self, name: str, identity: str, sample: Sample) -> None:
        self._member(name, identity).samples.append(sample)

    def _member(self, name: str, identity: str) -> _Member:
        m = self._members.get(name)
        if m is None or m.identity != identity:
            m = self._members[name] = _Member(identity)
        return m

    def best(self, name: str) -> Sample | None:
        """The lowest-RTT sample of the member's last ``SAMPLES``, or None."""
        m = self._members.get(name)
        if m is None or not m.samples:
            return None
        return min(m.samples, key=lambda s: s.error)

    def offsets(self) -> dict[str, Sample]:
        return {name: s for name in self._members if (s := self.best(name)) is not None}

    def pick(self, names: Iterable[str], count: int) -> list[str]:
        """The ``count`` members probed longest ago (never probed first; then by name): a
        member that does not answer waits its turn like the others."""

        def last(name: str) -> float:
            m = self._members.get(name)
            return m.tried_at if m is not None else -math.inf

        return sorted(names, key=lambda n: (last(n), n))[:count]

    def forget_except(self, names: Iterable[str]) -> None:
        """Drop members no longer in the view (the table never outgrows the membership)."""
        keep = set(names)
        for name in [n for n in self._members if n not in keep]:
            del self._members[name]

    def due_warning(self, name: str, now: float) -> Sample | None:
        """The estimate when the member's clock is surely off by more than ``warn_skew`` and
        it was not warned about within ``warn_every`` (the warning is then taken)."""
        s = self.best(name)
        m = self._members.get(name)
        if s is None or m is None or abs(s.offset) - s.error <= self.warn_skew:
            return None
        if m.warned_at is not None and now - m.warned_at < self.warn_every:
            return None
        m.warned_at = now
        return s


class ClockProbe:
    """Probes members on a timer and answers their probes (see the module docstring).

    ``members()``: ``(name, identity)`` of the live members to measure, this one excluded.
    """

    def __init__(
        self,
        request: Request,
        members: Callable[[], list[tuple[str, str]]],
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        interval: float = INTERVAL_S,
        per_round: int = PER_ROUND,
        timeout: float = TIMEOUT_S,
    ) -> None:
        self._request = request
        self._members = members
        self.wall = wall
        self._monotonic = monotonic
        self.interval = interval
        self.per_round = per_round
        self.timeout = timeout
        self.offsets = ClockOffsets()
        self.failures = 0  # probes without a usable reply

    def answer(self, requester: str, payload: bytes) -> bytes:
        """The ``clock`` request handler: our wall time."""
        return encode_time(self.wall())

    async def probe(self, name: str, identity: str) -> Sample | None:
        sent, start = self.wall(), self._monotonic()
        self.offsets.tried(name, identity, start)
        try:
            reply = await self._request(name, KIND, b"", self.timeout)
            remote = decode_time(reply)
        except (RequestError, ValueError) as exc:  # no (usable) reply: the next round retries
            self.failures += 1
            log.debug("cluster: clock probe of %s failed: %s", name, exc)
            return None
        end = self._monotonic()
        offset, error = estimate(sent, end - start, remote)
        sample = Sample(offset, error, end)
        self.offsets.record(name, identity, sample)
        self._maybe_warn(name, end)
        return sample

    async def round(self) -> None:
        members = dict(self._members())
        self.offsets.forget_except(members)
        picked = self.offsets.pick(members, self.per_round)
        await asyncio.gather(*(self.probe(name, members[name]) for name in picked))

    async def run(self) -> None:
        while True:
            await self.round()
            await asyncio.sleep(self.interval)

    def _maybe_warn(self, name: str, now: float) -> None:
        s = self.offsets.due_warning(name, now)
        if s is not None:
            log.warning(
                "cluster: the wall clock of member %s is %+.0f ms off this member's (± %.0f ms); "
                "rate-limit windows are cut from wall clocks: check NTP on both hosts",
                name, s.offset * 1000, s.error * 1000,
            )
