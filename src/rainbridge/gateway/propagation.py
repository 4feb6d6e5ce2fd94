"""Configuration changes announced on the cluster, so every member reloads at once.

A write through any member's management API (governance or providers) commits to the
config store, reloads that worker, then broadcasts the store's new ``config_version`` on
the cluster channel ``b"c"``. Every other member, and every other worker of the same pod
(each worker is a member), hears it within a few gossip intervals (each member relays a
broadcast once) and reloads from the store unless it already holds that version. The
store poll (every ``RAINBRIDGE_STORE_POLL_SECONDS``, default 1 s) stays as the fallback
for a lost message, a member that joins later, and workers without cluster mode.

The message names only the version: what changed is read from the store, which is the
source of truth, so a member never applies a change it could not also have polled.

Reloads are coalesced: a burst of announcements makes one reload in flight plus at most
one after it, which reads everything committed before it started. Receiving runs inside
the gossip protocol, so it only schedules; a failing reload is logged and the poll retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from ..store import StoreUnavailable

if TYPE_CHECKING:
    from ..cluster.service import ClusterService

log = logging.getLogger("rainbridge.gateway")

CHANNEL = b"c"  # ClusterService.on_message channel of configuration changes
BROADCAST_NAME = "config-version"  # a newer announcement replaces our queued older one
MAX_VERSION_BYTES = 128  # a version is "<unix ms>:<8 hex>"; longer is not ours
POLL_ENV = "RAINBRIDGE_STORE_POLL_SECONDS"
POLL_DEFAULT_S = 1.0


def poll_interval(environ: Mapping[str, str]) -> float:
    """Seconds between two polls of the config store's version (``POLL_ENV``, > 0). With
    cluster mode the announcements carry changes at once, so a large fleet may poll less
    often: every worker's poll is one query on the shared PostgreSQL."""
    raw = environ.get(POLL_ENV, "").strip()
    if not raw:
        return POLL_DEFAULT_S
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        log.warning("%s=%r is not a number of seconds > 0; using %g", POLL_ENV, raw, POLL_DEFAULT_S)
        return POLL_DEFAULT_S
    return value


class Coalescer:
    """Runs ``action`` when triggered, never twice at once: triggers that arrive while it
    runs make exactly one more run after it, however many they are."""

    def __init__(self, action: Callable[[], Awaitable[object]], what: str) -> None:
        self._action = action
        self._what = what
        self._task: asyncio.Task | None = None
        self._again = False
        self.runs = 0

    @property
    def busy(self) -> bool:
        return self._task is not None

    def trigger(self) -> None:
        """Schedule a run (call from the event loop; returns at once)."""
        if self._task is not None:
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while True:
                self._again = False
                self.runs += 1
                try:
                    await self._action()
                except StoreUnavailable as exc:
                    log.warning("%s: config store unreachable (%s); the poll retries", self._what, exc)
                except Exception:  # a bug here must not stop later runs; the poll is the fallback
                    log.exception("%s failed; the poll retries", self._what)
                if not self._again:
                    return
        finally:
            self._task = None  # no await between the last check and here: no trigger is lost

    async def close(self) -> None:
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class ConfigPropagation:
    """Announces this worker's configuration changes and reloads on other members' ones."""

    def __init__(
        self,
        cluster: ClusterService,
        reload_if_changed: Callable[[], Awaitable[bool]],
        current_version: Callable[[], str | None],
    ) -> None:
        self.cluster = cluster
        self._reload_if_changed = reload_if_changed
        self._current_version = current_version
        self.reloads = Coalescer(self._reload, "reload after a configuration change on another member")
        self.stats: Counter[str] = Counter()
        cluster.on_message(CHANNEL, self._on_message)

    def announce(self, version: str | None) -> None:
        """Tell every other member that the store is at ``version`` now. Never raises: the
        write is committed already, and the poll carries it if this message cannot."""
        try:
            self.cluster.broadcast(CHANNEL + (version or "").encode(), BROADCAST_NAME)
        except (RuntimeError, ValueError) as exc:
            log.warning("could not announce a configuration change on the cluster (%s); other members poll", exc)
            return
        self.stats["announced"] += 1

    def _on_message(self, body: bytes) -> None:
        self.stats["received"] += 1
        if len(body) <= MAX_VERSION_BYTES and body and body.decode(errors="replace") == self._current_version():
            self.stats["already_current"] += 1  # e.g. our own poll got there first
            return
        self.reloads.trigger()

    async def _reload(self) -> None:
        if await self._reload_if_changed():
            self.stats["reloaded"] += 1
            log.info("configuration changed on another member: reloaded providers and governance")

    async def close(self) -> None:
        self.cluster.on_message(CHANNEL, None)
        await self.reloads.close()
