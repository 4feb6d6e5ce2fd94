"""Bifrost config forms that restrict access, enforced through a running gateway (issue 14).

One gateway, started from a config written the way Bifrost's docs and Helm chart write it:
the governance plugin entry ``{"name": "governance", "enabled": true, "config":
{"is_vk_mandatory": true}}`` (docs, and the seed HA example's ``plugins.governance``),
a virtual key pinned to one provider key in the Helm form ``keys: [{"name": ...}]``, and
one allowed every key with Bifrost's ``key_ids: ["*"]``. Clients are the official openai SDK.
"""

from __future__ import annotations

import openai
import pytest

from support import GatewayProcess, http_json

# Unique key values: the fake provider is shared by the session and counts requests per key.
FIRST = "sk-bifrost-sec-first-0123456789"
SECOND = "sk-bifrost-sec-second-0123456789"
PINNED = "sk-bf-pinned-0123456789abcdef"
STAR = "sk-bf-star-0123456789abcdef01"
TOKEN = "bifrost-sec-admin-token"
REQUESTS = 20  # with two keys at equal weight, one is missed by all 20 with p = 2^-19


def bifrost_config(mock_url: str) -> dict:
    return {
        "providers": {"openai": {
            "keys": [{"name": "first", "value": FIRST, "models": ["*"], "weight": 1},
                     {"name": "second", "value": SECOND, "models": ["*"], "weight": 1}],
            "network_config": {"base_url": mock_url},
        }},
        "plugins": [{"name": "governance", "enabled": True, "config": {"is_vk_mandatory": True}}],
        "governance": {"virtual_keys": [
            {"id": "pinned", "name": "pinned", "value": PINNED,
             "provider_configs": [{"provider": "openai", "allowed_models": ["*"], "keys": [{"name": "second"}]}]},
            {"id": "star", "name": "star", "value": STAR,
             "provider_configs": [{"provider": "openai", "allowed_models": ["*"], "key_ids": ["*"]}]},
        ]},
    }


@pytest.fixture(scope="module")
def gw(mock, tmp_path_factory):
    config = bifrost_config(mock.url) | {"config_store": {"enabled": True, "type": "sqlite"}}  # API writes need a store
    gateway = GatewayProcess(tmp_path_factory.mktemp("bifrost-sec"), config, env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
    yield gateway
    gateway.stop()


def client(gw, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=api_key, max_retries=0, timeout=20)


def chat(gw, api_key: str) -> str:
    reply = client(gw, api_key).chat.completions.create(model="openai/gpt-4o", messages=[{"role": "user", "content": "hi"}])
    return reply.choices[0].message.content


def keys_used(mock, before: dict) -> dict:
    after = mock.stats()["by_key"]
    return {name: after.get(value, 0) - before.get(value, 0) for name, value in (("first", FIRST), ("second", SECOND))}


def test_governance_plugin_is_vk_mandatory_refuses_a_request_without_virtual_key(gw):
    with pytest.raises(openai.AuthenticationError) as caught:
        chat(gw, "sk-not-a-virtual-key")
    assert caught.value.status_code == 401


def test_governance_plugin_is_vk_mandatory_serves_a_request_with_virtual_key(gw):
    assert chat(gw, STAR)


def test_helm_keys_form_pins_the_virtual_key_to_the_named_provider_key(gw, mock):
    before = mock.stats()["by_key"]
    for _ in range(REQUESTS):
        chat(gw, PINNED)
    assert keys_used(mock, before) == {"first": 0, "second": REQUESTS}


def test_key_ids_star_lets_the_virtual_key_use_every_provider_key(gw, mock):
    before = mock.stats()["by_key"]
    for _ in range(REQUESTS):
        chat(gw, STAR)  # a literal "*" key name would make every request fail
    used = keys_used(mock, before)
    assert sum(used.values()) == REQUESTS and used["first"] > 0 and used["second"] > 0


def test_helm_keys_form_through_the_management_api_pins_the_key_too(gw, mock):
    body = {"name": "api-pinned", "provider_configs": [{"provider": "openai", "allowed_models": ["*"], "keys": [{"name": "first"}]}]}
    status, _, reply = http_json("POST", gw.url + "/api/governance/virtual-keys", body, headers={"authorization": f"Bearer {TOKEN}"})
    assert status == 201, reply
    value = reply["virtual_key"]["value"]
    before = mock.stats()["by_key"]
    for _ in range(REQUESTS):
        chat(gw, value)
    assert keys_used(mock, before) == {"first": REQUESTS, "second": 0}
