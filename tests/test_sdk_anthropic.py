"""The official anthropic SDK against ``/anthropic`` — native to Anthropic, translated to OpenAI."""

import anthropic
import pytest

from support import GatewayProcess, provider_config

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city", "days"]},
}


@pytest.fixture(scope="module")
def gateway(mock, tmp_path_factory):
    gw = GatewayProcess(tmp_path_factory.mktemp("gw"), provider_config(mock.url))
    yield gw
    gw.stop()


@pytest.fixture
def client(gateway):
    c = anthropic.Anthropic(base_url=gateway.url + "/anthropic", api_key="sk-client-unused", max_retries=0, timeout=20)
    yield c
    c.close()


# Both routes of the Anthropic endpoint: native pass-through and translation to OpenAI chat.
MODELS = ["anthropic/claude-3-5-sonnet-latest", "openai/gpt-4o"]


@pytest.mark.parametrize("model", MODELS)
def test_message(client, model):
    msg = client.messages.create(
        model=model, max_tokens=100, system="be kind", messages=[{"role": "user", "content": "Hello from anthropic sdk"}]
    )
    upstream_model = model.split("/", 1)[1]
    assert msg.content[0].text == f"This is a mock response from {upstream_model}: Hello from anthropic sdk"
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens == len(msg.content[0].text.split())


@pytest.mark.parametrize("model", MODELS)
def test_streaming_message(client, model):
    with client.messages.stream(model=model, max_tokens=100, messages=[{"role": "user", "content": "stream it now"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    upstream_model = model.split("/", 1)[1]
    assert text == f"This is a mock response from {upstream_model}: stream it now"
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == len(text.split())


@pytest.mark.parametrize("model", MODELS)
def test_tool_use_round_trip(client, model):
    first = client.messages.create(model=model, max_tokens=200, tools=[WEATHER_TOOL], messages=[{"role": "user", "content": "weather in Oslo?"}])
    assert first.stop_reason == "tool_use"
    tool = next(b for b in first.content if b.type == "tool_use")
    assert tool.name == "get_weather" and tool.input == {"city": "mock", "days": 1}
    second = client.messages.create(
        model=model,
        max_tokens=200,
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": "weather in Oslo?"},
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool.id, "content": "sunny and warm"}]},
        ],
    )
    assert "the tool returned sunny and warm" in second.content[0].text


@pytest.mark.parametrize("model", MODELS)
def test_streaming_tool_use(client, model):
    with client.messages.stream(model=model, max_tokens=200, tools=[WEATHER_TOOL], messages=[{"role": "user", "content": "weather?"}]) as stream:
        final = stream.get_final_message()
    tool = next(b for b in final.content if b.type == "tool_use")
    assert tool.input == {"city": "mock", "days": 1}
    assert final.stop_reason == "tool_use"


def test_bare_model_goes_to_the_anthropic_provider(client, mock):
    mock.reset()
    client.messages.create(model="claude-3-haiku", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    sent = mock.stats()["recent"][-1]
    assert sent["path"] == "/v1/messages" and sent["body"]["model"] == "claude-3-haiku"


def test_native_headers_are_passed_on(client, mock):
    mock.reset()
    client.messages.create(
        model="anthropic/claude-3-haiku", max_tokens=10, messages=[{"role": "user", "content": "hi"}],
        extra_headers={"anthropic-beta": "tools-2024-05-16"},
    )
    headers = mock.stats()["recent"][-1]["headers"]
    assert headers["anthropic-beta"] == "tools-2024-05-16"
    assert headers["anthropic-version"]


def test_missing_max_tokens_is_a_clear_400(gateway):
    from support import http_json

    status, _, body = http_json("POST", gateway.url + "/anthropic/v1/messages", {"model": "anthropic/x", "messages": [{"role": "user", "content": "hi"}]})
    assert status == 400
    assert body["type"] == "error" and body["error"]["param"] == "max_tokens"


def test_upstream_error_surfaces_in_the_sdk(client):
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(
            model="anthropic/claude", max_tokens=10, messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-bf-eh-x-mock-fail-status": "429"},
        )
    assert info.value.status_code == 429
    assert "anthropic:" in str(info.value)
