"""Drain as Kubernetes drives it (server/drain.py), with real processes: two cluster members
on PostgreSQL, 20 streams in flight through one of them plus one that would run for hours,
then SIGTERM as the kubelet sends it after the preStop sleep.

Config ``drain``: accept_seconds 2, grace_seconds 8. Expected: readiness 503 at once (before
any stream ends) while liveness stays 200 ``draining``, new connections still served during
the accept window, refused after it (a refusal, never a 5xx), the 20 streams complete, the
endless one cut at the grace with a ``server_shutting_down`` event and ``[DONE]``, exit 0,
and the peer sees a leave."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import sys
import threading
import time
import urllib.error

from support import Proc, eventually, free_port, http_json, provider_config, wait_http

HOSTS = ["127.0.0.41", "127.0.0.42"]
TOKEN = "test-admin-token-drain-k8s"
ACCEPT_S = 2.0
GRACE_S = 8.0
STREAMS = 20
CHUNKS, CHUNK_MS = 30, 100  # each finishing stream runs about 3 s
TIMING = {"timeout_seconds": 4, "success_threshold": 1, "failure_threshold": 10}
SLACK = 5.0  # process scheduling on a shared machine


class Stream:
    """One streamed chat completion read line by line on its own thread."""

    def __init__(self, host: str, port: int, chunks: int):
        self.lines: list[bytes] = []
        self.ended_at: float | None = None
        self.conn = http.client.HTTPConnection(host, port, timeout=GRACE_S + 30)
        body = {"model": "openai/gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}],
                "mock": {"stream_chunks": chunks, "chunk_delay_ms": CHUNK_MS}}
        self.conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers={"content-type": "application/json"})
        self.response = self.conn.getresponse()
        assert self.response.status == 200
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for line in iter(self.response.readline, b""):
                self.lines.append(line)
        except (OSError, http.client.HTTPException):
            pass
        self.ended_at = time.monotonic()

    def events(self) -> list[bytes]:
        return [line for line in self.lines if line.startswith(b"data: ")]


def _launch(tmp_path, index: int, config: dict) -> Proc:
    path = tmp_path / f"k{index}.json"
    path.write_text(json.dumps(config))
    app_dir = tmp_path / f"k{index}-data"
    app_dir.mkdir()
    return Proc([sys.executable, "-m", "rainbridge", "serve", "--host", HOSTS[index], "--port", "0",
                 "--app-dir", str(app_dir), "--config", str(path)],
                tmp_path / f"k{index}.log", env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})


def _nodes(url: str) -> dict[str, dict]:
    status, _, body = http_json("GET", url + "/api/cluster/nodes", headers={"authorization": f"Bearer {TOKEN}"}, timeout=3)
    assert status == 200, body
    return {n["name"]: n for n in body["nodes"]}


def _refused(host: str, port: int) -> bool | str:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return "accepted"


def test_sigterm_drains_the_way_kubernetes_expects(tmp_path, pg_database, mock):
    ports = [free_port(h) for h in HOSTS]
    procs: list[Proc] = []
    try:
        for i in range(2):
            config = {
                **provider_config(mock.url),
                "config_store": {"enabled": True, "type": "postgres", "config": {"dsn": pg_database}},
                "cluster_config": {"enabled": True, "node_name": f"k{i}", "peers": [f"{HOSTS[0]}:{ports[0]}"],
                                   "gossip": {"port": ports[i], "profile": "lan", "config": TIMING}},
                "drain": {"accept_seconds": ACCEPT_S, "grace_seconds": GRACE_S},
            }
            procs.append(_launch(tmp_path, i, config))
        urls = [p.wait_for(r"listening on (http://\S+)", timeout=30).group(1) for p in procs]
        for proc, url in zip(procs, urls, strict=True):
            wait_http(url + "/health/ready", timeout=30, proc=proc)
        observer_url, leaving_url = urls
        leaving = procs[1]

        def both_ready():
            seen = {n: (v["state"], v["readiness"]) for n, v in _nodes(observer_url).items()}
            return True if seen == {"k0": ("alive", "ready"), "k1": ("alive", "ready")} else seen

        eventually(both_ready, 20, "two ready members")
        eventually(lambda: http_json("GET", leaving_url + "/health/ready")[0] == 200, 20, "k1 ready")

        host, port_s = leaving_url.removeprefix("http://").rsplit(":", 1)
        port = int(port_s)
        streams = [Stream(host, port, CHUNKS) for _ in range(STREAMS)]
        endless = Stream(host, port, 100_000)  # hours: only the grace ends it
        eventually(lambda: all(len(s.events()) >= 1 for s in [*streams, endless]) or
                   sum(1 for s in streams if s.events()), 10, "every stream started")

        signalled = time.monotonic()
        leaving.popen.send_signal(signal.SIGTERM)

        # readiness 503 at once, before the first stream ends
        def not_ready():
            status, _, body = http_json("GET", leaving_url + "/health/ready", timeout=2)
            return True if status == 503 and body.get("status") == "draining" else (status, body)

        eventually(not_ready, 1.5, "readiness 503 draining")
        flipped = time.monotonic()
        assert all(s.ended_at is None for s in streams), "a stream ended before readiness flipped"
        assert flipped - signalled < ACCEPT_S
        # liveness stays 200 (a failing liveness probe would restart the pod mid-drain)
        status, _, body = http_json("GET", leaving_url + "/health", timeout=2)
        assert (status, body["status"]) == (200, "draining"), body
        status, _, body = http_json("GET", leaving_url + "/health/ready", timeout=2)
        assert (status, body["checks"].get("drain")) == (503, "draining"), body

        # the fleet sees it draining while it still serves
        eventually(lambda: _nodes(observer_url)["k1"]["readiness"] == "draining" or _nodes(observer_url)["k1"],
                   3, "the peer sees k1 draining")

        # inside the accept window a late-routed request is served, not refused
        assert time.monotonic() - signalled < ACCEPT_S * 0.8, "too slow to test inside the accept window"
        status, _, body = http_json("POST", leaving_url + "/v1/chat/completions", timeout=5, body={
            "model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "late"}]})
        assert status == 200, body

        # after the window: refused at the TCP level (no HTTP answer at all, so no 5xx)
        eventually(lambda: _refused(host, port), ACCEPT_S + SLACK, "connections refused after the accept window")
        assert time.monotonic() - signalled >= ACCEPT_S * 0.9
        try:
            answer = http_json("GET", leaving_url + "/health", timeout=2)
        except urllib.error.URLError as exc:
            assert isinstance(exc.reason, ConnectionRefusedError), exc
        else:
            raise AssertionError(f"a request after the accept window was answered: {answer}")
        assert leaving.popen.poll() is None, "exited while streams were in flight"

        # the 20 streams run to completion
        for s in streams:
            s.thread.join(timeout=GRACE_S + SLACK)
            events = s.events()
            assert events[-1] == b"data: [DONE]\n", events[-3:]
            content = [json.loads(e[6:])["choices"][0]["delta"].get("content") for e in events[:-1]
                       if json.loads(e[6:]).get("choices")]
            assert len([c for c in content if c]) == CHUNKS

        # the endless one is cut at the grace: why, then [DONE]
        endless.thread.join(timeout=GRACE_S + SLACK)
        assert endless.ended_at is not None
        assert endless.ended_at - signalled >= GRACE_S * 0.9
        events = endless.events()
        assert events[-1] == b"data: [DONE]\n", events[-3:]
        assert json.loads(events[-2][6:])["error"]["type"] == "server_shutting_down"

        assert leaving.popen.wait(timeout=SLACK + 10) == 0, leaving.output()
        states: list[str] = []

        def left():
            state = _nodes(observer_url).get("k1", {}).get("state")
            states.append(state)
            return True if state == "left" else state

        eventually(left, 15, "the peer sees k1 left")
        assert "dead" not in states and "suspect" not in states, states
        assert "left the cluster" in leaving.output()
    finally:
        for proc in procs:
            proc.stop(signal.SIGKILL, timeout=5)
