"""Fleets of real ``rainbridge serve`` replicas for tests (cluster mode, PostgreSQL store, the
fake provider), shared by the fleet-limit tests.

A ``Replica`` is one ``rainbridge serve`` process, reached over loopback TCP or, when it runs
in a network namespace, through a unix-socket relay (``via``). Everything a test asks it
(chat requests, cluster status, usage, readiness) goes through ``Replica.request``, so the
tests do not care how it is reached. ``Load`` sends paced requests from a thread pool and
records when each answer came, from which replica, with which status. Every wait and loop
here is bounded.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from support import Proc, eventually, provider_config

TOKEN = "fleet-limits-admin-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
VK_ID = "vk-fleet"
VK_VALUE = "sk-rb-fleet-" + "0" * 24
# The store row of the key's request counter, and its fleet limit id (engine.Check.lid).
REQUESTS_ROW = f"{VK_ID}\x1frequests"
CHAT_BODY = json.dumps({"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]})


def fleet_config(mock_url: str, dsn: str, name: str, peers: Sequence[str], gossip_port: int,
                 limit: int, timing: dict, duration: str = "1h") -> dict:
    """One replica's config: the shared store, one virtual key with a request limit, cluster
    mode with static peers and the given gossip timing (Bifrost's ``gossip.config``)."""
    return {
        **provider_config(mock_url),
        "config_store": {"enabled": True, "type": "postgres", "config": {"dsn": dsn}},
        "governance": {"virtual_keys": [{
            "id": VK_ID, "name": "fleet", "value": VK_VALUE,
            "rate_limit": {"request_max_limit": limit, "request_reset_duration": duration},
        }]},
        "cluster_config": {
            "enabled": True,
            "node_name": name,
            "peers": list(peers),
            "gossip": {"port": gossip_port, "profile": "lan", "config": timing},
        },
    }


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class Replica:
    """One ``rainbridge serve`` process; ``start`` again (same name, config and gossip port)
    after a stop to restart it as a new incarnation."""

    def __init__(self, tmp: Path, name: str, host: str, config: dict, workers: int = 1,
                 prefix: Sequence[str] = (), via: str | None = None) -> None:
        self.tmp = tmp
        self.name = name
        self.host = host
        self.workers = workers
        self.prefix = list(prefix)  # e.g. ["ip", "netns", "exec", ns]
        self.via = via  # unix socket that relays to the HTTP port (a replica in a namespace)
        self.app_dir = tmp / f"{name}-data"
        self.app_dir.mkdir(exist_ok=True)
        self.config_path = tmp / f"{name}.json"
        self.config_path.write_text(json.dumps(config))
        self.lives = 0
        self.proc: Proc | None = None
        self.url = ""
        self.start()

    def start(self) -> None:
        self.lives += 1
        cmd = [*self.prefix, sys.executable, "-m", "rainbridge", "serve", "--host", self.host,
               "--port", "0", "--workers", str(self.workers), "--app-dir", str(self.app_dir),
               "--config", str(self.config_path)]
        self.proc = Proc(cmd, self.tmp / f"{self.name}.{self.lives}.log", env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
        self.url = self.proc.wait_for(r"listening on (http://\S+)", timeout=30).group(1)
        if self.via is None:
            eventually(lambda: self.request("GET", "/health", timeout=2)[0] < 500, 30, f"{self.name} serves")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.via is not None:
            return _UnixHTTPConnection(self.via, timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method: str, path: str, body: str | None = None, headers: dict | None = None,
                timeout: float = 10.0) -> tuple[int, dict]:
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body, {"content-type": "application/json", **(headers or {})})
            resp = conn.getresponse()
            raw = resp.read()
            try:
                parsed = json.loads(raw) if raw else {}
            except ValueError:
                parsed = {"raw": raw.decode(errors="replace")}
            return resp.status, parsed
        finally:
            conn.close()

    def chat(self, timeout: float = 20.0) -> tuple[int, str]:
        """One governed chat completion: (status, error code); (0, reason) when no answer."""
        try:
            status, code, _ = self.chat_answer(timeout=timeout)
        except (OSError, http.client.HTTPException) as exc:
            return 0, type(exc).__name__
        return status, code

    def chat_answer(self, key: str = VK_VALUE, timeout: float = 20.0, **extra) -> tuple[int, str, int]:
        """(status, error code, tokens the provider reported) of one chat request."""
        body = json.dumps({**json.loads(CHAT_BODY), **extra}) if extra else CHAT_BODY
        status, answer = self.request("POST", "/v1/chat/completions", body, {"authorization": f"Bearer {key}"}, timeout)
        if status != 200:
            return status, answer.get("error", {}).get("code", ""), 0
        return 200, "", answer["usage"]["total_tokens"]

    def status(self) -> dict:
        status, body = self.request("GET", "/api/cluster/status", headers=ADMIN, timeout=3)
        assert status == 200, body
        return body

    def fleet(self) -> dict:
        """The answering worker's ``fleet_counters`` (one worker per replica: this member's)."""
        return self.status()["fleet_counters"]

    def usage(self) -> float:
        """The fleet's usage of the key's request limit, as this replica reports it."""
        status, body = self.request("GET", f"/api/governance/virtual-keys/{VK_ID}/usage", headers=ADMIN, timeout=3)
        assert status == 200, body
        return body["levels"][0]["rate_limit"]["request"]["current_usage"]

    def members_seen(self) -> int:
        return sum(1 for m in self.status()["members"] if m["state"] == "alive")

    def ready_everywhere(self) -> bool:
        """Readiness of every worker: several answers in a row (the kernel spreads
        connections over the workers sharing the port)."""
        return all(self.request("GET", "/health/ready", timeout=3)[0] == 200 for _ in range(4 * self.workers))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        return self.proc.stop(sig) if self.proc is not None else None


def wait_formed(replicas: Sequence[Replica], timeout: float = 30.0) -> None:
    """Every replica sees every member alive, and every worker is ready (fleet counters
    synced)."""
    members = sum(r.workers for r in replicas)
    eventually(lambda: all(r.members_seen() == members for r in replicas), timeout, "every member sees all")
    eventually(lambda: all(r.ready_everywhere() for r in replicas), timeout, "every worker ready")


@dataclass(frozen=True)
class Answer:
    sent: float  # time.monotonic()
    done: float
    replica: str
    status: int  # 0: no answer (connection refused or reset: the replica was down)
    code: str
    wall: float  # time.time() when the answer came (to compare with the store's times)


class Load:
    """Paced chat requests from ``threads`` threads, each sending one request at a time
    every ``interval`` seconds to the replica ``pick(i)`` chooses (``i``: the request's
    sequence number), until ``stop`` or ``max_seconds``. ``answers`` grows as they come."""

    def __init__(self, pick: Callable[[int], Replica | None], threads: int, interval: float,
                 max_seconds: float = 50.0) -> None:
        self.pick = pick
        self.interval = interval
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._seq = 0
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_seconds
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self._threads:
            t.start()

    def _next(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def _run(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            replica = self.pick(self._next())
            sent = time.monotonic()
            if replica is None:
                self._stop.wait(self.interval)
                continue
            status, code = replica.chat()
            with self._lock:
                self.answers.append(Answer(sent, time.monotonic(), replica.name, status, code, time.time()))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - sent)))

    def admitted(self, since: float = -1.0, replica: str | None = None) -> int:
        with self._lock:
            return sum(1 for a in self.answers if a.status == 200 and a.done >= since
                       and (replica is None or a.replica == replica))

    def stop(self) -> list[Answer]:
        self._stop.set()
        for t in self._threads:
            t.join(30)
        return list(self.answers)


async def _stored(dsn: str, counter: str, scope: str | None) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        if scope is not None:
            return await conn.fetchval("SELECT COALESCE(SUM(value), 0) FROM counters WHERE scope = $1", scope)
        return await conn.fetchval("SELECT COALESCE(SUM(value), 0) FROM counters WHERE counter_key = $1", counter)
    finally:
        await conn.close()


async def _last_flush(dsn: str, node_prefix: str, counter: str) -> float | None:
    conn = await asyncpg.connect(dsn)
    try:
        ms = await conn.fetchval("SELECT MAX(updated_at) FROM counters WHERE counter_key = $1 AND node_id LIKE $2",
                                 counter, node_prefix + "%")
        return None if ms is None else ms / 1000
    finally:
        await conn.close()


def last_flush(dsn: str, name: str, counter: str = REQUESTS_ROW) -> float | None:
    """When member ``name`` (any incarnation) last wrote the counter's row (wall clock, s)."""
    return asyncio.run(_last_flush(dsn, name + "-", counter))


def stored_total(dsn: str, counter: str = REQUESTS_ROW, scope: str | None = None) -> float:
    """The store's total of one counter over every node (``scope``: of every counter of it);
    by default the key's request count."""
    return asyncio.run(_stored(dsn, counter, scope))
