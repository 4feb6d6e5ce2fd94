"""A cluster member built from ``cluster_config``: identity, addresses, timings, security,
start and graceful leave, around one ``ClusterNode``; the one object the gateway holds.
Joining (``joining.py``), application messages (``appmessages.py``), request/reply
(``rpc.py``) and status (``report.py``) are its parts, each in its own module.

Choices made here (where Bifrost's config and the issue leave room):

- **Name**: ``node_name``, else ``$POD_NAME``, else the host name. With ``--workers N > 1``
  each worker is its own member, ``<name>-w<index>``, on gossip port ``port + index``.
- **Identity**: a boot id per process (start time + random bits, ``boot.py``); ``node_id = name + "-" + boot`` names this
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
- **Peers, discovery and readiness** (``synced`` after the first push-pull, or alone when
  nobody is found, or after ``sync_wait``): see ``joining.py``.
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
from .boot import new_boot_id
from .clock import INTERVAL_S as CLOCK_INTERVAL_S
from .clock import KIND as CLOCK_KIND
from .clock import ClockProbe
from .codec import WireError, decode_tags, encode_tags
from .config import MembershipConfig, from_bifrost_gossip, knob_problems
from .discovery.base import DiscoveryConfigError
from .discovery.fields import config_problems
from .events import EventKind, MemberEvent
from .joining import Joining
from .messages import NodeState
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
        self.boot = new_boot_id()
        self.node_id = f"{self.name}-{self.boot}"
        self.region = cluster.region or ""
        self._timing = timing
        self.leave_timeout = leave_timeout
        self.readiness = "ready"
        self.node: ClusterNode | None = None
        self.keyring: Keyring | None = None
        self.http_address = ""
        self.joining = Joining(cluster, self.name, self._environ)  # peers, joins, readiness
        self.stats: Counter[str] = Counter()
        self._serf_clock = SerfClock()
        # membership's delegate: the application's messages, broadcasts and requests
        self.messages = AppMessages(self.name, self.stats, self._serf_clock.witness)
        self.rpc = self.messages.rpc
        self.clock = ClockProbe(self._clock_request, self._clock_members, wall=wall_clock,
                                interval=clock_interval or CLOCK_INTERVAL_S)
        self._clock_probing = clock_interval is not None
        self._clock_task: asyncio.Task | None = None
        self._registry: CollectorRegistry | None = None
        self._collector: Any = None

    @property
    def synced(self) -> bool:
        """Ready to serve: the first push-pull is done, or nobody else is there to do it
        with (``joining.py``); the gateway reports ready only then (GET /health/ready)."""
        return self.joining.synced

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
            await self.joining.start_discovery(node, space)
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
        self.joining.run()
        self.on_request(CLOCK_KIND, self.clock.answer)
        if self._clock_probing:
            self._clock_task = asyncio.get_running_loop().create_task(self.clock.run())

    async def stop(self) -> None:
        """Leave gracefully (others see *left*, not failed), then close the sockets."""
        await self._stop_clock()
        await self.joining.stop()  # deregisters first: no one finds a member that is leaving
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
        await self.joining.abort()
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

    # ------------------------------------------------------------------ application
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
        if event.kind == EventKind.LEAVE:
            self.joining.member_lost()
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
