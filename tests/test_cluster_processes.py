"""Cluster mode with real ``rainbridge serve`` processes on loopback.

Five members, each on its own address (127.0.0.11 … 127.0.0.15 through ``--host``, which
also sets the gossip address), share a fresh PostgreSQL config store and the fake provider,
and join through one seed listed in ``peers`` (the seed lists itself too). Timings: the
``lan`` profile with ``gossip.config`` {timeout_seconds 4, failure_threshold 10} through
the Bifrost mapping: 1/3 s probes, 1/6 s probe timeout, 3.3 s suspicion (with five members
Lifeguard expects no confirmations, so the timeout is fixed), 0.2 s gossip, each broadcast
sent 4 times. Short probes make sure the member paused for 2 s is suspected (so it has to
refute) while the suspicion still outlasts the pause. (The ``local`` profile sends each
broadcast only twice: in a five-member cluster a refutation then misses a member often
enough to make the SIGSTOP step flaky.) Every bound below is derived from those numbers.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from rainbridge.cluster.config import MembershipConfig, from_bifrost_gossip
from rainbridge.cluster.timers import expected_confirmations, suspicion_bounds
from support import Proc, free_port, free_port_at, http_json, provider_config, wait_http

N = 5
HOSTS = [f"127.0.0.{11 + i}" for i in range(N)]
TOKEN = "test-admin-token-cluster"
TIMING = {"timeout_seconds": 4, "success_threshold": 1, "failure_threshold": 10}
CFG = from_bifrost_gossip(4, 1, 10, MembershipConfig.lan())


def _suspicion_max(n: int) -> float:
    low, high = suspicion_bounds(
        CFG.suspicion_mult, CFG.suspicion_max_timeout_mult, n, CFG.probe_interval
    )
    return high if expected_confirmations(CFG.suspicion_mult, n) > 0 else low


SLACK = 5.0  # process scheduling on a shared machine, HTTP polling
# A crashed member: every survivor probes it within (n-1) intervals, the probe fails at
# the end of its interval, the suspicion runs out, the Dead message spreads in a few
# gossip rounds.
DETECT = (N - 1) * CFG.probe_interval + CFG.probe_interval + _suspicion_max(N) + SLACK
# Joining: usually a second; a join that gossip missed waits for a push-pull, and the first
# one may come before the last join.
CONVERGE = 2 * CFG.push_pull_interval + SLACK
PAUSE = 2.0




class Member:
    def __init__(self, tmp: Path, index: int, config: dict) -> None:
        self.name = f"m{index}"
        self.host = HOSTS[index]
        self.tmp = tmp
        self.lives = 0
        self.config_path = tmp / f"{self.name}.json"
        self.config_path.write_text(json.dumps(config))
        self.proc: Proc | None = None
        self.url = ""

    def launch(self) -> None:
        self.lives += 1
        app_dir = self.tmp / f"{self.name}-data"
        app_dir.mkdir(exist_ok=True)
        cmd = [sys.executable, "-m", "rainbridge", "serve", "--host", self.host, "--port", "0",
               "--app-dir", str(app_dir), "--config", str(self.config_path)]
        env = {"RAINBRIDGE_ADMIN_TOKEN": TOKEN}
        self.proc = Proc(cmd, self.tmp / f"{self.name}-{self.lives}.log", env=env)

    def ready(self) -> None:
        assert self.proc is not None
        self.url = self.proc.wait_for(r"listening on (http://\S+)", timeout=30).group(1)
        wait_http(self.url + "/health", timeout=30, proc=self.proc)

    def nodes(self) -> dict[str, dict]:
        status, _, body = http_json(
            "GET", self.url + "/api/cluster/nodes", headers={"authorization": f"Bearer {TOKEN}"},
            timeout=3,
        )
        assert status == 200, body
        return {n["name"]: n for n in body["nodes"]}

    def status(self) -> dict:
        status, _, body = http_json(
            "GET", self.url + "/api/cluster/status", headers={"authorization": f"Bearer {TOKEN}"},
            timeout=3,
        )
        assert status == 200, body
        return body

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.popen.send_signal(sig)

    def log(self) -> str:
        return self.proc.output() if self.proc else ""


def wait_for(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = cond()
        except (OSError, AssertionError) as exc:
            last = exc
        if last is True:
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout:.1f}s (last: {last})")


@pytest.fixture
def cluster(tmp_path, pg_database, mock):
    ports = [free_port(h) for h in HOSTS]
    members = []
    for i in range(N):
        config = {
            **provider_config(mock.url),
            "config_store": {"enabled": True, "type": "postgres", "config": {"dsn": pg_database}},
            "cluster_config": {
                "enabled": True,
                "node_name": f"m{i}",
                "region": "eu-test" if i % 2 else "us-test",
                "peers": [f"{HOSTS[0]}:{ports[0]}"],
                "gossip": {"port": ports[i], "profile": "lan", "config": TIMING},
            },
        }
        members.append(Member(tmp_path, i, config))
    for m in members:
        m.launch()
    try:
        for m in members:
            m.ready()
        yield members
    finally:
        for m in members:
            if m.proc is not None:
                if m.proc.popen.poll() is None:
                    os.kill(m.proc.pid, signal.SIGCONT)
                m.proc.stop(signal.SIGKILL, timeout=5)


def states_seen(observers: list[Member], name: str) -> dict[str, str | None]:
    return {o.name: o.nodes().get(name, {}).get("state") for o in observers}


def test_five_processes_form_a_cluster_and_handle_failures(cluster, tmp_path):
    members = cluster
    names = {m.name for m in members}

    # ---- join through one seed: every member lists everyone alive, with region and http
    def all_alive():
        for m in members:
            nodes = m.nodes()
            if {n for n, v in nodes.items() if v["state"] == "alive"} != names:
                return f"{m.name} sees {sorted((n, v['state']) for n, v in nodes.items())}"
        return True

    wait_for(all_alive, CONVERGE, "all five alive everywhere")
    for m in members:
        nodes = m.nodes()
        for other in members:
            view = nodes[other.name]
            assert view["http"] == other.url.removeprefix("http://")
            assert view["region"] == ("eu-test" if int(other.name[1:]) % 2 else "us-test")
            assert view["address"].startswith(other.host + ":")
            assert view["node_id"].startswith(other.name + "-") and view["boot"]
    status = members[1].status()
    assert status["node"]["name"] == "m1" and status["health"]["status"] == "healthy"
    by_region = status["regions"]
    assert by_region["us-test"] == {"members": ["m0", "m2", "m4"], "states": {"alive": 3}}
    assert by_region["eu-test"] == {"members": ["m1", "m3"], "states": {"alive": 2}}

    # metrics are public (no admin token)
    with urllib.request.urlopen(members[2].url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    assert 'rainbridge_cluster_members{node="m2",state="alive"} 5.0' in text
    assert "rainbridge_cluster_probes_total" in text

    # ---- SIGSTOP one member for 2 s: it refutes, nobody declares it dead
    paused = members[3]
    before = paused.status()["node"]["incarnation"]
    observers = [m for m in members if m is not paused]
    paused.signal(signal.SIGSTOP)
    stop_at = time.monotonic()
    seen_dead = set()
    while time.monotonic() - stop_at < PAUSE:
        for o, state in states_seen(observers, paused.name).items():
            if state == "dead":
                seen_dead.add(o)
        time.sleep(0.1)
    paused.signal(signal.SIGCONT)
    # watch past the moment a suspicion started during the pause would have expired
    watch_until = stop_at + PAUSE + _suspicion_max(N) + 1.0
    while time.monotonic() < watch_until:
        for o, state in states_seen(observers, paused.name).items():
            if state == "dead":
                seen_dead.add(o)
        time.sleep(0.1)
    assert not seen_dead, f"{sorted(seen_dead)} declared the paused member dead"
    assert paused.status()["node"]["incarnation"] > before, "the paused member never refuted"
    for o in observers:
        about = [line for line in o.log().splitlines() if f"member {paused.name} (" in line]
        assert not [line for line in about if " is dead" in line], about
    wait_for(all_alive, 5, "everyone alive after the pause")

    # ---- SIGKILL one member: every other member marks it dead
    victim = members[4]
    old_view = members[0].nodes()[victim.name]
    victim.signal(signal.SIGKILL)
    victim.proc.popen.wait(5)
    survivors = [m for m in members if m is not victim]
    t0 = time.monotonic()
    wait_for(
        lambda: set(states_seen(survivors, victim.name).values()) == {"dead"} or
        states_seen(survivors, victim.name),
        DETECT,
        "the killed member is dead everywhere",
    )
    detected = time.monotonic() - t0
    dead_inc = max(o.nodes()[victim.name]["incarnation"] for o in survivors)

    # ---- restart it under the same name: alive again, new boot id, higher incarnation
    victim.launch()
    victim.ready()

    def rejoined():
        for o in survivors:
            view = o.nodes().get(victim.name)
            if view is None or view["state"] != "alive" or view["boot"] == old_view["boot"]:
                return f"{o.name}: {view and (view['state'], view['boot'], view['incarnation'])}"
            if view["incarnation"] <= dead_inc:
                return f"{o.name}: incarnation {view['incarnation']} <= {dead_inc}"
        own = victim.nodes()
        return {n for n, v in own.items() if v["state"] == "alive"} == names or own.keys()

    wait_for(rejoined, CONVERGE, "the restarted member rejoined")

    # ---- SIGTERM one member: the others see it as left, not failed
    leaver = members[2]
    leaver.signal(signal.SIGTERM)
    assert leaver.proc.popen.wait(20) == 0
    assert "left the cluster" in leaver.log()
    rest = [m for m in members if m is not leaver]
    wait_for(
        lambda: set(states_seen(rest, leaver.name).values()) == {"left"} or
        states_seen(rest, leaver.name),
        5,
        "the stopped member is left everywhere",
    )

    # ---- the operator's view
    out = subprocess.run(
        [sys.executable, "-m", "rainbridge", "cluster", "status", "--url", members[0].url],
        capture_output=True, text=True, timeout=20, env={**os.environ, "RAINBRIDGE_ADMIN_TOKEN": TOKEN},
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "STATE", "ADDRESS"]
    assert "CLOCK" in lines[0].split()
    for m in members:
        row = next(line for line in lines[1:] if f" {m.name} " in f" {line} ")
        assert m.host in row
    assert " left " in next(line for line in lines if " m2 " in f" {line} ")
    assert "4 alive" in out.stdout and "1 left" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "rainbridge", "cluster", "status", "--url", members[0].url,
         "--token", "wrong"],
        capture_output=True, text=True, timeout=20,
    )
    assert bad.returncode == 1 and "401" in bad.stderr
    print(f"crash detected everywhere in {detected:.1f}s (bound {DETECT:.1f}s)")


def test_each_worker_is_its_own_member(tmp_path, pg_database, mock):
    host = "127.0.0.16"
    for _ in range(20):
        port = free_port(host)
        if port < 65535 and free_port_at(host, port + 1):
            break
    config = {
        **provider_config(mock.url),
        "config_store": {"enabled": True, "type": "postgres", "config": {"dsn": pg_database}},
        "cluster_config": {
            "enabled": True,
            "node_name": "multi",
            "peers": [f"{host}:{port}"],  # worker 0; worker 1 joins it, worker 0 skips itself
            "gossip": {"port": port, "profile": "lan", "config": TIMING},
        },
    }
    (tmp_path / "multi.json").write_text(json.dumps(config))
    cmd = [sys.executable, "-m", "rainbridge", "serve", "--host", host, "--port", "0",
           "--workers", "2", "--app-dir", str(tmp_path / "multi-data"),
           "--config", str(tmp_path / "multi.json")]
    proc = Proc(cmd, tmp_path / "multi.log", env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
    try:
        url = proc.wait_for(r"listening on (http://\S+)", timeout=30).group(1)
        wait_http(url + "/health", timeout=30, proc=proc)

        def both_alive():
            _, _, body = http_json("GET", url + "/api/cluster/nodes", timeout=3,
                                   headers={"authorization": f"Bearer {TOKEN}"})
            seen = {n["name"]: (n["state"], n["address"]) for n in body.get("nodes", [])}
            want = {"multi-w0": ("alive", f"{host}:{port}"),
                    "multi-w1": ("alive", f"{host}:{port + 1}")}
            return True if seen == want else seen

        wait_for(both_alive, CONVERGE, "both workers are members")
        assert proc.stop(signal.SIGTERM, timeout=30) == 0
        assert proc.output().count("left the cluster") == 2
    finally:
        proc.stop(signal.SIGKILL, timeout=5)


def test_sigterm_drains_streams_and_announces_draining(tmp_path, pg_database, mock):
    """SIGTERM on a member with a stream in flight: the fleet sees it ``draining`` (its
    gossiped metadata) while the stream still runs; the stream ends complete; then the
    fleet sees a graceful leave, not a failure."""
    hosts = ["127.0.0.17", "127.0.0.18"]
    ports = [free_port(h) for h in hosts]
    members = []
    for i, host in enumerate(hosts):
        config = {
            **provider_config(mock.url),
            "config_store": {"enabled": True, "type": "postgres", "config": {"dsn": pg_database}},
            "cluster_config": {
                "enabled": True,
                "node_name": f"d{i}",
                "peers": [f"{hosts[0]}:{ports[0]}"],
                "gossip": {"port": ports[i], "profile": "lan", "config": TIMING},
            },
        }
        m = Member(tmp_path, i, config)
        m.name, m.host = f"d{i}", host
        members.append(m)
    observer, leaving = members
    try:
        for m in members:
            m.launch()
        for m in members:
            m.ready()

        def both_ready():
            seen = {n["name"]: (n["state"], n["readiness"]) for n in observer.nodes().values()}
            return True if seen == {"d0": ("alive", "ready"), "d1": ("alive", "ready")} else seen

        wait_for(both_ready, CONVERGE, "two ready members")
        status, _, health = http_json("GET", leaving.url + "/health")
        assert status == 200 and health["components"]["cluster"]["status"] == "ok", health
        assert health["components"]["cluster"]["alive"] == 2

        # 30 chunks 100 ms apart: a 3-second stream through the member that will leave
        host, port = leaving.url.removeprefix("http://").rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=20)
        body = json.dumps({"model": "openai/gpt-4o-mini", "stream": True,
                           "messages": [{"role": "user", "content": "hi"}],
                           "mock": {"stream_chunks": 30, "chunk_delay_ms": 100}})
        conn.request("POST", "/v1/chat/completions", body=body,
                     headers={"content-type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200
        received: list[bytes] = []
        reader = threading.Thread(target=lambda: received.extend(iter(response.readline, b"")))
        reader.start()
        wait_for(lambda: len(received) >= 4 or len(received), 5, "the stream started")

        leaving.signal(signal.SIGTERM)
        wait_for(lambda: observer.nodes()["d1"]["readiness"] == "draining" or observer.nodes()["d1"],
                 3, "the fleet sees d1 draining")
        assert observer.nodes()["d1"]["state"] == "alive"
        assert leaving.proc.popen.poll() is None, "d1 exited before its stream ended"

        reader.join(timeout=15)
        events = [line for line in received if line.startswith(b"data: ")]
        assert events[-1] == b"data: [DONE]\n", events[-3:]
        chunks = [json.loads(e[6:]) for e in events[:-1]]
        content = [c["choices"][0]["delta"].get("content") for c in chunks if c.get("choices")]
        assert len([c for c in content if c]) == 30
        assert leaving.proc.popen.wait(timeout=20) == 0
        wait_for(lambda: observer.nodes().get("d1", {}).get("state") == "left" or observer.nodes(),
                 CONVERGE, "the fleet sees d1 left")
        assert "draining: finishing in-flight requests" in leaving.log()
    finally:
        for m in members:
            if m.proc is not None:
                m.proc.stop(signal.SIGKILL, timeout=5)
