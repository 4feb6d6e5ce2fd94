"""When "no candidates" may be taken as "nobody there" (``Discovery.settled``), which lets
a lone member report ready at once: a look-up backend once it has answered; the udp
backend only after two announcement intervals of listening. Real sockets on loopback."""

from __future__ import annotations

import asyncio
import socket
import time

import msgspec

from rainbridge.cluster.discovery.static import StaticDiscovery
from rainbridge.cluster.service import ClusterEnv, ClusterService, membership_config
from rainbridge.config.schema import ClusterConfig

ME = ("127.0.0.71", 7946)
INTERVAL = 0.5  # seconds between udp announcements (the discovery interval)


async def test_static_peers_settle_once_every_name_resolved():
    good = StaticDiscovery(["127.0.0.72:7946"], ME)
    assert not good.settled()  # not asked yet
    assert await good.candidates() == [("127.0.0.72", 7946)]
    assert good.settled()
    bad = StaticDiscovery(["no-such-peer.invalid:7946"], ME)
    assert await bad.candidates() == []
    assert not bad.settled()  # a name that did not resolve is no proof of absence


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


async def test_a_lone_udp_member_is_ready_only_after_two_announcement_intervals():
    cfg = msgspec.convert({
        "enabled": True, "node_name": "lone-udp", "gossip": {"port": 0, "profile": "lan"},
        "discovery": {"enabled": True, "type": "udp", "service_name": "rb-settle-test",
                      "allowed_address_space": ["127.0.0.0/8"],
                      "udp_broadcast_port": _free_udp_port(),
                      "udp_secret": "settle-test-secret", "interval_seconds": INTERVAL},
    }, ClusterConfig)
    service = ClusterService(cfg, ClusterEnv(http_host=ME[0], http_port=8000), environ={},
                             timing=membership_config(cfg.gossip), clock_interval=None)
    started = time.monotonic()
    await service.start()
    try:
        while not service.synced and time.monotonic() - started < 5.0:
            await asyncio.sleep(0.02)
        took = time.monotonic() - started
        assert service.synced, "a lone udp member never became ready"
        assert 2 * INTERVAL <= took < service.joining.sync_wait, took
        assert not service.joining.joined  # ready as the first member, not by a join
    finally:
        await service.abort()
