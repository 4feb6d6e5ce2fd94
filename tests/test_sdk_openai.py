"""The official openai SDK against ``rainbridge serve`` in front of the fake provider.

The only change a user makes is the base URL (``/v1`` or ``/openai/v1``).
"""

import base64
import struct

import openai
import pytest

from support import provider_config


@pytest.fixture(scope="module")
def gateway(mock, tmp_path_factory):
    from support import GatewayProcess

    gw = GatewayProcess(tmp_path_factory.mktemp("gw"), provider_config(mock.url))
    yield gw
    gw.stop()


@pytest.fixture(params=["/v1", "/openai/v1"])
def client(gateway, request):
    c = openai.OpenAI(base_url=gateway.url + request.param, api_key="sk-client-unused", max_retries=0, timeout=20)
    yield c
    c.close()


def test_chat(client, mock):
    mock.reset()
    reply = client.chat.completions.create(
        model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "Hello there gateway"}]
    )
    assert reply.choices[0].message.content == "This is a mock response from gpt-4o-mini: Hello there gateway"
    assert reply.usage.prompt_tokens > 0
    assert reply.usage.completion_tokens == len(reply.choices[0].message.content.split())
    forwarded = mock.stats()["recent"][-1]
    assert forwarded["path"] == "/v1/chat/completions"
    assert forwarded["body"]["model"] == "gpt-4o-mini"  # provider prefix stripped
    assert forwarded["key"] == "sk-test-openai-0123456789"  # the provider key, not the client's


def test_unknown_fields_pass_through_and_fallbacks_do_not(client, mock):
    mock.reset()
    client.chat.completions.create(
        model="openai/gpt-4o",
        messages=[{"role": "user", "content": "hi"}],
        extra_body={"vendor_knob": {"a": [1, 2]}, "fallbacks": ["anthropic/claude-x"], "seed": 7},
    )
    body = mock.stats()["recent"][-1]["body"]
    assert body["vendor_knob"] == {"a": [1, 2]} and body["seed"] == 7
    assert "fallbacks" not in body


def test_streaming_chat_with_usage(client):
    chunks = list(
        client.chat.completions.create(
            model="openai/gpt-4o",
            messages=[{"role": "user", "content": "stream me please"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "This is a mock response from gpt-4o: stream me please"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(text.split())


def test_streaming_without_usage_has_no_usage_chunk(client):
    chunks = list(
        client.chat.completions.create(model="openai/gpt-4o", messages=[{"role": "user", "content": "x"}], stream=True)
    )
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_tool_calls(client):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    reply = client.chat.completions.create(model="openai/gpt-4o", messages=[{"role": "user", "content": "weather?"}], tools=tools)
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and call.function.arguments == '{"city":"mock"}'
    assert reply.choices[0].finish_reason == "tool_calls"


def test_completions(client):
    reply = client.completions.create(model="openai/gpt-3.5-turbo-instruct", prompt="Say hello")
    assert reply.choices[0].text
    assert reply.usage.total_tokens > 0


def test_embeddings_base64_default_and_float(client):
    default = client.embeddings.create(model="openai/text-embedding-3-small", input=["a b", "c"])
    assert len(default.data) == 2 and len(default.data[0].embedding) == 1536
    floats = client.embeddings.create(model="openai/text-embedding-3-small", input="a b", encoding_format="float", dimensions=8)
    assert len(floats.data[0].embedding) == 8
    raw = client.embeddings.create(model="openai/text-embedding-3-small", input="a b", encoding_format="base64", dimensions=8)
    decoded = struct.unpack("<8f", base64.b64decode(raw.data[0].embedding))
    assert list(decoded) == pytest.approx(floats.data[0].embedding)


def test_models_lists_provider_prefixed_ids(client):
    ids = [m.id for m in client.models.list()]
    assert "openai/gpt-4o" in ids
    assert all("/" in i for i in ids)
    assert any(i.startswith("anthropic/") for i in ids)


def test_chat_routed_to_anthropic_provider(client, mock):
    mock.reset()
    reply = client.chat.completions.create(
        model="anthropic/claude-3-5-sonnet-latest",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "Hello Claude"}],
    )
    assert reply.choices[0].message.content == "This is a mock response from claude-3-5-sonnet-latest: Hello Claude"
    sent = mock.stats()["recent"][-1]
    assert sent["path"] == "/v1/messages"
    assert sent["body"]["system"] == "be brief" and sent["body"]["max_tokens"] > 0
    assert sent["headers"]["x-api-key"] == "sk-ant-test-0123456789"


def test_streaming_chat_routed_to_anthropic_with_tools(client):
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}, "n": {"type": "integer"}}, "required": ["q", "n"]}}}]
    stream = client.chat.completions.create(
        model="anthropic/claude-3-5-sonnet-latest",
        messages=[{"role": "user", "content": "find it"}],
        tools=tools,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    args = "".join(
        tc.function.arguments or "" for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])
    )
    names = [tc.function.name for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or []) if tc.function.name]
    assert names == ["lookup"]
    assert args.replace(" ", "") == '{"q":"mock","n":1}'
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["tool_calls"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_error_message_reaches_the_sdk(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="nope/gpt", messages=[{"role": "user", "content": "x"}])
    assert "unknown provider 'nope'" in str(info.value)
    assert info.value.body["type"] == "not_found_error"
