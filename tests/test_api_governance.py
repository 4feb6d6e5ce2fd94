"""The governance management API (/api/governance/...) on SQLite and PostgreSQL.

CRUD, validation that names the field and writes nothing, changes reaching every worker,
usage per level, and the admin-token gate. Real gateway processes, real databases.
"""

import asyncio
import contextlib
import http.client
import json
import sqlite3
import time

import openai
import pytest

from support import http_json, provider_config

TOKEN = "admin-token-for-governance-api-tests"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
GOV = "/api/governance"
CHAT_BODY = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
TABLES = ("customers", "teams", "virtual_keys", "budgets", "rate_limits")


def gov_config(mock_url, store, **extra):
    return {**provider_config(mock_url), "config_store": store, **extra}


@pytest.fixture
def gw(mock, start_gateway, store_config):
    return start_gateway(gov_config(mock.url, store_config), env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})


def api(gw, method, path, body=None, expect=200):
    status, _, reply = http_json(method, gw.url + path, body, headers=ADMIN)
    assert status == expect, (method, path, status, reply)
    return reply


def create(gw, segment, body):
    reply = api(gw, "POST", f"{GOV}/{segment}", body, expect=201)
    return reply[{"virtual-keys": "virtual_key", "teams": "team", "customers": "customer"}[segment]]


def raw(gw, method, path, body: bytes, headers=None):
    """One request on a fresh connection, the body sent as given."""
    host, port = gw.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body=body, headers={"content-type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def sdk(gw, vk_value):
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=vk_value, max_retries=0)


def ask(client):
    return client.chat.completions.create(model="openai/gpt-4o", messages=[{"role": "user", "content": "hello there"}])


def db_rows(store_config) -> dict[str, int]:
    """Row counts straight from the database, behind the gateway's back."""
    if store_config["type"] == "sqlite":
        with contextlib.closing(sqlite3.connect(store_config["config"]["path"])) as conn:
            return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}

    async def count():
        import asyncpg

        conn = await asyncpg.connect(store_config["config"]["dsn"])
        try:
            return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}
        finally:
            await conn.close()

    return asyncio.run(count())


def listed(gw) -> dict[str, list[str]]:
    return {seg: sorted(o["id"] for o in api(gw, "GET", f"{GOV}/{seg}")[seg.replace("-", "_")])
            for seg in ("virtual-keys", "teams", "customers")}


BUDGET = {"max_limit": 10.0, "reset_duration": "1M"}
LIMIT = {"request_max_limit": 100, "request_reset_duration": "1m", "token_max_limit": 100_000, "token_reset_duration": "1h"}


# --------------------------------------------------------------------------- CRUD


def test_crud_round_trip_for_each_kind(gw):
    cust = create(gw, "customers", {"name": "acme", "budgets": [BUDGET], "rate_limit": LIMIT})
    assert cust["id"].startswith("cust_") and cust["budgets"][0]["max_limit"] == 10.0 and cust["rate_limit"] == LIMIT
    team = create(gw, "teams", {"name": "ml", "customer_id": cust["id"], "budget": {"max_limit": 5, "reset_duration": "1d"}})
    assert team["customer_id"] == cust["id"] and team["budgets"][0]["reset_duration"] == "1d" and team["rate_limit"] is None
    reply = api(gw, "POST", f"{GOV}/virtual-keys", {"name": "svc", "description": "first", "team_id": team["id"],
                                                    "budgets": [BUDGET], "rate_limit": LIMIT}, expect=201)
    vk = reply["virtual_key"]
    value = vk["value"]
    assert value.startswith("sk-rb-") and len(value) >= 40
    assert vk["value_hint"].startswith("sk-rb-") and vk["value_hint"].endswith(value[-4:]) and value not in vk["value_hint"]
    assert vk["team_id"] == team["id"] and vk["is_active"] is True and vk["budgets"][0]["current_usage"] == 0

    # Reads never show the value again.
    for path in (f"{GOV}/virtual-keys", f"{GOV}/virtual-keys/{vk['id']}", f"{GOV}/virtual-keys/{vk['id']}/usage"):
        body = api(gw, "GET", path)
        assert value not in json.dumps(body), path
    got = api(gw, "GET", f"{GOV}/virtual-keys/{vk['id']}")["virtual_key"]
    assert "value" not in got and got["value_hint"] == vk["value_hint"]
    assert {k: got[k] for k in ("name", "description", "team_id", "budgets", "rate_limit")} == \
        {k: vk[k] for k in ("name", "description", "team_id", "budgets", "rate_limit")}
    assert listed(gw) == {"virtual-keys": [vk["id"]], "teams": [team["id"]], "customers": [cust["id"]]}
    assert api(gw, "GET", f"{GOV}/teams/{team['id']}")["team"]["name"] == "ml"
    assert api(gw, "GET", f"{GOV}/customers/{cust['id']}")["customer"]["rate_limit"] == LIMIT

    # Partial updates keep everything they do not name.
    upd = api(gw, "PUT", f"{GOV}/virtual-keys/{vk['id']}", {"description": "second"})["virtual_key"]
    assert upd["description"] == "second"
    for field in ("name", "team_id", "budgets", "rate_limit", "is_active", "value_hint", "created_at"):
        assert upd[field] == vk[field], field
    upd = api(gw, "PATCH", f"{GOV}/virtual-keys/{vk['id']}", {"is_active": False, "rate_limit": {"request_max_limit": 7, "request_reset_duration": "1h"}})["virtual_key"]
    assert upd["is_active"] is False and upd["rate_limit"] == {"request_max_limit": 7, "request_reset_duration": "1h"}
    assert upd["budgets"] == vk["budgets"] and upd["description"] == "second"
    # Budgets are replaced only when given; the same definition keeps its window anchor.
    upd = api(gw, "PUT", f"{GOV}/virtual-keys/{vk['id']}", {"budgets": [BUDGET, {"max_limit": 1, "reset_duration": "1w", "calendar_aligned": True}]})["virtual_key"]
    assert [b["reset_duration"] for b in upd["budgets"]] == ["1M", "1w"] and upd["budgets"][1]["calendar_aligned"] is True
    assert upd["budgets"][0]["created_at"] == vk["budgets"][0]["created_at"]
    assert upd["rate_limit"]["request_max_limit"] == 7
    upd = api(gw, "PUT", f"{GOV}/virtual-keys/{vk['id']}", {"rate_limit": None, "budgets": []})["virtual_key"]
    assert upd["rate_limit"] is None and upd["budgets"] == [] and upd["description"] == "second"
    team2 = api(gw, "PUT", f"{GOV}/teams/{team['id']}", {"name": "ml-platform"})["team"]
    assert team2["name"] == "ml-platform" and team2["customer_id"] == cust["id"] and team2["budgets"] == team["budgets"]
    cust2 = api(gw, "PUT", f"{GOV}/customers/{cust['id']}", {"rate_limit": {"token_max_limit": 5, "token_reset_duration": "1d"}})["customer"]
    assert cust2["rate_limit"] == {"token_max_limit": 5, "token_reset_duration": "1d"} and cust2["budgets"] == cust["budgets"]
    assert api(gw, "GET", f"{GOV}/customers/{cust['id']}")["customer"] == cust2
    # The id cannot change.
    err = api(gw, "PUT", f"{GOV}/teams/{team['id']}", {"id": "other"}, expect=400)["error"]
    assert err["param"] == "id"

    # Delete children first; then each is gone.
    for segment, owner in (("virtual-keys", vk), ("teams", team), ("customers", cust)):
        assert api(gw, "DELETE", f"{GOV}/{segment}/{owner['id']}")["id"] == owner["id"]
        for method in ("GET", "PUT", "DELETE"):
            err = api(gw, method, f"{GOV}/{segment}/{owner['id']}", {} if method == "PUT" else None, expect=404)["error"]
            assert err["type"] == "not_found_error" and err["param"] == "id"
    assert api(gw, "GET", f"{GOV}/virtual-keys/{vk['id']}/usage", expect=404)["error"]["param"] == "id"
    assert listed(gw) == {"virtual-keys": [], "teams": [], "customers": []}


def test_a_new_key_works_at_once_and_stops_at_once(gw):
    vk = create(gw, "virtual-keys", {"name": "app"})
    client = sdk(gw, vk["value"])
    reply = ask(client)
    assert reply.choices[0].message.content and reply.usage.total_tokens > 0

    api(gw, "PUT", f"{GOV}/virtual-keys/{vk['id']}", {"is_active": False})
    with pytest.raises(openai.PermissionDeniedError) as info:
        ask(client)
    assert info.value.body["type"] == "virtual_key_blocked" and "'app' is inactive" in info.value.body["message"]

    api(gw, "PUT", f"{GOV}/virtual-keys/{vk['id']}", {"is_active": True})
    assert ask(client).usage.total_tokens > 0

    api(gw, "DELETE", f"{GOV}/virtual-keys/{vk['id']}")
    with pytest.raises(openai.PermissionDeniedError) as info:
        ask(client)
    assert info.value.body["type"] == "virtual_key_not_found"
    assert vk["value"] not in info.value.body["message"]


def test_per_provider_limits_round_trip_and_survive_a_partial_update(gw):
    grants = [{"provider": "openai", "weight": 1.0, "allowed_models": None, "key_ids": None,
               "budgets": [{"id": "b0", "max_limit": 2.5, "reset_duration": "1d", "calendar_aligned": False}],
               "rate_limit": {"request_max_limit": 3, "request_reset_duration": "1m"}}]
    vk = create(gw, "virtual-keys", {"name": "per-provider", "provider_configs": [
        {"provider": "openai", "budget": {"max_limit": 2.5, "reset_duration": "1d"},
         "rate_limit": {"request_max_limit": 3, "request_reset_duration": "1m"}}]})
    assert vk["provider_configs"] == grants
    kept = api(gw, "PUT", f"{GOV}/virtual-keys/{vk['id']}", {"description": "e"})["virtual_key"]
    assert kept["provider_configs"] == grants
    usage = api(gw, "GET", f"{GOV}/virtual-keys/{vk['id']}/usage")["levels"]
    (per,) = [level for level in usage if level["level"] == "provider config"]
    assert per["provider"] == "openai" and per["rate_limit"]["request"]["max_limit"] == 3
    assert [b["id"] for b in per["budgets"]] == [f"{vk['id']}:openai:b0"]


def test_partial_update_rejected_leaves_the_key_unchanged(gw):
    grants = [{"provider": "openai", "weight": 2.0, "allowed_models": ["gpt-4o"], "key_ids": ["openai:main"]}]
    vk = create(gw, "virtual-keys", {"name": "stable", "description": "d", "budgets": [BUDGET], "rate_limit": LIMIT,
                                     "expires_at": "2999-01-01T00:00:00Z", "provider_configs": grants})
    assert vk["expires_at"] == "2999-01-01T00:00:00Z" and vk["provider_configs"] == grants and vk["allow_all_providers"] is False
    kept = api(gw, "PUT", f"{GOV}/virtual-keys/{vk['id']}", {"description": "e"})["virtual_key"]
    assert {k: kept[k] for k in ("expires_at", "provider_configs", "allow_all_providers")} == \
        {k: vk[k] for k in ("expires_at", "provider_configs", "allow_all_providers")}
    before = api(gw, "GET", f"{GOV}/virtual-keys/{vk['id']}")["virtual_key"]
    for patch, param in (
        ({"is_active": "no"}, "is_active"),
        ({"description": "x", "rate_limit": {"request_max_limit": 1, "request_reset_duration": "1x"}}, "rate_limit.request_reset_duration"),
        ({"description": "x", "budgets": [{"max_limit": -1, "reset_duration": "1d"}]}, "budgets[0].max_limit"),
        ({"team_id": "team_missing"}, "team_id"),
        ({"value": "sk-rb-" + "a" * 30}, "value"),
    ):
        err = api(gw, "PUT", f"{GOV}/virtual-keys/{vk['id']}", patch, expect=400)["error"]
        assert err["param"] == param, (patch, err)
    assert api(gw, "GET", f"{GOV}/virtual-keys/{vk['id']}")["virtual_key"] == before
    assert ask(sdk(gw, vk["value"])).usage.total_tokens > 0  # the key still works


# --------------------------------------------------------------------------- workers


def chat_http(gw, value):
    """A chat request on a fresh connection (urllib opens one per request)."""
    status, _, body = http_json("POST", gw.url + "/v1/chat/completions", CHAT_BODY, headers={"authorization": f"Bearer {value}"})
    return status, body


def settle(gw, value, ok, since, count=20, timeout=6.0) -> tuple[float, int]:
    """Send requests until ``count`` in a row are right; return the seconds from ``since`` to
    the last wrong answer, and how many requests were answered with status 200."""
    streak, last_wrong, answers = 0, since, []
    while streak < count:
        assert time.monotonic() - since < timeout, f"not settled after {timeout}s: {answers[-5:]}"
        status, body = chat_http(gw, value)
        answers.append((status, body.get("error", {}).get("type")))
        if ok(status, body):
            streak += 1
        else:
            streak, last_wrong = 0, time.monotonic()
        time.sleep(0.005)
    return last_wrong - since, sum(1 for status, _ in answers if status == 200)


def test_changes_reach_every_worker_within_two_seconds(mock, start_gateway, store_config, tmp_path):
    config = gov_config(mock.url, store_config, client={"enable_logging": True},
                        logs_store={"enabled": True, "type": "sqlite", "config": {"path": str(tmp_path / "logs.db")}})
    gw = start_gateway(config, env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN}, workers=2)
    gw.proc.wait_for(r"(?s)(Application startup complete.*){2}", timeout=20)

    started = time.monotonic()
    vk = create(gw, "virtual-keys", {"name": "fleet"})
    seconds, served = settle(gw, vk["value"], lambda s, b: s == 200, started)
    assert seconds < 2.0
    # Both workers served the key (each worker has its own node id in the request log).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = api(gw, "GET", f"/api/logs?virtual_key_id={vk['id']}&status=200&limit=1000")["logs"]
        if len(rows) >= served:
            break
        time.sleep(0.1)
    assert len(rows) == served and len({r["node_id"] for r in rows}) == 2

    started = time.monotonic()
    api(gw, "PUT", f"{GOV}/virtual-keys/{vk['id']}", {"is_active": False})
    blocked = lambda s, b: s == 403 and b["error"]["type"] == "virtual_key_blocked"  # noqa: E731
    assert settle(gw, vk["value"], blocked, started)[0] < 2.0

    started = time.monotonic()
    api(gw, "DELETE", f"{GOV}/virtual-keys/{vk['id']}")
    gone = lambda s, b: s == 403 and b["error"]["type"] == "virtual_key_not_found"  # noqa: E731
    assert settle(gw, vk["value"], gone, started)[0] < 2.0

    # Writes right after a change made through the other worker (fresh connections: about
    # half land on the worker that has not polled yet) see the store, not a stale copy.
    doomed_values = []
    for i in range(8):
        team = create(gw, "teams", {"name": f"team-{i}"})
        assert create(gw, "virtual-keys", {"name": f"member-{i}", "team_id": team["id"]})["team_id"] == team["id"]
        err = api(gw, "POST", f"{GOV}/teams", {"name": f"other-{i}", "id": team["id"]}, expect=409)["error"]
        assert err["param"] == "id"
        doomed = create(gw, "virtual-keys", {"name": f"doomed-{i}"})
        api(gw, "DELETE", f"{GOV}/virtual-keys/{doomed['id']}")
        api(gw, "PUT", f"{GOV}/virtual-keys/{doomed['id']}", {"description": "back?"}, expect=404)
        doomed_values.append(doomed["value"])
    assert sorted(t["name"] for t in api(gw, "GET", f"{GOV}/teams")["teams"]) == [f"team-{i}" for i in range(8)]
    settle(gw, doomed_values[-1], gone, time.monotonic())
    for value in doomed_values:  # a deleted key never came back
        assert all(chat_http(gw, value)[1]["error"]["type"] == "virtual_key_not_found" for _ in range(4))


# --------------------------------------------------------------------------- bad input


BIG = b'{"name": "big", "description": "' + b"x" * (1024 * 1024 + 10) + b'"}'


def test_bad_input_names_the_field_and_writes_nothing(gw, store_config):
    cust = create(gw, "customers", {"name": "cust-a"})
    team = create(gw, "teams", {"name": "team-a", "customer_id": cust["id"]})
    vk = create(gw, "virtual-keys", {"name": "taken", "team_id": team["id"]})
    own_value = "sk-rb-" + "v" * 30
    create(gw, "virtual-keys", {"name": "own-value", "value": own_value})
    before_list, before_rows = listed(gw), db_rows(store_config)

    rl = {"request_max_limit": 10, "request_reset_duration": "1m"}
    cases = [
        # (segment, body, status, param, code)
        ("virtual-keys", {"name": "a", "rate_limit": {**rl, "request_reset_duration": "1x"}}, 400, "rate_limit.request_reset_duration", "invalid_field"),
        ("virtual-keys", {"name": "a", "rate_limit": {"token_max_limit": 5, "token_reset_duration": "1x"}}, 400, "rate_limit.token_reset_duration", "invalid_field"),
        ("virtual-keys", {"name": "a", "budgets": [{"max_limit": 1, "reset_duration": "1x"}]}, 400, "budgets[0].reset_duration", "invalid_field"),
        ("virtual-keys", {"name": "a", "budget": {"max_limit": 1, "reset_duration": "soon"}}, 400, "budget.reset_duration", "invalid_field"),
        ("virtual-keys", {"name": "a", "rate_limit": {**rl, "request_max_limit": -1}}, 400, "rate_limit.request_max_limit", "invalid_field"),
        ("virtual-keys", {"name": "a", "budgets": [BUDGET, {"max_limit": -0.5, "reset_duration": "1d"}]}, 400, "budgets[1].max_limit", "invalid_field"),
        ("virtual-keys", {"name": "a", "rate_limit": {"request_max_limit": 5}}, 400, "rate_limit.request_reset_duration", "invalid_field"),
        ("virtual-keys", {"name": "a", "budgets": [{"id": "x", **BUDGET}, {"id": "x", **BUDGET}]}, 400, "budgets[1].id", "invalid_field"),
        ("virtual-keys", {"name": "a", "budget_id": "shared"}, 400, "budget_id", "invalid_field"),
        ("virtual-keys", {"name": "a", "team_id": "team_missing"}, 400, "team_id", "invalid_field"),
        ("virtual-keys", {"name": "a", "customer_id": "cust_missing"}, 400, "customer_id", "invalid_field"),
        ("virtual-keys", {"name": "a", "team_id": team["id"], "customer_id": cust["id"]}, 400, "team_id", "invalid_field"),
        ("virtual-keys", {"name": "a", "provider_configs": [{"provider": "ghost"}]}, 400, "provider_configs[0].provider", "invalid_field"),
        ("virtual-keys", {"name": "a", "provider_configs": [{"provider": "openai"}, {"weight": 1}]}, 400, "provider_configs[1].provider", "invalid_field"),
        ("virtual-keys", {"name": "a", "provider_configs": [{"provider": "openai", "budget_id": "b"}]}, 400, "provider_configs[0].budget_id", "invalid_field"),
        ("virtual-keys", {"name": "a", "provider_configs": [{"provider": "openai", "rate_limit": {"request_max_limit": 5}}]}, 400,
         "provider_configs[0].rate_limit.request_reset_duration", "invalid_field"),
        ("virtual-keys", {"name": "a", "expires_at": "tomorrow"}, 400, "expires_at", "invalid_field"),
        ("virtual-keys", {"name": "a", "value": "sk-rb-short"}, 400, "value", "invalid_field"),
        ("virtual-keys", {"name": "a", "value": "not-a-virtual-key-value-at-all"}, 400, "value", "invalid_field"),
        ("virtual-keys", {"description": "no name"}, 400, "name", "invalid_field"),
        ("virtual-keys", {"name": 5}, 400, "name", "invalid_field"),
        ("virtual-keys", {"name": "a", "is_active": "yes"}, 400, "is_active", "invalid_field"),
        ("virtual-keys", {"name": "a", "budgets": {"max_limit": 1}}, 400, "budgets", "invalid_field"),
        ("virtual-keys", {"name": "a", "rate_limit": 5}, 400, "rate_limit", "invalid_field"),
        ("virtual-keys", {"name": "a", "provider_configs": [{"provider": "openai", "weight": "heavy"}]}, 400, "provider_configs[0].weight", "invalid_field"),
        ("virtual-keys", {"name": "a", "id": "a/b"}, 400, "id", "invalid_field"),
        ("teams", {"name": "t", "id": "sk-rb-" + "t" * 30}, 400, "id", "invalid_field"),
        ("virtual-keys", {"name": "taken"}, 409, "name", "duplicate"),
        ("virtual-keys", {"name": "a", "id": vk["id"]}, 409, "id", "duplicate"),
        ("virtual-keys", {"name": "a", "value": own_value}, 409, "value", "duplicate"),
        ("teams", {"name": "t", "customer_id": "cust_missing"}, 400, "customer_id", "invalid_field"),
        ("teams", {"name": "t", "rate_limit": {"token_max_limit": -5, "token_reset_duration": "1h"}}, 400, "rate_limit.token_max_limit", "invalid_field"),
        ("teams", {"name": "team-a"}, 409, "name", "duplicate"),
        ("teams", {}, 400, "name", "invalid_field"),
        ("customers", {"name": "c", "budgets": [{"max_limit": 1, "reset_duration": "1x"}]}, 400, "budgets[0].reset_duration", "invalid_field"),
        ("customers", {"name": "c", "budgets": [{"reset_duration": "1d"}]}, 400, "budgets[0].max_limit", "invalid_field"),
        ("customers", {"name": "cust-a"}, 409, "name", "duplicate"),
        ("customers", {"name": ["c"]}, 400, "name", "invalid_field"),
    ]
    failures = []
    for segment, body, status, param, code in cases:
        got, _, reply = http_json("POST", f"{gw.url}{GOV}/{segment}", body, headers=ADMIN)
        err = reply.get("error", {})
        if (got, err.get("param"), err.get("code")) != (status, param, code) or "Traceback" in json.dumps(reply):
            failures.append((segment, body, got, err))
    assert not failures, "\n".join(map(repr, failures))

    for body, status, code in (
        (b"{not json", 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (b'["name", "a"]', 400, "invalid_json"),
        (BIG, 413, "request_too_large"),
    ):
        for segment in ("virtual-keys", "teams", "customers"):
            got, reply = raw(gw, "POST", f"{GOV}/{segment}", body, ADMIN)
            assert (got, reply["error"]["code"]) == (status, code), (segment, body[:30], reply)
        got, reply = raw(gw, "PUT", f"{GOV}/virtual-keys/{vk['id']}", body, ADMIN)
        assert (got, reply["error"]["code"]) == (status, code), (body[:30], reply)

    # Nothing half-written: neither the API nor the database shows a new row.
    assert listed(gw) == before_list
    assert db_rows(store_config) == before_rows


def test_a_key_value_in_a_url_is_refused_and_not_logged(gw):
    vk = create(gw, "virtual-keys", {"name": "secret"})
    value = vk["value"]
    for method, path in (("GET", value), ("PUT", value), ("DELETE", value), ("GET", f"{value}/usage")):
        status, _, body = http_json(method, f"{gw.url}{GOV}/virtual-keys/{path}", {} if method == "PUT" else None, headers=ADMIN)
        assert status == 400 and body["error"]["code"] == "secret_in_url" and body["error"]["param"] == "id", (method, path, body)
        assert value not in json.dumps(body)
    bifrost_style = "sk-bf-" + "q" * 30
    assert http_json("GET", f"{gw.url}{GOV}/teams/{bifrost_style}", headers=ADMIN)[2]["error"]["code"] == "secret_in_url"
    assert api(gw, "GET", f"{GOV}/virtual-keys/{vk['id']}")["virtual_key"]["name"] == "secret"  # DELETE did nothing
    assert value not in gw.log() and value[6:] not in gw.log()


def test_an_owner_in_use_cannot_be_deleted(gw, store_config):
    cust = create(gw, "customers", {"name": "c1", "budgets": [BUDGET]})
    team = create(gw, "teams", {"name": "t1", "customer_id": cust["id"], "budgets": [BUDGET], "rate_limit": LIMIT})
    vk = create(gw, "virtual-keys", {"name": "k1", "team_id": team["id"]})
    direct = create(gw, "virtual-keys", {"name": "k2", "customer_id": cust["id"]})
    rows = db_rows(store_config)

    err = api(gw, "DELETE", f"{GOV}/teams/{team['id']}", expect=409)["error"]
    assert err["code"] == "in_use" and err["param"] == "id"
    err = api(gw, "DELETE", f"{GOV}/customers/{cust['id']}", expect=409)["error"]
    assert err["code"] == "in_use"
    # The failed deletes removed nothing (not even the budgets and limits deleted first).
    assert db_rows(store_config) == rows
    assert api(gw, "GET", f"{GOV}/teams/{team['id']}")["team"]["rate_limit"] == LIMIT
    assert len(api(gw, "GET", f"{GOV}/customers/{cust['id']}")["customer"]["budgets"]) == 1

    api(gw, "DELETE", f"{GOV}/virtual-keys/{vk['id']}")
    api(gw, "DELETE", f"{GOV}/teams/{team['id']}")
    assert api(gw, "DELETE", f"{GOV}/customers/{cust['id']}", expect=409)["error"]["code"] == "in_use"  # k2 still uses it
    api(gw, "DELETE", f"{GOV}/virtual-keys/{direct['id']}")
    api(gw, "DELETE", f"{GOV}/customers/{cust['id']}")
    assert db_rows(store_config) == dict.fromkeys(TABLES, 0)


# --------------------------------------------------------------------------- usage


def test_usage_shows_every_level_and_grows(gw):
    cust = create(gw, "customers", {"name": "big-co", "budgets": [{"max_limit": 100, "reset_duration": "1M", "calendar_aligned": True}],
                                    "rate_limit": {"request_max_limit": 1000, "request_reset_duration": "1d"}})
    team = create(gw, "teams", {"name": "search", "customer_id": cust["id"], "budgets": [{"max_limit": 50, "reset_duration": "1w"}],
                                "rate_limit": {"token_max_limit": 1_000_000, "token_reset_duration": "1h"}})
    vk = create(gw, "virtual-keys", {"name": "crawler", "team_id": team["id"], "budgets": [{"max_limit": 10, "reset_duration": "1d"}],
                                     "rate_limit": LIMIT})
    path = f"{GOV}/virtual-keys/{vk['id']}/usage"

    empty = api(gw, "GET", path)
    assert empty["virtual_key_id"] == vk["id"]
    levels = empty["levels"]
    assert [(lv["level"], lv["id"]) for lv in levels] == [("virtual key", vk["id"]), ("team", team["id"]), ("customer", cust["id"])]
    assert [lv["budgets"][0]["max_limit"] for lv in levels] == [10, 50, 100]
    assert levels[0]["rate_limit"]["request"]["max_limit"] == 100 and levels[0]["rate_limit"]["token"]["max_limit"] == 100_000
    assert set(levels[1]["rate_limit"]) == {"token"} and set(levels[2]["rate_limit"]) == {"request"}
    assert all(b["current_usage"] == 0 and b["reserved"] == 0 and b["resets_at"] > b["last_reset"] for lv in levels for b in lv["budgets"])
    assert levels[2]["budgets"][0]["last_reset"].endswith("-01T00:00:00Z")  # calendar-aligned month

    client = sdk(gw, vk["value"])
    tokens = sum(ask(client).usage.total_tokens for _ in range(3))

    deadline = time.monotonic() + 5
    while True:  # settlement runs right after the response is sent
        levels = api(gw, "GET", path)["levels"]
        reserved = [b["reserved"] for lv in levels for b in lv["budgets"]] + \
            [m["reserved"] for lv in levels for m in (lv["rate_limit"] or {}).values()]
        if not any(reserved) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not any(reserved), levels
    vk_level, team_level, cust_level = levels
    assert vk_level["rate_limit"]["request"]["current_usage"] == 3
    assert vk_level["rate_limit"]["token"]["current_usage"] == tokens
    assert team_level["rate_limit"]["token"]["current_usage"] == tokens
    assert cust_level["rate_limit"]["request"]["current_usage"] == 3
    spent = [lv["budgets"][0]["current_usage"] for lv in levels]
    assert spent[0] > 0 and spent == pytest.approx([spent[0]] * 3)  # charged at every level
    # The entity views show the same spend.
    assert api(gw, "GET", f"{GOV}/teams/{team['id']}")["team"]["budgets"][0]["current_usage"] == pytest.approx(spent[0])
    # Editing a key does not reset its usage, nor does restating the same budget.
    api(gw, "PUT", f"{GOV}/virtual-keys/{vk['id']}", {"description": "edited"})
    api(gw, "PUT", f"{GOV}/virtual-keys/{vk['id']}", {"budgets": [{"max_limit": 20, "reset_duration": "1d"}]})
    after = api(gw, "GET", path)["levels"][0]
    assert after["budgets"][0]["current_usage"] == pytest.approx(spent[0]) and after["budgets"][0]["max_limit"] == 20
    assert after["rate_limit"]["request"]["current_usage"] == 3


# --------------------------------------------------------------------------- auth


def test_every_route_needs_the_admin_token_and_reveals_nothing(gw):
    vk = create(gw, "virtual-keys", {"name": "exists"})
    team = create(gw, "teams", {"name": "exists"})
    cust = create(gw, "customers", {"name": "exists"})
    ids = {"virtual-keys": vk["id"], "teams": team["id"], "customers": cust["id"]}
    routes = []
    for segment, real in ids.items():
        routes += [("GET", f"{GOV}/{segment}", None), ("POST", f"{GOV}/{segment}", {"name": "intruder"})]
        for method in ("GET", "PUT", "PATCH", "DELETE"):
            body = {"name": "renamed"} if method in ("PUT", "PATCH") else None
            routes += [(method, f"{GOV}/{segment}/{real}", body), (method, f"{GOV}/{segment}/{segment}_nope", body)]
    routes += [("GET", f"{GOV}/virtual-keys/{vk['id']}/usage", None), ("GET", f"{GOV}/virtual-keys/vk_nope/usage", None),
               ("GET", f"{GOV}/nothing", None)]
    bad_headers = [{}, {"authorization": "Bearer wrong-token"}, {"authorization": f"Basic {TOKEN}"},
                   {"authorization": f"Bearer {TOKEN}x"}, {"authorization": "Bearer"}]
    bodies = set()
    for method, path, body in routes:
        for headers in bad_headers:
            status, resp_headers, reply = http_json(method, gw.url + path, body, headers=headers)
            assert status == 401, (method, path, headers, reply)
            assert reply["error"]["type"] == "authentication_error" and resp_headers.get("www-authenticate") == "Bearer"
            bodies.add(json.dumps(reply, sort_keys=True))
    assert len(bodies) == 1  # one answer for every path and id, existing or not
    # Nothing changed.
    assert api(gw, "GET", f"{GOV}/teams/{team['id']}")["team"]["name"] == "exists"
    assert listed(gw) == {k: [v] for k, v in ids.items()}


def test_store_disabled_makes_governance_read_only(mock, start_gateway):
    config = {**provider_config(mock.url), "config_store": {"enabled": False}, "client": {"admin_token": TOKEN},
              "governance": {"virtual_keys": [{"id": "file-key", "name": "file-key", "value": "sk-rb-" + "f" * 30}]}}
    gw = start_gateway(config)  # the admin token from the config file this time
    assert http_json("GET", f"{gw.url}{GOV}/virtual-keys")[0] == 401
    assert [v["id"] for v in api(gw, "GET", f"{GOV}/virtual-keys")["virtual_keys"]] == ["file-key"]
    for method, path in (("POST", f"{GOV}/virtual-keys"), ("PUT", f"{GOV}/virtual-keys/file-key"), ("DELETE", f"{GOV}/virtual-keys/file-key")):
        err = api(gw, method, path, {"name": "x"} if method != "DELETE" else None, expect=503)["error"]
        assert err["code"] == "store_disabled", (method, err)
    assert ask(sdk(gw, "sk-rb-" + "f" * 30)).usage.total_tokens > 0
