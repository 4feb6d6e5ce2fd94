"""Azure OpenAI through ``rainbridge serve`` (issue 14): keys given as an Entra ID service
principal get bearer tokens from the token endpoint (the fake provider plays Entra ID at
AZURE_AUTHORITY_HOST, following Microsoft's documented client-credentials flow), and Azure
deployment URLs are served as Bifrost serves them. Clients: the official openai SDK's OpenAI
and AzureOpenAI classes."""

from __future__ import annotations

import uuid

import openai
import pytest

from support import GatewayProcess, eventually

SECRET = "entra-secret-Qx7~value-0123456789"
VK = "sk-rb-azure-" + "0" * 24


def sp(client_id: str, secret: str = SECRET, **extra) -> dict:
    return {"endpoint": "", "client_id": client_id, "client_secret": secret, "tenant_id": "tenant-1", **extra}


@pytest.fixture(scope="module")
def gateway(mock, tmp_path_factory):
    net = {"base_url": mock.url, "max_retries": 1, "retry_backoff_initial": 20, "retry_backoff_max": 50}

    def provider(*keys: dict) -> dict:
        return {"type": "azure", "network_config": net, "keys": list(keys)}

    config = {
        "providers": {
            "azure": {"network_config": net, "keys": [{"name": "sp", "value": "", "models": ["*"],
                                                       "azure_key_config": sp("app-long", deployments={"gpt-4o": "prod-4o"})}]},
            "azshort": provider({"name": "sp", "value": "", "azure_key_config": sp("app-expires-2")}),
            "azbad": provider({"name": "sp", "value": "", "azure_key_config": sp("app-bad", "status-401-" + SECRET)}),
            "azrotate": provider({"name": "sp", "value": "", "weight": 1, "azure_key_config": sp("app-bad", "status-401-" + SECRET)},
                                 {"name": "plain", "value": "azure-api-key-0123456789", "weight": 0}),
        },
        "governance": {"virtual_keys": [{"id": "avk", "name": "avk", "value": VK}]},
    }
    gw = GatewayProcess(tmp_path_factory.mktemp("azure-entra"), config, env={"AZURE_AUTHORITY_HOST": mock.url})
    yield gw
    gw.stop()


@pytest.fixture
def client(gateway):
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=20)
    yield c
    c.close()


def recent(mock) -> list[dict]:
    return mock.stats()["recent"]


def token_requests(mock) -> list[dict]:
    return [r for r in recent(mock) if r["path"].endswith("/oauth2/v2.0/token")]


def sent(mock, mock_id: str) -> dict:
    (found,) = [r for r in recent(mock) if r["headers"].get("x-mock-id") == mock_id]
    return found


def chat(client, model: str, **kw):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi there"}], **kw)


def test_a_service_principal_key_sends_an_entra_bearer_token_not_an_api_key(client, mock):
    mid = uuid.uuid4().hex
    reply = chat(client, "azure/gpt-4o", extra_headers={"x-bf-eh-x-mock-id": mid})
    assert reply.choices[0].message.content == "This is a mock response from prod-4o: hi there"
    seen = sent(mock, mid)
    assert seen["path"] == "/openai/deployments/prod-4o/chat/completions"
    assert seen["headers"]["authorization"].startswith("Bearer mock-entra-token-") and "api-key" not in seen["headers"]
    (asked,) = [r for r in token_requests(mock) if r["body"]["client_id"] == "app-long"]
    assert asked["path"] == "/tenant-1/oauth2/v2.0/token" and asked["method"] == "POST"
    assert asked["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert {k: asked["body"][k] for k in ("grant_type", "scope")} == {
        "grant_type": "client_credentials", "scope": "https://cognitiveservices.azure.com/.default"}


def test_a_token_is_reused_while_it_is_fresh_also_for_streams(client, mock):
    chat(client, "azure/gpt-4o")
    before = len(token_requests(mock))
    tokens = set()
    for stream in (False, True):
        mid = uuid.uuid4().hex
        reply = chat(client, "azure/gpt-4o", stream=stream, extra_headers={"x-bf-eh-x-mock-id": mid})
        if stream:
            assert "".join(c.choices[0].delta.content or "" for c in reply if c.choices)
        tokens.add(sent(mock, mid)["headers"]["authorization"])
    assert len(tokens) == 1 and len(token_requests(mock)) == before


def test_a_token_about_to_expire_is_replaced(client, mock):
    """The fake issues this principal 2-second tokens: a new one is fetched before the old
    one runs out, and the requests keep succeeding with whichever is current."""
    seen: set[str] = set()

    def second_token():
        mid = uuid.uuid4().hex
        chat(client, "azshort/gpt-4o", extra_headers={"x-bf-eh-x-mock-id": mid})
        seen.add(sent(mock, mid)["headers"]["authorization"])
        return len(seen) >= 2 or seen

    eventually(second_token, 10, "a second Entra token after the first one's refresh time")


def test_refused_client_credentials_are_a_401_naming_entra_id_without_the_secret(client, gateway):
    with pytest.raises(openai.AuthenticationError) as caught:
        chat(client, "azbad/gpt-4o")
    message = caught.value.body["message"]
    assert "Entra ID gave no token for client app-bad" in message and "invalid_client" in message
    assert "AADSTS7000215" in message and "Trace ID" not in message
    assert SECRET not in message and SECRET not in gateway.log()


def test_a_key_whose_credentials_are_refused_rotates_to_the_next_key(client, mock):
    mid = uuid.uuid4().hex
    reply = chat(client, "azrotate/gpt-4o", extra_headers={"x-bf-eh-x-mock-id": mid})
    assert reply.choices[0].message.content
    assert sent(mock, mid)["headers"]["api-key"] == "azure-api-key-0123456789"


@pytest.mark.parametrize("endpoint", ["/openai", ""], ids=["bifrost-path", "short-path"])
def test_azure_sdk_deployment_urls_are_served_for_the_azure_provider(gateway, mock, endpoint):
    """AzureOpenAI posts to {endpoint}/openai/deployments/{deployment}/…?api-version=…; as in
    Bifrost the deployment names the model of provider azure, and the virtual key in api-key
    governs the request."""
    azure = openai.AzureOpenAI(azure_endpoint=gateway.url + endpoint, api_version="2024-10-21", api_key=VK,
                               max_retries=0, timeout=20)
    mid = uuid.uuid4().hex
    reply = azure.chat.completions.create(model="prod-4o", messages=[{"role": "user", "content": "via azure sdk"}],
                                          extra_headers={"x-bf-eh-x-mock-id": mid})
    assert reply.choices[0].message.content == "This is a mock response from prod-4o: via azure sdk"
    assert sent(mock, mid)["path"] == "/openai/deployments/prod-4o/chat/completions"
    chunks = list(azure.chat.completions.create(model="prod-4o", messages=[{"role": "user", "content": "x"}], stream=True))
    assert chunks[-1].choices[0].finish_reason == "stop"
    vectors = azure.embeddings.create(model="prod-4o", input=["one"])
    assert len(vectors.data[0].embedding) > 0
    azure.close()


def test_a_deployment_url_with_an_unknown_virtual_key_is_refused(gateway):
    azure = openai.AzureOpenAI(azure_endpoint=gateway.url + "/openai", api_version="2024-10-21",
                               api_key="sk-rb-not-a-key-" + "1" * 20, max_retries=0, timeout=20)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        azure.chat.completions.create(model="prod-4o", messages=[{"role": "user", "content": "x"}])
    assert caught.value.body["message"] == "virtual key not found"
    azure.close()
