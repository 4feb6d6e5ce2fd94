"""A rainbridge member in a cluster of real Serf agents (HashiCorp Serf 0.9 on memberlist,
Debian's ``serf`` package): the reference implementation as the test oracle.

The rainbridge member is an in-process ``ClusterService`` on 127.0.0.31 (a second one on
127.0.0.35) that lists every agent as a peer; the agents run on 127.0.0.32 … 127.0.0.34 with
their default (LAN) profile. Our member uses the ``lan`` profile with ``gossip.config``
{timeout_seconds 6, failure_threshold 4}, which the Bifrost mapping turns into exactly
memberlist's LAN timings (1 s probes, 0.5 s probe timeout, suspicion ×4), so both sides time
out alike. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from rainbridge.cluster.appmessages import ClusterHandler
from rainbridge.cluster.config import MembershipConfig, from_bifrost_gossip
from rainbridge.cluster.events import MemberEvent
from rainbridge.cluster.messages import NodeState
from rainbridge.cluster.service import ClusterEnv, ClusterService
from rainbridge.cluster.timers import suspicion_bounds
from rainbridge.config.schema import ClusterConfig
from support import free_port

pytestmark = pytest.mark.skipif(
    shutil.which("serf") is None,
    reason="the `serf` agent is not installed (Debian package `serf`: apt-get install serf)",
)

KEY = bytes(range(32, 64))
WRONG_KEY = bytes(range(64, 96))
TIMING = {"timeout_seconds": 6, "success_threshold": 1, "failure_threshold": 4}
CFG = from_bifrost_gossip(6, 1, 4, MembershipConfig.lan())
assert (CFG.probe_interval, CFG.probe_timeout, CFG.suspicion_mult) == (1.0, 0.5, 4)
# Detection bound for 4 members without confirmations (the slowest case): every member
# probes the crashed one within 3 intervals, one more for the failed probe, the longest
# suspicion, and slack for process scheduling.
DETECT = 4 * CFG.probe_interval + suspicion_bounds(4, 6, 4, CFG.probe_interval)[1] + 4.0




@dataclass
class Agent:
    name: str
    ip: str
    port: int
    rpc: int
    log: Path
    proc: subprocess.Popen

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    def members(self) -> dict[str, dict]:
        out = subprocess.run(
            ["serf", "members", f"-rpc-addr=127.0.0.1:{self.rpc}", "-format=json"],
            capture_output=True, text=True, timeout=10,
        )
        if out.returncode != 0:
            return {}
        return {m["name"]: m for m in json.loads(out.stdout)["members"]}

    def event(self, name: str, payload: str) -> None:
        cmd = ["serf", "event", f"-rpc-addr=127.0.0.1:{self.rpc}", name, payload]
        assert subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def agents(tmp_path):
    started: list[Agent] = []

    def start(n: int, key: bytes | None = None) -> list[Agent]:
        group: list[Agent] = []
        for i in range(n):
            ip = f"127.0.0.{32 + i}"
            port, rpc = free_port(ip), free_port("127.0.0.1")
            log = tmp_path / f"s{i}.log"
            cmd = ["serf", "agent", f"-node=s{i}", f"-bind={ip}:{port}",
                   f"-rpc-addr=127.0.0.1:{rpc}", "-log-level=debug",
                   "-tag", "role=serf", "-tag", f"idx={i}"]
            if key is not None:
                cmd.append(f"-encrypt={base64.b64encode(key).decode()}")
            if group:
                cmd.append(f"-join={group[0].address}")
            with log.open("w") as out:
                proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
            agent = Agent(f"s{i}", ip, port, rpc, log, proc)
            started.append(agent)
            group.append(agent)
            deadline = time.monotonic() + 10
            while "Serf agent running" not in agent.log_text():
                assert proc.poll() is None, agent.log_text()
                assert time.monotonic() < deadline, "serf agent did not start"
                time.sleep(0.05)
        return group

    yield start
    for agent in started:
        if agent.proc.poll() is None:
            agent.proc.terminate()
            try:
                agent.proc.wait(5)
            except subprocess.TimeoutExpired:
                agent.proc.kill()
                agent.proc.wait(5)


class Recorder(ClusterHandler):
    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.merged: list[bytes] = []

    def notify_msg(self, payload: bytes) -> None:
        self.messages.append(payload)

    def merge_remote_state(self, buf: bytes, join: bool) -> None:
        self.merged.append(buf)

    def notify_event(self, event: MemberEvent) -> None:
        pass


@pytest.fixture
async def rainbridge():
    services: list[ClusterService] = []

    async def make(
        name: str, ip: str, peers: list[Agent], key: bytes | None = None
    ) -> ClusterService:
        gossip: dict = {"port": 0, "profile": "lan", "config": TIMING}
        if key is not None:
            gossip["encryption_keys"] = [base64.b64encode(key).decode()]
        cfg = msgspec.convert(
            {"enabled": True, "node_name": name, "region": "eu-west",
             "peers": [a.address for a in peers],
             "gossip": gossip},
            ClusterConfig,
        )
        service = ClusterService(cfg, ClusterEnv(http_host=ip, http_port=8080), environ={})
        service.set_handler(Recorder())
        await service.start()
        services.append(service)
        return service

    yield make
    for service in services:
        if service.node is not None and service.node.running:
            await service.abort()


async def wait_until(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(cond)
        if last is True:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout:.1f}s (last: {last})")


def serf_status(agents: list[Agent], name: str) -> dict[str, str | None]:
    return {a.name: a.members().get(name, {}).get("status") for a in agents}


def all_serf(agents: list[Agent], name: str, status: str):
    seen = serf_status(agents, name)
    return True if set(seen.values()) == {status} else seen


def states(service: ClusterService) -> dict[str, NodeState]:
    assert service.node is not None
    return {m.name: m.state for m in service.node.members()}


def serf_errors(agent: Agent) -> list[str]:
    words = ("[ERR]", "decode", "checksum", "not supported", "Decrypt", "unknown type")
    return [line for line in agent.log_text().splitlines() if any(w in line for w in words)]


@pytest.mark.timeout(300)  # two detection bounds in the worst case; typically ~15 s
async def test_rainbridge_member_in_a_serf_cluster(agents, rainbridge, caplog):
    caplog.set_level(logging.INFO, logger="rainbridge")
    s = agents(3)
    rb = await rainbridge("rb", "127.0.0.31", s)

    # every agent lists us alive with our tags; we see the agents alive with theirs
    await wait_until(lambda: all_serf(s, "rb", "alive"), 15, "serf members lists rb")
    tags = s[1].members()["rb"]["tags"]
    assert tags["role"] == "rainbridge" and tags["region"] == "eu-west"
    assert tags["id"] == rb.node_id and tags["http"] == "127.0.0.31:8080"
    assert tags["state"] == "ready" and tags["boot"] == rb.boot
    await wait_until(
        lambda: {n for n, st in states(rb).items() if st == NodeState.ALIVE} == {"rb", "s0", "s1", "s2"},
        15, "rb sees the agents",
    )
    view = {m["name"]: m for m in rb.nodes()}
    assert view["s2"]["tags"] == {"role": "serf", "idx": "2"} and view["s2"]["role"] == "serf"

    # Serf's own traffic (its push-pull state, join intents, user events) is ignored cleanly
    before = rb.stats["foreign_messages"]
    s[1].event("deploy", "v42")
    await wait_until(lambda: rb.stats["foreign_messages"] > before or rb.stats, 10, "serf event")
    assert rb.messages.handler.messages == [] and rb.messages.handler.merged == []

    # a Serf agent is SIGKILLed: we mark it dead
    s[2].proc.send_signal(signal.SIGKILL)
    s[2].proc.wait(5)
    await wait_until(lambda: states(rb).get("s2") == NodeState.DEAD or states(rb), DETECT,
                     "rb marks the killed agent dead")

    # graceful leave: the agents report us as left (not failed)
    await rb.stop()
    await wait_until(lambda: all_serf(s[:2], "rb", "left"), 10, "agents see rb left")

    # a second member stops abruptly: the agents report it failed
    rb2 = await rainbridge("rb2", "127.0.0.35", s[:2])
    await wait_until(lambda: all_serf(s[:2], "rb2", "alive"), 15, "serf members lists rb2")
    await rb2.abort()
    await wait_until(lambda: all_serf(s[:2], "rb2", "failed"), DETECT, "agents see rb2 failed")

    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not problems, [r.getMessage() for r in problems]
    for agent in s[:2]:
        assert serf_errors(agent) == []


async def test_encrypted_serf_cluster_same_key_joins_wrong_key_does_not(agents, rainbridge):
    s = agents(2, key=KEY)
    good = await rainbridge("rb-good", "127.0.0.31", s, key=KEY)
    await wait_until(lambda: all_serf(s, "rb-good", "alive"), 15, "rb-good joins")
    await wait_until(lambda: states(good).get("s1") == NodeState.ALIVE or states(good), 10,
                     "rb-good sees s1")
    bad = await rainbridge("rb-bad", "127.0.0.35", s, key=WRONG_KEY)
    await asyncio.sleep(2.0)
    assert not bad.joining.joined and set(states(bad)) == {"rb-bad"}
    assert all("rb-bad" not in a.members() for a in s)
    assert "No installed keys could decrypt the message" in s[0].log_text()
    assert bad.node.last_push_pull_error is not None
