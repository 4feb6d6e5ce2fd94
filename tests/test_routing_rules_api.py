"""``/api/routing/rules`` (and Bifrost's deprecated ``/api/governance/routing-rules``): routing
rules through the management API, kept in the config store (SQLite and PostgreSQL), checked
as the config file's are, and applied to the next request; the file's rules are listed too.
"""

from __future__ import annotations

import pytest

from support import http_json

TOKEN = "routing-rules-admin-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
BASE = "/api/routing/rules"
OPENAI_KEY = "sk-test-openai-0123456789"
BACKUP_KEY = "sk-backup-one-0123456789"


def api(url: str, method: str, path: str, body: dict | None = None, expect: int = 200) -> dict:
    status, _, reply = http_json(method, url + path, body, headers=ADMIN)
    assert status == expect, (method, path, status, reply)
    return reply


def served(url: str, mock, model: str, **headers: str) -> tuple[str, str]:
    """The upstream key and model that answered one chat request."""
    status, _, body = http_json("POST", url + "/v1/chat/completions",
                                {"model": model, "messages": [{"role": "user", "content": "hi"}]}, headers=headers)
    assert status == 200, body
    last = mock.stats()["recent"][-1]
    return last["key"], last["body"]["model"]


def config(mock_url: str, store: dict) -> dict:
    net = {"base_url": mock_url}
    out = {
        "providers": {
            "openai": {"keys": [{"name": "main", "value": OPENAI_KEY, "models": ["*"]}], "network_config": net},
            "backup": {"keys": [{"name": "b1", "value": BACKUP_KEY, "models": ["*"]}], "network_config": net,
                       "custom_provider_config": {"base_provider_type": "openai"}},
        },
        "governance": {"teams": [{"id": "research", "name": "research"}], "routing_rules": [
            {"id": "from-file", "name": "From the file", "cel_expression": 'model == "filed"',
             "targets": [{"provider": "backup", "model": "filed-backup", "weight": 1}]}]},
    }
    return out | {"config_store": store}


@pytest.fixture
def gw(mock, start_gateway, store_config):
    return start_gateway(config(mock.url, store_config), env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN}).url


def test_a_rule_created_routes_the_next_request_and_its_update_and_delete_too(gw, mock):
    assert served(gw, mock, "openai/gpt-4o", **{"x-tier": "premium"}) == (OPENAI_KEY, "gpt-4o")
    rule = {"name": "Premium", "cel_expression": 'headers["X-Tier"] == "premium"',
            "targets": [{"provider": "backup", "model": "gpt-4o-mini", "weight": 1}], "scope": "global", "priority": 3}
    created = api(gw, "POST", BASE, rule, expect=201)["rule"]
    rid = created["id"]
    assert created["cel_expression"] == rule["cel_expression"] and created["source"] == "api"
    assert served(gw, mock, "openai/gpt-4o", **{"x-tier": "premium"}) == (BACKUP_KEY, "gpt-4o-mini")

    updated = api(gw, "PUT", f"{BASE}/{rid}", {"targets": [{"model": "gpt-4o-premium", "weight": 1}]})["rule"]
    assert updated["name"] == "Premium" and updated["priority"] == 3  # what the patch leaves out stays
    assert served(gw, mock, "openai/gpt-4o", **{"x-tier": "premium"}) == (OPENAI_KEY, "gpt-4o-premium")
    api(gw, "PUT", f"{BASE}/{rid}", {"enabled": False})
    assert served(gw, mock, "openai/gpt-4o", **{"x-tier": "premium"}) == (OPENAI_KEY, "gpt-4o")

    listed = api(gw, "GET", "/api/governance/routing-rules")  # Bifrost's deprecated path: the same rules
    assert sorted(r["id"] for r in listed["rules"]) == sorted(["from-file", rid]) and listed["count"] == 2
    assert api(gw, "GET", f"{BASE}/from-file")["rule"]["source"] == "file"
    assert served(gw, mock, "openai/filed") == (BACKUP_KEY, "filed-backup")

    api(gw, "DELETE", f"{BASE}/{rid}")
    api(gw, "GET", f"{BASE}/{rid}", expect=404)
    api(gw, "DELETE", f"{BASE}/{rid}", expect=404)


@pytest.mark.parametrize(("rule", "param"), [
    ({"cel_expression": 'headers["x"', "targets": [{"weight": 1}]}, "cel_expression"),
    ({"cel_expression": "true", "targets": [{"weight": 0.5}]}, "targets"),
    ({"cel_expression": "true", "targets": [{"provider": "openai", "key_id": "nope", "weight": 1}]}, "targets[0].key_id"),
    ({"scope": "team", "scope_id": "ghost", "targets": [{"weight": 1}]}, "scope_id"),
    ({"targets": "all"}, "targets"),
])
def test_a_malformed_rule_is_refused_naming_its_field_and_nothing_is_stored(gw, rule, param):
    status, _, reply = http_json("POST", gw + BASE, {"name": "bad", **rule}, headers=ADMIN)
    assert status == 400 and reply["error"]["param"] == param, reply
    assert [r["id"] for r in api(gw, "GET", BASE)["rules"]] == ["from-file"]


def test_a_duplicate_id_is_a_conflict(gw):
    api(gw, "POST", BASE, {"id": "one", "name": "one", "targets": [{"weight": 1}]}, expect=201)
    api(gw, "POST", BASE, {"id": "one", "name": "again", "targets": [{"weight": 1}]}, expect=409)


def test_without_a_store_the_file_rules_apply_are_listed_and_writes_refused(mock, start_gateway):
    url = start_gateway(config(mock.url, {"enabled": False}), env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN}).url
    assert [r["id"] for r in api(url, "GET", BASE + "?scope=global")["rules"]] == ["from-file"]
    assert api(url, "GET", BASE + "?scope=team")["count"] == 0
    api(url, "POST", BASE, {"name": "x", "targets": [{"weight": 1}]}, expect=503)
    assert served(url, mock, "openai/filed") == (BACKUP_KEY, "filed-backup")  # the file's rules apply
