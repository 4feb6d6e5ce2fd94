"""DNS discovery against a real dnsmasq on a loopback port (Debian ``dnsmasq-base``).

The backend alone: A and SRV records, records changed while it runs, NXDOMAIN and a server
that is down (degraded, last addresses kept, recovery). Then real gateways: four
``rainbridge serve`` processes on 127.0.0.73 … 127.0.0.76 (one gossip port) find each other
through ``gw.test``; the fourth is added by scale-up, one leaves, an address outside
``allowed_address_space`` (127.0.0.81) in the same record set is never contacted, and
dnsmasq going away leaves the cluster intact.
"""

from __future__ import annotations

import asyncio

import pytest

from discovery_fleet import DiscoveryFleet
from discovery_support import Dnsmasq
from rainbridge.cluster.discovery.base import DiscoveryConfigError
from rainbridge.cluster.discovery.dns import DnsDiscovery
from rainbridge.cluster.discovery.fields import parse_dns_server as parse_server


@pytest.fixture
def dnsmasq(tmp_path):
    server = Dnsmasq(tmp_path, srv=[("_gossip._tcp.gw.test", "node9.test", 7009)])
    server.set_hosts({"gw.test": ["127.0.0.73", "127.0.0.74"]})
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1", ("127.0.0.1", 53)), ("127.0.0.1:5353", ("127.0.0.1", 5353)),
    ("[::1]:5353", ("::1", 5353)), ("::1", ("::1", 53)), ("[::1]", ("::1", 53)),
])
def test_dns_server_forms(text, expected):
    assert parse_server(text) == expected


@pytest.mark.parametrize("text", ["dns.example:53", "127.0.0.1:0", "127.0.0.1:x", "[::1]x"])
def test_a_bad_dns_server_names_the_field(text):
    with pytest.raises(DiscoveryConfigError, match=r"discovery\.dns_server"):
        parse_server(text)


async def test_a_and_srv_records_become_candidates_and_follow_changes(dnsmasq):
    d = DnsDiscovery(["gw.test", "_gossip._tcp.gw.test"], 7946, ("127.0.0.73", 7946),
                     ("127.0.0.1", dnsmasq.port), 1.0)
    # our own address is left out; the SRV target has no A record yet: that name is degraded
    assert await d.candidates() == [("127.0.0.74", 7946)]
    assert d.health.last_error == "_gossip._tcp.gw.test: no answer"
    dnsmasq.set_hosts({"gw.test": ["127.0.0.74", "127.0.0.75"], "node9.test": ["127.0.0.79"]})

    async def converged():
        for _ in range(100):
            got = await d.candidates()
            if set(got) == {("127.0.0.74", 7946), ("127.0.0.75", 7946), ("127.0.0.79", 7009)}:
                return got
            await asyncio.sleep(0.05)
        raise AssertionError(f"records not followed: {got}")

    await converged()
    assert d.health.healthy and d.health.failures == 0 and d.health.candidates == 3


async def test_nxdomain_and_a_server_down_are_degraded_and_keep_the_last_addresses(dnsmasq):
    d = DnsDiscovery(["gw.test", "gone.test"], 7946, ("127.0.0.1", 1),
                     ("127.0.0.1", dnsmasq.port), 0.5)
    assert set(await d.candidates()) == {("127.0.0.73", 7946), ("127.0.0.74", 7946)}
    assert not d.health.healthy and d.health.last_error == "gone.test: NXDOMAIN"
    d.names = ["gw.test"]
    await d.candidates()
    assert d.health.healthy
    dnsmasq.stop()
    assert set(await d.candidates()) == {("127.0.0.73", 7946), ("127.0.0.74", 7946)}
    assert not d.health.healthy and d.health.failures == 1
    assert d.health.last_error.startswith("gw.test: ")
    dnsmasq.start()
    await d.candidates()
    assert d.health.healthy and d.health.failures == 0


def test_gateways_form_a_cluster_through_dns(tmp_path, dnsmasq, pg_database, mock):
    hosts = ["127.0.0.73", "127.0.0.74", "127.0.0.75", "127.0.0.76"]
    outside = "127.0.0.81"  # in the record set, outside the space: must see no connection
    discovery = {"type": "dns", "dns_names": ["gw.test"], "dns_server": dnsmasq.server,
                 "allowed_address_space": ["127.0.0.72/29"]}
    with DiscoveryFleet(tmp_path, "d", hosts, outside, mock.url, pg_database, discovery,
                        udp=True) as fleet:
        dnsmasq.set_hosts({"gw.test": [*hosts[:3], outside]})
        first = fleet.form()

        # scale-up: the fourth gets a record and starts
        dnsmasq.set_hosts({"gw.test": [*hosts, outside]})
        fourth = fleet.scale_up(first)

        # the outside address was in every round and was never contacted
        status = first[0].status()
        assert status["discovery"]["type"] == "dns"
        assert status["discovery"]["rejected"]["address_space"] >= 1
        assert status["discovery"]["backends"][0]["status"] == "healthy"
        fleet.never_contacted()
        assert first[0].proc.output().count(f"{outside}:{fleet.port} rejected") == 1

        # one leaves (its record goes, it stops): the others see it left, not back
        dnsmasq.set_hosts({"gw.test": [hosts[0], hosts[2], hosts[3], outside]})
        rest = fleet.leave([*first, fourth], first[1])

        # dnsmasq goes away: degraded, the cluster stays; back: healthy
        fleet.outage(rest, dnsmasq.stop, dnsmasq.start)
