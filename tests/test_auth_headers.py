"""Which header carries the virtual key, and what a caller without one may see.

The rule (README, Governance): the key is the trimmed value of ``x-bf-vk``, or of
``Authorization: Bearer``, ``x-api-key`` or ``api-key`` when it starts with ``sk-rb-`` or
``sk-bf-``. Several headers may carry it if they agree; two different keys are a 400. When
inference needs a key, ``/v1/models`` needs one too and lists only what it may use, and
``/health`` names the providers only to the admin token.

Two keys tell which one the gateway took: ``alpha`` may use only OpenAI, ``beta`` (a
Bifrost-style ``sk-bf-`` value) only Anthropic.
"""

from __future__ import annotations

import http.client
import json

import anthropic
import openai
import pytest

from support import http_json, provider_config

ALPHA = "sk-rb-alpha-" + "0" * 24
BETA = "sk-bf-beta-" + "1" * 24
PLAIN = "plain-virtual-key-value"  # no prefix: only x-bf-vk can carry it
TOKEN = "admin-token-auth-headers"
OPENAI_MODEL = "openai/gpt-4o"


def governed(mock_url: str, enforce: bool = True) -> dict:
    config = provider_config(mock_url)
    config["client"] = {"enforce_auth_on_inference": enforce}
    config["governance"] = {"virtual_keys": [
        {"name": "alpha", "value": ALPHA, "provider_configs": [{"provider": "openai", "weight": 1, "allowed_models": ["*"]}]},
        {"name": "beta", "value": BETA, "provider_configs": [{"provider": "anthropic", "weight": 1, "allowed_models": ["*"]}]},
        {"name": "plain", "value": PLAIN, "provider_configs": [{"provider": "openai", "weight": 1, "allowed_models": ["*"]}]},
    ]}
    return config


@pytest.fixture(scope="module")
def gw(mock, tmp_path_factory):
    from support import GatewayProcess

    gateway = GatewayProcess(tmp_path_factory.mktemp("auth"), governed(mock.url), env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
    yield gateway
    gateway.stop()


def post(gw, headers: list[tuple[str, str]], model: str = OPENAI_MODEL) -> tuple[int, dict]:
    """A chat request with exactly these header lines (repeats and spaces kept)."""
    host, port = gw.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()
    conn.putrequest("POST", "/v1/chat/completions")
    for name, value in [("content-type", "application/json"), ("content-length", str(len(body))), *headers]:
        conn.putheader(name, value)
    conn.endheaders(body)
    resp = conn.getresponse()
    data = json.loads(resp.read())
    conn.close()
    return resp.status, data


def took_alpha(status: int, body: dict) -> bool:
    """alpha may use OpenAI (200); beta may not (403 provider_blocked)."""
    if status == 403 and body["error"]["type"] == "provider_blocked":
        return False
    assert status == 200, body
    return True


@pytest.mark.parametrize("header", [
    ("x-bf-vk", ALPHA), ("authorization", f"Bearer {ALPHA}"), ("x-api-key", ALPHA), ("api-key", ALPHA),
    ("authorization", f"bearer {ALPHA}"),
], ids=["x-bf-vk", "authorization", "x-api-key", "api-key", "lowercase-bearer"])
def test_each_key_header_carries_the_virtual_key(gw, header):
    assert took_alpha(*post(gw, [header]))


@pytest.mark.parametrize("header", [
    ("x-bf-vk", f"{ALPHA}  "), ("x-bf-vk", f"\t{ALPHA}"), ("authorization", f"Bearer   {ALPHA} "),
    ("x-api-key", f" {ALPHA}  "), ("api-key", f"{ALPHA}\t"),
], ids=["x-bf-vk-trailing", "x-bf-vk-leading-tab", "authorization-spaces", "x-api-key-spaces", "api-key-tab"])
def test_surrounding_whitespace_is_trimmed_in_every_header(gw, header):
    assert took_alpha(*post(gw, [header]))


def test_a_key_without_our_prefix_counts_only_in_x_bf_vk(gw):
    assert took_alpha(*post(gw, [("x-bf-vk", PLAIN)]))
    status, body = post(gw, [("authorization", f"Bearer {PLAIN}")])
    assert status == 401 and body["error"]["type"] == "virtual_key_required"


def test_the_same_key_in_several_headers_is_one_key(gw):
    assert took_alpha(*post(gw, [("x-bf-vk", ALPHA), ("authorization", f"Bearer {ALPHA}"), ("x-api-key", ALPHA)]))


def test_a_provider_key_beside_the_virtual_key_is_not_a_second_key(gw):
    """An SDK's own key (no virtual-key prefix) next to x-bf-vk is ignored."""
    assert took_alpha(*post(gw, [("authorization", "Bearer sk-proj-real-openai-key"), ("x-bf-vk", ALPHA)]))
    assert took_alpha(*post(gw, [("x-api-key", "sk-ant-real-key"), ("x-bf-vk", ALPHA)]))


def test_an_empty_x_bf_vk_is_no_key(gw):
    assert took_alpha(*post(gw, [("x-bf-vk", " "), ("authorization", f"Bearer {ALPHA}")]))


@pytest.mark.parametrize("headers", [
    [("x-bf-vk", ALPHA), ("authorization", f"Bearer {BETA}")],
    [("authorization", f"Bearer {BETA}"), ("x-bf-vk", ALPHA)],
    [("x-api-key", ALPHA), ("api-key", BETA)],
    [("x-bf-vk", ALPHA), ("x-bf-vk", PLAIN)],
    [("x-bf-vk", ALPHA), ("authorization", f"Bearer {ALPHA}x")],
], ids=["x-bf-vk-then-authorization", "authorization-then-x-bf-vk", "x-api-key-and-api-key", "two-x-bf-vk", "near-miss"])
def test_two_different_virtual_keys_are_a_400(gw, headers):
    status, body = post(gw, headers)
    assert status == 400, body
    assert body["error"]["code"] == "conflicting_virtual_keys"
    assert ALPHA not in body["error"]["message"] and BETA not in body["error"]["message"]


# --------------------------------------------------------------------------- the SDKs


def test_openai_sdk_sends_an_sk_bf_key_as_bearer(gw):
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=BETA, max_retries=0)
    reply = client.chat.completions.create(model="anthropic/claude-3-haiku", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content
    with pytest.raises(openai.PermissionDeniedError) as denied:  # beta: Anthropic only
        client.chat.completions.create(model=OPENAI_MODEL, messages=[{"role": "user", "content": "hi"}])
    assert denied.value.body["type"] == "provider_blocked"


def test_azure_openai_sdk_sends_the_key_as_api_key(gw):
    client = openai.AzureOpenAI(base_url=gw.url + "/openai", api_key=ALPHA, api_version="2024-10-21", max_retries=0)
    ids = [m.id for m in client.models.list()]
    assert ids and all(i.startswith("openai/") for i in ids)
    stranger = openai.AzureOpenAI(base_url=gw.url + "/openai", api_key="sk-rb-stranger-" + "2" * 24,
                                  api_version="2024-10-21", max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        stranger.models.list()


def test_anthropic_sdk_sends_the_key_as_x_api_key(gw):
    client = anthropic.Anthropic(base_url=gw.url + "/anthropic", api_key=BETA, max_retries=0)
    reply = client.messages.create(model="anthropic/claude-3-haiku", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert reply.content[0].text
    alpha = anthropic.Anthropic(base_url=gw.url + "/anthropic", api_key=ALPHA, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError):
        alpha.messages.create(model="anthropic/claude-3-haiku", max_tokens=8, messages=[{"role": "user", "content": "hi"}])


# --------------------------------------------------------------------------- models and health


def test_models_need_a_virtual_key_when_inference_does(gw):
    status, _, body = http_json("GET", gw.url + "/v1/models")
    assert status == 401 and body["error"]["type"] == "virtual_key_required"
    status, _, body = http_json("GET", gw.url + "/v1/models", headers={"authorization": "Bearer sk-rb-ghost-" + "3" * 24})
    assert status == 403 and body["error"]["type"] == "virtual_key_not_found"


def test_models_list_only_what_the_key_may_use(gw):
    alpha = [m.id for m in openai.OpenAI(base_url=gw.url + "/v1", api_key=ALPHA, max_retries=0).models.list()]
    beta = [m.id for m in openai.OpenAI(base_url=gw.url + "/v1", api_key=BETA, max_retries=0).models.list()]
    assert alpha and all(i.startswith("openai/") for i in alpha)
    assert beta and all(i.startswith("anthropic/") for i in beta)


def test_health_names_providers_only_to_the_admin_token_when_keys_are_required(gw):
    status, _, body = http_json("GET", gw.url + "/health")
    assert status == 200 and body["status"] == "ok"
    assert body["components"]["providers"] == {"status": "ok"}
    status, _, body = http_json("GET", gw.url + "/health", headers={"authorization": f"Bearer {ALPHA}"})
    assert "configured" not in body["components"]["providers"]
    status, _, body = http_json("GET", gw.url + "/health", headers={"authorization": f"Bearer {TOKEN}"})
    assert body["components"]["providers"]["configured"] == ["anthropic", "openai"]


def test_without_enforcement_models_and_health_stay_open(mock, start_gateway):
    gw = start_gateway(governed(mock.url, enforce=False))
    status, _, body = http_json("GET", gw.url + "/health")
    assert body["components"]["providers"]["configured"] == ["anthropic", "openai"]
    status, _, body = http_json("GET", gw.url + "/v1/models")
    assert status == 200
    providers = {m["owned_by"] for m in body["data"]}
    assert providers == {"anthropic", "openai"}
    status, _, body = http_json("GET", gw.url + "/v1/models", headers={"x-api-key": BETA})  # a key still narrows
    assert status == 200 and {m["owned_by"] for m in body["data"]} == {"anthropic"}
