"""Discovery rounds inside the cluster service, in-process over real UDP/TCP on loopback.

Members are ``ClusterService``s on 127.0.0.61 … 127.0.0.69. ``Listed`` is a discovery
backend whose candidates and health the test sets: it stands for any backend, so these
tests check the wiring (filter, join, backoff, status, metrics), not a backend. The
backends themselves are tested against real servers in ``test_discovery_dns.py``,
``test_discovery_etcd.py`` and ``test_discovery_udp.py``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import msgspec
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from rainbridge.cluster.addresses import AddressSpace, ClusterConfigError
from rainbridge.cluster.discovery.base import Address, Discovery
from rainbridge.cluster.discovery.runner import (
    MAX_BACKOFF,
    CandidateFilter,
    join_backoff,
    round_delay,
)
from rainbridge.cluster.messages import NodeState
from rainbridge.cluster.service import ClusterEnv, ClusterService, membership_config
from rainbridge.config.schema import ClusterConfig
from support import free_port, until

TIMING = {"timeout_seconds": 3, "success_threshold": 1, "failure_threshold": 3}


class Listed(Discovery):
    """A backend whose answer the test sets (``addresses``; ``fail`` makes it degraded)."""

    name = "listed"

    def __init__(self) -> None:
        super().__init__()
        self.addresses: list[Address] = []
        self.fail: str | None = None
        self.calls = 0
        self.stopped = False

    async def candidates(self) -> list[Address]:
        self.calls += 1
        h = self.health
        if self.fail:
            h.healthy, h.failures, h.last_error = False, h.failures + 1, self.fail
        else:
            h.healthy, h.failures, h.last_error = True, 0, None
            h.last_success = time.time()
            h.candidates = len(self.addresses)
        return list(self.addresses)

    async def stop(self) -> None:
        self.stopped = True


# --------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("interval", "failures", "expected"),
    [(5, 0, 5), (5, 1, 10), (5, 2, 20), (5, 3, 40), (5, 4, MAX_BACKOFF), (5, 99, MAX_BACKOFF),
     (120, 3, 120), (0.5, 0, 0.5)],
)
def test_round_delay_doubles_per_failed_round_up_to_the_cap(interval, failures, expected):
    assert round_delay(interval, failures) == expected


@pytest.mark.parametrize(("failures", "skipped"), [(0, 0), (1, 1), (2, 3), (3, 7), (4, 8), (50, 8)])
def test_join_backoff_skips_more_rounds_after_each_failed_join(failures, skipped):
    assert join_backoff(failures) == skipped


def test_filter_rejects_by_reason_and_logs_each_address_once(caplog):
    f = CandidateFilter(AddressSpace(["10.1.0.0/16", "fd00::/8"]))
    candidates = [("10.1.2.3", 7946), ("10.2.0.1", 7946), ("fd00::5", 7946),
                  ("node-a.example", 7946), ("10.1.0.9", 0), ("0.0.0.0", 7946),
                  ("10.2.0.1", 7946)]
    with caplog.at_level(logging.WARNING, "rainbridge.cluster.discovery"):
        allowed = f.admit(candidates, "dns")
        f.admit([("10.2.0.1", 7946)], "dns")  # the same address again: counted, not logged
    assert allowed == [("10.1.2.3", 7946), ("fd00::5", 7946)]
    assert f.rejected == {"address_space": 3, "not_ip": 1, "bad_port": 1, "unusable": 1}
    lines = [r.getMessage() for r in caplog.records]
    outside = [m for m in lines if "10.2.0.1:7946" in m]
    assert outside == [
        "cluster discovery: dns candidate 10.2.0.1:7946 rejected: outside "
        "allowed_address_space (10.1.0.0/16, fd00::/8)"
    ]
    assert any("node-a.example" in m and "not an IP address" in m for m in lines)


def test_an_empty_address_space_allows_every_ip_but_still_needs_an_ip():
    f = CandidateFilter(AddressSpace([]))
    assert f.admit([("192.0.2.1", 1), ("::1", 2), ("example.org", 3)], "x") == [
        ("192.0.2.1", 1), ("::1", 2)]


# --------------------------------------------------------------------------- wiring


@pytest.fixture
async def make():
    started: list[ClusterService] = []

    async def make(name: str, ip: str, backend: Discovery | None, *, peers=(), allowed=(),
                   interval: float = 0.3) -> ClusterService:
        cfg = msgspec.convert({
            "enabled": True, "node_name": name, "peers": list(peers),
            "gossip": {"port": 0, "profile": "lan", "config": TIMING},
            "discovery": {"allowed_address_space": list(allowed),
                          "interval_seconds": interval},
        }, ClusterConfig)
        timing = membership_config(cfg.gossip).replace(push_pull_interval=5.0)
        service = ClusterService(cfg, ClusterEnv(http_host=ip, http_port=8000), environ={},
                                 timing=timing, clock_interval=None)
        if backend is not None:
            # what make_discovery would add for discovery.type, beside the peers
            plain = service.joining.sources
            service.joining.sources = lambda address: [*plain(address), backend]
        await service.start()
        started.append(service)
        return service

    yield make
    for service in started:
        if service.node is not None and service.node.running:
            await service.abort()


def alive(service: ClusterService) -> set[str]:
    assert service.node is not None
    return {m.name for m in service.node.members() if m.state == NodeState.ALIVE}


async def test_members_that_a_backend_lists_are_joined_and_later_ones_too(make):
    seed = await make("a", "127.0.0.61", None)
    backends = [Listed(), Listed()]
    for b in backends:
        b.addresses = [seed.node.address]
    b_ = await make("b", "127.0.0.62", backends[0])
    c = await make("c", "127.0.0.63", backends[1])
    await until(lambda: all(alive(s) == {"a", "b", "c"} for s in (seed, b_, c)) or
                [sorted(alive(s)) for s in (seed, b_, c)], 10, "three members")
    # scale-up: a fourth appears only in the backend's list of the others
    d_backend = Listed()
    d = await make("d", "127.0.0.64", d_backend)  # lists nobody: it is found, not finding
    for b in backends:
        b.addresses = [seed.node.address, d.node.address]
    await until(lambda: alive(d) >= {"a", "b", "c", "d"} or sorted(alive(d)), 10, "d joined")
    assert b_.joining.discovery.stats["joins"] >= 1
    status = b_.status()
    assert status["discovery"]["status"] == "healthy"
    assert status["discovery"]["backends"][0]["backend"] == "listed"
    assert status["health"]["discovery"] == "healthy"


async def test_a_candidate_outside_the_address_space_is_never_contacted(make, caplog):
    outside_ip = "127.0.0.69"
    port = free_port(outside_ip)
    # a real listener where the rejected candidate points: it must see no packet at all
    tcp = socket.socket()
    tcp.bind((outside_ip, port))
    tcp.listen()
    tcp.setblocking(False)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((outside_ip, port))
    udp.setblocking(False)
    try:
        seed = await make("a", "127.0.0.61", None, allowed=["127.0.0.60/30"])
        backend = Listed()
        backend.addresses = [(outside_ip, port), seed.node.address]
        with caplog.at_level(logging.WARNING, "rainbridge.cluster.discovery"):
            b = await make("b", "127.0.0.62", backend, allowed=["127.0.0.60/30"])
            await until(lambda: alive(b) == {"a", "b"}, 10, "joined the allowed one")
            await until(lambda: b.joining.discovery.stats["rounds"] >= 5, 10, "five rounds")
        with pytest.raises(BlockingIOError):
            tcp.accept()
        with pytest.raises(BlockingIOError):
            udp.recvfrom(2048)
        assert b.joining.discovery.filter.rejected["address_space"] >= 5
        logged = [r for r in caplog.records if f"{outside_ip}:{port}" in r.getMessage()]
        assert len(logged) == 1 and "outside allowed_address_space" in logged[0].getMessage()
        registry = CollectorRegistry()
        from rainbridge.cluster.metrics import ClusterCollector

        registry.register(ClusterCollector(b))
        text = generate_latest(registry).decode()
        assert 'rainbridge_cluster_discovery_rejected_total{node="b",reason="address_space"}' in text
        assert 'rainbridge_cluster_discovery_healthy{backend="listed",node="b"} 1.0' in text
    finally:
        tcp.close()
        udp.close()


async def test_a_degraded_backend_keeps_the_members_backs_off_and_recovers(make):
    seed = await make("a", "127.0.0.61", None)
    backend = Listed()
    backend.addresses = [seed.node.address]
    b = await make("b", "127.0.0.62", backend, interval=0.2)
    await until(lambda: alive(b) == {"a", "b"}, 10, "joined")
    backend.fail = "etcd unreachable: connection refused"
    await until(lambda: b.status()["discovery"]["status"] == "degraded", 5, "degraded")
    status = b.status()
    assert status["discovery"]["backends"][0]["last_error"] == backend.fail
    assert b.health()["discovery"] == "degraded"
    assert status["discovery"]["next_round_seconds"] > 0.2  # backing off
    calls = backend.calls
    await asyncio.sleep(1.0)  # bounded observation window: backoff means few calls in it
    assert backend.calls - calls <= 3  # 0.4 + 0.8 s ...; healthy it would be ~5
    assert alive(b) == {"a", "b"}  # members kept
    backend.fail = None
    await until(lambda: b.status()["discovery"]["status"] == "healthy", 10, "recovered")
    assert b.status()["discovery"]["next_round_seconds"] == 0.2


async def test_losing_a_member_runs_a_round_at_once(make):
    seed = await make("a", "127.0.0.61", None)
    backend = Listed()
    backend.addresses = [seed.node.address]
    b = await make("b", "127.0.0.62", backend, interval=3600)
    c = await make("c", "127.0.0.63", None, peers=[f"127.0.0.61:{seed.node.address[1]}"])
    await until(lambda: alive(b) == {"a", "b", "c"}, 10, "three")
    rounds = b.joining.discovery.stats["rounds"]
    await c.stop()  # graceful leave: b sees a LEAVE event
    await until(lambda: b.joining.discovery.stats["rounds"] > rounds, 5, "a round after the leave")


async def test_peers_with_a_name_are_re_resolved_and_work_beside_a_backend(make):
    seed = await make("a", "127.0.0.61", None)
    backend = Listed()
    b = await make("b", "127.0.0.62", backend, peers=[f"localhost:{seed.node.address[1]}",
                                                      "no-such-host.invalid:7946"])
    # localhost resolves to 127.0.0.1, where nobody listens; the seed is found by nobody:
    # the static source is degraded for the name that does not resolve, not stopped
    await until(lambda: b.status()["discovery"]["backends"][0]["status"] == "degraded", 5,
                "static degraded")
    backend.addresses = [seed.node.address]
    await until(lambda: alive(b) == {"a", "b"}, 10, "joined through the backend")
    assert "no-such-host.invalid" in b.status()["discovery"]["backends"][0]["last_error"]


async def test_discovery_enabled_with_a_missing_client_library_stops_the_start(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "dns", None)  # as if dnspython were not installed
    monkeypatch.delitem(sys.modules, "rainbridge.cluster.discovery.dns", raising=False)
    cfg = msgspec.convert({
        "enabled": True, "node_name": "x", "gossip": {"port": 0},
        "discovery": {"enabled": True, "type": "dns", "dns_names": ["gw.test"]},
    }, ClusterConfig)
    service = ClusterService(cfg, ClusterEnv(http_host="127.0.0.65"), environ={})
    with pytest.raises(ClusterConfigError, match=r"pip install 'rainbridge\[dns\]'"):
        await service.start()
    assert service.node is None  # the sockets it had opened are closed again
