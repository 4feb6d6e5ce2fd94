"""A cluster member built from ``cluster_config``: identity, addresses, timings, security,
joining the peers, graceful leave and status, around one ``ClusterNode``.

Choices made here (where Bifrost's config and the issue leave room):

- **Name**: ``node_name``, else ``$POD_NAME``, else the host name. With ``--workers N > 1``
  each worker is its own member, ``<name>-w<index>``, on gossip port ``port + index``.
- **Identity**: a random boot id per process; ``node_id = name + "-" + boot`` names this
  process's counter slots, so a restart never reuses an earlier life's slots.
- **Metadata** (Serf tags, ≤ 512 bytes): ``id``, ``boot``, ``region``, ``http`` (host:port
  of the HTTP server; the advertised IP when it listens on all interfaces), ``version``,
  ``state`` (``ready`` / ``draining``), ``role=rainbridge``.
- **Timing**: the ``profile`` preset (lan / wan / local) for every tunable, then
  ``gossip.config`` mapped by ``config.from_bifrost_gossip``: probe interval, suspicion
  multiplier and success threshold always come from it (defaults 10 / 3 / 3: 2 s probes).
- **Keys**: ``$RAINBRIDGE_GOSSIP_KEYS`` (comma-separated base64), when set, replaces
  ``gossip.encryption_keys`` (as ``$RAINBRIDGE_ADMIN_TOKEN`` overrides the file). The first
  key encrypts, all decrypt; rotate with ``keyring.add`` → ``use`` → ``remove`` on every
  node. Keys are never logged.
- **Peers and discovery**: candidates come from ``peers`` (names resolved at every
  attempt) and from the ``discovery.type`` backend, through the allowed-address-space
  filter (``discovery/runner.py``); our own address is skipped. Joined at start, and
  retried in the background (0.5 s doubling to 10 s) until one push-pull succeeds or
  another member has joined us, so a node that starts before its peers still converges.
  **Readiness** (``synced``): on the first push-pull; at once when every source has had a
  fair look and found nobody but us (``DiscoveryRunner.settled``: a look-up answered; udp
  and mdns also listened a while), the first member; else after ``sync_wait`` (10 s) at
  most, by a timer, however long the join attempts take. Then discovery rounds go on every ``discovery.interval_seconds`` (and at once when a
  member is lost), joining candidates that are not live members; a failing backend never
  stops the node (status and metrics say ``degraded``).
- **Leave** (``stop()``, on SIGTERM through the gateway's shutdown): Serf leave intents to
  Serf members (``serfcompat``), then memberlist's leave, gossiped and also sent once
  straight to every live member (``ClusterNode.leave``), driven until sent (at most
  ``leave_timeout``); then the sockets close.
- **Application messages** (``ClusterHandler``, ``on_message`` channels, ``send``,
  ``broadcast`` that reaches every member): see ``appmessages.py``.
- **request / reply** (``request``, ``on_request``): see ``rpc.py``; UDP with retries,
  TCP for frames larger than a packet, at-most-once handling, a bounded pending table.
- **Clock offsets** (``clock``, request kind ``clock``): from ``start()`` on, a few members
  per ``clock_interval`` (5 s) are asked their wall time (``clock.py``); the estimates appear in
  the status (``clock_offset_ms``, ``clock_error_ms``) and the metrics, and a member whose
  clock is surely more than 1 s off is logged. ``wall_clock`` is injectable (tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import __version__
from . import report
from .addresses import AddressSpace, ClusterConfigError, format_address, gossip_addresses
from .appmessages import APP_MARKER, AppMessages, ClusterHandler
from .clock import INTERVAL_S as CLOCK_INTERVAL_S
from .clock import KIND as CLOCK_KIND
from .clock import ClockProbe
from .codec import WireError, decode_tags, encode_tags
from .config import MembershipConfig, from_bifrost_gossip, knob_problems
from .discovery.base import Discovery, DiscoveryConfigError
from .discovery.fields import config_problems
from .discovery.registry import make_discovery
from .discovery.runner import DiscoveryRunner
from .discovery.static import StaticDiscovery
from .events import EventKind, MemberEvent
from .messages import Address, NodeState
from .node import ClusterNode
from .rpc import Handler
from .security import Keyring
from .serfcompat import SerfClock, send_leave_intents
from .wire import WireConfig

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from ..config.schema import ClusterConfig, GossipConfig

log = logging.getLogger("rainbridge.cluster")

KEYS_ENV = "RAINBRIDGE_GOSSIP_KEYS"
JOIN_RETRY_FIRST = 0.5  # seconds; doubles up to JOIN_RETRY_MAX
JOIN_RETRY_MAX = 10.0
SYNC_WAIT = 10.0  # seconds at most before a member that reached no peer counts as synced alone


@dataclass(frozen=True, slots=True)
class ClusterEnv:
    """Where this member runs: its HTTP address and its place among the workers."""

    http_host: str = "127.0.0.1"
    http_port: int = 8080
    worker_index: int = 0
    workers: int = 1


def membership_config(gossip: GossipConfig) -> MembershipConfig:
    timing = gossip.config
    base = MembershipConfig.profile(gossip.profile)
    return from_bifrost_gossip(
        timing.timeout_seconds, timing.success_threshold, timing.failure_threshold, base
    )


def keyring_from(keys: list[str], environ: Mapping[str, str]) -> Keyring | None:
    raw = environ.get(KEYS_ENV, "").strip()
    texts = [k.strip() for k in raw.split(",") if k.strip()] if raw else list(keys)
    if not texts:
        return None
    try:
        return Keyring.from_base64(texts)
    except ValueError as exc:  # the message never contains key material
        raise ClusterConfigError(f"gossip encryption key: {exc}") from None


class ClusterService:
    """This process's cluster member, from ``cluster_config``. See the module docstring."""

    def __init__(
        self,
        cluster: ClusterConfig,
        env: ClusterEnv | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        timing: MembershipConfig | None = None,
        leave_timeout: float = 3.0,
        wall_clock: Callable[[], float] = time.time,
        clock_interval: float | None = CLOCK_INTERVAL_S,
    ) -> None:
        """Only the identity is settled here; ``start()`` checks the rest (addresses, keys)
        so that a bad setting fails the start with a clear message. ``timing`` replaces the
        configured timings (tests and benchmarks); ``wall_clock`` is what this member
        answers clock probes with (tests shift it); ``clock_interval``: seconds between
        clock probe rounds (None: this member does not probe, it still answers)."""
        self.cluster = cluster
        self.env = env or ClusterEnv()
        self._environ = os.environ if environ is None else environ
        base = cluster.node_name or self._environ.get("POD_NAME") or socket.gethostname()
        self.name = f"{base}-w{self.env.worker_index}" if self.env.workers > 1 else base
        self.boot = secrets.token_hex(4)
        self.node_id = f"{self.name}-{self.boot}"
        self.region = cluster.region or ""
        self._timing = timing
        self.leave_timeout = leave_timeout
        self.readiness = "ready"
        self.node: ClusterNode | None = None
        self.keyring: Keyring | None = None
        self.http_address = ""
        self.joined = False
        # Readiness: our first push-pull is done, or there is nobody to do it with (see
        # _join_loop); the gateway reports ready only then (GET /health/ready).
        self.synced = False
        self.sync_wait = SYNC_WAIT
        self._join_attempts = 0
        self.stats: Counter[str] = Counter()
        self._serf_clock = SerfClock()
        self.messages = AppMessages(self.name, self.stats, self._serf_clock.witness)
        self.rpc = self.messages.rpc
        self._join_task: asyncio.Task | None = None
        self.discovery: DiscoveryRunner | None = None  # set by start()
        self.clock = ClockProbe(self._clock_request, self._clock_members, wall=wall_clock,
                                interval=clock_interval or CLOCK_INTERVAL_S)
        self._clock_probing = clock_interval is not None
        self._clock_task: asyncio.Task | None = None
        self._registry: CollectorRegistry | None = None
        self._collector: Any = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self, registry: CollectorRegistry | None = None) -> None:
        for path, message, severity in knob_problems(self.cluster):
            if severity == "error":  # config loading refuses it too; this guards direct use
                raise ClusterConfigError(f"{path.removeprefix('$.')}: {message}")
        for path, message in config_problems(self.cluster.discovery, self.cluster.peers):
            raise ClusterConfigError(f"{path.removeprefix('$.')}: {message}")
        gossip = self.cluster.gossip
        timing = self._timing or membership_config(gossip)
        self.keyring = keyring_from(gossip.encryption_keys, self._environ)
        try:
            wire = WireConfig(label=gossip.label or "", keyring=self.keyring)
        except (ValueError, WireError) as exc:
            raise ClusterConfigError(f"gossip.label: {exc}") from None
        self.messages.configure(timing, wire)
        space = AddressSpace(self.cluster.discovery.allowed_address_space)
        bind_ip, advertise_ip = gossip_addresses(
            gossip.bind_address, gossip.advertise_address, self.env.http_host, self._environ
        )
        port = gossip.port + self.env.worker_index if gossip.port else 0
        if port > 65535:
            raise ClusterConfigError(f"gossip port {port} (port + worker index) is above 65535")
        http_ip = self.env.http_host
        if http_ip in ("", "0.0.0.0", "::"):
            http_ip = advertise_ip
        self.http_address = format_address((http_ip, self.env.http_port))
        node = ClusterNode(
            self.name,
            (bind_ip, port),
            config=timing,
            wire=wire,
            advertise=advertise_ip,
            meta=self._meta(),
            delegate=self.messages,
            address_space=space,
            on_event=self._on_event,
        )
        try:
            await node.start()
        except OSError as exc:
            raise ClusterConfigError(
                f"cannot bind gossip to {format_address((bind_ip, port))}: {exc.strerror or exc}"
            ) from None
        self.node = self.messages.node = node
        try:
            self.discovery = DiscoveryRunner(
                self._discovery_sources(node.address),
                space,
                node.join,
                self._live_addresses,
                self.cluster.discovery.interval_seconds,
            )
            await self.discovery.start()
        except DiscoveryConfigError as exc:
            await node.close()
            self.node = self.messages.node = None
            raise ClusterConfigError(str(exc).removeprefix("$.")) from exc
        log.info(
            "cluster: node %s (id %s) gossiping on %s, advertising %s; profile %s, probe "
            "interval %.2fs, suspicion x%d; encryption %s; label %s; address space %s",
            self.name,
            self.node_id,
            format_address(node.bind),
            format_address(node.address),
            gossip.profile,
            timing.probe_interval,
            timing.suspicion_mult,
            f"on ({len(self.keyring)} key(s))" if self.keyring else "off",
            repr(wire.label) if wire.label else "none",
            ", ".join(str(n) for n in space.networks) or "any",
        )
        if registry is not None:
            from .metrics import ClusterCollector

            self._collector = ClusterCollector(self)
            registry.register(self._collector)
            self._registry = registry
        loop = asyncio.get_running_loop()
        self._join_task = loop.create_task(self._join_loop())
        self.on_request(CLOCK_KIND, self.clock.answer)
        if self._clock_probing:
            self._clock_task = loop.create_task(self.clock.run())

    def _discovery_sources(self, address: Address) -> list[Discovery]:
        sources: list[Discovery] = []
        if self.cluster.peers:
            sources.append(StaticDiscovery(self.cluster.peers, address))
        config = self.cluster.discovery
        if config.enabled and config.type != "static":  # static: the peers above
            sources.append(make_discovery(config, address, self.name, self._environ))
        return sources

    def _live_addresses(self) -> set[Address]:
        """Our own addresses and those of live or suspect members: not to be joined."""
        node = self._node()
        known = {node.address, node.bind}
        if node.membership is not None:
            known.update(m.address for m in node.members()
                         if m.state in (NodeState.ALIVE, NodeState.SUSPECT))
        return known

    async def _stop_discovery(self) -> None:
        """Deregister from the backends first, so no one finds a member that is leaving."""
        if self.discovery is not None:
            await self.discovery.stop()

    async def stop(self) -> None:
        """Leave gracefully (others see *left*, not failed), then close the sockets."""
        await self._stop_clock()
        if self._join_task is not None:
            self._join_task.cancel()
            try:
                await self._join_task
            except asyncio.CancelledError:
                pass
            except Exception:  # a bug in the join loop must not stop the leave
                log.exception("cluster: the join task failed")
            self._join_task = None
        await self._stop_discovery()
        node = self.node
        if node is not None and node.running:
            try:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + self.leave_timeout
                await send_leave_intents(node, self._serf_clock, self.leave_timeout / 2)
                announced = await node.leave(max(0.1, deadline - loop.time()))
                log.info(
                    "cluster: %s left the cluster%s",
                    self.name,
                    "" if announced else " (leave not fully announced in time)",
                )
            finally:
                await node.close()
        self._unregister()

    async def abort(self) -> None:
        """Stop without leaving (tests: the others see a crash)."""
        await self._stop_clock()
        if self._join_task is not None:
            self._join_task.cancel()
        await self._stop_discovery()
        if self.node is not None:
            await self.node.close()
        self._unregister()

    async def _stop_clock(self) -> None:
        task, self._clock_task = self._clock_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _clock_request(self, member: str, kind: str, payload: bytes, timeout: float) -> bytes:
        return await self.request(member, kind, payload, timeout=timeout, retries=0)

    def _clock_members(self) -> list[tuple[str, str]]:
        """``(name, node id)`` of the live rainbridge members other than this one."""
        node = self.node
        if node is None or node.membership is None:
            return []
        out = []
        for m in node.members():
            if m.name == self.name or m.state != NodeState.ALIVE:
                continue
            try:
                tags = decode_tags(m.meta)
            except WireError:
                continue
            if tags.get("role") == "rainbridge":
                out.append((m.name, tags.get("id", m.name)))
        return out

    def _unregister(self) -> None:
        if self._registry is not None and self._collector is not None:
            with contextlib.suppress(KeyError):
                self._registry.unregister(self._collector)
            self._registry = self._collector = None

    # ------------------------------------------------------------------ joining
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
        self._join_attempts += 1
        if ok:
            self.joined = self.synced = True
            alive = sum(1 for m in node.members() if m.state == NodeState.ALIVE)
            log.info("cluster: joined through %d of %d peer(s); %d member(s) alive",
                     ok, len(peers), alive)
            return True
        attempt = self._join_attempts
        level = logging.WARNING if attempt == 1 or attempt % 10 == 0 else logging.DEBUG
        log.log(
            level,
            "cluster: could not join any of %s (%s); retrying every %.1fs at most",
            ", ".join(format_address(p) for p in peers),
            node.last_push_pull_error or "no answer",
            JOIN_RETRY_MAX,
        )
        return False

    # ------------------------------------------------------------------ application
    @property
    def handler(self) -> ClusterHandler | None:
        return self.messages.handler

    @property
    def channels(self) -> dict[bytes, Callable[[bytes], None]]:
        return self.messages.channels

    @property
    def max_broadcast(self) -> int:
        """``appmessages.max_broadcast_payload`` for this member (0 until started)."""
        return self.messages.max_broadcast

    def set_handler(self, handler: ClusterHandler | None) -> None:
        """Install the application's hooks (one handler; None removes it)."""
        self.messages.handler = handler

    def on_message(self, channel: bytes, callback: Callable[[bytes], None] | None) -> None:
        """Deliver payloads (``broadcast`` or ``send``) whose first byte is ``channel`` to
        ``callback(payload[1:])`` instead of the handler; the sender puts the byte in front.
        The callback runs inside the protocol: return quickly, never block. None removes
        it; a channel already taken by another callback is a ``ValueError`` (two parts of
        the application would read each other's messages)."""
        self.messages.on_message(channel, callback)

    def broadcast(self, payload: bytes, name: str | None = None) -> None:
        """Gossip ``payload`` to every other member's ``notify_msg`` (each relays it once).
        ``name``: replaces our queued broadcast of the same name that is not fully sent.
        ``ValueError`` (naming both sizes) when the payload can never fit a gossip packet."""
        self.messages.broadcast(payload, name)

    def send(self, member: str, payload: bytes, *, reliable: bool = False) -> None:
        """One member's ``notify_msg``: UDP best effort, or TCP when ``reliable``."""
        self.messages.send(member, payload, reliable)

    def on_request(self, kind: str, handler: Handler | None) -> None:
        """Answer ``request``s of ``kind`` with ``handler(requester, payload)`` → reply bytes
        (or an awaitable of them). Runs on the event loop, outside the protocol; None
        removes it. A request of a kind without handler is answered ``no_handler``."""
        if handler is None:
            self.rpc.handlers.pop(kind, None)
        else:
            self.rpc.handlers[kind] = handler

    async def request(
        self, member: str, kind: str, payload: bytes, *, timeout: float = 0.5, retries: int = 2
    ) -> bytes:
        """Send ``payload`` to ``member``'s ``kind`` handler and return its reply: UDP, resent
        with the same id after each ``timeout`` seconds without a reply, ``retries`` times
        (so at most ``(retries + 1) × timeout`` in all); TCP when larger than a packet.
        ``rpc.RequestError`` with a stable ``type`` otherwise (see ``rpc.py``)."""
        self._node()  # started
        return await self.rpc.request(APP_MARKER, member, kind, payload, timeout, retries)

    def set_readiness(self, readiness: str) -> None:
        """``ready`` or ``draining``, in our metadata (a new incarnation, gossiped)."""
        if readiness not in ("ready", "draining"):
            raise ValueError("readiness is 'ready' or 'draining'")
        self.readiness = readiness
        if self.node is not None and self.node.running:
            self.node.update_meta(self._meta())

    def _meta(self) -> bytes:
        tags = {
            "id": self.node_id,
            "boot": self.boot,
            "region": self.region,
            "http": self.http_address,
            "version": __version__,
            "state": self.readiness,
            "role": "rainbridge",
        }
        try:
            return encode_tags(tags)
        except WireError as exc:
            raise ClusterConfigError(f"node metadata too large (long node name?): {exc}") from None

    def _on_event(self, event: MemberEvent) -> None:
        if event.kind == EventKind.LEAVE and self.discovery is not None:
            self.discovery.wake()  # a member lost: look for members at once
        handler = self.messages.handler
        if handler is not None:
            handler.notify_event(event)

    def _node(self) -> ClusterNode:
        if self.node is None:
            raise RuntimeError("the cluster service is not started")
        return self.node

    # ------------------------------------------------------------------ status
    def nodes(self) -> list[dict[str, Any]]:
        """Every member in this node's table (dead and left ones until they are reaped)."""
        return report.nodes(self)

    def health(self) -> dict[str, Any]:
        """The ``cluster`` component of ``GET /health``."""
        return report.health(self)

    def status(self) -> dict[str, Any]:
        """This node, its members and a health summary (``GET /api/cluster/status``)."""
        return report.status(self)
