"""When a lone ``rainbridge serve`` member reports ready (``GET /health/ready``).

One real process on loopback, PostgreSQL config store, the ``lan`` profile (push-pull TCP
timeout 10 s). ``Joining.sync_wait`` is 10 s:

- ``peers`` names only ourselves: the sources have settled and found nobody, so the first
  member is ready at once (a StatefulSet's first pod; its DNS names only itself);
- ``peers`` names a member that is not there (refused), or one that accepts the push-pull
  connection and never answers (each attempt then hangs for the TCP timeout): the member
  was told others exist, so it must not claim to be the whole cluster at once, and is ready
  alone after ``sync_wait`` however long its join attempts take.

Bounds: ``PROMPT`` for "at once" (process start-up and the store's first ping on a shared
machine), ``sync_wait + SLACK`` for "after sync_wait". Early readiness is checked only in
the first ``EARLY`` seconds after the HTTP server listens (the timer started before that).
"""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.error
import urllib.request

import pytest

from rainbridge.cluster.joining import SYNC_WAIT
from support import Proc, free_port

HOST = "127.0.0.61"
PEER_HOST = "127.0.0.62"
PROMPT = 5.0
SLACK = 5.0
EARLY = 4.0


def _ready(url: str) -> tuple[bool, dict]:
    try:
        with urllib.request.urlopen(url + "/health/ready", timeout=3) as r:
            return True, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return False, json.loads(exc.read())


def _start(tmp_path, pg_database, peers: list[str], port: int) -> tuple[Proc, str]:
    config = {
        "config_store": {"enabled": True, "type": "postgres", "config": {"dsn": pg_database}},
        "cluster_config": {"enabled": True, "node_name": "lone", "peers": peers,
                           "gossip": {"port": port, "profile": "lan"}},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    (tmp_path / "data").mkdir()
    cmd = [sys.executable, "-m", "rainbridge", "serve", "--host", HOST, "--port", "0",
           "--app-dir", str(tmp_path / "data"), "--config", str(path)]
    proc = Proc(cmd, tmp_path / "lone.log")
    url = proc.wait_for(r"listening on (http://\S+)", timeout=30).group(1)
    return proc, url


def _wait_ready(url: str, proc: Proc, bound: float) -> tuple[float, list[dict]]:
    """Seconds from now until ready (at most ``bound``) and the 503 bodies seen before."""
    start = time.monotonic()
    seen: list[dict] = []
    while time.monotonic() - start < bound:
        try:
            ok, body = _ready(url)
        except OSError:  # a busy machine: poll again
            ok, body = False, None
        if ok:
            return time.monotonic() - start, seen
        if body is not None:
            seen.append({"at": round(time.monotonic() - start, 2), **body})
        time.sleep(0.1)
    raise AssertionError(f"not ready within {bound}s; last {seen[-1:]}\n{proc.output()[-2000:]}")


def test_the_first_member_listed_alone_in_peers_is_ready_at_once(tmp_path, pg_database):
    port = free_port(HOST)
    proc, url = _start(tmp_path, pg_database, [f"{HOST}:{port}"], port)
    try:
        took, _ = _wait_ready(url, proc, PROMPT)
        print(f"lone member (peers: itself) ready {took:.2f}s after listening")
        assert "ready alone" not in proc.output()  # the sync_wait timer never had to fire
    finally:
        proc.stop()


def _silent_peer() -> tuple[str, list[socket.socket]]:
    """A peer that takes the push-pull connection and never says a word."""
    port = free_port(PEER_HOST)
    tcp = socket.socket()
    tcp.bind((PEER_HOST, port))
    tcp.listen(64)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((PEER_HOST, port))
    return f"{PEER_HOST}:{port}", [tcp, udp]


@pytest.mark.parametrize("peer", ["refusing", "silent"])
def test_a_member_told_of_absent_peers_waits_sync_wait_then_is_ready_alone(
    tmp_path, pg_database, peer
):
    held: list[socket.socket] = []
    if peer == "silent":
        address, held = _silent_peer()
    else:
        address = f"{PEER_HOST}:{free_port(PEER_HOST)}"  # nobody listens there
    proc, url = _start(tmp_path, pg_database, [address], free_port(HOST))
    try:
        took, seen = _wait_ready(url, proc, SYNC_WAIT + SLACK)
        early = [s for s in seen if s["at"] < EARLY]
        assert early and all(s["checks"]["cluster"] == "syncing" for s in early), seen[:3]
        print(f"lone member told of a {peer} peer: ready {took:.2f}s after listening")
        assert "ready alone" in proc.output()
    finally:
        proc.stop()
        for s in held:
            s.close()
