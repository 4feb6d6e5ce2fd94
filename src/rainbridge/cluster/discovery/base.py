"""The one interface every discovery backend implements, and its health report.

A backend finds *candidates*: gossip addresses that may be other members. It never joins
or contacts them itself; the cluster service filters them through the allowed address
space and joins. A backend that fails (API down, NXDOMAIN, server unreachable) keeps its
last good candidates, retries with backoff and says so in :attr:`Discovery.health`; it
never raises out of :meth:`candidates` and never stops a running node.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field

Address = tuple[str, int]  # (ip literal, gossip port); hostnames are resolved by the backend


@dataclass(slots=True)
class DiscoveryHealth:
    """What ``/api/cluster/status`` and the metrics show per backend."""

    backend: str
    healthy: bool = True
    last_error: str | None = None  # a short reason, never a secret (tokens, passwords)
    last_success: float | None = None  # wall-clock seconds of the last good round
    failures: int = 0  # consecutive failed rounds; 0 when healthy
    candidates: int = 0  # how many candidates the last good round found
    extra: dict[str, object] = field(default_factory=dict)


class Discovery(abc.ABC):
    """Start, current candidates, stop. Implementations are asyncio-native."""

    name: str = "discovery"

    def __init__(self) -> None:
        self.health = DiscoveryHealth(self.name)

    async def start(self) -> None:  # noqa: B027 (optional hook: most backends need it)
        """Begin finding (open watches, register ourselves, start announcing).

        Raises :class:`DiscoveryConfigError` only for a configuration that can never
        work; a server that is merely down is retried, not raised."""

    @abc.abstractmethod
    async def candidates(self) -> list[Address]:
        """The addresses found so far (deduplicated, without our own). Never raises:
        on failure it returns the last good list and records the error in ``health``."""

    async def stop(self) -> None:  # noqa: B027 (optional hook)
        """Stop watches and background tasks; deregister/revoke what ``start`` made."""

    def settled(self) -> bool:
        """Whether an empty candidate list now means nobody is there (so a lone member may
        report ready at once): a look-up backend has answered once. Backends that only hear
        announcements (udp, mdns) override this to wait for a round of them as well."""
        return self.health.last_success is not None

    def report(self, addresses: Iterable[Address], me: Address) -> list[Address]:
        """``addresses`` without duplicates and without ``me``, counted in ``health`` while
        the backend is healthy (a degraded one keeps the count of its last good round)."""
        found = [a for a in dict.fromkeys(addresses) if a != me]
        if self.health.healthy:
            self.health.candidates = len(found)
        return found


async def cancel(task: asyncio.Task | None) -> None:
    """Cancel a backend's background task and wait for it to end."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class DiscoveryConfigError(ValueError):
    """A discovery configuration that can never work; the message names the field."""


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def dial_timeout_seconds(value: str | float | None, default: float = 5.0) -> float:
    """``discovery.dial_timeout`` in seconds: a number of seconds or a Go duration of one
    unit ("500ms", "10s", "1m"), as Bifrost's config writes it. Raises
    :class:`DiscoveryConfigError` naming the field for anything else."""
    if value is None:
        return default
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip()
        unit = next((u for u in ("ms", "s", "m", "h") if text.endswith(u)), None)
        number = text[: -len(unit)] if unit else text
        try:
            seconds = float(number) * (_DURATION_UNITS[unit] if unit else 1.0)
        except ValueError:
            seconds = -1.0
    if not 0 < seconds <= 300:
        raise DiscoveryConfigError(
            "$.cluster_config.discovery.dial_timeout: expected seconds or a duration such as "
            f"'10s' between 0 and 5m, got {value!r}"
        )
    return seconds
