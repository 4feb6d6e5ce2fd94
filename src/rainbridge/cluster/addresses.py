"""Gossip address rules: what to bind, what to advertise, which peers to accept.

- **bind**: ``gossip.bind_address``; default the HTTP host, or all interfaces when that is
  0.0.0.0 / ``::``. A host name is resolved once, at start.
- **advertise**: ``gossip.advertise_address``; default the bind address when it is specific,
  else ``$POD_IP``, else the first non-loopback address of this machine. So an HTTP host of
  127.0.0.x with no gossip addresses set binds *and* advertises 127.0.0.x: a cluster on one
  machine never touches a real interface.
- **allowed address space** (``discovery.allowed_address_space``, CIDRs): every inbound
  packet and connection (by source IP), every advertised member address and every join
  target must fall inside; empty means anywhere.
- **peers**: ``host:port`` (``[v6]:port`` for IPv6 literals); names are resolved at every
  join attempt, since DNS for peers that are still starting may appear later.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Iterable, Mapping

from .messages import Address

log = logging.getLogger("rainbridge.cluster")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ClusterConfigError(ValueError):
    """``cluster_config`` cannot be turned into a working member (the text says what to set)."""


def _ip(text: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def format_address(address: Address) -> str:
    ip, port = address
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


class AddressSpace:
    """The allowed address space: a list of networks; empty allows every address."""

    def __init__(self, cidrs: Iterable[str] = ()) -> None:
        try:
            self.networks = [ipaddress.ip_network(c, strict=False) for c in cidrs]
        except ValueError as exc:
            raise ClusterConfigError(f"allowed_address_space: {exc}") from None

    def allows_ip(self, text: str) -> bool:
        if not self.networks:
            return True
        ip = _ip(text)
        return ip is not None and any(ip in net for net in self.networks)

    def __call__(self, address: Address) -> bool:
        return self.allows_ip(address[0])

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __repr__(self) -> str:
        return f"AddressSpace({[str(n) for n in self.networks]})"


def first_non_loopback() -> str | None:
    """This machine's main address: the source the kernel would pick for an outside
    destination (a UDP ``connect`` sends nothing), else one the host name resolves to."""
    for family, probe in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect((probe, 9))
                ip = _ip(s.getsockname()[0])
        except OSError:
            continue
        if ip is not None and not ip.is_loopback and not ip.is_unspecified:
            return str(ip)
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, type=socket.SOCK_DGRAM)
    except OSError:
        return None
    for info in infos:
        ip = _ip(str(info[4][0]))
        if ip is not None and not ip.is_loopback:
            return str(ip)
    return None


def _literal(host: str, what: str) -> IPAddress:
    """An IP literal, or the first address a host name resolves to."""
    ip = _ip(host)
    if ip is not None:
        return ip
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise ClusterConfigError(f"{what} {host!r} does not resolve: {exc}") from None
    ip = _ip(str(infos[0][4][0]))
    if ip is None:
        raise ClusterConfigError(f"{what} {host!r} resolves to no IP address")
    return ip


def gossip_addresses(
    bind_address: str | None,
    advertise_address: str | None,
    http_host: str,
    environ: Mapping[str, str],
) -> tuple[str, str]:
    """(bind IP, advertised IP) by the rules in the module docstring."""
    bind = _literal(bind_address or http_host or "0.0.0.0", "gossip bind address")
    if advertise_address:
        advertise: IPAddress | None = _literal(advertise_address, "gossip advertise address")
    elif not bind.is_unspecified:
        advertise = bind
    else:
        pod_ip = environ.get("POD_IP", "").strip()
        found = pod_ip or first_non_loopback()
        advertise = _ip(found) if found else None
        if advertise is None:
            raise ClusterConfigError(
                "cannot tell which address to advertise for gossip: set "
                "cluster_config.gossip.advertise_address (or the POD_IP environment variable)"
            )
    if advertise.is_unspecified:
        raise ClusterConfigError(f"cannot advertise the unspecified address {advertise}")
    return str(bind), str(advertise)


def parse_peer(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterConfigError(f"peer {text!r} is not host:port")
    return host.strip("[]"), int(port)


async def resolve_peers(peers: Iterable[str]) -> tuple[list[Address], list[str]]:
    """Every address the peers resolve to (deduplicated, in order), and the problems met."""
    loop = asyncio.get_running_loop()
    found: dict[Address, None] = {}
    problems: list[str] = []
    for peer in peers:
        try:
            host, port = parse_peer(peer)
        except ClusterConfigError as exc:
            problems.append(str(exc))
            continue
        ip = _ip(host)
        if ip is not None:
            found[(str(ip), port)] = None
            continue
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            problems.append(f"{peer}: {exc}")
            continue
        for info in infos:
            resolved = _ip(str(info[4][0]))
            if resolved is not None:
                found[(str(resolved), port)] = None
    return list(found), problems
