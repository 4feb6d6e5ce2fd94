"""Discovery rounds: ask every source for candidates, filter them, join the new ones.

- **Sources**: ``cluster_config.peers`` (the static backend, names re-resolved each round)
  and the backend ``discovery.type`` names; either may be absent.
- **When**: every ``interval_seconds``; at once when a member is lost (``wake``); after a
  round in which a backend failed, later: ``round_delay`` doubles the interval per failed
  round in a row, up to ``MAX_BACKOFF`` (a server that is down is not hammered).
- **Filter** (``CandidateFilter``), before any packet is sent: an IP literal, a port, not
  unspecified, inside ``allowed_address_space``. A rejected address is logged once (with
  the reason) and counted by reason.
- **Join**: candidates that are not ourselves and not a live or suspect member are joined
  (one push-pull each). An address whose join failed waits ``join_backoff`` rounds before
  the next attempt, so a stale record (a pod that is gone) costs one TCP connect now and
  then, not every round.
A failing source never raises out of a round: its last candidates stand, its health says
why, and the other sources still count.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable

from ..addresses import AddressSpace, format_address
from .base import Address, Discovery

log = logging.getLogger("rainbridge.cluster.discovery")

MAX_BACKOFF = 60.0  # seconds between rounds at most while a backend fails
JOIN_BACKOFF_MAX = 8  # rounds skipped at most after failed joins of one address
LOGGED_REJECTIONS = 4096  # distinct rejected addresses remembered (each logged once)


def round_delay(interval: float, failures: int, cap: float = MAX_BACKOFF) -> float:
    """Seconds to the next round: ``interval`` when healthy, doubled per failed round in a
    row, never above ``max(cap, interval)``."""
    if failures <= 0:
        return interval
    return min(interval * 2 ** min(failures, 16), max(cap, interval))


def join_backoff(failures: int) -> int:
    """Rounds to skip an address after ``failures`` failed joins in a row: 0, 1, 3, 7, 8 ..."""
    return min(2**failures - 1, JOIN_BACKOFF_MAX) if failures > 0 else 0


class CandidateFilter:
    """Which candidates may be contacted; the reason for each that may not."""

    def __init__(self, space: AddressSpace) -> None:
        self.space = space
        self.rejected: Counter[str] = Counter()  # by reason key
        self._logged: OrderedDict[Address, None] = OrderedDict()

    def reason(self, address: Address) -> tuple[str, str] | None:
        """None when allowed, else (reason key, text for the log)."""
        ip_text, port = address
        try:
            ip = ipaddress.ip_address(ip_text)
        except ValueError:
            return "not_ip", "not an IP address"
        if not isinstance(port, int) or not 0 < port < 65536:
            return "bad_port", f"port {port!r} is not 1-65535"
        if ip.is_unspecified or ip.is_multicast:
            return "unusable", "unspecified or multicast address"
        if not self.space.allows_ip(ip_text):
            nets = ", ".join(str(n) for n in self.space.networks)
            return "address_space", f"outside allowed_address_space ({nets})"
        return None

    def admit(self, candidates: Iterable[Address], source: str) -> list[Address]:
        out = []
        for address in candidates:
            found = self.reason(address)
            if found is None:
                out.append(address)
                continue
            key, text = found
            self.rejected[key] += 1
            if address not in self._logged:
                self._logged[address] = None
                if len(self._logged) > LOGGED_REJECTIONS:
                    self._logged.popitem(last=False)
                log.warning(
                    "cluster discovery: %s candidate %s rejected: %s",
                    source, format_address(address), text,
                )
        return out


class DiscoveryRunner:
    """Runs rounds over ``sources``; ``join(addresses)`` → how many answered."""

    def __init__(
        self,
        sources: list[Discovery],
        space: AddressSpace,
        join: Callable[[list[Address]], Awaitable[int]],
        known: Callable[[], set[Address]],
        interval: float,
    ) -> None:
        self.sources = sources
        self.filter = CandidateFilter(space)
        self._join = join
        self._known = known
        self.interval = interval
        self.stats: Counter[str] = Counter()
        self.last_round: float | None = None  # wall clock
        self._wake = asyncio.Event()
        self._join_failures: dict[Address, int] = {}
        self._skip: dict[Address, int] = {}
        self._was_healthy: dict[str, bool] = {}

    @property
    def failures(self) -> int:
        """Failed rounds in a row of the worst source (0 when all are healthy)."""
        return max((s.health.failures for s in self.sources), default=0)

    async def start(self) -> None:
        for source in self.sources:
            await source.start()

    async def stop(self) -> None:
        for source in self.sources:
            try:
                await source.stop()
            except Exception:  # one backend's failed cleanup must not skip the others'
                log.exception("cluster discovery: stopping %s failed", source.name)

    def settled(self) -> bool:
        """Every source has had a fair look (``Discovery.settled``); true without sources."""
        return all(s.settled() for s in self.sources)

    def wake(self) -> None:
        """A member was lost: run a round now (the loop is waiting for this)."""
        self._wake.set()

    async def candidates(self) -> list[Address]:
        """One round's allowed candidates from every source (deduplicated, in order)."""
        found: dict[Address, None] = {}
        for source in self.sources:
            try:
                got = await source.candidates()
            except Exception as exc:  # the interface says never raise; a bug must not kill us
                source.health.healthy = False
                source.health.failures += 1
                source.health.last_error = f"{type(exc).__name__}: {exc}"[:200]
                log.exception("cluster discovery: %s failed", source.name)
                self.stats["source_errors"] += 1
                continue
            self._log_health(source)
            for address in self.filter.admit(got, source.name):
                found[address] = None
        self.stats["rounds"] += 1
        self.last_round = time.time()
        return list(found)

    def _log_health(self, source: Discovery) -> None:
        """Log a backend's change between healthy and degraded (not every failed round)."""
        healthy = source.health.healthy
        if self._was_healthy.get(source.name, True) != healthy:
            if healthy:
                log.info("cluster discovery: %s recovered", source.name)
            else:
                log.warning(
                    "cluster discovery: %s degraded (%s); keeping known members, retrying "
                    "with backoff", source.name, source.health.last_error,
                )
        self._was_healthy[source.name] = healthy

    async def run_round(self) -> int:
        """Candidates, then join those that are new; returns how many joins succeeded."""
        candidates = await self.candidates()
        self.stats["candidates"] = len(candidates)
        known = self._known()
        targets = []
        for address in candidates:
            if address in known:
                self._join_failures.pop(address, None)
                continue
            skip = self._skip.get(address, 0)
            if skip > 0:
                self._skip[address] = skip - 1
                continue
            targets.append(address)
        if not targets:
            return 0
        results = await asyncio.gather(*(self._join([a]) for a in targets))
        joined = 0
        for address, ok in zip(targets, results, strict=True):
            if ok:
                joined += 1
                self._join_failures.pop(address, None)
                self._skip.pop(address, None)
            else:
                n = self._join_failures.get(address, 0) + 1
                self._join_failures[address] = n
                self._skip[address] = join_backoff(n)
        self.stats["joins"] += joined
        self.stats["join_failures"] += len(targets) - joined
        if joined:
            log.info("cluster discovery: joined %d new candidate(s) of %d", joined, len(targets))
        self._forget_stale(set(candidates))
        return joined

    def _forget_stale(self, current: set[Address]) -> None:
        for table in (self._join_failures, self._skip):
            for address in [a for a in table if a not in current]:
                del table[address]

    async def run(self) -> None:
        """Rounds until cancelled; see the module docstring for when."""
        while True:
            delay = round_delay(self.interval, self.failures)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            await self.run_round()

    def report(self) -> dict[str, object]:
        """The ``discovery`` block of ``/api/cluster/status``."""
        backends = []
        for source in self.sources:
            h = source.health
            backends.append({
                "backend": h.backend,
                "status": "healthy" if h.healthy else "degraded",
                "last_error": h.last_error,
                "last_success": h.last_success,
                "failures": h.failures,
                "candidates": h.candidates,
                **h.extra,
            })
        degraded = any(not s.health.healthy for s in self.sources)
        return {
            "status": "degraded" if degraded else "healthy",
            "interval_seconds": self.interval,
            "next_round_seconds": round_delay(self.interval, self.failures),
            "rounds": self.stats["rounds"],
            "candidates": self.stats["candidates"],
            "joins": self.stats["joins"],
            "join_failures": self.stats["join_failures"],
            "rejected": dict(self.filter.rejected),
            "last_round": self.last_round,
            "backends": backends,
        }
