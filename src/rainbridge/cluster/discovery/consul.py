"""Consul discovery: register with the local agent, find the healthy instances by blocking
queries.

- **Registration**: service ``service_name``, id ``<service_name>-<node name>``, our gossip
  address and port, with a TCP check on the gossip port (every ``CHECK_INTERVAL``; Consul
  drops the instance after ``DEREGISTER_AFTER`` critical, so a crashed member leaves the
  catalog by itself). Deregistered on stop. Registered again at the start of each session,
  so an agent that lost its state (restarted without a data dir) learns us again.
- **Candidates**: ``/v1/health/service/<service_name>?passing`` as a blocking query
  (``index`` = the last ``X-Consul-Index``, ``wait`` = ``WAIT``): the list changes the
  moment Consul sees an instance pass or fail its check, without polling. An index that
  goes backwards resets to 0, as the blocking-query documentation asks.
- ``consul_address``: ``host:port`` of the agent (``http://`` or ``https://`` prefix
  allowed; default ``127.0.0.1:8500``, the local agent). ACL token: ``$CONSUL_HTTP_TOKEN``,
  sent as the ``X-Consul-Token`` header, never logged.
- **Failures** (agent down, 403, timeouts): the last list stands, the health says degraded,
  and the session starts again after 0.5 s doubling to ``RETRY_MAX``.

Client: py-consul (extra ``consul``), the maintained fork of python-consul, through its
aiohttp client.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
import consul
import consul.aio

from ..addresses import ClusterConfigError, format_address, parse_peer
from .base import Address, Discovery, DiscoveryConfigError, cancel, dial_timeout_seconds

if TYPE_CHECKING:
    from rainbridge.config.schema import DiscoveryConfig

log = logging.getLogger("rainbridge.cluster.discovery")

CHECK_INTERVAL = "10s"
DEREGISTER_AFTER = "1m"
WAIT_SECONDS = 55  # a blocking query returns at the latest after this (+ Consul's jitter)
RETRY_FIRST = 0.5
RETRY_MAX = 15.0
_FIELD = "$.cluster_config.discovery"


def instance_address(entry: Mapping[str, Any]) -> Address | None:
    """The gossip address of one ``/v1/health/service`` entry: the service's address, else
    its node's (Consul's rule for an empty ``Service.Address``); None unless an IP."""
    service = entry.get("Service") or {}
    host = service.get("Address") or (entry.get("Node") or {}).get("Address") or ""
    port = service.get("Port")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if not isinstance(port, int) or not 0 < port < 65536:
        return None
    return str(ip), port


class ConsulDiscovery(Discovery):
    name = "consul"

    def __init__(self, agent: tuple[str, int], scheme: str, service: str, node_name: str,
                 self_address: Address, timeout: float, token: str | None) -> None:
        super().__init__()
        self.agent = agent
        self.scheme = scheme
        self.service = service
        self.service_id = f"{service}-{node_name}"
        self.self_address = self_address
        self.timeout = timeout
        self._token = token
        self.found: list[Address] = []
        self.index = 0
        self._task: asyncio.Task | None = None
        self.health.extra["registered"] = False

    def _client(self) -> consul.aio.Consul:
        host, port = self.agent
        return consul.aio.Consul(host=host, port=port, scheme=self.scheme, token=self._token)

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._sessions())

    async def candidates(self) -> list[Address]:
        return self.report(self.found, self.self_address)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel(task)
        if not self.health.extra.get("registered"):
            return
        client = self._client()
        try:
            async with asyncio.timeout(self.timeout):
                await client.agent.service.deregister(self.service_id)
        except (consul.ConsulException, aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("cluster discovery: consul service %s not deregistered (%s); its "
                        "check fails and Consul drops it after %s", self.service_id,
                        type(exc).__name__, DEREGISTER_AFTER)
        finally:
            self.health.extra["registered"] = False
            await client.close()

    async def _sessions(self) -> None:
        delay = RETRY_FIRST
        while True:
            client = self._client()
            try:
                await self._session(client)
                reason = "the session ended"
            except consul.ACLPermissionDenied:
                reason = "HTTP 403 permission denied (check CONSUL_HTTP_TOKEN and its policy)"
            except (consul.ConsulException, aiohttp.ClientError, OSError, TimeoutError,
                    ValueError) as exc:
                reason = f"{type(exc).__name__}: {exc}".strip().rstrip(":")[:200]
            except Exception as exc:  # a client bug must not end discovery: log, retry
                log.exception("cluster discovery: consul session failed")
                reason = type(exc).__name__
            finally:
                await client.close()
            if self.health.healthy and self.health.last_success is not None:
                delay = RETRY_FIRST  # it worked until now: retry soon
            h = self.health
            h.healthy, h.failures = False, h.failures + 1
            h.last_error = f"{format_address(self.agent)}: {reason}"
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _session(self, client: consul.aio.Consul) -> None:
        ip, port = self.self_address
        async with asyncio.timeout(self.timeout):
            await client.agent.service.register(
                self.service, service_id=self.service_id, address=ip, port=port,
                check=consul.Check.tcp(ip, port, CHECK_INTERVAL, timeout=f"{self.timeout}s",
                                       deregister=DEREGISTER_AFTER),
                replace_existing_checks=True)
        self.health.extra["registered"] = True
        self.index = 0
        while True:
            # the blocking query returns within its wait plus Consul's jitter of wait/16
            async with asyncio.timeout(WAIT_SECONDS * 17 / 16 + self.timeout):
                index, entries = await client.health.service(
                    self.service, passing=True, index=self.index or None,
                    wait=f"{WAIT_SECONDS}s")
            new_index = int(index or 0)
            self.index = 0 if new_index < self.index else max(new_index, 1)
            found = [a for e in entries or () if (a := instance_address(e)) is not None]
            self.found = list(dict.fromkeys(found))
            h = self.health
            h.healthy, h.failures, h.last_error = True, 0, None
            h.last_success = time.time()
            h.extra["index"] = self.index


def parse_agent(text: str) -> tuple[tuple[str, int], str]:
    """``consul_address`` → ((host, port), scheme); :class:`DiscoveryConfigError` naming it."""
    value = text.strip()
    scheme = "http"
    for prefix in ("http://", "https://"):
        if value.startswith(prefix):
            scheme, value = prefix[:-3], value[len(prefix):]
    try:
        return parse_peer(value.rstrip("/")), scheme
    except ClusterConfigError:
        raise DiscoveryConfigError(
            f"{_FIELD}.consul_address: expected host:port (optionally http:// or https://), "
            f"got {text!r}") from None


def make(config: DiscoveryConfig, self_address: tuple[str, int], node_name: str,
         environ: Mapping[str, str]) -> Discovery:
    if not config.service_name:
        raise DiscoveryConfigError(f"{_FIELD}.service_name: required for consul discovery")
    agent, scheme = parse_agent(config.consul_address or "127.0.0.1:8500")
    return ConsulDiscovery(agent, scheme, config.service_name, node_name, self_address,
                           dial_timeout_seconds(config.dial_timeout),
                           environ.get("CONSUL_HTTP_TOKEN") or None)
