"""Which fields each discovery type needs, and the parsers of the fields with a format
(``dns_server``, ``etcd_endpoints``): standard library only, so the config checks can run
them at load time, before any backend's client library is imported."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from ..addresses import ClusterConfigError, parse_peer
from .base import DiscoveryConfigError, dial_timeout_seconds
from .registry import EXTRAS

if TYPE_CHECKING:
    from rainbridge.config.schema import DiscoveryConfig

_FIELD = "$.cluster_config.discovery"


def parse_dns_server(text: str) -> tuple[str, int]:
    """``ip``, ``ip:port`` or ``[v6]:port`` → (ip, port); :class:`DiscoveryConfigError`
    naming ``dns_server`` otherwise (a server named by a host name would need DNS itself)."""
    value = text.strip()
    host, port = value, 53
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest:
            port = int(rest[1:]) if rest[:1] == ":" and rest[1:].isdigit() else -1
    elif value.count(":") == 1:
        host, _, tail = value.partition(":")
        port = int(tail) if tail.isdigit() else -1
    try:
        ipaddress.ip_address(host)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise DiscoveryConfigError(
            f"{_FIELD}.dns_server: expected ip, ip:port or [v6]:port, got {text!r}"
        )
    return host, port


def parse_etcd_endpoint(text: str, index: int) -> tuple[str, int]:
    value = text.strip()
    if value.startswith("https://"):
        raise DiscoveryConfigError(
            f"{_FIELD}.etcd_endpoints[{index}]: TLS endpoints are not supported (the etcd "
            f"client speaks plain gRPC); got {text!r}"
        )
    value = value.removeprefix("http://").rstrip("/")
    try:
        return parse_peer(value)
    except ClusterConfigError:
        raise DiscoveryConfigError(
            f"{_FIELD}.etcd_endpoints[{index}]: expected host:port or http://host:port, "
            f"got {text!r}"
        ) from None


# type -> fields it cannot work without (any one of a tuple suffices)
REQUIRED: dict[str, tuple[tuple[str, ...], ...]] = {
    "static": (),
    "dns": (("dns_names",),),
    "etcd": (("service_name",), ("etcd_endpoints",)),
    "kubernetes": (("k8s_label_selector",),),
    "consul": (("service_name",),),
    "udp": (("service_name",), ("allowed_address_space",), ("udp_broadcast_port",),
            ("udp_secret",)),
    "mdns": (("mdns_service", "service_name"),),
}


def config_problems(config: DiscoveryConfig, peers: list[str] | None = None) -> list[tuple[str, str]]:
    """(JSON path, message) for each field the configured type needs and lacks; start-up
    stops on any. ``peers``: ``cluster_config.peers`` (``static`` discovery uses them)."""
    base = "$.cluster_config.discovery"
    if not config.enabled:
        return []
    if not config.type:
        return [(f"{base}.type", "required when discovery is enabled "
                 f"(one of {', '.join(sorted(EXTRAS))})")]
    out = []
    for fields in REQUIRED.get(config.type, ()):
        if not any(getattr(config, f) for f in fields):
            names = " or ".join(fields)
            out.append((f"{base}.{fields[0]}", f"{names} is required for {config.type} discovery"))
    if config.type == "static" and not peers:
        out.append(("$.cluster_config.peers", "static discovery needs peers (host:port)"))
    checks: list[Callable[[], object]] = [lambda: dial_timeout_seconds(config.dial_timeout)]
    if config.type == "dns" and config.dns_server:
        checks.append(lambda: parse_dns_server(config.dns_server or ""))
    if config.type == "etcd":
        checks += [partial(parse_etcd_endpoint, e, i) for i, e in enumerate(config.etcd_endpoints)]
    if config.type == "udp" and config.allowed_address_space:
        checks.append(partial(udp_needs_ipv4, config.allowed_address_space))
    if not out:
        checks.append(partial(_client_library, config.type))
    for check in checks:
        try:
            check()
        except DiscoveryConfigError as exc:
            path, _, message = str(exc).partition(": ")
            out.append((path, message))
    return out


def udp_needs_ipv4(cidrs: list[str]) -> None:
    try:
        nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]
    except ValueError:
        return  # the config checks name the bad CIDR already
    if not any(isinstance(n, ipaddress.IPv4Network) for n in nets):
        raise DiscoveryConfigError(
            f"{_FIELD}.allowed_address_space: udp discovery broadcasts, so it needs an IPv4 "
            "network (IPv6 has no broadcast)"
        )


def _client_library(kind: str) -> None:
    """The backend's client library is installed (else the error names the pip extra)."""
    from .registry import factory

    try:
        factory(kind)
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("rainbridge"):
            raise
        # a backend module of ours not in this build: the cluster service reports it
