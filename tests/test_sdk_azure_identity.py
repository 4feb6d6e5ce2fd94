"""Azure keys with an empty value and no service principal (Bifrost's Helm
values-examples/providers-and-virtual-keys, key "azure-managed-identity"): as Bifrost's
DefaultAzureCredential, the gateway authenticates as the environment's Azure identity, with
the client secret of AZURE_CLIENT_SECRET or, for AKS workload identity, the federated token in
AZURE_FEDERATED_TOKEN_FILE (re-read for each token). The fake provider plays Entra ID at
AZURE_AUTHORITY_HOST; the client is the official openai SDK."""

from __future__ import annotations

import uuid

import openai
import pytest

from rainbridge.config.schema import NetworkConfig
from rainbridge.errors import UpstreamError
from rainbridge.providers.azure import AzureAdapter
from rainbridge.providers.base import ProviderKey
from rainbridge.upstream import UpstreamClient
from support import GatewayProcess, eventually


def config(mock) -> dict:
    net = {"base_url": mock.url, "max_retries": 0}
    key = {"name": "azure-managed-identity", "value": "", "weight": 1, "models": ["*"],
           "azure_key_config": {"endpoint": "", "api_version": "2024-10-21", "deployments": {"gpt-4o": "gpt-4o-prod"}}}
    return {"providers": {"azure": {"network_config": net, "keys": [key]}}}


@pytest.fixture(scope="module")
def secret_gateway(mock, tmp_path_factory):
    gw = GatewayProcess(tmp_path_factory.mktemp("az-env"), config(mock), env={
        "AZURE_AUTHORITY_HOST": mock.url, "AZURE_TENANT_ID": "tenant-env", "AZURE_CLIENT_ID": "app-env",
        "AZURE_CLIENT_SECRET": "env-secret-0123456789"})
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def token_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("az-wi") / "azure-identity-token"
    path.write_text("federated-jwt-1\n")
    return path


@pytest.fixture(scope="module")
def workload_gateway(mock, tmp_path_factory, token_file):
    gw = GatewayProcess(tmp_path_factory.mktemp("az-wi-gw"), config(mock), env={
        "AZURE_AUTHORITY_HOST": mock.url, "AZURE_TENANT_ID": "tenant-wi", "AZURE_CLIENT_ID": "app-wi-expires-2",
        "AZURE_FEDERATED_TOKEN_FILE": str(token_file)})
    yield gw
    gw.stop()


def chat(gw: GatewayProcess, mid: str):
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=20) as client:
        return client.chat.completions.create(model="azure/gpt-4o", messages=[{"role": "user", "content": "hi"}],
                                              extra_headers={"x-bf-eh-x-mock-id": mid})


def recent(mock) -> list[dict]:
    return mock.stats()["recent"]


def sent(mock, mid: str) -> dict:
    (found,) = [r for r in recent(mock) if r["headers"].get("x-mock-id") == mid]
    return found


def test_a_key_without_api_key_uses_the_environments_client_secret(secret_gateway, mock):
    mid = uuid.uuid4().hex
    assert chat(secret_gateway, mid).choices[0].message.content
    headers = sent(mock, mid)["headers"]
    assert headers["authorization"].startswith("Bearer mock-entra-token-") and "api-key" not in headers
    asked = [r for r in recent(mock) if r["path"] == "/tenant-env/oauth2/v2.0/token"]
    assert asked and asked[-1]["body"]["client_id"] == "app-env"
    assert asked[-1]["body"]["grant_type"] == "client_credentials" and "client_assertion" not in asked[-1]["body"]


def test_workload_identity_sends_the_federated_token_and_rereads_it_for_each_token(workload_gateway, mock, token_file):
    """The fake issues this client 2-second tokens: after the file is rotated, the next token
    is asked for with the new federated token."""
    assert chat(workload_gateway, uuid.uuid4().hex).choices[0].message.content
    token_file.write_text("federated-jwt-2\n")

    def assertions() -> set[str] | bool:
        chat(workload_gateway, uuid.uuid4().hex)
        seen = {r["body"].get("client_assertion") for r in recent(mock) if r["path"] == "/tenant-wi/oauth2/v2.0/token"}
        return seen >= {"federated-jwt-1", "federated-jwt-2"} or seen

    eventually(assertions, 10, "a token asked for with the rotated federated token")
    (asked, *_) = [r for r in recent(mock) if r["path"] == "/tenant-wi/oauth2/v2.0/token"]
    assert asked["body"]["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert "client_secret" not in asked["body"] and asked["body"]["client_id"] == "app-wi-expires-2"


def test_no_identity_in_the_environment_is_a_dead_key_naming_the_variables(monkeypatch):
    for name in ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    adapter = AzureAdapter("azure", "http://127.0.0.1:9", UpstreamClient(), NetworkConfig())
    with pytest.raises(UpstreamError) as caught:
        adapter.principal(ProviderKey("k", "", None, 1.0))
    assert caught.value.status == 401 and "AZURE_FEDERATED_TOKEN_FILE" in str(caught.value)
    assert adapter.principal(ProviderKey("k", "api-key-0123", None, 1.0)) is None
