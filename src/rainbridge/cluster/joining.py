"""How a member finds its peers and joins them, and when it counts as synced.

- **Candidates** come from ``peers`` (names resolved at every attempt) and from the
  ``discovery.type`` backend, through the allowed-address-space filter
  (``discovery/runner.py``); our own address is skipped.
- **First join**: at start, and retried in the background (0.5 s doubling to 10 s) until one
  push-pull succeeds or another member has joined us, so a node that starts before its peers
  still converges.
- **Readiness** (``synced``): on the first push-pull; at once when every source has had a
  fair look and found nobody but us (``DiscoveryRunner.settled``: a look-up answered; udp
  and mdns also listened a while), the first member; else after ``sync_wait`` (10 s) at
  most, by a timer, however long the join attempts take.
- **Rounds**: then discovery rounds go on every ``discovery.interval_seconds`` (and at once
  when a member is lost: ``member_lost``), joining candidates that are not live members; a
  failing backend never stops the node (status and metrics say ``degraded``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .addresses import AddressSpace, format_address
from .discovery.base import Discovery
from .discovery.registry import make_discovery
from .discovery.runner import DiscoveryRunner
from .discovery.static import StaticDiscovery
from .messages import Address, NodeState

if TYPE_CHECKING:
    from ..config.schema import ClusterConfig
    from .node import ClusterNode

log = logging.getLogger("rainbridge.cluster")

JOIN_RETRY_FIRST = 0.5  # seconds; doubles up to JOIN_RETRY_MAX
JOIN_RETRY_MAX = 10.0
SYNC_WAIT = 10.0  # seconds at most before a member that reached no peer counts as synced alone


class Joining:
    """One member's way into the cluster: its discovery sources, the first join, the
    readiness it gives (``synced``, ``joined``) and the discovery rounds after it."""

    def __init__(self, cluster: ClusterConfig, name: str, environ: Mapping[str, str]) -> None:
        self.cluster = cluster
        self.name = name
        self._environ = environ
        self.joined = False
        # Readiness: our first push-pull is done, or there is nobody to do it with (see
        # _first_join); the gateway reports ready only then (GET /health/ready).
        self.synced = False
        self.sync_wait = SYNC_WAIT
        self.attempts = 0
        self.node: ClusterNode | None = None
        self.discovery: DiscoveryRunner | None = None  # set by start_discovery()
        self._task: asyncio.Task | None = None

    def sources(self, address: Address) -> list[Discovery]:
        """The backends that list candidates: ``peers``, and ``discovery.type`` if enabled."""
        sources: list[Discovery] = []
        if self.cluster.peers:
            sources.append(StaticDiscovery(self.cluster.peers, address))
        config = self.cluster.discovery
        if config.enabled and config.type != "static":  # static: the peers above
            sources.append(make_discovery(config, address, self.name, self._environ))
        return sources

    async def start_discovery(self, node: ClusterNode, space: AddressSpace) -> None:
        """Start the backends (registering us where the backend does that);
        ``DiscoveryConfigError`` when one of them cannot start as configured."""
        self.node = node
        self.discovery = DiscoveryRunner(
            self.sources(node.address),
            space,
            node.join,
            self._live_addresses,
            self.cluster.discovery.interval_seconds,
        )
        await self.discovery.start()

    def run(self) -> None:
        """Join in the background, then discovery rounds until stopped."""
        self._task = asyncio.get_running_loop().create_task(self._join_loop())

    def member_lost(self) -> None:
        """Look for members at once."""
        if self.discovery is not None:
            self.discovery.wake()

    async def stop(self) -> None:
        """Stop joining, then deregister from the backends, so no one finds a member that is
        leaving."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            except Exception:  # a bug in the join loop must not stop the leave
                log.exception("cluster: the join task failed")
            self._task = None
        await self._stop_discovery()

    async def abort(self) -> None:
        """Stop without waiting for the join loop to finish (``ClusterService.abort``)."""
        if self._task is not None:
            self._task.cancel()
        await self._stop_discovery()

    async def _stop_discovery(self) -> None:
        if self.discovery is not None:
            await self.discovery.stop()

    def _live_addresses(self) -> set[Address]:
        """Our own addresses and those of live or suspect members: not to be joined."""
        node = self._node()
        known = {node.address, node.bind}
        if node.membership is not None:
            known.update(m.address for m in node.members()
                         if m.state in (NodeState.ALIVE, NodeState.SUSPECT))
        return known

    async def resolve_peers(self) -> list[Address]:
        """One round's candidates (peers and discovery, filtered), without ourselves."""
        node = self._node()
        assert self.discovery is not None
        addresses = await self.discovery.candidates()
        return [a for a in addresses if a not in (node.address, node.bind)]

    async def _join_loop(self) -> None:
        """Join at start (see the module docstring), then discovery rounds until stopped."""
        await self._first_join()
        if self.discovery is not None and self.discovery.sources:
            await self.discovery.run()

    async def _first_join(self) -> None:
        """Join until a push-pull succeeds or a member joins us; readiness (``synced``)
        comes at once when the sources have settled and found nobody (the first member),
        else after ``sync_wait`` at most, whatever the retries are doing (a member told
        that peers exist waits that long for them, not longer: a blackholed peer's join
        may take ``tcp_timeout`` per attempt)."""
        node = self._node()
        assert self.discovery is not None
        delay = JOIN_RETRY_FIRST
        loop = asyncio.get_running_loop()
        deadline = loop.call_later(self.sync_wait, self._ready_alone)
        try:
            while True:
                peers = await self.resolve_peers()
                if not peers and not self.synced and self.discovery.settled():
                    if self.cluster.peers or self.cluster.discovery.enabled:
                        log.info("cluster: no other peer to join; waiting for members to join us")
                    self.synced = True  # the first member: nothing to merge
                if peers and await self._join_once(peers):
                    return
                if node.membership is not None and node.membership.num_alive() > 1:
                    self.joined = self.synced = True  # a joiner's push-pull merged state with us
                    return
                if peers or self.synced:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, JOIN_RETRY_MAX)
                else:  # nothing tried yet, sources still looking: no reason to back off
                    await asyncio.sleep(JOIN_RETRY_FIRST)
        finally:
            deadline.cancel()

    def _ready_alone(self) -> None:
        if not self.synced:
            self.synced = True
            log.warning(
                "cluster: no peer answered within %.0fs; ready alone (keeps trying to join)",
                self.sync_wait,
            )

    async def _join_once(self, peers: list[Address]) -> bool:
        node = self._node()
        assert self.discovery is not None
        ok = await node.join(peers)
        self.discovery.stats["joins"] += ok
        self.discovery.stats["join_failures"] += len(peers) - ok
        self.attempts += 1
        if ok:
            self.joined = self.synced = True
            alive = sum(1 for m in node.members() if m.state == NodeState.ALIVE)
            log.info("cluster: joined through %d of %d peer(s); %d member(s) alive",
                     ok, len(peers), alive)
            return True
        attempt = self.attempts
        level = logging.WARNING if attempt == 1 or attempt % 10 == 0 else logging.DEBUG
        log.log(
            level,
            "cluster: could not join any of %s (%s); retrying every %.1fs at most",
            ", ".join(format_address(p) for p in peers),
            node.last_push_pull_error or "no answer",
            JOIN_RETRY_MAX,
        )
        return False

    def _node(self) -> ClusterNode:
        if self.node is None:
            raise RuntimeError("the cluster service is not started")
        return self.node
