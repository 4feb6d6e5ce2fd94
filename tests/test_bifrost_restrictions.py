"""Bifrost restrictions once refused at start-up, now enforced through a running gateway
(issue 14): the governance plugin's ``required_headers`` (and ``client.required_headers``).

One gateway, its config written as Bifrost's docs write it; clients are the official
openai SDK (and plain HTTP where the exact error body matters).
"""

from __future__ import annotations

import openai
import pytest

from support import GatewayProcess, http_json, provider_config

VK = "sk-bf-restrict-0123456789abcdef"


def bifrost_config(mock_url: str) -> dict:
    return provider_config(mock_url) | {
        "client": {"required_headers": ["X-Correlation-ID"]},
        "plugins": [{"name": "governance", "enabled": True,
                     "config": {"is_vk_mandatory": True, "required_headers": ["X-Tenant-ID", "x-correlation-id"]}}],
        "governance": {"virtual_keys": [{"id": "restrict", "name": "restrict", "value": VK}]},
    }


@pytest.fixture(scope="module")
def gw(mock, tmp_path_factory):
    gateway = GatewayProcess(tmp_path_factory.mktemp("bifrost-restrict"), bifrost_config(mock.url))
    yield gateway
    gateway.stop()


def client(gw, headers: dict | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=VK, max_retries=0, timeout=20, default_headers=headers)


def chat(c: openai.OpenAI) -> str:
    reply = c.chat.completions.create(model="openai/gpt-4o", messages=[{"role": "user", "content": "hi"}])
    return reply.choices[0].message.content


TENANT = {"X-Tenant-ID": "acme", "X-Correlation-ID": "c-1"}


def test_required_headers_present_in_any_case_serve_the_request(gw):
    assert chat(client(gw, {"x-tenant-id": "acme", "X-CORRELATION-ID": "c-1"}))


def test_a_request_missing_required_headers_is_a_400_naming_them(gw):
    status, _, body = http_json("POST", gw.url + "/v1/chat/completions",
                                {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
                                headers={"authorization": f"Bearer {VK}", "x-tenant-id": "acme"})
    assert status == 400
    assert body["error"]["type"] == "missing_required_headers"
    assert body["error"]["message"] == "missing required headers: x-correlation-id"


def test_a_request_without_any_required_header_names_every_one(gw):
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client(gw))
    assert caught.value.body["type"] == "missing_required_headers"
    assert caught.value.body["message"] == "missing required headers: x-correlation-id, x-tenant-id"


def test_an_empty_required_header_counts_as_missing(gw):
    status, _, body = http_json("POST", gw.url + "/v1/chat/completions",
                                {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
                                headers={"authorization": f"Bearer {VK}", "x-tenant-id": "", "x-correlation-id": "c-1"})
    assert status == 400 and body["error"]["message"] == "missing required headers: x-tenant-id"


def test_required_headers_apply_to_the_anthropic_route_and_model_list(gw):
    status, _, body = http_json("POST", gw.url + "/anthropic/v1/messages",
                                {"model": "anthropic/claude-3-5-haiku", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
                                headers={"x-api-key": VK})
    assert status == 400 and body["error"]["type"] == "missing_required_headers"
    with pytest.raises(openai.BadRequestError):
        client(gw).models.list()
    assert client(gw, TENANT).models.list().data


def test_health_needs_no_required_header(gw):
    status, _, _ = http_json("GET", gw.url + "/health")
    assert status == 200
