"""etcd discovery against a real etcd on loopback ports (Debian ``etcd-server``).

The backend alone: registration under a lease, watch of the prefix, revocation on stop,
etcd going down (degraded, last list kept) and coming back (registered again). Then real
gateways: four ``rainbridge serve`` processes on 127.0.0.83 … 127.0.0.86 find each other
through etcd (three from nothing, a fourth by scale-up, one leaves), a key of a member
outside ``allowed_address_space`` is never contacted, and etcd going away leaves the
cluster intact.
"""

from __future__ import annotations

import asyncio

import aetcd
import pytest

from discovery_fleet import DiscoveryFleet
from discovery_support import Etcd, degraded
from rainbridge.cluster.discovery.base import DiscoveryConfigError
from rainbridge.cluster.discovery.etcd import PREFIX, EtcdDiscovery
from rainbridge.cluster.discovery.fields import parse_etcd_endpoint as parse_endpoint
from support import eventually, until


@pytest.fixture
def etcd(tmp_path):
    server = Etcd(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:2379", ("127.0.0.1", 2379)), ("http://etcd-0.etcd:2379/", ("etcd-0.etcd", 2379)),
])
def test_endpoint_forms(text, expected):
    assert parse_endpoint(text, 0) == expected


@pytest.mark.parametrize(("text", "match"), [
    ("https://etcd:2379", "TLS endpoints are not supported"), ("etcd", "expected host:port"),
])
def test_a_bad_endpoint_names_its_index(text, match):
    with pytest.raises(DiscoveryConfigError, match=rf"etcd_endpoints\[3\]: {match}"):
        parse_endpoint(text, 3)


async def test_members_register_under_a_lease_watch_and_revoke_on_stop(etcd):
    endpoint = [("127.0.0.1", etcd.client_port)]
    a = EtcdDiscovery(endpoint, "svc", "a", ("127.0.0.83", 7000), 1.0)
    b = EtcdDiscovery(endpoint, "svc", "b", ("127.0.0.84", 7000), 1.0)
    other = EtcdDiscovery(endpoint, "another-service", "c", ("127.0.0.85", 7000), 1.0)
    for d in (a, b, other):
        await d.start()
    try:
        async def both():
            return (await a.candidates(), await b.candidates()) == (
                [("127.0.0.84", 7000)], [("127.0.0.83", 7000)]) or (
                await a.candidates(), await b.candidates())

        await until(both, 10, "each sees the other, not the other service")
        async with aetcd.Client("127.0.0.1", etcd.client_port) as client:
            got = await client.get(f"{PREFIX}svc/b".encode())
            assert got.value == b"127.0.0.84:7000" and got.lease != 0
            await b.stop()  # revokes the lease: the key goes at once, a sees it by watch
            assert await client.get(f"{PREFIX}svc/b".encode()) is None

        async def gone():
            return await a.candidates() == [] or await a.candidates()

        await until(gone, 5, "b's key deleted")
    finally:
        for d in (a, b, other):
            await d.stop()


async def test_etcd_down_is_degraded_keeps_the_list_and_registers_again(etcd):
    endpoint = [("127.0.0.1", etcd.client_port)]
    a = EtcdDiscovery(endpoint, "svc", "a", ("127.0.0.83", 7000), 0.5)
    b = EtcdDiscovery(endpoint, "svc", "b", ("127.0.0.84", 7000), 0.5)
    await a.start()
    await b.start()
    try:
        async def listed():
            return await a.candidates() == [("127.0.0.84", 7000)] or await a.candidates()

        await until(listed, 10, "a sees b")
        etcd.stop()

        await until(lambda: degraded(a), 10, "degraded")
        assert await a.candidates() == [("127.0.0.84", 7000)]  # the last list stands
        assert "127.0.0.1:" in a.health.last_error and a.health.extra["registered"] is False
        etcd.start()  # same data dir: the old keys may still be there until their lease ends

        async def healthy():
            return (a.health.healthy and a.health.extra["registered"]) or a.health

        await until(healthy, 20, "registered again")
        await until(listed, 10, "a sees b again")
    finally:
        await a.stop()
        await b.stop()


def test_gateways_form_a_cluster_through_etcd(tmp_path, etcd, pg_database, mock):
    hosts = ["127.0.0.83", "127.0.0.84", "127.0.0.85", "127.0.0.86"]
    outside = "127.0.0.91"
    discovery = {"type": "etcd", "service_name": "rb-test", "etcd_endpoints": [etcd.endpoint],
                 "allowed_address_space": ["127.0.0.80/29"]}
    with DiscoveryFleet(tmp_path, "e", hosts, outside, mock.url, pg_database, discovery) as fleet:
        # a stranger's key under the prefix: inside the list, outside the address space
        asyncio.run(_put(etcd.client_port, f"{PREFIX}rb-test/stranger", f"{outside}:{fleet.port}"))
        first = fleet.form()
        fourth = fleet.scale_up(first)
        assert fourth.status()["discovery"]["backends"][0]["registered"] is True
        eventually(lambda: fourth.status()["discovery"]["rejected"].get("address_space", 0) >= 1,
                   10, "the stranger's address rejected")
        fleet.never_contacted()

        rest = fleet.leave([*first, fourth], first[1])  # graceful: lease revoked, memberlist leave
        keys = asyncio.run(_keys(etcd.client_port, f"{PREFIX}rb-test/"))
        assert f"{PREFIX}rb-test/e1" not in keys and f"{PREFIX}rb-test/e0" in keys

        fleet.outage(rest, etcd.stop, etcd.start)


async def _put(port: int, key: str, value: str) -> None:
    async with aetcd.Client("127.0.0.1", port) as client:
        await client.put(key.encode(), value.encode())


async def _keys(port: int, prefix: str) -> set[str]:
    async with aetcd.Client("127.0.0.1", port) as client:
        return {kv.key.decode() for kv in await client.get_prefix(prefix.encode())}
