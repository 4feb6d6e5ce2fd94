"""DNS discovery: A, AAAA and SRV records of each ``discovery.dns_names`` entry, every round.

- A / AAAA (a Kubernetes headless service, a round-robin name): each address with our
  gossip port appended (members share ``gossip.port``).
- SRV (``_gossip._tcp.<name>`` or any SRV name listed): each target's A / AAAA with the
  record's port.
- ``dns_server`` (``ip``, ``ip:port`` or ``[v6]:port``) is the server asked; default the
  system's resolvers. No cache: every round asks again, so a record removed is gone next
  round. ``dial_timeout`` bounds each round's lookups (default 5 s).
- A name that gives nothing (NXDOMAIN, no answer of any type, timeout, server down) makes
  the round degraded; its last good addresses are kept until it answers again.

Client: dnspython (extra ``dns``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver

from .base import Address, Discovery, DiscoveryConfigError, dial_timeout_seconds
from .fields import parse_dns_server

if TYPE_CHECKING:
    from rainbridge.config.schema import DiscoveryConfig

_FIELD = "$.cluster_config.discovery"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, dns.resolver.NXDOMAIN):
        return "NXDOMAIN"
    if isinstance(exc, dns.resolver.NoAnswer):
        return "no answer"
    if isinstance(exc, dns.exception.Timeout):
        return "timeout"
    if isinstance(exc, dns.resolver.NoNameservers):
        return "no server answered"
    return type(exc).__name__


class DnsDiscovery(Discovery):
    name = "dns"

    def __init__(self, names: list[str], port: int, self_address: Address,
                 server: tuple[str, int] | None, timeout: float) -> None:
        super().__init__()
        self.names = names
        self.port = port
        self.self_address = self_address
        self.timeout = timeout
        self.resolver = dns.asyncresolver.Resolver(configure=server is None)
        if server is not None:
            self.resolver.nameservers = [dns.nameserver.Do53Nameserver(server[0], server[1])]
        self.resolver.lifetime = timeout
        self.resolver.timeout = timeout
        self._last: dict[str, list[Address]] = {}

    async def _query(self, name: str, rdtype: str) -> list:
        answer = await self.resolver.resolve(name, rdtype, search=False)
        return list(answer)

    async def _addresses(self, name: str) -> list[str]:
        """A and AAAA of ``name``; raises the A lookup's error when both fail."""
        results = await asyncio.gather(self._query(name, "A"), self._query(name, "AAAA"),
                                       return_exceptions=True)
        ips = [r.address for rs in results if isinstance(rs, list) for r in rs]
        if not ips and isinstance(results[0], BaseException):
            raise results[0]
        return ips

    async def _lookup(self, name: str) -> list[Address]:
        plain, srv = await asyncio.gather(self._addresses(name), self._query(name, "SRV"),
                                          return_exceptions=True)
        found: list[Address] = []
        if isinstance(plain, list):
            found += [(ip, self.port) for ip in plain]
        if isinstance(srv, list):
            targets = await asyncio.gather(
                *(self._addresses(r.target.to_text()) for r in srv), return_exceptions=True)
            for record, ips in zip(srv, targets, strict=True):
                if isinstance(ips, list):
                    found += [(ip, record.port) for ip in ips]
        if not found:
            errors = [r for r in (plain, srv) if isinstance(r, BaseException)]
            if errors and not isinstance(errors[0], dns.exception.DNSException):
                raise errors[0]  # not a DNS answer: a bug, let the runner report it
            raise LookupError(", ".join(dict.fromkeys(_reason(e) for e in errors)) or "no records")
        return found

    async def candidates(self) -> list[Address]:
        results = await asyncio.gather(*(self._lookup(n) for n in self.names),
                                       return_exceptions=True)
        problems = []
        for name, result in zip(self.names, results, strict=True):
            if isinstance(result, LookupError):
                problems.append(f"{name}: {result}")
            elif isinstance(result, BaseException):
                raise result
            else:
                self._last[name] = result
        found = list(dict.fromkeys(a for n in self.names for a in self._last.get(n, ())))
        found = [a for a in found if a != self.self_address]
        h = self.health
        if problems:
            h.healthy, h.failures, h.last_error = False, h.failures + 1, "; ".join(problems)
        else:
            h.healthy, h.failures, h.last_error = True, 0, None
            h.last_success = time.time()
        h.candidates = len(found)
        return found


def make(config: DiscoveryConfig, self_address: tuple[str, int], node_name: str,
         environ: Mapping[str, str]) -> Discovery:
    if not config.dns_names:
        raise DiscoveryConfigError(f"{_FIELD}.dns_names: required for dns discovery")
    server = parse_dns_server(config.dns_server) if config.dns_server else None
    timeout = dial_timeout_seconds(config.dial_timeout)
    return DnsDiscovery(list(config.dns_names), self_address[1], self_address, server, timeout)
