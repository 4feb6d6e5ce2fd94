"""The asyncio driver and the cluster service, in-process, over real UDP and TCP sockets.

Each member is a ``ClusterService`` built from a ``cluster_config`` block, on its own
loopback address (127.0.0.21 … 127.0.0.29; the HTTP host sets the gossip address) and a
free port. Timings: the ``lan`` profile with ``gossip.config`` {timeout_seconds 3,
failure_threshold 3} through the Bifrost mapping (0.6 s probes, 0.3 s probe timeout,
suspicion ×3, 0.2 s gossip, each broadcast sent 4 times), and a 5 s push-pull interval
instead of 30 s: a join that gossip missed is repaired by the next push-pull, so that
bounds convergence. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable

import msgspec
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from rainbridge.cluster.addresses import (
    AddressSpace,
    ClusterConfigError,
    gossip_addresses,
    parse_peer,
)
from rainbridge.cluster.appmessages import ClusterHandler
from rainbridge.cluster.clock import INTERVAL_S as CLOCK_INTERVAL_S
from rainbridge.cluster.events import EventKind, MemberEvent
from rainbridge.cluster.messages import NodeState
from rainbridge.cluster.metrics import ClusterCollector
from rainbridge.cluster.service import (
    ClusterEnv,
    ClusterService,
    keyring_from,
    membership_config,
)
from rainbridge.config.schema import ClusterConfig
from support import free_port

KEY_A = base64.b64encode(bytes(range(32))).decode()
KEY_B = base64.b64encode(bytes(range(100, 132))).decode()
WRONG = base64.b64encode(bytes(range(50, 66))).decode()
TIMING = {"timeout_seconds": 3, "success_threshold": 1, "failure_threshold": 3}
PUSH_PULL = 5.0
CONVERGE = 2 * PUSH_PULL + 3  # the first push-pull may come before the last join




class Recorder(ClusterHandler):
    def __init__(self, state: bytes = b"") -> None:
        self.messages: list[bytes] = []
        self.events: list[MemberEvent] = []
        self.merged: list[tuple[bytes, bool]] = []
        self.state = state

    def notify_msg(self, payload: bytes) -> None:
        self.messages.append(payload)

    def local_state(self, join: bool) -> bytes:
        return self.state

    def merge_remote_state(self, buf: bytes, join: bool) -> None:
        self.merged.append((buf, join))

    def notify_event(self, event: MemberEvent) -> None:
        self.events.append(event)

    def deaths(self) -> list[str]:
        return [
            e.member.name
            for e in self.events
            if e.kind == EventKind.LEAVE and e.member.state == NodeState.DEAD
        ]

    def bad_events(self) -> list[str]:
        suspicions = [e.member.name for e in self.events if e.kind == EventKind.SUSPECT]
        return [f"suspect {n}" for n in suspicions] + [f"dead {n}" for n in self.deaths()]


async def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.05)


def states(service: ClusterService) -> dict[str, NodeState]:
    assert service.node is not None
    return {m.name: m.state for m in service.node.members()}


def alive(service: ClusterService) -> set[str]:
    return {name for name, s in states(service).items() if s == NodeState.ALIVE}


@pytest.fixture
async def make():
    started: list[ClusterService] = []

    async def make(
        name: str, ip: str, peers: list[str] = (), *, port: int = 0, start: bool = True,
        clock_interval: float | None = CLOCK_INTERVAL_S, wall_clock=time.time, **gossip
    ) -> ClusterService:
        discovery = {"allowed_address_space": gossip.pop("allowed", [])}
        cfg = msgspec.convert(
            {
                "enabled": True,
                "node_name": name,
                "region": "test-region",
                "peers": list(peers),
                "gossip": {"port": port, "profile": "lan", "config": TIMING, **gossip},
                "discovery": discovery,
            },
            ClusterConfig,
        )
        timing = membership_config(cfg.gossip).replace(push_pull_interval=PUSH_PULL)
        env = ClusterEnv(http_host=ip, http_port=8000)
        service = ClusterService(cfg, env, environ={}, timing=timing, wall_clock=wall_clock,
                                 clock_interval=clock_interval)
        service.set_handler(Recorder())
        if start:
            await service.start()
            started.append(service)
        return service

    make.started = started
    yield make
    for service in started:
        if service.node is not None and service.node.running:
            await service.abort()


async def form(make, n: int, first: int = 21, **gossip) -> list[ClusterService]:
    """``n`` members on 127.0.0.<first>..; all list the seed (itself included) as peer."""
    seed_ip = f"127.0.0.{first}"
    port = free_port(seed_ip)
    peers = [f"{seed_ip}:{port}"]
    seed = await make("n0", seed_ip, peers, port=port, **gossip)
    services = [seed]
    for i in range(1, n):
        services.append(await make(f"n{i}", f"127.0.0.{first + i}", peers, **gossip))
    names = {s.name for s in services}
    # Usually well under a second; a join that gossip missed waits for a push-pull.
    await wait_until(lambda: all(alive(s) == names for s in services), CONVERGE, "convergence")
    return services


def handler(service: ClusterService) -> Recorder:
    assert isinstance(service.messages.handler, Recorder)
    return service.messages.handler


# --------------------------------------------------------------------------- join


async def test_members_join_through_one_seed_and_converge(make):
    services = await form(make, 5)
    seed = services[0]
    assert all(s.joining.joined for s in services[1:])
    status = seed.status()
    assert status["health"]["status"] == "healthy" and status["health"]["alive"] == 5
    views = {m["name"]: m for m in status["members"]}
    assert views["n3"]["address"] == services[3].status()["node"]["address"]
    assert views["n3"]["region"] == "test-region" and views["n3"]["http"] == "127.0.0.24:8000"
    assert views["n3"]["node_id"] == services[3].node_id and views["n3"]["role"] == "rainbridge"
    assert views["n0"]["self"] and views["n0"]["readiness"] == "ready"
    assert not any(handler(s).bad_events() for s in services)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterCollector(services[1]))
    text = generate_latest(registry).decode()
    assert 'rainbridge_cluster_members{node="n1",state="alive"} 5.0' in text
    assert 'rainbridge_cluster_push_pulls_total{kind="initiated",node="n1"}' in text
    assert 'rainbridge_cluster_bytes_total{direction="in",node="n1",transport="udp"}' in text


async def test_a_node_that_starts_before_its_peer_converges(make):
    seed_ip, early_ip = "127.0.0.21", "127.0.0.22"
    port = free_port(seed_ip)
    peers = [f"{seed_ip}:{port}"]
    early = await make("early", early_ip, peers)
    await asyncio.sleep(1.2)  # two failed join attempts
    assert not early.joining.joined and early.status()["health"]["status"] == "alone"
    seed = await make("seed", seed_ip, peers, port=port)
    await wait_until(
        lambda: early.joining.joined and alive(seed) == alive(early) == {"seed", "early"}, 5, "late seed"
    )


async def test_push_pull_state_and_messages_pass_through_the_handler(make):
    services = await form(make, 4)
    seed = services[0]
    # a joiner's application state reaches the seed's handler (and the seed's comes back)
    handler(seed).state = b"seed-state"
    joiner = await make("late", "127.0.0.29", [format_seed(seed)], start=False)
    handler(joiner).state = b"late-state"
    await joiner.start()
    make.started.append(joiner)
    await wait_until(lambda: (b"late-state", True) in handler(seed).merged, 5, "state merged")
    await wait_until(lambda: (b"seed-state", True) in handler(joiner).merged, 5, "state back")

    services.append(joiner)
    names = {s.name for s in services}
    await wait_until(lambda: all(alive(s) == names for s in services), CONVERGE, "convergence")
    services[1].broadcast(b"hello cluster")
    others = [s for s in services if s is not services[1]]
    await wait_until(
        lambda: all(b"hello cluster" in handler(s).messages for s in others), 5, "broadcast"
    )
    assert b"hello cluster" not in handler(services[1]).messages
    services[2].send("n3", b"direct", reliable=True)
    services[2].send("n3", b"best effort")
    await wait_until(
        lambda: {b"direct", b"best effort"} <= set(handler(services[3]).messages), 5, "send"
    )
    assert all(s.stats["foreign_messages"] == 0 for s in services)


def format_seed(service: ClusterService) -> str:
    assert service.node is not None
    ip, port = service.node.address
    return f"{ip}:{port}"


# --------------------------------------------------------------------------- leave


async def test_graceful_leave_is_seen_as_left(make):
    services = await form(make, 4)
    leaver = services[2]
    await leaver.stop()
    rest = [s for s in services if s is not leaver]
    await wait_until(
        lambda: all(states(s).get("n2") == NodeState.LEFT for s in rest), 5, "left seen"
    )
    await asyncio.sleep(1.5)  # a few probe rounds: nobody turns it into a failure
    for s in rest:
        assert states(s)["n2"] == NodeState.LEFT
        leaves = [e for e in handler(s).events if e.kind == EventKind.LEAVE]
        assert [(e.member.name, e.member.state) for e in leaves] == [("n2", NodeState.LEFT)]
        assert not handler(s).bad_events()


# --------------------------------------------------------------------------- security


async def test_encryption_shared_key_joins_and_wrong_key_does_not(make):
    services = await form(make, 3, encryption_keys=[KEY_A])
    seed = services[0]
    intruder = await make("intruder", "127.0.0.28", [format_seed(seed)], encryption_keys=[WRONG])
    plain = await make("plain", "127.0.0.29", [format_seed(seed)])
    await asyncio.sleep(2.0)  # several join attempts
    assert not intruder.joining.joined and not plain.joining.joined
    for s in services:
        assert alive(s) == {"n0", "n1", "n2"}
    assert alive(intruder) == {"intruder"} and alive(plain) == {"plain"}
    errors = seed.node.stats
    assert errors["stream_errors:decrypt_failed"] >= 1
    assert errors["stream_errors:not_encrypted"] >= 1


async def test_keyring_rotation_marks_nobody_failed(make):
    services = await form(make, 3, encryption_keys=[KEY_A])
    key_a, key_b = base64.b64decode(KEY_A), base64.b64decode(KEY_B)
    for step in ("add", "use", "remove"):
        for s in services:
            assert s.keyring is not None
            if step == "add":
                s.keyring.add(key_b)
            elif step == "use":
                s.keyring.use(key_b)
            else:
                s.keyring.remove(key_a)
            await asyncio.sleep(0.3)  # traffic flows between each node's change
        await asyncio.sleep(0.6)
    assert all(s.keyring.keys == [key_b] for s in services)
    await asyncio.sleep(1.2)  # probe rounds on the new key only
    for s in services:
        assert alive(s) == {"n0", "n1", "n2"}
        assert not handler(s).deaths(), handler(s).events
        assert s.node.stats["dropped:decrypt_failed"] == 0  # no packet lost to the rotation
    # only the new key works now: a node with it joins, one with the old key does not
    await make("fresh", "127.0.0.28", [format_seed(services[0])], encryption_keys=[KEY_B])
    stale = await make("stale", "127.0.0.29", [format_seed(services[0])], encryption_keys=[KEY_A])
    await wait_until(lambda: "fresh" in alive(services[1]), CONVERGE, "join with the new key")
    await asyncio.sleep(1.0)
    assert not stale.joining.joined and "stale" not in states(services[1])


async def test_label_mismatch_is_rejected(make):
    services = await form(make, 3, label="blue")
    seed = services[0]
    green = await make("green", "127.0.0.28", [format_seed(seed)], label="green")
    unlabelled = await make("unlabelled", "127.0.0.29", [format_seed(seed)])
    await asyncio.sleep(1.5)
    assert not green.joining.joined and not unlabelled.joining.joined
    for s in services:
        assert alive(s) == {"n0", "n1", "n2"}
    assert seed.node.stats["stream_errors:label_mismatch"] >= 2


async def test_allowed_address_space_rejects_a_joiner_outside_it(make):
    allowed = ["127.0.0.20/30"]  # .20 - .23
    services = await form(make, 3, allowed=allowed)
    outsider = await make("outsider", "127.0.0.29", [format_seed(services[0])], allowed=allowed)
    # the outsider's own gossip cannot reach the members either
    await asyncio.sleep(1.5)
    assert not outsider.joining.joined
    for s in services:
        assert "outsider" not in states(s)
    assert services[0].node.stats["dropped:address_space"] >= 1


# --------------------------------------------------------------------------- rules


def test_gossip_address_rules():
    env = {"POD_IP": "10.1.2.3"}
    assert gossip_addresses(None, None, "127.0.0.11", env) == ("127.0.0.11", "127.0.0.11")
    assert gossip_addresses(None, None, "localhost", {}) == ("127.0.0.1", "127.0.0.1")
    assert gossip_addresses(None, None, "0.0.0.0", env) == ("0.0.0.0", "10.1.2.3")
    assert gossip_addresses("10.0.0.5", None, "0.0.0.0", env) == ("10.0.0.5", "10.0.0.5")
    assert gossip_addresses(None, "192.0.2.9", "127.0.0.1", env) == ("127.0.0.1", "192.0.2.9")
    with pytest.raises(ClusterConfigError):
        gossip_addresses(None, "0.0.0.0", "0.0.0.0", env)
    assert parse_peer("[::1]:7946") == ("::1", 7946) and parse_peer("gw-0.svc:7946")[1] == 7946
    space = AddressSpace(["10.0.0.0/8", "127.0.0.20/30"])
    assert space(("10.9.9.9", 1)) and space(("127.0.0.23", 1)) and not space(("127.0.0.24", 1))
    assert AddressSpace([])(("8.8.8.8", 1))


def test_identity_ports_and_keys():
    cfg = msgspec.convert({"enabled": True, "gossip": {"port": 7946}}, ClusterConfig)
    one = ClusterService(cfg, ClusterEnv(workers=1), environ={"POD_NAME": "gw-0"})
    assert one.name == "gw-0" and one.node_id == f"gw-0-{one.boot}"
    worker = ClusterService(cfg, ClusterEnv(worker_index=2, workers=4), environ={"POD_NAME": "gw-0"})
    assert worker.name == "gw-0-w2" and worker.boot != one.boot
    named = msgspec.convert({"enabled": True, "node_name": "alpha"}, ClusterConfig)
    assert ClusterService(named, environ={"POD_NAME": "gw-0"}).name == "alpha"
    ring = keyring_from([KEY_A], {"RAINBRIDGE_GOSSIP_KEYS": f"{KEY_B}, {KEY_A}"})
    assert ring is not None and ring.primary == base64.b64decode(KEY_B) and len(ring) == 2
    assert keyring_from([], {}) is None
    with pytest.raises(ClusterConfigError) as err:
        keyring_from(["bm90IGEga2V5"], {})
    assert "bm90" not in str(err.value)


async def test_worker_port_offset_and_bind_error(make):
    ip = "127.0.0.27"
    port = free_port(ip)
    cfg = msgspec.convert(
        {"enabled": True, "node_name": "gw", "gossip": {"port": port - 1, "profile": "local"}},
        ClusterConfig,
    )
    worker = ClusterService(cfg, ClusterEnv(http_host=ip, worker_index=1, workers=2), environ={})
    await worker.start()
    make.started.append(worker)
    assert worker.node.address == (ip, port) and worker.name == "gw-w1"
    clash = ClusterService(cfg, ClusterEnv(http_host=ip, worker_index=1, workers=2), environ={})
    with pytest.raises(ClusterConfigError, match="cannot bind gossip"):
        await clash.start()


def test_runs_on_uvloop():
    """The servers run uvloop, whose ``call_at`` returns a plain Handle (no ``when()``) for a
    time already past: the driver must not depend on it."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        services = []
        seed_ip = "127.0.0.26"
        port = free_port(seed_ip)
        peers = [f"{seed_ip}:{port}"]
        for i in range(3):
            cfg = msgspec.convert(
                {"enabled": True, "node_name": f"u{i}", "peers": peers,
                 "gossip": {"port": port if i == 0 else 0, "profile": "lan", "config": TIMING}},
                ClusterConfig,
            )
            service = ClusterService(cfg, ClusterEnv(http_host=f"127.0.0.{26 + i}"), environ={})
            await service.start()
            services.append(service)
        try:
            node = services[1].node
            node._timer = asyncio.get_running_loop().call_at(node._now() - 1, lambda: None)
            node._pump()  # replaces a past-time Handle
            names = {"u0", "u1", "u2"}
            await wait_until(lambda: all(alive(s) == names for s in services), CONVERGE, "uvloop")
            await services[2].stop()
            await wait_until(lambda: states(services[0]).get("u2") == NodeState.LEFT, 5, "left")
        finally:
            for service in services:
                await service.abort()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())
