"""The official openai SDK against ``rainbridge serve`` in front of the fake provider speaking
Vertex AI (issue 14): Gemini models (generateContent) and Claude models (rawPredict) with
OAuth2 tokens from service accounts.

Tests cannot reach Google: each test service account's JSON names the fake provider's
``/token`` as its ``token_uri``. That endpoint follows Google's OAuth2 server-to-server
documentation (JWT bearer grant) and verifies each assertion's RS256 signature with the
public half of the test key, registered with the fake first, as Google knows its accounts'
keys. The tokens it issues are what the fake's Vertex routes accept."""

from __future__ import annotations

import json
import uuid

import openai
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from support import GatewayProcess, eventually, http_json

TOKEN = "vertex-admin-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
VK = "sk-rb-vertex-" + "0" * 24
PRICE = {"input_cost_per_token": 0.001, "output_cost_per_token": 0.002}
PROJECT = "mock-project"
EMAIL = "gateway@mock-project.iam.gserviceaccount.com"
GEMINI_PATH = f"/v1/projects/{PROJECT}/locations/us-central1/publishers/google/models/gemini-2.5-flash"
CLAUDE = "claude-sonnet-4@20250514"
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}}]


def service_account(mock, email: str, register: bool = True, expires_in: int = 3599) -> str:
    """A service account key file's text for a fresh RSA key; its public half registered with
    the fake token endpoint (unless ``register`` is false: then Google would not know it)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if register:
        status, _, _ = http_json("POST", mock.url + "/mock/google/service-accounts",
                                 {"client_email": email, "public_key_pem": public.decode(), "expires_in": expires_in})
        assert status == 200
    return json.dumps({"type": "service_account", "project_id": PROJECT, "private_key_id": uuid.uuid4().hex,
                       "private_key": pem.decode(), "client_email": email, "client_id": "1",
                       "token_uri": mock.url + "/token"})


def vertex_key(name: str, credentials: str, weight: float = 1) -> dict:
    return {"name": name, "value": "", "models": ["*"], "weight": weight,
            "vertex_key_config": {"project_id": PROJECT, "region": "us-central1", "auth_credentials": credentials}}


@pytest.fixture(scope="module")
def gateway(mock, tmp_path_factory):
    net = {"base_url": mock.url, "max_retries": 2, "retry_backoff_initial": 20, "retry_backoff_max": 50}
    dead, live = "dead-status-403@mock-project.iam.gserviceaccount.com", "live@mock-project.iam.gserviceaccount.com"
    config = {
        "providers": {
            "vertex": {"network_config": net, "keys": [vertex_key("sa", service_account(mock, EMAIL))]},
            # Weight 0: the live key is never chosen first, only rotated to (deterministic).
            "vxdead": {"type": "vertex", "network_config": net, "keys": [
                vertex_key("dead", service_account(mock, dead)), vertex_key("live", service_account(mock, live), weight=0)]},
            "vxshort": {"type": "vertex", "network_config": net, "keys": [
                vertex_key("short", service_account(mock, "short@mock-project.iam.gserviceaccount.com", expires_in=200))]},
            "vxunknown": {"type": "vertex", "network_config": net, "keys": [
                vertex_key("unknown", service_account(mock, "unknown@mock-project.iam.gserviceaccount.com", register=False))]},
        },
        "pricing_overrides": {"gemini-2.5-flash": PRICE},
        "governance": {"virtual_keys": [{"id": "xvk", "name": "xvk", "value": VK,
                                         "budget": {"max_limit": 1000, "reset_duration": "1d"},
                                         "rate_limit": {"token_max_limit": 10**6, "token_reset_duration": "1h"}}]},
    }
    gw = GatewayProcess(tmp_path_factory.mktemp("vertex"), config, env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
    yield gw
    gw.stop()


@pytest.fixture
def client(gateway):
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=20)
    yield c
    c.close()


def attempts(mock, mock_id: str) -> list[dict]:
    return [r for r in mock.stats()["recent"] if r["headers"].get("x-mock-id") == mock_id]


def ask(client, model: str, mid: str, **kwargs):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                          extra_headers={"x-bf-eh-x-mock-id": mid, **kwargs.pop("headers", {})}, **kwargs)


def test_gemini_chat_reaches_vertex_with_a_service_account_token(client, mock):
    mid = uuid.uuid4().hex
    reply = client.chat.completions.create(
        model="vertex/gemini-2.5-flash",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there gateway"}],
        max_tokens=50, extra_headers={"x-bf-eh-x-mock-id": mid},
    )
    assert reply.choices[0].message.content == "This is a mock response from gemini-2.5-flash: Hello there gateway"
    (seen,) = attempts(mock, mid)
    assert seen["path"] == GEMINI_PATH + ":generateContent"
    assert seen["key"] == EMAIL  # the fake accepted a token its token endpoint issued to this account
    assert seen["headers"]["authorization"].startswith("Bearer ya29.mock-") and "x-goog-api-key" not in seen["headers"]
    assert seen["body"]["systemInstruction"] == {"parts": [{"text": "Be brief."}]}


def test_the_token_is_cached_across_requests(client, mock):
    for _ in range(3):
        assert ask(client, "vertex/gemini-2.5-flash", uuid.uuid4().hex).choices[0].message.content
    _, _, issued = http_json("GET", mock.url + "/mock/google/grants")
    assert issued[EMAIL] == 1


def test_a_token_near_expiry_is_used_and_refreshed_in_the_background(client, mock):
    """Tokens of this account live 200 s, inside the 300 s early-refresh window: each request
    is served with the token at hand while one new token is fetched behind it."""
    email = "short@mock-project.iam.gserviceaccount.com"
    assert ask(client, "vxshort/gemini-2.5-flash", uuid.uuid4().hex).choices[0].message.content
    _, _, issued = http_json("GET", mock.url + "/mock/google/grants")
    first = issued[email]
    assert ask(client, "vxshort/gemini-2.5-flash", uuid.uuid4().hex).choices[0].message.content
    eventually(lambda: http_json("GET", mock.url + "/mock/google/grants")[2][email] > first, 10,
               "a background token refresh")


def test_an_account_google_does_not_know_is_a_502_without_secrets(client):
    with pytest.raises(openai.APIStatusError) as caught:
        ask(client, "vxunknown/gemini-2.5-flash", uuid.uuid4().hex)
    assert caught.value.status_code == 502 and caught.value.body["code"] == "token_refresh_failed"
    assert "PRIVATE KEY" not in json.dumps(caught.value.body)


def test_streaming_with_usage_ends_with_the_usage_chunk(client, mock):
    mid = uuid.uuid4().hex
    chunks = list(client.chat.completions.create(
        model="vertex/gemini-2.5-flash", messages=[{"role": "user", "content": "stream me please"}],
        stream=True, stream_options={"include_usage": True}, extra_headers={"x-bf-eh-x-mock-id": mid},
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "This is a mock response from gemini-2.5-flash: stream me please"
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.completion_tokens == len(text.split())
    (seen,) = attempts(mock, mid)
    assert seen["path"] == GEMINI_PATH + ":streamGenerateContent" and seen["query"] == {"alt": "sse"}


@pytest.mark.parametrize("model", ["gemini-2.5-flash", CLAUDE])
def test_tools_round_trip(client, mock, model):
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    kwargs = {"model": f"vertex/{model}", "tools": TOOLS, "tool_choice": "required", "max_tokens": 100}
    reply = client.chat.completions.create(messages=messages, **kwargs)
    call = reply.choices[0].message.tool_calls[0].model_dump(exclude_none=True)
    assert reply.choices[0].finish_reason == "tool_calls"
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"mock"}'}
    messages += [{"role": "assistant", "content": None, "tool_calls": [call]},
                 {"role": "tool", "tool_call_id": call["id"], "content": "sunny and 21 degrees"}]
    answer = client.chat.completions.create(messages=messages, **kwargs)
    assert answer.choices[0].message.content == f"This is a mock response from {model}: the tool returned sunny and 21 degrees"


def test_claude_chat_goes_to_raw_predict_with_vertexs_anthropic_version(client, mock):
    mid = uuid.uuid4().hex
    reply = client.chat.completions.create(model=f"vertex/{CLAUDE}", messages=[{"role": "user", "content": "Hello claude"}],
                                           max_tokens=100, extra_headers={"x-bf-eh-x-mock-id": mid})
    assert reply.choices[0].message.content == f"This is a mock response from {CLAUDE}: Hello claude"
    assert reply.usage.completion_tokens == len(reply.choices[0].message.content.split())
    (seen,) = attempts(mock, mid)
    assert seen["path"] == f"/v1/projects/{PROJECT}/locations/us-central1/publishers/anthropic/models/claude-sonnet-4%4020250514:rawPredict"
    assert seen["body"]["anthropic_version"] == "vertex-2023-10-16" and "model" not in seen["body"]


def test_claude_streaming_with_usage(client, mock):
    mid = uuid.uuid4().hex
    chunks = list(client.chat.completions.create(
        model=f"vertex/{CLAUDE}", messages=[{"role": "user", "content": "stream claude"}], max_tokens=100,
        stream=True, stream_options={"include_usage": True}, extra_headers={"x-bf-eh-x-mock-id": mid}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"This is a mock response from {CLAUDE}: stream claude"
    assert chunks[-1].usage.completion_tokens == len(text.split())
    (seen,) = attempts(mock, mid)
    assert seen["path"].endswith(":streamRawPredict") and seen["body"]["stream"] is True


def test_invalid_argument_is_a_400_in_the_openai_shape(client, mock):
    mid = uuid.uuid4().hex
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, "vertex/gemini-2.5-flash", mid, headers={"x-bf-eh-x-mock-fail-status": "400"})
    assert caught.value.body["code"] == "INVALID_ARGUMENT" and caught.value.body["type"] == "invalid_request_error"
    assert len(attempts(mock, mid)) == 1


def test_resource_exhausted_is_retried_then_answered_429(client, mock):
    mid = uuid.uuid4().hex
    with pytest.raises(openai.RateLimitError) as caught:
        ask(client, "vertex/gemini-2.5-flash", mid, headers={"x-bf-eh-x-mock-fail-status": "429"})
    assert caught.value.body["code"] == "RESOURCE_EXHAUSTED"
    assert len(attempts(mock, mid)) == 3


def test_a_permission_denied_account_rotates_to_the_other_key(client, mock):
    mid = uuid.uuid4().hex
    assert ask(client, "vxdead/gemini-2.5-flash", mid).choices[0].message.content
    assert [a["key"] for a in attempts(mock, mid)] == ["dead-status-403@mock-project.iam.gserviceaccount.com",
                                                       "live@mock-project.iam.gserviceaccount.com"]


def test_a_governed_request_is_charged_with_vertexs_usage(gateway):
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=VK, max_retries=0, timeout=20) as sdk:
        messages = [{"role": "user", "content": "count my tokens"}]
        whole = sdk.chat.completions.create(model="vertex/gemini-2.5-flash", messages=messages)
        list(sdk.chat.completions.create(model="vertex/gemini-2.5-flash", messages=messages, stream=True))
    usage = whole.usage
    tokens = 2 * usage.total_tokens
    spend = 2 * (usage.prompt_tokens * PRICE["input_cost_per_token"] + usage.completion_tokens * PRICE["output_cost_per_token"])

    def charged():
        _, _, report = http_json("GET", f"{gateway.url}/api/governance/virtual-keys/xvk/usage", None, ADMIN)
        level = report["levels"][0]
        seen = (level["rate_limit"]["token"]["current_usage"], round(level["budgets"][0]["current_usage"], 9))
        return seen == (tokens, round(spend, 9)) or seen

    eventually(charged, 10, "the virtual key charged with Vertex's usage")


def test_the_management_api_never_shows_the_service_account_key(gateway):
    _, _, body = http_json("GET", f"{gateway.url}/api/providers/vertex/keys", None, ADMIN)
    config = body["keys"][0]["vertex_key_config"]
    assert config["auth_credentials"] == "…" and config["project_id"] == PROJECT
