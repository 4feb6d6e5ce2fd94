"""A virtual key's per-provider request limit across a fleet, with fallbacks (issue 14).

A provider's own request limit holds one request per admission until the request is
settled (counted if it answered, released if it fell back or failed), bound to the fleet's
escrow like a token reservation: three replicas × two workers must still admit exactly the
limit on that provider, and once it is spent every replica sends the key's requests that
name a fallback to the fallback.
"""

from __future__ import annotations

import signal
from collections import Counter

import pytest

import fleet_support
from support import skip_window_edge
from test_fleet_limits import HOSTS, TIMING, chat_answer, running_fleet, storm

LIMIT = 30
VK_VALUE = "sk-rb-fleet-perprov-" + "0" * 24


def config(mock_url: str, dsn: str, index: int, ports: list[int]) -> dict:
    """Replica ``index``'s config: the shared fleet config (``fleet_support.fleet_config``)
    with this file's key, limited on one provider."""
    peers = [f"{HOSTS[i]}:{port}" for i, port in enumerate(ports)]
    shared = fleet_support.fleet_config(mock_url, dsn, f"r{index}", peers, ports[index], LIMIT, TIMING)
    return {**shared, "governance": {"virtual_keys": [
        {"id": "vk-perprov", "name": "perprov", "value": VK_VALUE, "provider_configs": [
            {"provider": "openai", "allowed_models": ["*"],
             "rate_limit": {"request_max_limit": LIMIT, "request_reset_duration": "1h"}},
            {"provider": "anthropic", "allowed_models": ["*"]}]},
    ]}}


@pytest.fixture
def fleet(tmp_path, pg_database, mock):
    with running_fleet(tmp_path, lambda i, ports: config(mock.url, pg_database, i, ports)) as replicas:
        yield replicas


def ask(url: str, **extra) -> tuple[int, str, int]:
    return chat_answer(url, VK_VALUE, **extra)


def test_a_per_provider_request_limit_holds_across_the_fleet_and_then_its_fallback_serves(fleet):
    replicas = fleet
    urls = [r.url for r in replicas]
    skip_window_edge()
    answers = Counter((status, code) for status, code, _ in storm(urls, 4 * LIMIT, ask))
    assert answers[(200, "")] == LIMIT, answers  # exactly the limit: held requests never overshoot
    # Every other one is refused with the limit's 429: the owner hears what requests in flight
    # hold, so it refuses at once instead of reclaiming from busy members for nothing (their
    # admissions waited past the gateway's bound then: 503 limit_coordination_timeout).
    assert answers == {(200, ""): LIMIT, (429, "request_limited"): 3 * LIMIT}, answers
    with_fallback = [ask(url, fallbacks=["anthropic/claude-3-5-haiku"]) for url in urls]
    assert [status for status, _, _ in with_fallback] == [200, 200, 200], with_fallback
    assert [ask(url)[:2] for url in urls] == [(429, "request_limited")] * 3  # openai: still spent
    for r in replicas:
        assert r.proc.stop(signal.SIGTERM) == 0
