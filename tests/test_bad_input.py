"""Bad input gets a clear 4xx JSON error naming the problem: never a 500, never a traceback."""

import http.client
import json
import socket

import pytest

from support import GatewayProcess, http_json


@pytest.fixture(scope="module")
def gateway(mock, tmp_path_factory):
    config = {
        "client": {"max_request_body_size_mb": 1},
        "providers": {
            "openai": {"keys": [{"value": "sk-secret-openai-key-123456"}], "network_config": {"base_url": mock.url}},
            "azure": {"keys": [{"value": "az-secret-key-987654", "azure_key_config": {"endpoint": mock.url, "deployments": {"gpt-4o": "prod-4o"}}}]},
            "revoked": {"type": "openai", "keys": [{"value": "sk-status-401-secretvalue99"}], "network_config": {"base_url": mock.url}},
        },
    }
    gw = GatewayProcess(tmp_path_factory.mktemp("gw"), config)
    yield gw
    gw.stop()


def raw(gateway, method, path, body: bytes | None, headers=None):
    host, port = gateway.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request(method, path, body=body, headers={"content-type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, json.loads(data) if data else None


def assert_error(status, body, expected_status, type_, code, fragment, param=None):
    """The whole error body: status, ``type``, ``code``, ``param`` (None when no field is
    to blame) and a message naming the problem; no traceback."""
    assert status == expected_status, body
    assert body["type"] == "error", body
    err = body["error"]
    assert set(err) == {"type", "message", "code", "param"}, err
    assert (err["type"], err["code"], err["param"]) == (type_, code, param), err
    assert fragment in err["message"], err
    assert "Traceback" not in json.dumps(body)


INVALID = "invalid_request_error"
NOT_FOUND = "not_found_error"
CHAT = "/v1/chat/completions"


@pytest.mark.parametrize(
    ("path", "body", "status", "type_", "code", "fragment", "param"),
    [
        (CHAT, b"{not json", 400, INVALID, "invalid_json", "not valid JSON", None),
        (CHAT, b"", 400, INVALID, "invalid_json", "empty", None),
        (CHAT, b"[1, 2]", 400, INVALID, "invalid_json", "must be a JSON object", None),
        (CHAT, b'{"messages": [{"role": "user", "content": "x"}]}', 400, INVALID, "missing_field", "missing required field 'model'", "model"),
        (CHAT, b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', 400, INVALID, "invalid_type", "'model' must be a string", "model"),
        (CHAT, b'{"model": "", "messages": [{"role": "user", "content": "x"}]}', 400, INVALID, "invalid_model", "must not be empty", "model"),
        (CHAT, b'{"model": "openai/gpt-4o", "messages": []}', 400, INVALID, "empty_messages", "at least one message", "messages"),
        (CHAT, b'{"model": "openai/gpt-4o"}', 400, INVALID, "missing_field", "missing required field 'messages'", "messages"),
        (CHAT, b'{"model": "openai/gpt-4o", "messages": "hi"}', 400, INVALID, "invalid_type", "'messages' must be", "messages"),
        (CHAT, b'{"model": "openai/gpt-4o", "messages": ["hi"]}', 400, INVALID, "invalid_type", "messages[0] must be an object", "messages[0]"),
        (CHAT, b'{"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', 400, INVALID, "invalid_type", "'stream' must be a boolean", "stream"),
        (CHAT, b'{"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "x"}], "fallbacks": "openai/x"}', 400, INVALID, "invalid_type", "'fallbacks' must be a list", "fallbacks"),
        (CHAT, b'{"model": "mistral/large", "messages": [{"role": "user", "content": "x"}]}', 404, NOT_FOUND, "model_not_found", "unknown provider 'mistral'", "model"),
        ("/v1/embeddings", b'{"model": "openai/e"}', 400, INVALID, "missing_field", "missing required field 'input'", "input"),
        ("/v1/embeddings", b'{"model": "openai/e", "input": []}', 400, INVALID, "empty_input", "must not be empty", "input"),
        ("/v1/completions", b'{"model": "openai/x", "prompt": 3}', 400, INVALID, "invalid_type", "'prompt' must be", "prompt"),
        ("/anthropic/v1/messages", b'{"model": "openai/x", "max_tokens": "10", "messages": [{"role": "user", "content": "x"}]}', 400, INVALID, "invalid_type", "'max_tokens' must be an integer", "max_tokens"),
        ("/anthropic/v1/messages", b'{"model": "openai/x", "max_tokens": 10, "messages": [{"role": "system", "content": "x"}]}', 400, INVALID, "invalid_type", "role 'user' or 'assistant'", "messages[0].role"),
        ("/anthropic/v1/messages", b'{"model": "anthropic/x", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}', 404, NOT_FOUND, "model_not_found", "unknown provider 'anthropic'", "model"),
    ],
)
def test_bad_bodies(gateway, path, body, status, type_, code, fragment, param):
    got_status, got = raw(gateway, "POST", path, body)
    assert_error(got_status, got, status, type_, code, fragment, param)


def test_anthropic_provider_not_configured_but_bare_model_on_anthropic_route_needs_one(gateway):
    status, body = raw(gateway, "POST", "/anthropic/v1/messages", b'{"model": "claude-3", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}')
    assert_error(status, body, 404, NOT_FOUND, "model_not_found", "use 'provider/model'", "model")


def test_unknown_route_is_404(gateway):
    status, body = raw(gateway, "GET", "/v2/nothing", None)
    assert_error(status, body, 404, NOT_FOUND, "unknown_route", "no route for GET /v2/nothing")


def test_wrong_method_is_405_with_allow(gateway):
    host, port = gateway.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", CHAT)
    resp = conn.getresponse()
    body = json.loads(resp.read())
    assert resp.status == 405 and resp.getheader("allow") == "POST"
    assert_error(405, body, 405, "method_not_allowed", "method_not_allowed", "GET is not allowed on /v1/chat/completions; use POST")


def test_body_over_the_limit_is_413_by_content_length(gateway):
    big = b'{"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "' + b"x" * (1024 * 1024 + 10) + b'"}]}'
    status, body = raw(gateway, "POST", CHAT, big)
    assert_error(status, body, 413, "request_too_large", "request_too_large", "larger than 1 MB")


def test_body_over_the_limit_is_413_when_chunked(gateway):
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
        chunk = b"x" * 65536
        try:
            for _ in range(20):  # 1.25 MB in total
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway may answer and close before we finish
        resp = http.client.HTTPResponse(sock, method="POST")
        resp.begin()
        status, body = resp.status, json.loads(resp.read())
    assert_error(status, body, 413, "request_too_large", "request_too_large", "larger than 1 MB")


def test_provider_keys_never_appear_in_errors_or_logs(gateway):
    # Like OpenAI, the fake provider echoes a rejected key masked ("sk-sta****ue99").
    status, rejected = raw(gateway, "POST", CHAT, b'{"model": "revoked/gpt-4o", "messages": [{"role": "user", "content": "x"}]}')
    assert_error(status, rejected, 401, INVALID, "invalid_api_key", "revoked: Incorrect API key provided: ***")
    # An upstream 500 is passed on as the provider's own status and message, named.
    status, failed = raw(gateway, "POST", CHAT, b'{"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "x"}]}', {"x-bf-eh-x-mock-fail-status": "500"})
    assert_error(status, failed, 500, "server_error", None, "openai: Mock failure (fail-status): status 500")
    text = json.dumps(rejected) + json.dumps(failed) + gateway.log()
    for secret in ("sk-secret-openai-key-123456", "az-secret-key-987654", "sk-status-401-secretvalue99"):
        assert secret not in text
        assert secret[:8] not in text
        assert secret[-4:] not in text


def test_azure_deployment_url_and_api_key_header(gateway, mock):
    mock.reset()
    status, _, body = http_json("POST", gateway.url + CHAT, {"model": "azure/gpt-4o", "messages": [{"role": "user", "content": "hello azure"}]})
    assert status == 200
    assert body["choices"][0]["message"]["content"].startswith("This is a mock response from prod-4o")
    sent = mock.stats()["recent"][-1]
    assert sent["path"] == "/openai/deployments/prod-4o/chat/completions"
    assert sent["query"]["api-version"] == "2024-10-21"
    assert sent["headers"]["api-key"] == "az-secret-key-987654"
    assert "authorization" not in sent["headers"]


def test_health_reports_store_and_fails_when_it_is_gone(mock, start_gateway):
    gw = start_gateway({"providers": {"openai": {"keys": [{"value": "k"}], "network_config": {"base_url": mock.url}}}})
    status, _, body = http_json("GET", gw.url + "/health")
    assert status == 200 and body["status"] == "ok"
    assert body["components"]["store"] == {"status": "ok", "type": "sqlite"}
    (gw.app_dir / "config.db").unlink()
    status, _, body = http_json("GET", gw.url + "/health")
    assert status == 503 and body["status"] == "failing"
    assert body["components"]["store"]["status"] == "failing"
    assert "config.db" in body["components"]["store"]["error"]


def test_no_config_file_starts_empty_and_says_so(start_gateway):
    gw = start_gateway(None)
    assert "no config file" in gw.log() and "SQLite" in gw.log()
    status, _, body = http_json("GET", gw.url + "/v1/models")
    assert status == 200 and body["data"] == []
    status, _, body = http_json("POST", gw.url + CHAT, {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]})
    assert_error(status, body, 404, NOT_FOUND, "model_not_found", "none configured", "model")
