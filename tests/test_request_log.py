"""The request log store and GET /api/logs, on SQLite and PostgreSQL."""

import base64
import time

import openai
import pytest

from support import http_json

TOKEN = "admin-token-for-tests"
ADMIN = {"authorization": f"Bearer {TOKEN}"}


def logging_config(mock_url, logs_store, **client):
    return {
        "client": {"enable_logging": True, **client},
        "logs_store": logs_store,
        "providers": {
            "openai": {"keys": [{"value": "sk-log-test-123456"}], "network_config": {"base_url": mock_url}},
            "anthropic": {"keys": [{"value": "sk-ant-log-123456"}], "network_config": {"base_url": mock_url}},
        },
    }


def logs(gw, query="", expect=200):
    status, _, body = http_json("GET", gw.url + "/api/logs" + query, headers=ADMIN)
    assert status == expect, body
    return body


def wait_logs(gw, count, query="", timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = logs(gw, query)
        if len(body["logs"]) >= count:
            return body
        time.sleep(0.1)
    raise AssertionError(f"expected {count} log entries, got {body}")


@pytest.fixture
def gateway(mock, start_gateway, store_config):
    return start_gateway(logging_config(mock.url, store_config), env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})


def test_every_request_is_logged_with_tokens_and_errors(gateway):
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    reply = client.chat.completions.create(model="openai/gpt-4o", messages=[{"role": "user", "content": "log me please"}])
    list(client.chat.completions.create(model="openai/gpt-4o", messages=[{"role": "user", "content": "stream"}], stream=True, stream_options={"include_usage": True}))
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="ghost/gpt", messages=[{"role": "user", "content": "x"}])
    body = wait_logs(gateway, 3)
    newest_first = body["logs"]
    error, stream, plain = newest_first[:3]
    assert plain["provider"] == "openai" and plain["model"] == "gpt-4o" and plain["status"] == 200
    assert plain["prompt_tokens"] == reply.usage.prompt_tokens and plain["completion_tokens"] == reply.usage.completion_tokens
    assert plain["endpoint"] == "chat" and plain["stream"] is False and plain["latency_ms"] > 0
    assert stream["stream"] is True and stream["completion_tokens"] > 0
    assert error["status"] == 404 and error["error_type"] == "not_found_error" and error["provider"] is None
    assert len({row["node_id"] for row in newest_first}) == 1
    assert "request" not in plain  # content only when asked for


def test_filters_and_cursor_pagination(gateway):
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    for i in range(7):
        client.chat.completions.create(model="openai/gpt-4o", messages=[{"role": "user", "content": f"n{i}"}])
    for _ in range(2):
        client.chat.completions.create(model="anthropic/claude-3-haiku", messages=[{"role": "user", "content": "hi"}])
    wait_logs(gateway, 9)
    assert len(logs(gateway, "?provider=anthropic")["logs"]) == 2
    assert {r["model"] for r in logs(gateway, "?model=gpt-4o")["logs"]} == {"gpt-4o"}
    seen, cursor, pages = [], None, 0
    while True:
        body = logs(gateway, "?limit=4" + (f"&cursor={cursor}" if cursor else ""))
        seen += [r["id"] for r in body["logs"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == len(set(seen)) == 9
    future = int(time.time() * 1000) + 60_000
    assert logs(gateway, f"?start={future}")["logs"] == []
    assert len(logs(gateway, "?end=2999-01-01T00:00:00Z")["logs"]) == 9


def test_content_is_logged_unless_disabled_for_the_request(gateway):
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    client.chat.completions.create(model="openai/gpt-4o", messages=[{"role": "user", "content": "remember this sentence"}])
    client.chat.completions.create(model="openai/gpt-4o", messages=[{"role": "user", "content": "private words"}],
                                   extra_headers={"x-bf-disable-content-logging": "true"})
    body = wait_logs(gateway, 2, "?content=true")
    private, public = body["logs"][:2]
    assert "remember this sentence" in public["request"] and "mock response" in public["response"]
    assert private["request"] is None and private["response"] is None


def test_bad_query_parameters_are_400(gateway):
    status, _, body = http_json("GET", gateway.url + "/api/logs?limit=abc", headers=ADMIN)
    assert status == 400 and body["error"]["param"] == "limit"
    status, _, body = http_json("GET", gateway.url + "/api/logs?cursor=%%%", headers=ADMIN)
    assert status == 400 and body["error"]["param"] == "cursor"
    for forged in (f"{10**30}:x", "-5:x", "5:" + "x" * 1000):  # well-formed, but no cursor of ours: not a 5xx
        cursor = base64.urlsafe_b64encode(forged.encode()).decode()
        status, _, body = http_json("GET", gateway.url + f"/api/logs?cursor={cursor}", headers=ADMIN)
        assert status == 400 and body["error"]["param"] == "cursor", forged
    status, _, body = http_json("GET", gateway.url + "/api/logs?start=yesterday", headers=ADMIN)
    assert status == 400 and body["error"]["param"] == "start"


def test_admin_token_is_required(gateway):
    assert http_json("GET", gateway.url + "/api/logs")[0] == 401
    assert http_json("GET", gateway.url + "/api/logs", headers={"authorization": "Bearer wrong"})[0] == 401
    # An unknown path looks the same as a known one to an unauthenticated caller.
    assert http_json("GET", gateway.url + "/api/nothing-here")[0] == 401
    assert http_json("GET", gateway.url + "/api/nothing-here", headers=ADMIN)[0] == 404


def test_management_api_is_off_without_a_token_unless_allowed(mock, start_gateway, tmp_path):
    config = logging_config(mock.url, {"enabled": True, "type": "sqlite", "config": {"path": str(tmp_path / "l.db")}})
    off = start_gateway(config)
    status, _, body = http_json("GET", off.url + "/api/logs")
    assert status == 403 and "RAINBRIDGE_ADMIN_TOKEN" in body["error"]["message"]
    assert "management API /api/ disabled" in off.log()
    on = start_gateway(config, "--allow-unauthenticated-admin")
    assert http_json("GET", on.url + "/api/logs")[0] == 200
    assert "WITHOUT authentication" in on.log()
