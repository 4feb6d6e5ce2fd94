"""``/api/governance/model-configs``: model limits through the management API (issue 14).

Bifrost's management API has create, list, get, update and delete for model configs
(``{"model_name", "provider", "budget", "rate_limit"}``, scoped ``global`` or to one
``virtual_key``); ours takes the same shape, keeps them in the config store with the other
governance objects (SQLite and PostgreSQL), enforces a change at once, and announces it to
the fleet like the others. Limits from the config file are listed too.
"""

from __future__ import annotations

import signal
import time

import pytest

from support import GatewayProcess, http_json, provider_config, skip_window_edge, stop_all
from test_governance_propagation import (
    BOUND_S,
    HOSTS,
    alive_everywhere,
    launch,
    ready,
    until_everywhere,
)

TOKEN = "model-configs-admin-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
BASE = "/api/governance/model-configs"
CHAT = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
VK_VALUE = "sk-bf-model-configs-0123456789abcd"


def api(gw_url: str, method: str, path: str, body: dict | None = None, expect: int = 200) -> dict:
    status, _, reply = http_json(method, gw_url + path, body, headers=ADMIN)
    assert status == expect, (method, path, status, reply)
    return reply


def chat(url: str, model: str = CHAT["model"], key: str | None = None) -> tuple[int, str]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    status, _, body = http_json("POST", url + "/v1/chat/completions", {**CHAT, "model": model}, headers=headers, timeout=10)
    return status, (body.get("error") or {}).get("message", "")


def gw_config(mock_url: str, store: dict) -> dict:
    return provider_config(mock_url) | {"config_store": store, "governance": {
        "virtual_keys": [{"id": "vk-mc", "name": "vk-mc", "value": VK_VALUE}],
        "model_configs": [{"id": "from-file", "model_name": "gpt-4.1", "provider": "openai",
                           "budget": {"max_limit": 100, "reset_duration": "1d"}}]}}


@pytest.fixture
def gw(mock, start_gateway, store_config):
    """A gateway of its own: for a test that writes model configs."""
    return start_gateway(gw_config(mock.url, store_config), env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN}).url


@pytest.fixture(scope="module")
def read_gw(mock, module_store_config, tmp_path_factory):
    """One gateway per engine for the tests that must leave the store as it was."""
    gw = GatewayProcess(tmp_path_factory.mktemp("model-configs"), gw_config(mock.url, module_store_config),
                        env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
    yield gw.url
    gw.stop()


def test_a_model_config_created_limits_at_once_and_its_update_and_delete_too(gw):
    skip_window_edge(3600, 30)
    body = {"model_name": "gpt-4o-mini", "provider": "openai",
            "rate_limit": {"request_max_limit": 1, "request_reset_duration": "1h"}}
    created = api(gw, "POST", BASE, body, expect=201)["model_config"]
    assert created["id"].startswith("mc_") and created["scope"] == "global" and created["scope_id"] is None
    assert created["rate_limit"] | {"request_max_limit": 1, "request_reset_duration": "1h",
                                    "request_current_usage": 0} == created["rate_limit"]
    assert chat(gw)[0] == 200
    status, message = chat(gw)
    assert status == 429 and f"model limit '{created['id']}'" in message
    assert chat(gw, "openai/gpt-4o")[0] == 200  # another model: not limited

    got = api(gw, "GET", f"{BASE}/{created['id']}")["model_config"]
    assert got["rate_limit"]["request_current_usage"] == 1
    listed = api(gw, "GET", BASE)
    assert listed["count"] == 2 and {m["id"] for m in listed["model_configs"]} == {"from-file", created["id"]}

    updated = api(gw, "PUT", f"{BASE}/{created['id']}", {"rate_limit": {"request_max_limit": 2, "request_reset_duration": "1h"}})
    assert updated["model_config"]["model_name"] == "gpt-4o-mini"  # what the update leaves out stays
    assert chat(gw)[0] == 200 and chat(gw)[0] == 429  # the window's usage kept: one more, then refused

    api(gw, "DELETE", f"{BASE}/{created['id']}")
    assert chat(gw)[0] == 200
    api(gw, "GET", f"{BASE}/{created['id']}", expect=404)


def test_the_config_files_model_limits_are_listed_with_their_budget(read_gw):
    (from_file,) = [m for m in api(read_gw, "GET", BASE)["model_configs"] if m["id"] == "from-file"]
    assert from_file["model_name"] == "gpt-4.1" and from_file["provider"] == "openai"
    assert from_file["budget"]["max_limit"] == 100 and from_file["rate_limit"] is None


def test_a_virtual_key_scoped_model_config_counts_that_keys_requests_only(gw):
    skip_window_edge(3600, 30)
    created = api(gw, "POST", BASE, {"model_name": "gpt-4o", "scope": "virtual_key", "scope_id": "vk-mc",
                                     "rate_limit": {"request_max_limit": 1, "request_reset_duration": "1h"}},
                  expect=201)["model_config"]
    assert created["scope"] == "virtual_key" and created["scope_id"] == "vk-mc" and created["provider"] is None
    assert chat(gw, "anthropic/gpt-4o", VK_VALUE)[0] == 200  # any provider's gpt-4o
    assert chat(gw, "openai/gpt-4o", VK_VALUE)[0] == 429
    assert chat(gw, "openai/gpt-4o")[0] == 200  # without the key: not counted


@pytest.mark.parametrize(("body", "field"), [
    ({"provider": "openai", "rate_limit": {"request_max_limit": 1, "request_reset_duration": "1h"}}, "model_name"),
    ({"model_name": "x", "provider": "ghost", "rate_limit": {"request_max_limit": 1, "request_reset_duration": "1h"}}, "provider"),
    ({"model_name": "x", "scope": "virtual_key", "scope_id": "nope", "budget": {"max_limit": 1, "reset_duration": "1d"}}, "scope_id"),
    ({"model_name": "x", "scope": "team", "budget": {"max_limit": 1, "reset_duration": "1d"}}, "scope"),
    ({"model_name": "x"}, "rate_limit"),
    ({"model_name": "x", "rate_limit_ids": ["shared"]}, "rate_limit_ids"),
    ({"model_name": "x", "budget": {"max_limit": 1, "reset_duration": "soon"}}, "budget.reset_duration"),
    ({"model_name": "x", "rate_limit": {"request_max_limit": 1}}, "rate_limit.request_reset_duration"),
])
def test_a_bad_model_config_is_a_400_naming_the_field_and_stores_nothing(read_gw, body, field):
    reply = api(read_gw, "POST", BASE, body, expect=400)
    assert reply["error"]["param"] == field, reply
    assert api(read_gw, "GET", BASE)["count"] == 1  # only the file's


def test_without_a_config_store_model_configs_are_read_only(mock, start_gateway):
    config = provider_config(mock.url) | {"config_store": {"enabled": False}, "governance": {"model_configs": [
        {"id": "ro", "model_name": "gpt-4o", "rate_limit": {"request_max_limit": 5, "request_reset_duration": "1m"}}]}}
    url = start_gateway(config, env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN}).url
    assert [m["id"] for m in api(url, "GET", BASE)["model_configs"]] == ["ro"]
    reply = api(url, "POST", BASE, {"model_name": "x", "budget": {"max_limit": 1, "reset_duration": "1d"}}, expect=503)
    assert reply["error"]["code"] == "store_disabled"


def test_a_model_config_written_on_one_replica_limits_every_replica_within_a_second(tmp_path, pg_database, mock):
    from support import free_port

    hosts = HOSTS[:2]
    ports = [free_port(h) for h in hosts]
    procs = [launch(tmp_path, f"r{i}", h, ports[i], f"{hosts[0]}:{ports[0]}", pg_database, mock.url)
             for i, h in enumerate(hosts)]
    try:
        urls = [ready(p) for p in procs]
        alive_everywhere(urls, {"r0", "r1"})
        status, _, reply = http_json("POST", urls[0] + BASE, {"model_name": "gpt-4o-mini", "provider": "openai",
                                                              "rate_limit": {"request_max_limit": 0, "request_reset_duration": "1h"}},
                                     headers={"authorization": "Bearer test-admin-token-propagation"})
        assert status == 201, reply
        since = time.monotonic()
        assert until_everywhere(urls, since, lambda u: chat(u)[0], (429).__eq__) <= BOUND_S
        status, _, reply = http_json("DELETE", f"{urls[0]}{BASE}/{reply['model_config']['id']}",
                                     headers={"authorization": "Bearer test-admin-token-propagation"})
        assert status == 200, reply
        assert until_everywhere(urls, time.monotonic(), lambda u: chat(u)[0], (200).__eq__) <= BOUND_S
    finally:
        stop_all(procs, signal.SIGKILL, timeout=5)
