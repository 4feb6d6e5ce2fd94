"""Bifrost's OpenAI-compatible providers as presets (issue 14): each reaches its vendor's
paths with a Bearer key, through ``rainbridge serve`` and the official openai SDK, with the
fake provider standing in for the vendor (its base URL overridden)."""

from __future__ import annotations

import uuid

import openai
import pytest

from support import GatewayProcess

PRESETS = ("perplexity", "nebius", "huggingface", "parasail", "opencode-zen", "opencode-go")


@pytest.fixture(scope="module")
def gateway(mock, tmp_path_factory):
    providers = {name: {"keys": [{"name": "k", "value": f"{name}-key-0123456789", "models": ["*"]}],
                        "network_config": {"base_url": mock.url}} for name in PRESETS}
    # Bifrost's form for a self-hosted server: its URL in the key, no base_url.
    # (A value, as the fake speaks OpenAI's API and wants a key; Ollama ignores it.)
    providers["ollama"] = {"keys": [{"name": "local", "value": "ollama-key", "ollama_key_config": {"url": mock.url + "/v1"}}]}
    gw = GatewayProcess(tmp_path_factory.mktemp("presets"), {"providers": providers})
    yield gw
    gw.stop()


@pytest.fixture
def client(gateway):
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=20)
    yield c
    c.close()


def sent(mock, mock_id: str) -> dict:
    (found,) = [r for r in mock.stats()["recent"] if r["headers"].get("x-mock-id") == mock_id]
    return found


@pytest.mark.parametrize(("provider", "model", "path", "upstream_model"), [
    ("perplexity", "sonar-pro", "/chat/completions", "sonar-pro"),  # Perplexity's path has no /v1
    ("nebius", "Qwen/Qwen3-32B", "/v1/chat/completions", "Qwen/Qwen3-32B"),
    ("parasail", "parasail-llama-33-70b-fp8", "/v1/chat/completions", "parasail-llama-33-70b-fp8"),
    ("opencode-zen", "kimi-k2", "/v1/chat/completions", "kimi-k2"),
    # Hugging Face: org/model as it is; Bifrost's provider/org/model becomes the router's org/model:provider.
    ("huggingface", "meta-llama/Llama-3.1-8B-Instruct", "/v1/chat/completions", "meta-llama/Llama-3.1-8B-Instruct"),
    ("huggingface", "novita/meta-llama/Llama-3.1-8B-Instruct", "/v1/chat/completions", "meta-llama/Llama-3.1-8B-Instruct:novita"),
])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_chat_reaches_the_vendors_path_with_a_bearer_key(client, mock, provider, model, path, upstream_model, stream):
    mid = uuid.uuid4().hex
    reply = client.chat.completions.create(model=f"{provider}/{model}", messages=[{"role": "user", "content": "hi there"}],
                                           stream=stream, extra_headers={"x-bf-eh-x-mock-id": mid})
    text = "".join(c.choices[0].delta.content or "" for c in reply if c.choices) if stream else reply.choices[0].message.content
    assert text == f"This is a mock response from {upstream_model}: hi there"
    seen = sent(mock, mid)
    assert (seen["path"], seen["body"]["model"]) == (path, upstream_model)
    assert seen["headers"]["authorization"] == f"Bearer {provider}-key-0123456789"


def test_embeddings_pass_through_where_the_vendor_has_them(client, mock):
    mid = uuid.uuid4().hex
    reply = client.embeddings.create(model="nebius/BAAI/bge-en-icl", input="one", extra_headers={"x-bf-eh-x-mock-id": mid})
    assert reply.data[0].embedding and sent(mock, mid)["path"] == "/v1/embeddings"


@pytest.mark.parametrize(("provider", "call", "what"), [
    ("perplexity", lambda c, m: c.embeddings.create(model=m, input="x"), "embeddings"),
    ("perplexity", lambda c, m: c.completions.create(model=m, prompt="x"), "/v1/completions"),
    ("huggingface", lambda c, m: c.embeddings.create(model=m, input="x"), "embeddings"),
])
def test_an_operation_the_vendor_lacks_is_a_400_naming_it(client, mock, provider, call, what):
    before = mock.stats()["requests"]
    with pytest.raises(openai.BadRequestError) as caught:
        call(client, f"{provider}/some-model")
    assert caught.value.body["message"] == f"provider {provider} does not support {what}"
    assert caught.value.body["param"] == "model"
    assert mock.stats()["requests"] == before  # nothing went upstream


def test_an_ollama_server_named_in_its_key_config_is_where_requests_go(client, mock):
    mid = uuid.uuid4().hex
    reply = client.chat.completions.create(model="ollama/llama3.2", messages=[{"role": "user", "content": "hi"}],
                                           extra_headers={"x-bf-eh-x-mock-id": mid})
    assert reply.choices[0].message.content == "This is a mock response from llama3.2: hi"
    seen = sent(mock, mid)
    assert seen["path"] == "/v1/chat/completions" and seen["headers"]["authorization"] == "Bearer ollama-key"
