"""One limit for the whole fleet, with real processes: three ``rainbridge serve`` replicas
× two workers (six cluster members) on a fresh PostgreSQL config store and the fake
provider, each replica on its own loopback address.

A virtual key allows 50 requests per hour. 200 concurrent requests spread over the
replicas (evenly, or 80 % on one) must admit exactly 50, and every other one is refused
with the fleet's 429; after a graceful stop the store holds exactly the 50.
"""

from __future__ import annotations

import http.client
import json
import signal
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest

from support import Proc, eventually, free_port, http_json, provider_config, wait_http

HOSTS = ["127.0.0.61", "127.0.0.62", "127.0.0.63"]
WORKERS = 2
LIMIT = 50
TOKEN = "fleet-limits-admin-token"
VK_VALUE = "sk-rb-fleet-" + "0" * 24
TIMING = {"timeout_seconds": 4, "success_threshold": 1, "failure_threshold": 10}


class Replica:
    def __init__(self, tmp: Path, index: int, config: dict, workers: int = WORKERS) -> None:
        self.name = f"r{index}"
        self.host = HOSTS[index]
        app_dir = tmp / f"{self.name}-data"
        app_dir.mkdir(exist_ok=True)
        path = tmp / f"{self.name}.json"
        path.write_text(json.dumps(config))
        cmd = [sys.executable, "-m", "rainbridge", "serve", "--host", self.host, "--port", "0",
               "--workers", str(workers), "--app-dir", str(app_dir), "--config", str(path)]
        self.proc = Proc(cmd, tmp / f"{self.name}.log", env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
        self.url = self.proc.wait_for(r"listening on (http://\S+)", timeout=30).group(1)
        wait_http(self.url + "/health", timeout=30, proc=self.proc)

    def ready_everywhere(self) -> bool:
        """Readiness of both workers: several answers in a row (the kernel spreads
        connections over the workers sharing the port)."""
        return all(http_json("GET", self.url + "/health/ready", timeout=3)[0] == 200 for _ in range(8))

    def members_seen(self) -> int:
        status, _, body = http_json("GET", self.url + "/api/cluster/status",
                                    headers={"authorization": f"Bearer {TOKEN}"}, timeout=3)
        assert status == 200, body
        return sum(1 for m in body["members"] if m["state"] == "alive")


def fleet_config(mock_url: str, dsn: str, index: int, ports: list[int], limit: int = LIMIT) -> dict:
    return {
        **provider_config(mock_url),
        "config_store": {"enabled": True, "type": "postgres", "config": {"dsn": dsn}},
        "governance": {"virtual_keys": [{
            "id": "vk-fleet", "name": "fleet", "value": VK_VALUE,
            "rate_limit": {"request_max_limit": limit, "request_reset_duration": "1h"},
        }]},
        "cluster_config": {
            "enabled": True,
            "node_name": f"r{index}",
            "peers": [f"{HOSTS[i]}:{ports[i]}" for i in range(len(ports))],
            "gossip": {"port": ports[index], "profile": "lan", "config": TIMING},
        },
    }


@pytest.fixture
def fleet(tmp_path, pg_database, mock):
    ports = [free_port(h) for h in HOSTS]
    replicas: list[Replica] = []
    try:
        for i in range(len(HOSTS)):
            replicas.append(Replica(tmp_path, i, fleet_config(mock.url, pg_database, i, ports)))
        eventually(lambda: all(r.members_seen() == len(HOSTS) * WORKERS for r in replicas), 30,
                   "every member sees all six")
        eventually(lambda: all(r.ready_everywhere() for r in replicas), 30, "every worker ready")
        yield replicas, pg_database
    finally:
        for r in replicas:
            r.proc.stop()


def chat(url: str) -> int:
    return chat_answer(url)[0]


def chat_answer(url: str) -> tuple[int, str]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    try:
        body = json.dumps({"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
        conn.request("POST", "/v1/chat/completions", body,
                     {"content-type": "application/json", "authorization": f"Bearer {VK_VALUE}"})
        resp = conn.getresponse()
        data = resp.read()
        code = json.loads(data).get("error", {}).get("code", "") if resp.status != 200 else ""
        return resp.status, code
    finally:
        conn.close()


def storm(urls: list[str], total: int) -> list[tuple[int, str]]:
    with ThreadPoolExecutor(max_workers=32) as pool:
        return list(pool.map(chat_answer, (urls[i % len(urls)] for i in range(total))))


async def stored_total(dsn: str) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(
            "SELECT COALESCE(SUM(value), 0) FROM counters WHERE counter_key = $1", "vk-fleet\x1frequests")
    finally:
        await conn.close()


def skip_window_edge() -> None:
    """The hourly window must not end during the storm (at most one minute of waiting)."""
    left = 3600 - time.time() % 3600
    if left < 60:
        time.sleep(left + 1)


@pytest.mark.parametrize("spread", ["round_robin", "skewed_80_percent"])
def test_200_requests_across_three_replicas_admit_exactly_the_limit(fleet, spread):
    import asyncio

    replicas, dsn = fleet
    urls = [r.url for r in replicas]
    if spread == "skewed_80_percent":  # 8 of every 10 requests to the first replica
        urls = [urls[0]] * 8 + [urls[1], urls[2]]
    skip_window_edge()
    answers = storm(urls, 4 * LIMIT)
    statuses = [status for status, _ in answers]
    assert statuses.count(200) == LIMIT, Counter(answers)
    assert set(answers) == {(200, ""), (429, "request_limited")}, Counter(answers)
    # Later requests are refused too, on every replica.
    assert [chat(r.url) for r in replicas] == [429, 429, 429]
    for r in replicas:
        assert r.proc.stop(signal.SIGTERM) == 0
    assert asyncio.run(stored_total(dsn)) == LIMIT
