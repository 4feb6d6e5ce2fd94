"""One limit for the whole fleet, with real processes: three ``rainbridge serve`` replicas
× two workers (six cluster members) on a fresh PostgreSQL config store and the fake
provider, each replica on its own loopback address.

A virtual key allows 50 requests per hour. 200 concurrent requests spread over the
replicas (evenly, or 80 % on one) must admit exactly 50, and every other one is refused
with the fleet's 429; after a graceful stop the store holds exactly the 50.

A third key has a budget of $0.02 per hour at $0.00001 per token: each request reserves
its worst-case cost against the fleet's allowance, so the fleet never spends past it.

Another key allows 2,000 tokens per hour. Each request reserves its prompt estimate plus
its ``max_tokens`` and settles with the provider's usage, which is never more: the fleet
then uses at most the limit, and leaves unused at most one reservation per member.
"""

from __future__ import annotations

import http.client
import json
import signal
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import pytest

import fleet_support
from fleet_support import TOKEN, VK_VALUE
from support import (
    eventually,
    free_port,
    http_json,
    skip_window_edge,
)

HOSTS = ["127.0.0.61", "127.0.0.62", "127.0.0.63"]
WORKERS = 2
LIMIT = 50
TOKENS_VK_VALUE = "sk-rb-fleet-tokens-" + "0" * 24
TOKEN_LIMIT = 2000
MAX_TOKENS = 20
BUDGET_VK_VALUE = "sk-rb-fleet-budget-" + "0" * 24
BUDGET = 0.02
PRICE = 0.00001  # $ per token, input and output
TIMING = {"timeout_seconds": 4, "success_threshold": 1, "failure_threshold": 10}


class Replica(fleet_support.Replica):
    """Replica ``index`` of this file's fleet (``fleet_support.Replica`` on ``HOSTS[index]``)."""

    def __init__(self, tmp: Path, index: int, config: dict, workers: int = WORKERS) -> None:
        super().__init__(tmp, f"r{index}", HOSTS[index], config, workers=workers)


def fleet_config(mock_url: str, dsn: str, index: int, ports: list[int], limit: int = LIMIT) -> dict:
    """Replica ``index``'s config: the shared fleet config (``fleet_support.fleet_config``:
    the request-limited key) with this file's token-limited and budgeted keys."""
    peers = [f"{HOSTS[i]}:{port}" for i, port in enumerate(ports)]
    config = fleet_support.fleet_config(mock_url, dsn, f"r{index}", peers, ports[index], limit, TIMING)
    config["governance"]["virtual_keys"] += [
        {"id": "vk-tokens", "name": "fleet-tokens", "value": TOKENS_VK_VALUE,
         "rate_limit": {"token_max_limit": TOKEN_LIMIT, "token_reset_duration": "1h"}},
        {"id": "vk-budget", "name": "fleet-budget", "value": BUDGET_VK_VALUE,
         "budget": {"id": "budget-fleet", "max_limit": BUDGET, "reset_duration": "1h"}},
    ]
    config["pricing_overrides"] = {"gpt-4o": {"input_cost_per_token": PRICE, "output_cost_per_token": PRICE}}
    return config


@contextmanager
def running_fleet(tmp_path: Path, make_config) -> Iterator[list[Replica]]:
    """One replica per ``HOSTS`` entry, ``make_config(index, ports)`` its config; yields once
    every member sees all six and every worker is ready, and stops them all after."""
    ports = [free_port(h) for h in HOSTS]
    replicas: list[Replica] = []
    try:
        for i in range(len(HOSTS)):
            replicas.append(Replica(tmp_path, i, make_config(i, ports)))
        eventually(lambda: all(r.members_seen() == len(HOSTS) * WORKERS for r in replicas), 30,
                   "every member sees all six")
        eventually(lambda: all(r.ready_everywhere() for r in replicas), 30, "every worker ready")
        yield replicas
    finally:
        for r in replicas:
            r.proc.stop()


@pytest.fixture
def fleet(tmp_path, pg_database, mock):
    with running_fleet(tmp_path, lambda i, ports: fleet_config(mock.url, pg_database, i, ports)) as replicas:
        yield replicas, pg_database


def chat(url: str) -> int:
    return chat_answer(url)[0]


def chat_answer(url: str, key: str = VK_VALUE, **extra) -> tuple[int, str, int]:
    """(status, error code, tokens the provider reported) of one chat request."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    try:
        body = json.dumps({"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}], **extra})
        conn.request("POST", "/v1/chat/completions", body,
                     {"content-type": "application/json", "authorization": f"Bearer {key}"})
        resp = conn.getresponse()
        data = json.loads(resp.read())
        if resp.status != 200:
            return resp.status, data.get("error", {}).get("code", ""), 0
        return 200, "", data["usage"]["total_tokens"]
    finally:
        conn.close()


def storm(urls: list[str], total: int, call=chat_answer) -> list[tuple[int, str, int]]:
    with ThreadPoolExecutor(max_workers=32) as pool:
        return list(pool.map(call, (urls[i % len(urls)] for i in range(total))))


async def stored_total(dsn: str, counter: str = "vk-fleet\x1frequests", scope: str | None = None) -> float:
    """The store's total of one counter over every node (``scope``: of every counter of it)."""
    conn = await asyncpg.connect(dsn)
    try:
        if scope is not None:
            return await conn.fetchval("SELECT COALESCE(SUM(value), 0) FROM counters WHERE scope = $1", scope)
        return await conn.fetchval("SELECT COALESCE(SUM(value), 0) FROM counters WHERE counter_key = $1", counter)
    finally:
        await conn.close()


def until_refused(urls: list[str], call, refusal: tuple[int, str]) -> list[tuple[int, str, int]]:
    """One request at a time, round-robin, until every replica in a row refuses (nothing in
    flight any more: a reservation settled lower frees room again): at most 200."""
    answers: list[tuple[int, str, int]] = []
    refused_in_a_row = 0
    for i in range(200):
        answer = call(urls[i % len(urls)])
        answers.append(answer)
        refused_in_a_row = refused_in_a_row + 1 if answer[:2] == refusal else 0
        if refused_in_a_row == len(urls):
            return answers
    raise AssertionError(f"still admitting after 200 sequential requests: {Counter(a[:2] for a in answers)}")


@pytest.mark.parametrize("spread", ["round_robin", "skewed_80_percent"])
def test_200_requests_across_three_replicas_admit_exactly_the_limit(fleet, spread):
    import asyncio

    replicas, dsn = fleet
    urls = [r.url for r in replicas]
    if spread == "skewed_80_percent":  # 8 of every 10 requests to the first replica
        urls = [urls[0]] * 8 + [urls[1], urls[2]]
    skip_window_edge()  # the hourly window must not end during the storm
    answers = [(status, code) for status, code, _ in storm(urls, 4 * LIMIT)]
    statuses = [status for status, _ in answers]
    assert statuses.count(200) == LIMIT, Counter(answers)
    assert set(answers) == {(200, ""), (429, "request_limited")}, Counter(answers)
    # Later requests are refused too, on every replica.
    assert [chat(r.url) for r in replicas] == [429, 429, 429]
    for r in replicas:
        assert r.proc.stop(signal.SIGTERM) == 0
    assert asyncio.run(stored_total(dsn)) == LIMIT


def test_a_token_limit_holds_across_three_replicas_within_one_reservation_per_member(fleet):
    import asyncio

    replicas, dsn = fleet
    urls = [r.url for r in replicas]
    skip_window_edge()

    def call(url: str) -> tuple[int, str, int]:
        return chat_answer(url, TOKENS_VK_VALUE, max_tokens=MAX_TOKENS)

    answers = storm(urls, 300, call)
    assert {(s, c) for s, c, _ in answers} == {(200, ""), (429, "token_limited")}, Counter((s, c) for s, c, _ in answers)
    answers += until_refused(urls, call, (429, "token_limited"))
    used = sum(tokens for _, _, tokens in answers)
    # Never past the limit (every settlement is at most its reservation) ...
    assert used <= TOKEN_LIMIT
    # ... and, once nothing is in flight, short of it by less than one request's reservation
    # (prompt estimate + max_tokens) per member.
    reservation = len(json.dumps({"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}],
                                  "max_tokens": MAX_TOKENS})) // 4 + MAX_TOKENS
    assert used > TOKEN_LIMIT - len(replicas) * WORKERS * reservation, used
    for r in replicas:
        assert r.proc.stop(signal.SIGTERM) == 0
    assert asyncio.run(stored_total(dsn, "vk-tokens\x1ftokens")) == used


def test_a_budget_holds_across_three_replicas_within_one_reservation_per_member(fleet):
    import asyncio

    replicas, dsn = fleet
    urls = [r.url for r in replicas]
    skip_window_edge()

    def call(url: str) -> tuple[int, str, int]:
        return chat_answer(url, BUDGET_VK_VALUE, max_tokens=MAX_TOKENS)

    answers = storm(urls, 300, call)
    assert {(s, c) for s, c, _ in answers} == {(200, ""), (402, "budget_exceeded")}, Counter((s, c) for s, c, _ in answers)
    answers += until_refused(urls, call, (402, "budget_exceeded"))
    spent = sum(tokens for _, _, tokens in answers) * PRICE
    assert spent <= BUDGET + 1e-9
    reservation = (len(json.dumps({"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}],
                                   "max_tokens": MAX_TOKENS})) // 4 + MAX_TOKENS) * PRICE
    assert spent > BUDGET - len(replicas) * WORKERS * reservation, spent
    for r in replicas:
        assert r.proc.stop(signal.SIGTERM) == 0
    stored = asyncio.run(stored_total(dsn, scope="budget"))  # the key's one budget
    assert abs(stored - spent) < 1e-9, (stored, spent)


def test_the_usage_api_of_a_replica_that_served_nothing_shows_the_fleets_usage(fleet):
    replicas, _ = fleet
    skip_window_edge()
    served = [chat(replicas[0].url) for _ in range(7)]
    assert served == [200] * 7

    def request_usage(replica: Replica) -> float:
        status, _, body = http_json("GET", replica.url + "/api/governance/virtual-keys/vk-fleet/usage",
                                    headers={"authorization": f"Bearer {TOKEN}"}, timeout=3)
        assert status == 200, body
        return body["levels"][0]["rate_limit"]["request"]["current_usage"]

    # Both workers of the replica that served nothing learn it by gossip (push-pull each second).
    eventually(lambda: all(request_usage(replicas[2]) == 7 for _ in range(6)), 10, "the fleet's usage on replica 2")
