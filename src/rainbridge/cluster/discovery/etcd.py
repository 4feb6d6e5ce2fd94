"""etcd discovery: our key under a lease (kept alive, revoked on leave), list + watch.

- **Key**: ``/rainbridge/discovery/<service_name>/<node name>`` → ``ip:port`` (our gossip
  address), put under a lease of ``LEASE_TTL`` seconds refreshed every third of it: a
  member that crashes drops out of the list when its lease runs out; one that stops
  gracefully revokes the lease, and its key goes at once.
- **Watch**: list the prefix, then watch it from the next revision; the candidates are the
  values under the prefix, always current without polling.
- **Failures** (etcd unreachable, lease lost, watch broken): the last list stands, the
  health says degraded, and the session (connect, lease, put, list, watch) starts again
  after 0.5 s doubling to ``RETRY_MAX``, trying the endpoints in turn. The cluster never
  waits for etcd: ``start`` returns at once.
- ``etcd_endpoints``: ``host:port`` or ``http://host:port`` (plain gRPC: the client speaks
  no TLS); ``$RAINBRIDGE_ETCD_USERNAME`` / ``$RAINBRIDGE_ETCD_PASSWORD`` when etcd has auth.

Client: aetcd (extra ``etcd``), an asyncio etcd v3 gRPC client with leases and watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import aetcd

from ..addresses import ClusterConfigError, format_address, parse_peer
from .base import Address, Discovery, DiscoveryConfigError, cancel, dial_timeout_seconds
from .fields import parse_etcd_endpoint

if TYPE_CHECKING:
    from rainbridge.config.schema import DiscoveryConfig

log = logging.getLogger("rainbridge.cluster.discovery")

PREFIX = "/rainbridge/discovery/"
LEASE_TTL = 10  # seconds
RETRY_FIRST = 0.5
RETRY_MAX = 15.0
_FIELD = "$.cluster_config.discovery"


class EtcdDiscovery(Discovery):
    name = "etcd"

    def __init__(self, endpoints: list[tuple[str, int]], service: str, node_name: str,
                 self_address: Address, timeout: float,
                 credentials: tuple[str, str] | None = None) -> None:
        super().__init__()
        self.endpoints = endpoints
        self.prefix = f"{PREFIX}{service}/".encode()
        self.key = self.prefix + node_name.encode()
        self.value = format_address(self_address).encode()
        self.self_address = self_address
        self.timeout = timeout
        self.credentials = credentials
        self.found: dict[bytes, Address] = {}
        self._client: aetcd.Client | None = None
        self._lease: object | None = None
        self._task: asyncio.Task | None = None
        self._endpoint = 0
        self.health.extra["registered"] = False

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._sessions())

    async def candidates(self) -> list[Address]:
        return self.report(self.found.values(), self.self_address)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel(task)
        client, lease = self._client, self._lease
        if client is not None and lease is not None:
            try:
                async with asyncio.timeout(self.timeout):
                    await client.revoke_lease(lease.id)  # type: ignore[attr-defined]
            except (aetcd.ClientError, TimeoutError) as exc:
                log.warning("cluster discovery: etcd lease not revoked (%s); it expires in "
                            "%ds", type(exc).__name__, LEASE_TTL)
        await self._close()

    async def _close(self) -> None:
        client, self._client, self._lease = self._client, None, None
        self.health.extra["registered"] = False
        if client is not None:
            with contextlib.suppress(Exception):  # closing a broken channel may fail anyhow
                await client.close()

    async def _sessions(self) -> None:
        delay = RETRY_FIRST
        while True:
            try:
                await self._session()
                reason = "the session ended"
            except (aetcd.ClientError, OSError, TimeoutError, LookupError) as exc:
                reason = f"{type(exc).__name__}: {exc}".strip().rstrip(":")[:200]
            except Exception as exc:  # a client bug must not end discovery: log, retry
                log.exception("cluster discovery: etcd session failed")
                reason = type(exc).__name__
            if self.health.extra.get("registered"):
                delay = RETRY_FIRST  # it worked until now: retry soon
            h = self.health
            h.healthy, h.failures = False, h.failures + 1
            h.last_error = f"{self._where()}: {reason}"
            await self._close()
            self._endpoint = (self._endpoint + 1) % len(self.endpoints)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    def _where(self) -> str:
        host, port = self.endpoints[self._endpoint]
        return format_address((host, port))

    async def _session(self) -> None:
        """One connection: register, list, then watch and keep the lease alive until either
        fails (raises) or the task is cancelled."""
        host, port = self.endpoints[self._endpoint]
        user, password = self.credentials or (None, None)
        client = aetcd.Client(host, port, username=user, password=password,
                              timeout=self.timeout)
        self._client = client
        async with asyncio.timeout(self.timeout * 3):
            await client.connect()
            lease = await client.lease(LEASE_TTL)
            self._lease = lease
            await client.put(self.key, self.value, lease=lease.id)
            listed = await client.get_prefix(self.prefix)
            watch = await client.watch_prefix(self.prefix,
                                              start_revision=listed.header.revision + 1)
        self.found = {kv.key: a for kv in listed if (a := _address(kv.value)) is not None}
        h = self.health
        h.healthy, h.failures, h.last_error = True, 0, None
        h.last_success = time.time()
        h.extra["registered"] = True
        h.candidates = len(self.found) - (self.key in self.found)
        tasks = [asyncio.ensure_future(self._keep_alive(client, lease)),
                 asyncio.ensure_future(self._follow(watch))]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()  # raises the failure that ended the session

    async def _keep_alive(self, client: aetcd.Client, lease) -> None:
        while True:
            await asyncio.sleep(LEASE_TTL / 3)
            async with asyncio.timeout(self.timeout):
                reply = await client.refresh_lease(lease.id)
            if reply is None or reply.TTL <= 0:
                raise LookupError("the lease expired (etcd was away longer than its TTL)")
            self.health.last_success = time.time()

    async def _follow(self, watch) -> None:
        async for event in watch:
            if event.kind == "PUT":
                address = _address(event.kv.value)
                if address is not None:
                    self.found[event.kv.key] = address
            else:
                self.found.pop(event.kv.key, None)
        raise LookupError("the watch ended")


def _address(value: bytes) -> Address | None:
    """A registered value (``ip:port``), or None for one that is not (logged by nobody:
    another application's key under our prefix is not ours to judge)."""
    try:
        return parse_peer(value.decode())
    except (UnicodeDecodeError, ClusterConfigError):
        return None


def make(config: DiscoveryConfig, self_address: tuple[str, int], node_name: str,
         environ: Mapping[str, str]) -> Discovery:
    if not config.service_name:
        raise DiscoveryConfigError(f"{_FIELD}.service_name: required for etcd discovery")
    if not config.etcd_endpoints:
        raise DiscoveryConfigError(f"{_FIELD}.etcd_endpoints: required for etcd discovery")
    endpoints = [parse_etcd_endpoint(e, i) for i, e in enumerate(config.etcd_endpoints)]
    user = environ.get("RAINBRIDGE_ETCD_USERNAME")
    password = environ.get("RAINBRIDGE_ETCD_PASSWORD")
    credentials = (user, password) if user and password else None
    return EtcdDiscovery(endpoints, config.service_name, node_name, self_address,
                         dial_timeout_seconds(config.dial_timeout), credentials)
