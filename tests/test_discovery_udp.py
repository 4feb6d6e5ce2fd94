"""UDP discovery: signed broadcast announcements, over real sockets on 127.0.0.0/8.

Loopback's broadcast address (127.255.255.255) reaches every socket bound to the port on
this host, as a LAN broadcast reaches every host, so members on 127.0.0.93 … 127.0.0.96
find each other without leaving loopback. The verifier alone is tested packet by packet.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time

import msgspec
import pytest

from rainbridge.cluster.addresses import AddressSpace
from rainbridge.cluster.discovery.base import DiscoveryConfigError
from rainbridge.cluster.discovery.udp import (
    MAGIC,
    REPLAY_WINDOW,
    Verifier,
    announcement,
    broadcast_addresses,
    make,
    sign,
)
from rainbridge.cluster.messages import NodeState
from rainbridge.cluster.service import ClusterEnv, ClusterService, membership_config
from rainbridge.config.schema import ClusterConfig, DiscoveryConfig
from support import free_port, until

SECRET = b"udp-discovery-test-secret"
TIMING = {"timeout_seconds": 3, "success_threshold": 1, "failure_threshold": 3}


# --------------------------------------------------------------------------- verifier


def verifier(now: float = 1_000_000.0) -> Verifier:
    return Verifier(SECRET, "rb", AddressSpace(["10.0.0.0/8"]), wall=lambda: now)


def test_a_good_announcement_is_accepted_once_and_a_later_one_again():
    v = verifier()
    packet = announcement(SECRET, "rb", "n1", ("10.0.0.5", 7946), 1_000_000.0)
    assert v.check(packet, "10.0.0.5") == ("n1", ("10.0.0.5", 7946), False)
    assert v.check(packet, "10.0.0.5") is None  # the same packet again: a replay
    later = announcement(SECRET, "rb", "n1", ("10.0.0.5", 7946), 1_000_000.5, leaving=True)
    assert v.check(later, "10.0.0.5") == ("n1", ("10.0.0.5", 7946), True)
    assert v.refused == {"replayed": 1}


@pytest.mark.parametrize(("packet", "source", "reason"), [
    (b'{"s":"rb","n":"x","a":"10.0.0.9:7946","t":1000000.0}', "10.0.0.9", "unsigned"),
    (announcement(b"wrong-secret", "rb", "x", ("10.0.0.9", 7946), 1e6), "10.0.0.9", "forged"),
    (announcement(SECRET, "rb", "x", ("10.0.0.9", 7946), 1e6).replace(b"10.0.0.9", b"10.0.0.8"),
     "10.0.0.9", "forged"),
    (announcement(SECRET, "rb", "x", ("10.0.0.9", 7946), 1e6), "192.0.2.9", "source_outside_space"),
    (announcement(SECRET, "other", "x", ("10.0.0.9", 7946), 1e6), "10.0.0.9", "other_service"),
    (announcement(SECRET, "rb", "x", ("10.0.0.9", 7946), 1e6 - REPLAY_WINDOW - 1), "10.0.0.9",
     "stale"),
    (sign(SECRET, b"not json"), "10.0.0.9", "malformed"),
    (MAGIC + b"short", "10.0.0.9", "unsigned"),
])
def test_unsigned_forged_foreign_and_stale_announcements_are_refused(packet, source, reason):
    v = verifier()
    assert v.check(packet, source) is None
    assert v.refused == {reason: 1}


def test_broadcast_addresses_are_those_of_the_ipv4_networks():
    space = AddressSpace(["10.1.0.0/16", "192.168.7.0/24", "fd00::/8", "127.0.0.0/8"])
    assert broadcast_addresses(space) == ["10.1.255.255", "192.168.7.255", "127.255.255.255"]


def test_ipv6_only_space_is_refused_naming_the_field():
    config = DiscoveryConfig(enabled=True, type="udp", service_name="rb", udp_secret="s",
                             allowed_address_space=["fd00::/8"], udp_broadcast_port=7947)
    with pytest.raises(DiscoveryConfigError, match=r"discovery\.allowed_address_space: .*IPv4"):
        make(config, ("fd00::1", 7946), "n", {})


# --------------------------------------------------------------------------- members


@pytest.fixture
async def members():
    port = free_port("0.0.0.0")  # the broadcast port
    started: list[ClusterService] = []

    async def make_member(name: str, ip: str) -> ClusterService:
        cfg = msgspec.convert({
            "enabled": True, "node_name": name, "gossip": {"port": 0, "profile": "lan",
                                                          "config": TIMING},
            "discovery": {"enabled": True, "type": "udp", "service_name": "rb-udp-test",
                          "allowed_address_space": ["127.0.0.0/8"], "udp_broadcast_port": port,
                          "udp_secret": SECRET.decode(), "interval_seconds": 0.3},
        }, ClusterConfig)
        timing = membership_config(cfg.gossip).replace(push_pull_interval=5.0)
        service = ClusterService(cfg, ClusterEnv(http_host=ip, http_port=8000), environ={},
                                 timing=timing, clock_interval=None)
        await service.start()
        started.append(service)
        return service

    make_member.port = port
    yield make_member
    for service in started:
        if service.node is not None and service.node.running:
            await service.abort()


def alive(service: ClusterService) -> set[str]:
    return {m.name for m in service.node.members() if m.state == NodeState.ALIVE}


def refused(service: ClusterService) -> dict:
    return service.status()["discovery"]["backends"][0]["refused"]


async def test_members_find_each_other_by_signed_broadcasts_and_refuse_the_rest(members):
    # a listener of our own on the port: it captures a real announcement to replay
    spy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    spy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    spy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    spy.bind(("0.0.0.0", members.port))
    spy.setblocking(False)
    try:
        a = await members("a", "127.0.0.93")
        b = await members("b", "127.0.0.94")
        c = await members("c", "127.0.0.95")
        three = {"a", "b", "c"}
        await until(lambda: all(alive(s) == three for s in (a, b, c)) or
                    [sorted(alive(s)) for s in (a, b, c)], 10, "three from nothing")
        d = await members("d", "127.0.0.96")
        await until(lambda: all(alive(s) == three | {"d"} for s in (a, b, c, d)), 10,
                    "the fourth")
        await c.stop()  # leaves: its last announcement says so
        await until(lambda: alive(a) == {"a", "b", "d"}, 10, "c left")
        assert ("127.0.0.95", c.node.address[1]) not in await a.joining.discovery.sources[0].candidates()

        captured = None
        for _ in range(200):
            try:
                packet, _ = spy.recvfrom(2048)
            except BlockingIOError:
                await asyncio.sleep(0.02)
                continue
            if json.loads(packet[len(MAGIC) + 32:])["n"] == "b":
                captured = packet
                break
        assert captured is not None
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sender.bind(("127.0.0.97", 0))
        target = ("127.255.255.255", members.port)
        now = time.time()
        forged = announcement(b"guessed-secret", "rb-udp-test", "evil", ("127.0.0.97", 1), now)
        unsigned = b'{"s":"rb-udp-test","n":"evil","a":"127.0.0.97:1","t":%f}' % now
        outside = announcement(SECRET, "rb-udp-test", "far", ("10.99.0.1", 7946), now)
        for packet in (captured, forged, unsigned, outside):
            sender.sendto(packet, target)
        sender.close()
        await until(lambda: {"replayed", "forged", "unsigned"} <= set(refused(a)) or refused(a),
                    5, "refusals counted")
        # the signed announcement of an address outside the space: never joined
        await until(lambda: a.joining.discovery.filter.rejected["address_space"] >= 1, 5,
                    "outside candidate rejected")
        assert all(m.address[0] != "10.99.0.1" for m in a.node.members())
        assert alive(a) == {"a", "b", "d"}
        assert a.status()["discovery"]["status"] == "healthy"
    finally:
        spy.close()
