"""A web page must not drive a gateway (on localhost, say) with the user's provider keys.

Two defences (README, Configuration and API): inference POSTs must declare a JSON body
(``application/json`` or ``application/*+json``, else 415), so a browser cannot send one
cross-origin without a CORS preflight; and CORS allows no origin unless
``client.allowed_origins`` lists it, so that preflight fails by default.
"""

from __future__ import annotations

import http.client
import json
import uuid

import pytest

from support import provider_config

INFERENCE = [
    ("/v1/chat/completions", {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "MARK"}]}),
    ("/openai/v1/chat/completions", {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "MARK"}]}),
    ("/v1/completions", {"model": "openai/gpt-3.5-turbo-instruct", "prompt": "MARK"}),
    ("/v1/embeddings", {"model": "openai/text-embedding-3-small", "input": "MARK"}),
    ("/anthropic/v1/messages", {"model": "anthropic/claude-3-haiku", "max_tokens": 8, "messages": [{"role": "user", "content": "MARK"}]}),
]


def request(gw, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    host, port = gw.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data


def marked(body: dict) -> tuple[str, bytes]:
    """The body with a unique marker, to find out whether it reached the provider."""
    mark = uuid.uuid4().hex
    return mark, json.dumps(body).replace("MARK", mark).encode()


def reached_provider(mock, mark: str) -> bool:
    return mark in json.dumps(mock.stats()["recent"])


@pytest.fixture(scope="module")
def default_gw(mock, tmp_path_factory):
    from support import GatewayProcess

    gw = GatewayProcess(tmp_path_factory.mktemp("csrf"), provider_config(mock.url))
    yield gw
    gw.stop()


# --------------------------------------------------------------------------- content type


@pytest.mark.parametrize(("path", "body"), INFERENCE, ids=[p for p, _ in INFERENCE])
@pytest.mark.parametrize("content_type", [
    "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None,
], ids=["text-plain", "text-plain-charset", "form", "multipart", "none"])
def test_an_inference_post_without_a_json_type_is_refused(default_gw, mock, path, body, content_type):
    mark, data = marked(body)
    headers = {"origin": "https://evil.example"}
    if content_type is not None:
        headers["content-type"] = content_type
    status, _, reply = request(default_gw, "POST", path, data, headers)
    assert status == 415, reply
    error = json.loads(reply)["error"]
    assert error["type"] == "unsupported_media_type"
    assert "content-type: application/json" in error["message"]
    assert not reached_provider(mock, mark)


@pytest.mark.parametrize(("path", "body"), INFERENCE, ids=[p for p, _ in INFERENCE])
@pytest.mark.parametrize("content_type", ["application/json", "Application/JSON; charset=utf-8", "application/vnd.api+json"])
def test_an_inference_post_with_a_json_type_works(default_gw, mock, path, body, content_type):
    mark, data = marked(body)
    status, _, reply = request(default_gw, "POST", path, data, {"content-type": content_type})
    assert status == 200, reply
    assert reached_provider(mock, mark)


def test_gets_need_no_content_type(default_gw):
    for path in ("/v1/models", "/health"):
        status, _, _ = request(default_gw, "GET", path)
        assert status == 200


# --------------------------------------------------------------------------- CORS


def preflight(gw, origin: str, headers: str = "authorization, content-type"):
    return request(gw, "OPTIONS", "/v1/chat/completions", headers={
        "origin": origin, "access-control-request-method": "POST", "access-control-request-headers": headers})


def test_by_default_no_origin_is_allowed(default_gw):
    status, headers, _ = preflight(default_gw, "https://evil.example")
    assert status == 405
    assert not any(name.startswith("access-control-") for name in headers)
    _, data = marked(INFERENCE[0][1])
    status, headers, _ = request(default_gw, "POST", "/v1/chat/completions", data,
                                 {"content-type": "application/json", "origin": "https://evil.example"})
    assert status == 200  # not a browser: served, but a browser would not let the page read it
    assert "access-control-allow-origin" not in headers


@pytest.fixture(scope="module")
def cors_gw(mock, tmp_path_factory):
    from support import GatewayProcess

    config = {**provider_config(mock.url),
              "client": {"allowed_origins": ["https://app.example"], "allowed_headers": ["x-custom-trace"]}}
    gw = GatewayProcess(tmp_path_factory.mktemp("cors"), config)
    yield gw
    gw.stop()


def test_a_listed_origin_passes_the_preflight_with_the_allowed_headers(cors_gw):
    status, headers, _ = preflight(cors_gw, "https://app.example", "authorization, content-type, x-custom-trace")
    assert status == 204
    assert headers["access-control-allow-origin"] == "https://app.example"
    assert headers["vary"] == "origin"
    assert "POST" in headers["access-control-allow-methods"]
    allowed = {h.strip() for h in headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-api-key", "api-key", "x-bf-vk", "x-custom-trace"} <= allowed


def test_a_listed_origin_may_read_the_answer(cors_gw):
    _, data = marked(INFERENCE[0][1])
    status, headers, _ = request(cors_gw, "POST", "/v1/chat/completions", data,
                                 {"content-type": "application/json", "origin": "https://app.example"})
    assert status == 200
    assert headers["access-control-allow-origin"] == "https://app.example"


def test_an_unlisted_origin_gets_no_cors_headers(cors_gw):
    status, headers, _ = preflight(cors_gw, "https://app.example.evil.example")
    assert status == 405
    assert "access-control-allow-origin" not in headers
    status, headers, _ = request(cors_gw, "GET", "/v1/models", headers={"origin": "https://other.example"})
    assert status == 200 and "access-control-allow-origin" not in headers


def test_a_star_allows_any_origin(mock, start_gateway):
    gw = start_gateway({**provider_config(mock.url), "client": {"allowed_origins": ["*"]}})
    status, headers, _ = preflight(gw, "https://anything.example")
    assert status == 204
    assert headers["access-control-allow-origin"] == "*"
    status, headers, _ = request(gw, "POST", "/v1/chat/completions", b"{}", {"content-type": "text/plain", "origin": "https://anything.example"})
    assert status == 415  # even then, no body a browser may send without asking first
    assert headers["access-control-allow-origin"] == "*"
