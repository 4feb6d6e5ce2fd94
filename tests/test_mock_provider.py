"""The fake provider over real sockets, driven by the official SDKs and raw HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import aiohttp
import anthropic
import httpx2
import openai
import orjson
import pytest

from mock_helpers import open_raw, post, sse_events
from rainbridge.mock import MockProvider, serve

CLAUDE = "claude-3-5-sonnet-latest"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "metric": {"type": "boolean"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "extra": {"type": "object"},
                "note": {"type": "string"},
            },
            "required": ["city", "days", "metric", "unit", "extra"],
        },
    },
}
WEATHER_ARGS = {"city": "mock", "days": 1, "metric": True, "unit": "celsius", "extra": None}


@pytest.fixture
async def provider():
    mock = MockProvider(port=0)
    await mock.start()
    try:
        yield mock
    finally:
        await mock.stop()


@pytest.fixture
async def oai(provider):
    client = openai.AsyncOpenAI(base_url=provider.url + "/v1", api_key="sk-test", max_retries=0)
    yield client
    await client.close()


@pytest.fixture
async def ant(provider):
    client = anthropic.AsyncAnthropic(base_url=provider.url, api_key="sk-ant-test", max_retries=0)
    yield client
    await client.close()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


# --- OpenAI chat -----------------------------------------------------------


async def test_chat_completion_is_deterministic_and_counts_tokens(oai):
    messages = [
        {"role": "system", "content": "Be brief."},
        *user("one two three four five six seven eight nine ten"),
    ]
    first = await oai.chat.completions.create(model="gpt-4o", messages=messages)
    second = await oai.chat.completions.create(model="gpt-4o", messages=messages)

    text = "This is a mock response from gpt-4o: one two three four five six seven eight"
    assert first.choices[0].message.content == second.choices[0].message.content == text
    assert first.id.startswith("chatcmpl-") and first.id != second.id
    assert first.object == "chat.completion"
    assert first.model == "gpt-4o"
    assert first.choices[0].finish_reason == "stop"
    assert first.choices[0].message.role == "assistant"
    assert first.system_fingerprint
    # prompt: 2 + 10 words, 3 per message, 3 per request
    assert first.usage.prompt_tokens == 12 + 2 * 3 + 3
    assert first.usage.completion_tokens == len(text.split())
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens


async def test_chat_max_tokens_truncates_with_length(oai):
    reply = await oai.chat.completions.create(
        model="gpt-4o", messages=user("hi"), max_completion_tokens=3
    )
    assert reply.choices[0].message.content == "This is a"
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 3
    legacy = await oai.chat.completions.create(model="gpt-4o", messages=user("hi"), max_tokens=2)
    assert legacy.choices[0].message.content == "This is"


async def test_chat_n_choices(oai):
    reply = await oai.chat.completions.create(model="gpt-4o", messages=user("hi"), n=3)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert reply.usage.completion_tokens == 3 * len(reply.choices[0].message.content.split())


async def test_chat_stream_with_usage(oai):
    stream = await oai.chat.completions.create(
        model="gpt-4o",
        messages=user("hello world"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]

    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    first, final, usage = chunks[0], chunks[-2], chunks[-1]
    assert first.choices[0].delta.role == "assistant" and first.choices[0].delta.content == ""
    tokens = [c.choices[0].delta.content for c in chunks[1:-2]]
    assert "".join(tokens) == "This is a mock response from gpt-4o: hello world"
    assert len(tokens) == 9
    assert final.choices[0].finish_reason == "stop" and final.choices[0].delta.content is None
    assert usage.choices == [] and usage.usage.completion_tokens == 9
    assert all(c.usage is None for c in chunks[:-1])


async def test_chat_stream_wire_format(provider, http):
    body = {"model": "gpt-4o", "messages": user("hi"), "stream": True}
    async with http.post(
        provider.url + "/v1/chat/completions", json=body, headers={"Authorization": "Bearer k"}
    ) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        assert r.headers["Transfer-Encoding"] == "chunked"
        raw = await r.read()
    events = sse_events(raw)
    assert events[-1] == (None, "[DONE]")
    assert all(name is None for name, _ in events)
    assert "usage" not in json.loads(events[0][1])  # only with include_usage


async def test_chat_tool_call(oai):
    reply = await oai.chat.completions.create(
        model="gpt-4o", messages=user("weather?"), tools=[WEATHER_TOOL]
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == WEATHER_ARGS
    assert reply.usage.completion_tokens > 0

    none = await oai.chat.completions.create(
        model="gpt-4o", messages=user("hi"), tools=[WEATHER_TOOL], tool_choice="none"
    )
    assert none.choices[0].message.tool_calls is None


async def test_chat_tool_choice_names_the_tool(oai):
    other = {"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}}}
    reply = await oai.chat.completions.create(
        model="gpt-4o",
        messages=user("x"),
        tools=[other, WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert reply.choices[0].message.tool_calls[0].function.name == "get_weather"
    first = await oai.chat.completions.create(
        model="gpt-4o", messages=user("x"), tools=[other, WEATHER_TOOL]
    )
    assert first.choices[0].message.tool_calls[0].function.arguments == "{}"


async def test_chat_tool_call_stream(oai):
    stream = await oai.chat.completions.create(
        model="gpt-4o", messages=user("weather?"), tools=[WEATHER_TOOL], stream=True
    )
    chunks = [c async for c in stream]
    opening = chunks[0].choices[0].delta
    assert opening.role == "assistant"
    (head,) = opening.tool_calls
    assert head.index == 0 and head.id.startswith("call_") and head.type == "function"
    assert head.function.name == "get_weather" and head.function.arguments == ""
    fragments = [c.choices[0].delta.tool_calls[0].function.arguments for c in chunks[1:-1]]
    assert len(fragments) > 1
    assert json.loads("".join(fragments)) == WEATHER_ARGS
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_chat_answers_tool_result(oai):
    messages = [
        *user("weather?"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny and 21 degrees"},
    ]
    reply = await oai.chat.completions.create(
        model="gpt-4o", messages=messages, tools=[WEATHER_TOOL]
    )
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.content.endswith("sunny and 21 degrees")


# --- OpenAI completions, embeddings, models ---------------------------------


async def test_legacy_completions(oai):
    reply = await oai.completions.create(
        model="gpt-3.5-turbo-instruct", prompt=["alpha beta", "gamma"]
    )
    assert reply.object == "text_completion"
    assert [c.text for c in reply.choices] == [
        "This is a mock response from gpt-3.5-turbo-instruct: alpha beta",
        "This is a mock response from gpt-3.5-turbo-instruct: gamma",
    ]
    assert reply.usage.prompt_tokens == 3

    stream = await oai.completions.create(
        model="gpt-3.5-turbo-instruct",
        prompt="alpha",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == "This is a mock response from gpt-3.5-turbo-instruct: alpha"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].usage.completion_tokens == 8


async def test_embeddings_base64_default_matches_float(oai):
    decoded = await oai.embeddings.create(model="text-embedding-3-small", input=["cat", "dog"])
    floats = await oai.embeddings.create(
        model="text-embedding-3-small", input=["cat", "dog"], encoding_format="float"
    )
    again = await oai.embeddings.create(
        model="text-embedding-3-small", input="cat", encoding_format="float"
    )

    assert [d.index for d in decoded.data] == [0, 1]
    assert len(decoded.data[0].embedding) == 1536
    assert decoded.data[0].embedding == floats.data[0].embedding == again.data[0].embedding
    assert decoded.data[0].embedding != decoded.data[1].embedding
    norm = sum(v * v for v in floats.data[1].embedding) ** 0.5
    assert abs(norm - 1.0) < 1e-3
    assert decoded.usage.prompt_tokens == decoded.usage.total_tokens == 2


async def test_embeddings_dimensions_and_token_arrays(oai):
    reply = await oai.embeddings.create(
        model="text-embedding-3-large", input=[[1, 2, 3], [4]], dimensions=8
    )
    assert [len(d.embedding) for d in reply.data] == [8, 8]
    assert reply.usage.prompt_tokens == 4
    large = await oai.embeddings.create(model="text-embedding-3-large", input="x")
    assert len(large.data[0].embedding) == 3072


async def test_models(oai, ant):
    listed = await oai.models.list()
    ids = [m.id async for m in listed]
    assert "gpt-4o" in ids and "text-embedding-3-small" in ids
    model = await oai.models.retrieve("gpt-4o-mini")
    assert model.id == "gpt-4o-mini" and model.object == "model"
    with pytest.raises(openai.NotFoundError):
        await oai.models.retrieve("no-such-model")
    claude = [m.id async for m in await ant.models.list()]
    assert CLAUDE in claude


# --- Azure OpenAI -----------------------------------------------------------


async def test_azure_chat_and_embeddings(provider):
    client = openai.AsyncAzureOpenAI(
        azure_endpoint=provider.url, api_key="azure-key", api_version="2024-10-21", max_retries=0
    )
    reply = await client.chat.completions.create(
        model="my-deployment", messages=user("hello azure")
    )
    assert reply.model == "my-deployment"
    assert reply.choices[0].message.content.endswith("my-deployment: hello azure")
    emb = await client.embeddings.create(model="emb-deployment", input="x")
    assert len(emb.data[0].embedding) == 1536
    recent = provider.stats.recent[-1]
    assert recent["path"] == "/openai/deployments/emb-deployment/embeddings"
    assert recent["query"] == {"api-version": "2024-10-21"}
    assert recent["key"] == "azure-key"
    await client.close()


async def test_azure_requires_api_version_and_key(provider, http):
    url = provider.url + "/openai/deployments/d/chat/completions"
    body = {"messages": user("x")}
    async with http.post(url, json=body, headers={"api-key": "k"}) as r:
        assert r.status == 400
        assert (await r.json())["error"]["code"] == "MissingApiVersionParameter"
    async with http.post(url + "?api-version=2024-10-21", json=body) as r:
        assert r.status == 401
        assert (await r.json())["error"]["code"] == "401"


# --- Anthropic ----------------------------------------------------------------


async def test_anthropic_message(ant):
    reply = await ant.messages.create(
        model=CLAUDE,
        max_tokens=100,
        system=[{"type": "text", "text": "Be nice."}],
        messages=user("hello there claude"),
    )
    assert reply.id.startswith("msg_") and reply.type == "message" and reply.role == "assistant"
    assert reply.model == CLAUDE
    assert reply.content[0].type == "text"
    assert reply.content[0].text == f"This is a mock response from {CLAUDE}: hello there claude"
    assert reply.stop_reason == "end_turn" and reply.stop_sequence is None
    assert reply.usage.input_tokens == 2 + 3 + 3 + 3
    assert reply.usage.output_tokens == 10

    short = await ant.messages.create(model=CLAUDE, max_tokens=4, messages=user("hi"))
    assert short.stop_reason == "max_tokens" and short.content[0].text == "This is a mock"

    counted = await ant.messages.count_tokens(model=CLAUDE, messages=user("hello there claude"))
    assert counted.input_tokens == 3 + 3 + 3


async def test_anthropic_stream(ant):
    async with ant.messages.stream(
        model=CLAUDE, max_tokens=100, messages=user("stream me")
    ) as stream:
        texts = [t async for t in stream.text_stream]
        final = await stream.get_final_message()
    assert (
        "".join(texts)
        == final.content[0].text
        == f"This is a mock response from {CLAUDE}: stream me"
    )
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == len(texts)
    assert final.usage.input_tokens > 0


async def test_anthropic_stream_wire_format(provider, http):
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    body = {"model": CLAUDE, "max_tokens": 50, "messages": user("hi"), "stream": True}
    async with http.post(provider.url + "/v1/messages", json=body, headers=headers) as r:
        raw = await r.read()
    events = sse_events(raw)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    for name, data in events:
        assert json.loads(data)["type"] == name
    start = json.loads(events[0][1])["message"]
    assert start["content"] == [] and start["usage"]["output_tokens"] == 1
    delta = json.loads(events[-2][1])
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}


async def test_anthropic_tool_use(ant):
    tool = {
        "name": "get_weather",
        "description": "Weather",
        "input_schema": WEATHER_TOOL["function"]["parameters"],
    }
    reply = await ant.messages.create(
        model=CLAUDE, max_tokens=100, messages=user("weather?"), tools=[tool]
    )
    assert reply.stop_reason == "tool_use"
    (block,) = reply.content
    assert (
        block.type == "tool_use" and block.name == "get_weather" and block.id.startswith("toolu_")
    )
    assert block.input == WEATHER_ARGS

    async with ant.messages.stream(
        model=CLAUDE, max_tokens=100, messages=user("weather?"), tools=[tool]
    ) as s:
        streamed = await s.get_final_message()
    assert streamed.stop_reason == "tool_use"
    assert streamed.content[0].input == WEATHER_ARGS

    follow_up = [
        *user("weather?"),
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": block.id, "name": block.name, "input": {}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "rainy, 12C"}],
        },
    ]
    answer = await ant.messages.create(
        model=CLAUDE, max_tokens=100, messages=follow_up, tools=[tool]
    )
    assert answer.stop_reason == "end_turn"
    assert answer.content[0].text.endswith("the tool returned rainy, 12C")


async def test_anthropic_validation_and_auth(provider, ant, http):
    with pytest.raises(anthropic.BadRequestError) as exc:
        await ant.messages.create(model=CLAUDE, max_tokens=10, messages=[])
    assert "messages" in str(exc.value)
    with pytest.raises(anthropic.BadRequestError) as exc:
        await ant.messages.create(
            model=CLAUDE, max_tokens=10, messages=[{"role": "robot", "content": "x"}]
        )
    assert "messages.0.role" in str(exc.value)

    url = provider.url + "/v1/messages"
    body = {"model": CLAUDE, "messages": user("x")}
    async with http.post(
        url, json=body, headers={"x-api-key": "k", "anthropic-version": "2023-06-01"}
    ) as r:
        doc = await r.json()
        assert r.status == 400
        assert doc["type"] == "error" and doc["error"]["type"] == "invalid_request_error"
        assert doc["error"]["message"].startswith("max_tokens")
    async with http.post(url, json={**body, "max_tokens": 5}, headers={"x-api-key": "k"}) as r:
        assert r.status == 400
        assert "anthropic-version" in (await r.json())["error"]["message"]
    async with http.post(
        url, json={**body, "max_tokens": 5}, headers={"anthropic-version": "2023-06-01"}
    ) as r:
        assert r.status == 401
        assert (await r.json())["error"]["type"] == "authentication_error"
    bad_key = anthropic.AsyncAnthropic(
        base_url=provider.url, api_key="sk-ant-status-429-x", max_retries=0
    )
    with pytest.raises(anthropic.RateLimitError) as exc:
        await bad_key.messages.create(model=CLAUDE, max_tokens=10, messages=user("x"))
    assert exc.value.response.headers["retry-after"] == "1"
    await bad_key.close()


# --- errors, routing, auth ----------------------------------------------------


async def test_openai_auth_errors(provider, http):
    bad = openai.AsyncOpenAI(
        base_url=provider.url + "/v1", api_key="sk-status-401-abc", max_retries=0
    )
    with pytest.raises(openai.AuthenticationError) as exc:
        await bad.chat.completions.create(model="gpt-4o", messages=user("x"))
    assert exc.value.code == "invalid_api_key"
    await bad.close()
    async with http.post(
        provider.url + "/v1/chat/completions", json={"model": "m", "messages": user("x")}
    ) as r:
        assert r.status == 401
        doc = await r.json()
    assert set(doc["error"]) == {"message", "type", "param", "code"}
    assert provider.stats.by_key == {"sk-status-401-abc": 1}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "gpt-4o"}, "messages"),
        ({"model": "gpt-4o", "messages": "hi"}, "messages"),
        ({"model": "gpt-4o", "messages": []}, "messages"),
        ({"model": "gpt-4o", "messages": [{"content": "x"}]}, "messages[0].role"),
        ({"model": "gpt-4o", "messages": user("x"), "max_tokens": "9"}, "max_tokens"),
        (
            {"model": "gpt-4o", "messages": user("x"), "tools": [{"type": "function"}]},
            "tools[0].function.name",
        ),
    ],
)
async def test_openai_validation_names_the_field(oai, body, param):
    with pytest.raises(openai.BadRequestError) as exc:
        await oai.post("/chat/completions", body=body, cast_to=object)
    assert exc.value.param == param
    assert exc.value.type == "invalid_request_error"


async def test_invalid_json_and_unknown_control(provider, http):
    headers = {"Authorization": "Bearer k"}
    async with http.post(
        provider.url + "/v1/chat/completions", data=b"{nope", headers=headers
    ) as r:
        assert r.status == 400
    body = {"model": "gpt-4o", "messages": user("x")}
    async with http.post(
        provider.url + "/v1/chat/completions", json=body, headers={**headers, "x-mock-typo": "1"}
    ) as r:
        assert r.status == 400
        assert (await r.json())["error"]["param"] == "x-mock-typo"
    async with http.post(
        provider.url + "/v1/chat/completions",
        json={**body, "mock": {"latency_ms": "soon"}},
        headers=headers,
    ) as r:
        assert r.status == 400
        assert (await r.json())["error"]["param"] == "mock.latency_ms"


async def test_not_found_and_method_not_allowed(provider, http):
    async with http.get(provider.url + "/v1/nope", headers={"Authorization": "Bearer k"}) as r:
        assert r.status == 404
        assert (await r.json())["error"]["type"] == "invalid_request_error"
    async with http.post(provider.url + "/v1/messages/nope", json={}) as r:
        assert r.status == 404
        assert (await r.json())["error"]["type"] == "not_found_error"
    async with http.get(
        provider.url + "/v1/chat/completions", headers={"Authorization": "Bearer k"}
    ) as r:
        assert r.status == 405
        assert r.headers["Allow"] == "POST"
        assert "Invalid method" in (await r.json())["error"]["message"]
    async with http.get(provider.url + "/v1/messages") as r:
        assert r.status == 405
        assert (await r.json())["type"] == "error"


# --- controls ---------------------------------------------------------------


async def test_latency(oai):
    started = time.perf_counter()
    await oai.chat.completions.create(
        model="gpt-4o", messages=user("x"), extra_headers={"x-mock-latency-ms": "200"}
    )
    assert 0.19 <= time.perf_counter() - started < 2.0
    started = time.perf_counter()
    await oai.chat.completions.create(
        model="gpt-4o", messages=user("x"), extra_body={"mock": {"latency_ms": 150}}
    )
    assert 0.14 <= time.perf_counter() - started < 2.0


async def test_stream_chunks_and_delay(oai, ant):
    started = time.perf_counter()
    stream = await oai.chat.completions.create(
        model="gpt-4o",
        messages=user("x"),
        stream=True,
        extra_headers={"x-mock-stream-chunks": "25", "x-mock-chunk-delay-ms": "10"},
    )
    tokens = [
        c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content
    ]
    elapsed = time.perf_counter() - started
    assert len(tokens) == 25
    assert 0.22 <= elapsed < 3.0  # 24 gaps of 10 ms

    reply = await oai.chat.completions.create(
        model="gpt-4o", messages=user("x"), extra_body={"mock": {"stream_chunks": 3}}
    )
    assert reply.choices[0].message.content == "This is a"
    long = await ant.messages.create(
        model=CLAUDE, max_tokens=500, messages=user("x"), extra_body={"mock": {"stream_chunks": 40}}
    )
    assert len(long.content[0].text.split()) == 40 and long.usage.output_tokens == 40


async def test_fail_status(oai, ant):
    with pytest.raises(openai.RateLimitError) as exc:
        await oai.chat.completions.create(
            model="gpt-4o", messages=user("x"), extra_headers={"x-mock-fail-status": "429"}
        )
    assert "Mock failure (fail-status): status 429" in str(exc.value)
    assert exc.value.response.headers["retry-after"] == "1"
    with pytest.raises(openai.InternalServerError) as exc:
        await oai.embeddings.create(
            model="text-embedding-3-small",
            input="x",
            extra_headers={"x-mock-fail-status": "503", "x-mock-retry-after": "7"},
        )
    assert exc.value.status_code == 503 and exc.value.response.headers["retry-after"] == "7"
    with pytest.raises(anthropic.OverloadedError) as exc:
        await ant.messages.create(
            model=CLAUDE,
            max_tokens=5,
            messages=user("x"),
            extra_body={"mock": {"fail_status": 529}},
        )
    assert exc.value.body["error"]["type"] == "overloaded_error"


async def test_fail_first_per_mock_id(provider, oai):
    headers = {"x-mock-fail-first": "2", "x-mock-mock-id": "case-a"}
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            await oai.chat.completions.create(
                model="gpt-4o", messages=user("x"), extra_headers=headers
            )
    other = await oai.chat.completions.create(
        model="gpt-4o",
        messages=user("x"),
        extra_headers={**headers, "x-mock-mock-id": "case-b", "x-mock-fail-first": "0"},
    )
    assert other.choices[0].message.content
    ok = await oai.chat.completions.create(
        model="gpt-4o", messages=user("x"), extra_headers=headers
    )
    assert ok.choices[0].finish_reason == "stop"
    with pytest.raises(openai.RateLimitError):
        await oai.chat.completions.create(
            model="gpt-4o",
            messages=user("x"),
            extra_body={"mock": {"fail_first": 1, "mock_id": "c", "fail_status": 429}},
        )
    assert provider.stats.by_mock_id == {"case-a": 3, "case-b": 1, "c": 1}


async def test_cut_after_breaks_the_stream(provider, oai, ant):
    stream = await oai.chat.completions.create(
        model="gpt-4o", messages=user("x"), stream=True, extra_headers={"x-mock-cut-after": "3"}
    )
    seen = []
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            seen.append(chunk)
    assert len(seen) == 4  # the role chunk and three content chunks

    # The anthropic SDK lets the transport's own error through for a broken stream.
    with pytest.raises((httpx2.RemoteProtocolError, anthropic.APIConnectionError)):
        async with ant.messages.stream(
            model=CLAUDE, max_tokens=50, messages=user("x"), extra_headers={"x-mock-cut-after": "2"}
        ) as stream:
            await stream.get_final_message()

    with pytest.raises(openai.APIConnectionError):
        await oai.chat.completions.create(
            model="gpt-4o", messages=user("x"), extra_headers={"x-mock-cut-after": "0"}
        )
    assert provider.stats.streams_cut == 2
    assert provider.stats.streams_completed == 0


async def test_error_after_ends_the_stream_with_an_error_event(provider, oai, ant):
    stream = await oai.chat.completions.create(
        model="gpt-4o", messages=user("x"), stream=True, extra_body={"mock": {"error_after": 2}}
    )
    seen = []
    with pytest.raises(openai.APIError) as exc:
        async for chunk in stream:
            seen.append(chunk)
    assert len(seen) == 3
    assert "error-after" in exc.value.message

    with pytest.raises(anthropic.APIStatusError) as exc:
        async with ant.messages.stream(
            model=CLAUDE,
            max_tokens=50,
            messages=user("x"),
            extra_headers={"x-mock-error-after": "1"},
        ) as stream:
            await stream.get_final_message()
    assert "overloaded_error" in str(exc.value)
    assert provider.stats.streams_errored == 2


async def test_hang_counts_a_disconnect(provider, http):
    body = {"model": "gpt-4o", "messages": user("x")}
    with pytest.raises(asyncio.TimeoutError):
        await http.post(
            provider.url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": "Bearer k", "x-mock-hang": "1"},
            timeout=aiohttp.ClientTimeout(total=0.3),
        )
    for _ in range(100):
        if provider.stats.disconnects:
            break
        await asyncio.sleep(0.01)
    assert provider.stats.disconnects == 1
    assert provider.stats.active == 0


async def test_client_leaving_a_stream_counts_a_disconnect(provider, http):
    body = {
        "model": "gpt-4o",
        "messages": user("x"),
        "stream": True,
        "mock": {"chunk_delay_ms": 50},
    }
    async with http.post(
        provider.url + "/v1/chat/completions", json=body, headers={"Authorization": "Bearer k"}
    ) as r:
        await r.content.readline()
    for _ in range(100):
        if provider.stats.disconnects:
            break
        await asyncio.sleep(0.01)
    assert provider.stats.disconnects == 1
    assert provider.stats.streams_started == 1 and provider.stats.streams_completed == 0


# --- stats ------------------------------------------------------------------


async def test_stats_and_reset(provider, oai, http):
    await oai.chat.completions.create(
        model="gpt-4o", messages=user("x"), extra_body={"mock": {"mock_id": "s1"}}
    )
    async with http.get(provider.url + "/mock/stats") as r:
        stats = await r.json()
    assert stats["requests"] == 1
    assert stats["by_path"] == {"/v1/chat/completions": 1}
    assert stats["by_key"] == {"sk-test": 1}
    assert stats["by_mock_id"] == {"s1": 1}
    (recent,) = stats["recent"]
    assert recent["method"] == "POST" and recent["key"] == "sk-test"
    assert recent["headers"]["authorization"] == "Bearer sk-test"
    assert recent["body"]["mock"] == {"mock_id": "s1"} and recent["body"]["model"] == "gpt-4o"
    for key in ("disconnects", "streams_started", "streams_completed", "active"):
        assert stats[key] == 0

    async with http.post(provider.url + "/mock/reset") as r:
        assert r.status == 200
    assert provider.stats.snapshot()["requests"] == 0 and provider.stats.recent == []
    await oai.chat.completions.create(model="gpt-4o", messages=user("x"))
    provider.reset()
    assert provider.stats.requests == 0


async def test_recent_keeps_the_last_fifty(provider, http):
    for i in range(55):
        async with http.get(
            provider.url + f"/v1/models?i={i}", headers={"Authorization": "Bearer k"}
        ) as r:
            assert r.status == 200
    recent = provider.stats.recent
    assert len(recent) == 50 and recent[-1]["query"] == {"i": "54"} and recent[0]["body"] is None


# --- HTTP layer -------------------------------------------------------------


async def test_pipelined_requests_answer_in_order(provider):
    _, writer, responses = await open_raw(provider.port)
    auth = {"Authorization": "Bearer k"}

    def chat(word: str, **headers: str) -> bytes:
        body = orjson.dumps({"model": "gpt-4o", "messages": user(word)})
        return post("/v1/chat/completions", body, {**auth, **headers})

    # The slow first request must not be overtaken by the fast ones behind it.
    writer.write(chat("first", **{"x-mock-latency-ms": "100"}) + chat("second") + chat("third"))
    got = await responses.read(3)
    assert [json.loads(r.body)["choices"][0]["message"]["content"].split()[-1] for r in got] == [
        "first",
        "second",
        "third",
    ]
    # The connection stays open for more.
    writer.write(chat("fourth"))
    (again,) = await responses.read(1)
    assert again.status == 200
    writer.close()


async def test_pipelined_flood_without_reading(provider):
    _, writer, responses = await open_raw(provider.port)
    requests = [
        post(
            "/v1/chat/completions",
            orjson.dumps({"model": "gpt-4o", "messages": user(f"n{i}")}),
            {"Authorization": "Bearer k"},
        )
        for i in range(3000)
    ]
    writer.write(b"".join(requests))
    await asyncio.sleep(0.3)  # the server fills its buffer, then waits for us
    got = await responses.read(3000, timeout=20)
    words = [json.loads(r.body)["choices"][0]["message"]["content"].split()[-1] for r in got]
    assert words == [f"n{i}" for i in range(3000)]
    assert provider.stats.requests == 3000
    writer.close()


async def test_chunked_request_body_and_connection_close(provider):
    reader, writer, responses = await open_raw(provider.port)
    body = orjson.dumps({"model": "gpt-4o", "messages": user("chunked body")})
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: mock\r\nAuthorization: Bearer k\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    pieces = [body[:10], body[10:]]
    writer.write(head + b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n")
    (reply,) = await responses.read(1)
    assert reply.status == 200
    assert reply.headers["connection"] == "close"
    assert json.loads(reply.body)["choices"][0]["message"]["content"].endswith("chunked body")
    async with asyncio.timeout(2):
        assert await reader.read() == b""
    writer.close()


async def test_malformed_request_gets_400(provider):
    reader, writer, responses = await open_raw(provider.port)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    (reply,) = await responses.read(1)
    assert reply.status == 400
    async with asyncio.timeout(2):
        assert await reader.read() == b""
    writer.close()


async def test_slow_reader_holds_the_stream_back(provider):
    _, writer, responses = await open_raw(provider.port)
    body = orjson.dumps(
        {"model": "gpt-4o", "messages": user("x"), "stream": True, "mock": {"stream_chunks": 60000}}
    )
    writer.write(post("/v1/chat/completions", body, {"Authorization": "Bearer k"}))
    await asyncio.sleep(0.3)
    # ~12 MB of events cannot all fit in the socket buffers, so the writer must be waiting.
    assert provider.stats.streams_started == 1 and provider.stats.streams_completed == 0
    assert provider.stats.active == 1
    (reply,) = await responses.read(1, timeout=20)
    assert sse_events(reply.body)[-1] == (None, "[DONE]")
    assert provider.stats.streams_completed == 1
    writer.close()


async def test_a_thousand_concurrent_streams(provider):
    connector = aiohttp.TCPConnector(limit=0)
    body = {
        "model": "gpt-4o",
        "messages": user("x"),
        "stream": True,
        # 7 gaps of 250 ms keep every stream open long enough for all 1,000 to overlap.
        "mock": {"stream_chunks": 8, "chunk_delay_ms": 250},
    }
    peak = 0

    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> int:
            url = provider.url + "/v1/chat/completions"
            async with session.post(url, json=body, headers={"Authorization": "Bearer k"}) as r:
                return sum(1 for name, data in sse_events(await r.read()) if data != "[DONE]")

        async def watch() -> None:
            nonlocal peak
            for _ in range(200):
                peak = max(peak, provider.stats.active)
                await asyncio.sleep(0.02)

        watcher = asyncio.create_task(watch())
        async with asyncio.timeout(20):
            counts = await asyncio.gather(*(one() for _ in range(1000)))
        watcher.cancel()
    assert set(counts) == {10}  # role chunk, 8 content chunks, finish chunk
    assert peak >= 900
    assert provider.stats.streams_completed == 1000


# --- as a separate process --------------------------------------------------


async def test_serve_runs_until_cancelled():
    ready = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve("127.0.0.1", 0, ready=ready))
    url = await asyncio.wait_for(ready, timeout=5)
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-serve", max_retries=0)
    reply = await client.chat.completions.create(model="gpt-4o", messages=user("served"))
    assert reply.choices[0].message.content.endswith("served")
    await client.close()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_module_entry_point_runs_as_a_process():
    proc = subprocess.Popen(
        [sys.executable, "-m", "rainbridge.mock", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout=10)
        prefix = "rainbridge mock-provider listening on "
        assert line.startswith(prefix), line
        url = line[len(prefix) :].strip()
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-proc", max_retries=0)
        reply = await client.chat.completions.create(
            model="gpt-4o-mini", messages=user("from a process")
        )
        assert reply.choices[0].message.content.endswith("from a process")
        await client.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 10) == 0
        assert proc.stdout.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
