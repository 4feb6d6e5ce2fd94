"""mDNS discovery (DNS-SD over multicast DNS): announce ourselves, browse for the others.

- **Announce**: a service instance ``<node name>._<service>._tcp.local.`` with our advertised
  gossip IP and port, and a TXT record ``node=<node name>``; a goodbye is sent on stop, so
  the others drop us at once.
- **Browse**: every instance of the same service type on the link; a candidate is its
  address at its announced port. Instances come and go as their announcements and
  goodbyes arrive (no polling).
- ``mdns_service``: a DNS-SD service type, written as Bifrost writes it (``_bifrost._tcp``)
  or fully (``_bifrost._tcp.local.``); without it, ``_<service_name>._tcp.local.``.
- Multicast is sent and received on the interface of our advertised IP only (IPv4 or
  IPv6 after its family), so a multi-homed host does not announce on other networks.
- **Failures** (the interface is not there yet, port 5353 refused): degraded health, retried
  after 0.5 s doubling to ``RETRY_MAX``; what was found stands.

Library: zeroconf (extra ``mdns``), a pure-Python multicast DNS / DNS-SD implementation.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from zeroconf import BadTypeInNameException, IPVersion, ServiceStateChange, service_type_name
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from .base import Address, Discovery, DiscoveryConfigError, cancel

if TYPE_CHECKING:
    from rainbridge.config.schema import DiscoveryConfig

log = logging.getLogger("rainbridge.cluster.discovery")

RESOLVE_MS = 3000  # how long to ask for an instance's address and port
SETTLE = 3.0  # seconds of browsing before silence means nobody (first queries, answers)
RETRY_FIRST = 0.5
RETRY_MAX = 15.0
_FIELD = "$.cluster_config.discovery"


def normalise_service(text: str, field: str = "mdns_service") -> str:
    """``_bifrost._tcp`` / ``_bifrost._tcp.local`` / ``_bifrost._tcp.local.`` →
    ``_bifrost._tcp.local.``; :class:`DiscoveryConfigError` naming the field otherwise."""
    value = text.strip().rstrip(".")
    if not value.endswith(".local"):
        value += ".local"
    value += "."
    try:
        service_type_name(value, strict=True)
    except BadTypeInNameException as exc:
        raise DiscoveryConfigError(
            f"{_FIELD}.{field}: expected a DNS-SD service type such as '_bifrost._tcp' "
            f"(1-15 letters, digits or '-' after '_', then ._tcp or ._udp), got {text!r} "
            f"({exc})") from None
    return value


def _label(text: str) -> str:
    """A DNS label (host name part) from a node name."""
    label = re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-")[:63].strip("-")
    return label or "rainbridge"


class MdnsDiscovery(Discovery):
    name = "mdns"

    def __init__(self, service_type: str, node_name: str, self_address: Address) -> None:
        super().__init__()
        self.service_type = service_type
        self.node_name = node_name
        self.self_address = self_address
        self.instance = f"{node_name[:63]}.{service_type}"
        self.found: dict[str, Address] = {}  # instance name -> address
        self.nodes: dict[Address, str] = {}  # address -> the TXT record's node name
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None
        self._task: asyncio.Task | None = None
        self._resolving: set[asyncio.Task] = set()
        self._browsing_since: float | None = None  # monotonic
        self.health.extra["announced"] = False

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._open_with_retry())

    def settled(self) -> bool:
        since = self._browsing_since
        return since is not None and time.monotonic() - since >= SETTLE

    async def candidates(self) -> list[Address]:
        return self.report(self.found.values(), self.self_address)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel(task)
        for t in list(self._resolving):
            t.cancel()
        await asyncio.gather(*self._resolving, return_exceptions=True)
        await self._close()

    async def _close(self) -> None:
        zc, browser, info = self._zc, self._browser, self._info
        self._zc = self._browser = self._info = None
        self.health.extra["announced"] = False
        if zc is None:
            return
        with contextlib.suppress(Exception):  # closing what half-opened may fail anyhow
            if browser is not None:
                await browser.async_cancel()
            if info is not None:
                async with asyncio.timeout(3):
                    sent = await zc.async_unregister_service(info)
                    await sent  # the goodbye packets are out
        with contextlib.suppress(Exception):
            await zc.async_close()

    async def _open_with_retry(self) -> None:
        delay = RETRY_FIRST
        while True:
            try:
                await self._open()
                return
            except (OSError, TimeoutError, ValueError) as exc:
                h = self.health
                h.healthy, h.failures = False, h.failures + 1
                h.last_error = f"{type(exc).__name__}: {exc}".strip().rstrip(":")[:200]
                await self._close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _open(self) -> None:
        ip, port = self.self_address
        parsed = ipaddress.ip_address(ip)
        version = IPVersion.V4Only if parsed.version == 4 else IPVersion.V6Only
        self._zc = zc = AsyncZeroconf(interfaces=[ip], ip_version=version)
        info = AsyncServiceInfo(
            self.service_type, self.instance, addresses=[parsed.packed], port=port,
            properties={"node": self.node_name},
            server=f"{_label(self.node_name)}.local.")
        announced = await zc.async_register_service(info, allow_name_change=True)
        self._info = info
        await announced
        self._browser = AsyncServiceBrowser(zc.zeroconf, [self.service_type],
                                            handlers=[self._on_change])
        self._browsing_since = time.monotonic()
        h = self.health
        h.healthy, h.failures, h.last_error = True, 0, None
        h.last_success = time.time()
        h.extra["announced"] = True
        h.extra["instance"] = info.name

    def _on_change(self, zeroconf, service_type: str, name: str,
                   state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Removed:
            address = self.found.pop(name, None)
            if address is not None and address not in self.found.values():
                self.nodes.pop(address, None)
            return
        task = asyncio.get_running_loop().create_task(self._resolve(service_type, name))
        self._resolving.add(task)
        task.add_done_callback(self._resolving.discard)

    async def _resolve(self, service_type: str, name: str) -> None:
        zc = self._zc
        if zc is None or (self._info is not None and name == self._info.name):
            return
        info = AsyncServiceInfo(service_type, name)
        if not await info.async_request(zc.zeroconf, RESOLVE_MS) or not info.port:
            return
        family = ipaddress.ip_address(self.self_address[0]).version
        ips = [a for a in info.parsed_scoped_addresses()
               if ipaddress.ip_address(a.split("%")[0]).version == family]
        if not ips:
            return
        address = (ips[0], info.port)
        self.found[name] = address
        node = (info.properties or {}).get(b"node")
        if node:
            self.nodes[address] = node.decode("utf-8", "replace")[:200]
        self.health.last_success = time.time()


def make(config: DiscoveryConfig, self_address: tuple[str, int], node_name: str,
         environ: Mapping[str, str]) -> Discovery:
    if config.mdns_service:
        service_type = normalise_service(config.mdns_service)
    elif config.service_name:
        service_type = normalise_service(f"_{config.service_name}._tcp", "service_name")
    else:
        raise DiscoveryConfigError(
            f"{_FIELD}.mdns_service: required for mdns discovery (for example "
            "'_bifrost._tcp'), or service_name")
    try:
        ipaddress.ip_address(self_address[0])
    except ValueError:
        raise DiscoveryConfigError(
            f"{_FIELD}.type: mdns discovery announces the advertised gossip IP; got "
            f"{self_address[0]!r}") from None
    return MdnsDiscovery(service_type, node_name, self_address)
