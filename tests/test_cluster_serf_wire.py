"""Our codec against the real thing: a Debian ``serf`` agent (HashiCorp Serf 0.9.4 on
memberlist 0.2.2) on loopback.

A fake node ("py1") made of one UDP socket and one TCP listener on the same port joins the
agent with a push-pull encoded by ``encode_stream``, then reads everything serf sends with
``decode_packet``/``StreamDecoder`` and answers pings with acks from ``encode_packet``. This
checks bytes, not protocol logic: ``serf members`` must list py1 alive with our tags, and
serf must not log a decode error. Requires the ``serf`` package (``apt-get install serf``).
"""

from __future__ import annotations

import base64
import json
import select
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rainbridge.cluster.messages import (
    Ack,
    Alive,
    MessageType,
    Nack,
    NodeState,
    Ping,
    PushNodeState,
    PushPull,
    User,
)
from rainbridge.cluster.wire import (
    Keyring,
    StreamDecoder,
    WireConfig,
    WireError,
    decode_packet,
    decode_tags,
    encode_packet,
    encode_stream,
    encode_tags,
)

pytestmark = pytest.mark.skipif(
    shutil.which("serf") is None, reason="the `serf` agent is not on PATH (Debian package `serf`)"
)

TAGS = {"role": "gateway", "region": "eu-west"}
SERF_KEY = bytes(range(32, 64))
# Serf's delegate (Serf protocol) versions are [2, 5]: memberlist's verifyProtocol refuses a
# push-pull whose nodes do not overlap them, so the fake node claims (2, 5, 4) like a Serf node.
VSN = (1, 5, 2, 2, 5, 4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Agent:
    port: int
    rpc: int
    log: Path
    proc: subprocess.Popen

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        cmd = ["serf", args[0], f"-rpc-addr=127.0.0.1:{self.rpc}", *args[1:]]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10)

    def members(self) -> dict[str, dict]:
        out = self.cli("members", "-format=json")
        return (
            {m["name"]: m for m in json.loads(out.stdout)["members"]} if out.returncode == 0 else {}
        )

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def start_agent(tmp_path):
    agents: list[Agent] = []

    def start(key: bytes | None = None) -> Agent:
        port, rpc = _free_port(), _free_port()
        log = tmp_path / f"serf-{port}.log"
        cmd = ["serf", "agent", f"-bind=127.0.0.1:{port}", f"-rpc-addr=127.0.0.1:{rpc}"]
        cmd += ["-node=n1", "-tag", "role=x", "-log-level=debug"]
        if key is not None:
            cmd.append(f"-encrypt={base64.b64encode(key).decode()}")
        with log.open("w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        agent = Agent(port, rpc, log, proc)
        agents.append(agent)
        deadline = time.monotonic() + 10
        while "Serf agent running" not in agent.log_text():
            assert proc.poll() is None, agent.log_text()
            assert time.monotonic() < deadline, "serf agent did not start"
            time.sleep(0.05)
        return agent

    yield start
    for agent in agents:
        agent.proc.terminate()
        try:
            agent.proc.wait(5)
        except subprocess.TimeoutExpired:
            agent.proc.kill()
            agent.proc.wait(5)


@dataclass
class FakeNode:
    """A member that only speaks through our codec: UDP + TCP on one loopback port."""

    config: WireConfig
    name: str = "py1"
    also_answers: tuple[str, ...] = ("py2",)  # other members we announce at our address
    udp: socket.socket = field(init=False)
    tcp: socket.socket = field(init=False)
    port: int = field(init=False)
    received: list[object] = field(default_factory=list)
    raw_packets: list[bytes] = field(default_factory=list)
    pings_answered: int = 0
    streams: list[tuple[int, object]] = field(default_factory=list)  # (first byte, message)

    def __post_init__(self) -> None:
        for _ in range(20):
            port = _free_port()
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tcp = socket.socket()
            try:
                udp.bind(("127.0.0.1", port))
                tcp.bind(("127.0.0.1", port))
            except OSError:
                udp.close()
                tcp.close()
                continue
            tcp.listen(8)
            self.udp, self.tcp, self.port = udp, tcp, port
            return
        raise RuntimeError("no free port pair")

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()

    def state(self, join: bool) -> PushPull:
        me = PushNodeState(
            name=self.name,
            address=("127.0.0.1", self.port),
            meta=encode_tags(TAGS),
            incarnation=1,
            state=NodeState.ALIVE,
            vsn=VSN,
        )
        return PushPull(join=join, nodes=(me,))

    def dial_push_pull(self, port: int) -> tuple[int, PushPull | None, WireError | None]:
        """Join through ``port``: send our state, read the reply (first byte, message, error)."""
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(encode_stream(self.state(join=True), self.config))
            decoder = StreamDecoder(self.config, dialer=True)
            first = -1
            deadline = time.monotonic() + 5
            try:
                while time.monotonic() < deadline:
                    data = conn.recv(65536)
                    if not data:
                        return first, None, None
                    if first < 0:
                        first = data[0]
                    decoder.feed(data)
                    message = decoder.message()
                    if message is not None:
                        assert isinstance(message, PushPull)
                        return first, message, None
            except WireError as exc:
                return first, None, exc
        raise AssertionError("no push-pull reply within 5 s")

    def serve(self, until, timeout: float) -> bool:
        """Answer serf (acks, push-pull replies) until ``until()`` holds or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if until():
                return True
            ready, _, _ = select.select([self.udp, self.tcp], [], [], 0.05)
            if self.udp in ready:
                data, sender = self.udp.recvfrom(65536)
                self.raw_packets.append(data)
                for message in decode_packet(data, self.config):
                    self.received.append(message)
                    if isinstance(message, Ping) and message.node in (
                        self.name,
                        *self.also_answers,
                    ):
                        ack = encode_packet([Ack(seq_no=message.seq_no)], self.config)
                        for packet in ack:
                            self.udp.sendto(packet, message.source or sender)
                        self.pings_answered += 1
            if self.tcp in ready:
                self._answer_stream()
        return until()

    def _answer_stream(self) -> None:
        conn, _ = self.tcp.accept()
        with conn:
            conn.settimeout(5)
            decoder = StreamDecoder(self.config)
            first, message = -1, None
            while message is None:
                data = conn.recv(65536)
                if not data:
                    return
                first = data[0] if first < 0 else first
                decoder.feed(data)
                message = decoder.message()
            self.streams.append((first, message))
            if isinstance(message, PushPull):
                conn.sendall(encode_stream(self.state(message.join), self.config, dialer=False))
            elif isinstance(message, Ping):
                conn.sendall(encode_stream(Ack(seq_no=message.seq_no), self.config, dialer=False))

    def alive_about(self, name: str) -> list[Alive]:
        return [m for m in self.received if isinstance(m, Alive) and m.node == name]


@pytest.fixture
def fake_node():
    nodes: list[FakeNode] = []

    def make(config: WireConfig) -> FakeNode:
        nodes.append(FakeNode(config))
        return nodes[-1]

    yield make
    for node in nodes:
        node.close()


def _listed_with_tags(agent: Agent, name: str = "py1") -> bool:
    member = agent.members().get(name)
    return bool(member) and member["status"] == "alive" and member["tags"] == TAGS


def _decode_errors(log: str) -> list[str]:
    words = ("[ERR]", "decode", "checksum", "not supported", "unexpected node", "Decrypt")
    return [line for line in log.splitlines() if any(w in line for w in words)]


def test_serf_accepts_our_bytes_and_we_read_serfs(start_agent, fake_node):
    agent = start_agent()
    node = fake_node(WireConfig())

    # we dial: serf answers with its state, LZW-compressed (memberlist compresses streams)
    first, reply, error = node.dial_push_pull(agent.port)
    assert error is None and reply is not None
    assert first == MessageType.COMPRESS
    n1 = {n.name: n for n in reply.nodes}["n1"]
    assert n1.address == ("127.0.0.1", agent.port) and n1.state == NodeState.ALIVE
    assert decode_tags(n1.meta) == {"role": "x"}
    assert n1.vsn[:3] == (1, 5, 2)
    assert reply.user_state[:1] == b"\x02"  # Serf's messagePushPullType, opaque to memberlist

    # serf gossips our alive back (with our tags) and probes us; we ack with our encoding
    assert node.serve(lambda: node.pings_answered >= 1 and node.alive_about("py1"), timeout=8)
    alive = node.alive_about("py1")[0]
    assert alive.address == ("127.0.0.1", node.port) and decode_tags(alive.meta) == TAGS
    assert any(p[0] == MessageType.HAS_CRC for p in node.raw_packets)  # serf sends CRCs
    assert node.serve(lambda: _listed_with_tags(agent), timeout=5), agent.members()

    # serf reads our UDP gossip too: an alive about "py2" in a compound (with a stray nack)
    py2 = Alive(
        incarnation=1,
        node="py2",
        address=("127.0.0.1", node.port),
        meta=encode_tags({"role": "sidecar"}),
        vsn=VSN,
    )
    (packet,) = encode_packet([py2, Nack(seq_no=12345)], node.config)
    assert packet[0] == MessageType.HAS_CRC and packet[5] == MessageType.COMPOUND
    node.udp.sendto(packet, ("127.0.0.1", agent.port))
    def py2_listed() -> bool:
        return agent.members().get("py2", {}).get("tags") == {"role": "sidecar"}

    assert node.serve(py2_listed, timeout=5), agent.members()

    # a Serf user event reaches us as a memberlist user message (Serf type 3 = user event)
    assert agent.cli("event", "deploy", "v42").returncode == 0

    def events() -> list[User]:
        return [m for m in node.received if isinstance(m, User) and b"deploy" in m.payload]

    assert node.serve(lambda: bool(events()), timeout=5)
    assert events()[0].payload[0] == 3

    # serf dials us (`serf join`): we decode its push-pull and our reply completes its join
    join = subprocess.Popen(
        ["serf", "join", f"-rpc-addr=127.0.0.1:{agent.rpc}", f"127.0.0.1:{node.port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert node.serve(lambda: join.poll() is not None, timeout=8)
    finally:
        join.kill()
    output = join.communicate()[0]
    assert join.returncode == 0 and "Successfully joined" in output, output
    first, message = node.streams[-1]
    assert first == MessageType.COMPRESS and isinstance(message, PushPull) and message.join
    assert {n.name for n in message.nodes} >= {"n1", "py1"}

    assert node.serve(lambda: False, timeout=1.5) is False  # keep answering probes a moment
    assert _listed_with_tags(agent)
    assert _decode_errors(agent.log_text()) == []
    suspicions = [line for line in agent.log_text().splitlines() if "Suspect" in line]
    assert not any("py1" in line for line in suspicions)


def test_serf_with_encryption(start_agent, fake_node):
    agent = start_agent(key=SERF_KEY)
    # our ring holds an extra (older) key too: the primary seals, every key opens; our
    # streams are LZW-compressed too, so serf's Go compress/lzw reads our encoder's output
    ring = Keyring([SERF_KEY, bytes(16)])
    node = fake_node(WireConfig(keyring=ring, compression=True))
    first, reply, error = node.dial_push_pull(agent.port)
    assert error is None and reply is not None
    assert first == MessageType.ENCRYPT
    assert "n1" in {n.name for n in reply.nodes}
    assert node.serve(lambda: node.pings_answered >= 1 and _listed_with_tags(agent), timeout=8)
    assert all(p[0] == 1 for p in node.raw_packets)  # encryption version 1 on every packet
    log = agent.log_text()
    assert _decode_errors(log) == []
    assert "EventMemberJoin: py1" in log


def test_serf_rejects_a_wrong_key(start_agent, fake_node):
    agent = start_agent(key=SERF_KEY)
    node = fake_node(WireConfig(keyring=Keyring([bytes(range(16))])))
    _, reply, error = node.dial_push_pull(agent.port)
    assert reply is None  # serf could not open our state; its answer (if any) we cannot open
    assert error is None or error.reason == "decrypt_failed"
    node.udp.sendto(
        encode_packet([Ping(seq_no=1, node="n1")], node.config)[0], ("127.0.0.1", agent.port)
    )
    deadline = time.monotonic() + 3
    while "Decrypt packet failed" not in agent.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = agent.log_text()
    assert "No installed keys could decrypt the message" in log
    assert "Decrypt packet failed" in log
    assert "py1" not in agent.members()
