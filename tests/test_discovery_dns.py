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
import socket

import pytest

from discovery_support import Dnsmasq, Gateway, gateway_config, sees
from rainbridge.cluster.discovery.base import DiscoveryConfigError
from rainbridge.cluster.discovery.dns import DnsDiscovery
from rainbridge.cluster.discovery.fields import parse_dns_server as parse_server
from support import eventually, free_port


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
    outside = "127.0.0.81"
    port = free_port(hosts[0])
    for h in [*hosts[1:], outside]:
        s = socket.socket()
        try:
            s.bind((h, port))  # the same gossip port must be free on every address
        except OSError:
            pytest.skip(f"gossip port {port} taken on {h}")
        finally:
            s.close()
    listener = socket.socket()  # where the outside record points: must see no connection
    listener.bind((outside, port))
    listener.listen()
    listener.setblocking(False)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((outside, port))
    udp.setblocking(False)
    dnsmasq.set_hosts({"gw.test": [*hosts[:3], outside]})
    discovery = {"type": "dns", "dns_names": ["gw.test"], "dns_server": dnsmasq.server,
                 "allowed_address_space": ["127.0.0.72/29"]}
    gateways: list[Gateway] = []

    def launch(i: int) -> Gateway:
        config = gateway_config(mock.url, pg_database, f"d{i}", port, discovery)
        g = Gateway(tmp_path, f"d{i}", hosts[i], config)
        gateways.append(g)
        return g

    try:
        first = [launch(i) for i in range(3)]
        for g in first:
            g.ready()
        eventually(lambda: sees(first, {"d0", "d1", "d2"}), 30, "three members from nothing")

        # scale-up: the fourth gets a record and starts
        dnsmasq.set_hosts({"gw.test": [*hosts, outside]})
        fourth = launch(3).ready()
        everyone = [*first, fourth]
        eventually(lambda: sees(everyone, {"d0", "d1", "d2", "d3"}), 30, "the fourth joined")

        # the outside address was in every round and was never contacted
        status = first[0].status()
        assert status["discovery"]["type"] == "dns"
        assert status["discovery"]["rejected"]["address_space"] >= 1
        assert status["discovery"]["backends"][0]["status"] == "healthy"
        with pytest.raises(BlockingIOError):
            listener.accept()
        with pytest.raises(BlockingIOError):
            udp.recvfrom(2048)
        assert first[0].proc.output().count(f"{outside}:{port} rejected") == 1

        # one leaves (its record goes, it stops): the others see it left, not back
        dnsmasq.set_hosts({"gw.test": [hosts[0], hosts[2], hosts[3], outside]})
        first[1].stop()
        rest = [first[0], first[2], fourth]
        eventually(lambda: sees(rest, {"d0", "d2", "d3"}), 30, "d1 left")

        # dnsmasq goes away: degraded, the cluster stays; back: healthy
        dnsmasq.stop()
        eventually(lambda: rest[0].status()["discovery"]["status"] == "degraded", 15,
                   "degraded")
        assert rest[0].status()["health"]["discovery"] == "degraded"
        assert sees(rest, {"d0", "d2", "d3"}) is True
        dnsmasq.start()
        eventually(lambda: rest[0].status()["discovery"]["status"] == "healthy", 30,
                   "recovered")
        assert sees(rest, {"d0", "d2", "d3"}) is True
    finally:
        for g in gateways:
            g.stop()
        listener.close()
        udp.close()
