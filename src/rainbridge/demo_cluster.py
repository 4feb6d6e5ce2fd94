"""``rainbridge demo --cluster N``: one rate limit held across N replicas, on one machine.

Starts the fake provider, a PostgreSQL (``demo_postgres``), N ``rainbridge serve`` replicas
in cluster mode with static peers, each on its own loopback address (127.0.0.2, .3 …), and
a virtual key with a small per-minute request limit (in every replica's config file). Once
every replica sees all N members and is ready, it prints what to run against them. Ctrl-C
(or SIGTERM) stops it all: SIGTERM to the replicas (they drain, flush and leave), then the
fake provider, then the embedded PostgreSQL, then the temporary directory.

The replicas run in their own process groups, so a terminal's Ctrl-C reaches only the demo,
which stops them in order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson

from .demo import demo_config, port_free, start_mock
from .demo_postgres import DemoPostgresError, check_reachable, embedded_postgres, redacted
from .demo_watch import MODEL, watch

log = logging.getLogger("rainbridge.demo")

VK_ID = "vk-demo"
VK_VALUE = "sk-rb-demo-cluster-key"
GOSSIP_PORT = 7946
STARTUP_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0  # per replica after SIGTERM, then SIGKILL


class Stop(Exception):
    """Ctrl-C or SIGTERM: stop everything."""


def _raise_stop(signum: int, _frame: object) -> None:
    raise Stop(signal.Signals(signum).name)


def replica_hosts(count: int) -> list[str]:
    return [f"127.0.0.{2 + i}" for i in range(count)]


def gossip_port(host: str) -> int:
    """memberlist's 7946 when free for UDP and TCP on ``host``, else a free one."""
    for port in (GOSSIP_PORT, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
            try:
                udp.bind((host, port))
                tcp.bind((host, udp.getsockname()[1]))
            except OSError:
                continue
            return udp.getsockname()[1]
    raise RuntimeError(f"no free gossip port on {host}")


def http_port(host: str, wanted: int) -> int:
    if wanted and port_free(host, wanted):
        return wanted
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def replica_config(mock_url: str, dsn: str, index: int, peers: list[str], gossip: int, limit: int) -> dict:
    """The config file of replica ``index``: the demo's providers, the shared PostgreSQL store,
    the key with its per-minute limit, and cluster mode with static peers."""
    return {
        **demo_config(mock_url),
        "config_store": {"enabled": True, "type": "postgres", "config": {"dsn": dsn}},
        "governance": {"virtual_keys": [{
            "id": VK_ID, "name": "demo", "value": VK_VALUE,
            "rate_limit": {"request_max_limit": limit, "request_reset_duration": "1m"},
        }]},
        "cluster_config": {
            "enabled": True,
            "node_name": f"r{index + 1}",
            "peers": peers,
            "gossip": {"port": gossip},
        },
    }


class Replica:
    """One ``rainbridge serve`` process of the demo, its output in a log file."""

    def __init__(self, name: str, host: str, port: int, app_dir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.url = f"http://{host}:{port}"
        self.log_path = app_dir / "serve.log"
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rainbridge", "serve", "--host", host, "--port", str(port),
                 "--app-dir", str(app_dir), "--config", str(app_dir / "config.json")],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )

    def tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join("    " + line for line in text.splitlines()[-lines:])

    def ready(self, members: int, token: str) -> bool:
        """Ready (synced) and seeing all ``members`` alive."""
        try:
            with urllib.request.urlopen(self.url + "/health/ready", timeout=2) as resp:
                if resp.status != 200:
                    return False
            request = urllib.request.Request(self.url + "/api/cluster/status",
                                             headers={"authorization": f"Bearer {token}"})
            with urllib.request.urlopen(request, timeout=2) as resp:
                body = orjson.loads(resp.read())
        except (OSError, ValueError):  # not listening yet, 503 (HTTPError is an OSError)
            return False
        alive = sum(1 for m in body.get("members", []) if m.get("state") == "alive")
        return alive == members


def stop_replicas(replicas: list[Replica]) -> None:
    """SIGTERM to all at once (each drains, settles, flushes, leaves), then wait; SIGKILL
    what is still running after ``STOP_TIMEOUT_S``."""
    for r in replicas:
        if r.proc.poll() is None:
            r.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for r in replicas:
        try:
            r.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("replica %s did not stop within %.0f s: killing it", r.name, STOP_TIMEOUT_S)
            r.proc.kill()
            r.proc.wait(5)


def stop_process(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def run_cluster_demo(size: int, host: str, port: int, postgres: str | None, limit: int, watch_requests: int) -> int:
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with contextlib.ExitStack() as stack:
            try:
                return _run(stack, size, host, port, postgres, limit, watch_requests)
            finally:  # the clean-up (the stack, undone in reverse) runs to its end
                for s in previous:
                    signal.signal(s, signal.SIG_IGN)
    except Stop:
        print("rainbridge demo: stopped (replicas, fake provider, PostgreSQL if embedded, temporary files)", flush=True)
        return 0
    except DemoPostgresError as exc:
        print(f"rainbridge: {exc}", file=sys.stderr)
        return 2
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _run(stack: contextlib.ExitStack, size: int, host: str, port: int, postgres: str | None,
         limit: int, watch_requests: int) -> int:
    # Everything registered on ``stack`` is undone in reverse order, also on Ctrl-C during start-up.
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rainbridge-demo-cluster-")))
    if postgres:
        check_reachable(postgres)
        dsn, pg_label = postgres, f"yours, {redacted(postgres)}"
    else:
        dsn = stack.enter_context(embedded_postgres(tmp))
        pg_label = "an embedded one in " + str(tmp / "pg")
    mock, mock_url = start_mock(host, new_session=True)
    stack.callback(stop_process, mock)

    hosts = replica_hosts(size)
    gossip = [gossip_port(h) for h in hosts]
    peers = [f"{h}:{g}" for h, g in zip(hosts, gossip, strict=True)]
    token = "rb-demo-admin-" + secrets.token_hex(8)
    env = {**os.environ, "RAINBRIDGE_ADMIN_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    replicas: list[Replica] = []
    stack.callback(stop_replicas, replicas)
    for i, h in enumerate(hosts):
        app_dir = tmp / f"r{i + 1}"
        app_dir.mkdir()
        config = replica_config(mock_url, dsn, i, peers, gossip[i], limit)
        (app_dir / "config.json").write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2))
        replicas.append(Replica(f"r{i + 1}", h, http_port(h, port), app_dir, env))

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    waiting = list(replicas)
    while waiting:
        for r in replicas:
            if r.proc.poll() is not None:
                print(f"rainbridge: replica {r.name} exited ({r.proc.returncode}) while starting:\n{r.tail()}",
                      file=sys.stderr)
                return 1
        waiting = [r for r in waiting if not r.ready(size, token)]
        if waiting and time.monotonic() > deadline:
            names = ", ".join(r.name for r in waiting)
            print(f"rainbridge: replica(s) {names} not ready within {STARTUP_TIMEOUT_S:.0f} s:\n{waiting[0].tail()}",
                  file=sys.stderr)
            return 1
        if waiting:
            time.sleep(0.2)

    print(instructions(replicas, mock_url, pg_label, token, limit, tmp, watching=bool(watch_requests)), flush=True)
    if watch_requests:
        watch([r.url for r in replicas], VK_VALUE, watch_requests, limit, echo=lambda s: print(s, flush=True))
    print("Press Ctrl-C to stop.", flush=True)
    while True:
        for r in replicas:
            if r.proc.poll() is not None:
                print(f"rainbridge: replica {r.name} exited ({r.proc.returncode}); stopping the demo:\n{r.tail()}",
                      file=sys.stderr)
                return 1
        time.sleep(0.5)


def program() -> str:
    """How the user started rainbridge (``.venv/bin/rainbridge`` when not on PATH)."""
    return sys.argv[0] if os.path.basename(sys.argv[0]) == "rainbridge" else "rainbridge"


def instructions(replicas: list[Replica], mock_url: str, pg_label: str, token: str, limit: int, tmp: Path,
                 watching: bool) -> str:
    size = len(replicas)
    urls = " ".join(r.url for r in replicas)
    rounds = -(-3 * limit // size)  # about three times the limit, whole rounds
    members = "\n".join(f"  {r.name}  {r.url}  (pid {r.proc.pid}, log {r.log_path})" for r in replicas)
    hint = "" if watching else f"Start the demo with --watch {rounds * size} to have it send those requests and count them.\n"
    body = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Hello!"}]}).decode()
    return f"""
rainbridge demo --cluster {size} is up: {size} replicas of one gateway, in cluster mode,
sharing one PostgreSQL ({pg_label}), in front of a fake provider at {mock_url}.

{members}

The virtual key {VK_VALUE} may make {limit} requests per minute, across all {size} replicas together.
Send {rounds * size} requests spread round-robin over them: {limit} are admitted, the others refused with 429
(the window is the calendar minute: a loop that runs into the next minute gets up to {limit} more):

  for i in $(seq {rounds}); do for url in {urls}; do
    echo "$url $(curl -s --noproxy '*' -o /dev/null -w '%{{http_code}}' "$url/v1/chat/completions" \\
      -H 'authorization: Bearer {VK_VALUE}' -H 'content-type: application/json' \\
      -d '{body}')"
  done; done | sort | uniq -c

The cluster as one member sees it: members, their states, the fleet counters:

  RAINBRIDGE_ADMIN_TOKEN={token} {program()} cluster status --url {replicas[0].url}

{hint}Ctrl-C stops the replicas, the fake provider and PostgreSQL if embedded, and deletes {tmp}
"""
