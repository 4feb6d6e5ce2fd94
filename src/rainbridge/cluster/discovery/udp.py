"""UDP discovery: signed announcements broadcast inside ``allowed_address_space``.

- **Send**: every ``interval_seconds``, to ``udp_broadcast_port`` at the broadcast address
  of each IPv4 network of ``allowed_address_space`` (IPv6 has no broadcast: such networks
  are skipped), from our advertised IP. On stop, one last announcement says we leave.
- **Packet**: ``MAGIC`` + HMAC-SHA256(``udp_secret``, ``MAGIC`` + body) + body, the body
  JSON ``{"s": service_name, "n": node name, "a": "ip:port" (gossip), "t": wall seconds,
  "l": leaving}``.
- **Accept** only: a source IP inside the allowed address space; the right MAC (so the
  secret is needed to announce; ``hmac.compare_digest``); our ``service_name``; ``t``
  within ``REPLAY_WINDOW`` of our clock and later than the last one of that node (a
  recorded packet replayed is refused). Each refusal is counted by reason
  (``health.extra``).
- **Candidates**: addresses announced within ``ttl`` (4 rounds, at least 2 s); a member
  that stops announcing drops out, one that leaves drops out at once.

Standard library only (no extra).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ..addresses import AddressSpace, ClusterConfigError, format_address, parse_peer
from .base import Address, Discovery, DiscoveryConfigError
from .fields import udp_needs_ipv4

if TYPE_CHECKING:
    from rainbridge.config.schema import DiscoveryConfig

log = logging.getLogger("rainbridge.cluster.discovery")

MAGIC = b"RBD1"
MAC_SIZE = 32
REPLAY_WINDOW = 30.0  # seconds between a sender's clock and ours, at most
MAX_PACKET = 1024
MAX_SENDERS = 4096  # nodes remembered for replay checks
_FIELD = "$.cluster_config.discovery"


def sign(secret: bytes, body: bytes) -> bytes:
    return MAGIC + hmac.new(secret, MAGIC + body, hashlib.sha256).digest() + body


def announcement(secret: bytes, service: str, node: str, address: Address, now: float,
                 leaving: bool = False) -> bytes:
    body = {"s": service, "n": node, "a": format_address(address), "t": now, "l": leaving}
    return sign(secret, json.dumps(body, separators=(",", ":")).encode())


class Verifier:
    """Accepts or refuses announcements (see the module docstring); counts refusals."""

    def __init__(self, secret: bytes, service: str, space: AddressSpace,
                 wall: Callable[[], float] = time.time) -> None:
        self.secret = secret
        self.service = service
        self.space = space
        self.wall = wall
        self.refused: Counter[str] = Counter()
        self._last: OrderedDict[str, float] = OrderedDict()  # node -> last accepted t

    def check(self, packet: bytes, source_ip: str) -> tuple[str, Address, bool] | None:
        """(node, gossip address, leaving) of a good announcement, else None."""
        reason = self._refusal(packet, source_ip)
        if isinstance(reason, str):
            self.refused[reason] += 1
            return None
        return reason

    def _refusal(self, packet: bytes, source_ip: str) -> str | tuple[str, Address, bool]:
        if not self.space.allows_ip(source_ip):
            return "source_outside_space"
        if packet[: len(MAGIC)] != MAGIC or len(packet) < len(MAGIC) + MAC_SIZE:
            return "unsigned"
        mac, body = packet[len(MAGIC): len(MAGIC) + MAC_SIZE], packet[len(MAGIC) + MAC_SIZE:]
        expected = hmac.new(self.secret, MAGIC + body, hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected):
            return "forged"
        try:
            data = json.loads(body)
            service, node, text, sent = data["s"], data["n"], data["a"], float(data["t"])
            leaving = bool(data.get("l", False))
            address = parse_peer(text)
        except (ValueError, KeyError, TypeError, ClusterConfigError):
            return "malformed"  # signed by a holder of the secret, yet not ours to read
        if service != self.service:
            return "other_service"
        if abs(self.wall() - sent) > REPLAY_WINDOW:
            return "stale"
        if sent <= self._last.get(node, float("-inf")):
            return "replayed"
        self._last[node] = sent
        self._last.move_to_end(node)
        if len(self._last) > MAX_SENDERS:
            self._last.popitem(last=False)
        return node, address, leaving


def broadcast_addresses(space: AddressSpace) -> list[str]:
    return [str(n.broadcast_address) for n in space.networks
            if isinstance(n, ipaddress.IPv4Network)]


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, owner: UdpDiscovery) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.owner.received(data, addr[0])


class UdpDiscovery(Discovery):
    name = "udp"

    def __init__(self, secret: bytes, service: str, node_name: str, self_address: Address,
                 space: AddressSpace, port: int, interval: float) -> None:
        super().__init__()
        self.secret = secret
        self.service = service
        self.node_name = node_name
        self.self_address = self_address
        self.port = port
        self.interval = interval
        self.ttl = max(4 * interval, 2.0)
        self.targets = broadcast_addresses(space)
        self.verifier = Verifier(secret, service, space)
        self.seen: dict[str, tuple[Address, float]] = {}  # node -> (address, monotonic)
        self._listener: asyncio.DatagramTransport | None = None
        self._sender: socket.socket | None = None
        self._task: asyncio.Task | None = None
        self._listening_since: float | None = None  # monotonic
        self.health.extra["refused"] = self.verifier.refused

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(AttributeError, OSError):  # every member of a host shares it
            listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            listen.bind(("0.0.0.0", self.port))  # broadcasts reach wildcard sockets only
            sender.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sender.bind((self.self_address[0], 0))
        except OSError as exc:
            listen.close()
            sender.close()
            raise DiscoveryConfigError(
                f"{_FIELD}.udp_broadcast_port: cannot listen on UDP port {self.port} or send "
                f"from {self.self_address[0]}: {exc.strerror or exc}"
            ) from None
        sender.setblocking(False)
        self._sender = sender
        self._listener, _ = await loop.create_datagram_endpoint(lambda: _Listener(self),
                                                                sock=listen)
        self._listening_since = time.monotonic()
        self._task = loop.create_task(self._announce_loop())

    def received(self, packet: bytes, source_ip: str) -> None:
        if len(packet) > MAX_PACKET:
            self.verifier.refused["oversized"] += 1
            return
        good = self.verifier.check(packet, source_ip)
        if good is None:
            return
        node, address, leaving = good
        if node == self.node_name:
            return
        if leaving:
            self.seen.pop(node, None)
        else:
            self.seen[node] = (address, time.monotonic())

    def _announce(self, leaving: bool = False) -> None:
        packet = announcement(self.secret, self.service, self.node_name, self.self_address,
                              time.time(), leaving)
        errors = []
        for target in self.targets:
            try:
                assert self._sender is not None
                self._sender.sendto(packet, (target, self.port))
            except OSError as exc:
                errors.append(f"{target}: {exc.strerror or exc}")
        h = self.health
        if errors:
            h.healthy, h.failures, h.last_error = False, h.failures + 1, "; ".join(errors)
        else:
            h.healthy, h.failures, h.last_error = True, 0, None
            h.last_success = time.time()

    async def _announce_loop(self) -> None:
        while True:
            self._announce()
            await asyncio.sleep(self.interval)

    def settled(self) -> bool:
        """Silence means nobody only after two announcement intervals of listening (one
        announcement of each member may be lost)."""
        since = self._listening_since
        return (self.health.last_success is not None and since is not None
                and time.monotonic() - since >= 2 * self.interval)

    async def candidates(self) -> list[Address]:
        cutoff = time.monotonic() - self.ttl
        for node in [n for n, (_, at) in self.seen.items() if at < cutoff]:
            del self.seen[node]
        found = [a for a in dict.fromkeys(a for a, _ in self.seen.values())
                 if a != self.self_address]
        self.health.candidates = len(found)
        return found

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._announce(leaving=True)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._sender is not None:
            self._sender.close()
            self._sender = None


def make(config: DiscoveryConfig, self_address: tuple[str, int], node_name: str,
         environ: Mapping[str, str]) -> Discovery:
    for field in ("service_name", "allowed_address_space", "udp_broadcast_port", "udp_secret"):
        if not getattr(config, field):
            raise DiscoveryConfigError(f"{_FIELD}.{field}: required for udp discovery")
    udp_needs_ipv4(config.allowed_address_space)
    space = AddressSpace(config.allowed_address_space)
    assert config.service_name and config.udp_secret and config.udp_broadcast_port
    return UdpDiscovery(config.udp_secret.encode(), config.service_name, node_name,
                        self_address, space, config.udp_broadcast_port, config.interval_seconds)
