"""The official openai SDK against ``rainbridge serve`` in front of the fake provider speaking
Gemini's API (issue 14): chat, streaming with usage, tools round trip, errors, retries, key
rotation, and a governed request charged with Gemini's usageMetadata."""

from __future__ import annotations

import asyncio
import uuid

import openai
import pytest

from support import GatewayProcess, eventually, http_json, read_request

TOKEN = "gemini-admin-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
VK = "sk-rb-gemini-" + "0" * 24
PRICE = {"input_cost_per_token": 0.001, "output_cost_per_token": 0.002}
KEY = "g-key-one-0123456789"
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False},
}}]


@pytest.fixture(scope="module")
def gateway(mock, tmp_path_factory):
    net = {"base_url": mock.url, "max_retries": 2, "retry_backoff_initial": 20, "retry_backoff_max": 50}
    config = {
        "providers": {
            "gemini": {"keys": [{"name": "one", "value": KEY, "models": ["*"], "weight": 1}], "network_config": net},
            # Weight 0: the live key is never chosen first, only rotated to (deterministic).
            "gemdead": {"type": "gemini", "network_config": net, "keys": [
                {"name": "dead", "value": "g-status-401-dead", "weight": 1}, {"name": "live", "value": "g-live-0123456789", "weight": 0}]},
            "gembusy": {"type": "gemini", "network_config": net, "keys": [
                {"name": "busy", "value": "g-status-429-busy", "weight": 1}, {"name": "spare", "value": "g-spare-0123456789", "weight": 0}]},
        },
        "pricing_overrides": {"gemini-2.5-flash": PRICE},
        "governance": {"virtual_keys": [{"id": "gvk", "name": "gvk", "value": VK,
                                         "budget": {"max_limit": 1000, "reset_duration": "1d"},
                                         "rate_limit": {"token_max_limit": 10**6, "token_reset_duration": "1h"}}]},
    }
    gw = GatewayProcess(tmp_path_factory.mktemp("gemini"), config, env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
    yield gw
    gw.stop()


@pytest.fixture
def client(gateway):
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=20)
    yield c
    c.close()


def attempts(mock, mock_id: str) -> list[dict]:
    return [r for r in mock.stats()["recent"] if r["headers"].get("x-mock-id") == mock_id]


def test_chat_reaches_generate_content_with_the_key_header_and_translates_back(client, mock):
    mid = uuid.uuid4().hex
    reply = client.chat.completions.create(
        model="gemini/gemini-2.5-flash",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there gateway"}],
        max_tokens=50, temperature=0.2, stop=["END"], extra_headers={"x-bf-eh-x-mock-id": mid},
    )
    assert reply.choices[0].message.content == "This is a mock response from gemini-2.5-flash: Hello there gateway"
    assert reply.choices[0].finish_reason == "stop"
    words = len(reply.choices[0].message.content.split())
    assert reply.usage.completion_tokens == words and reply.usage.total_tokens == reply.usage.prompt_tokens + words
    (seen,) = attempts(mock, mid)
    assert seen["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert seen["headers"]["x-goog-api-key"] == KEY and "authorization" not in seen["headers"]
    assert seen["body"]["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert seen["body"]["generationConfig"] == {"temperature": 0.2, "maxOutputTokens": 50, "stopSequences": ["END"]}


def test_max_tokens_cut_is_finish_reason_length(client):
    reply = client.chat.completions.create(
        model="gemini/gemini-2.5-flash", messages=[{"role": "user", "content": "a long answer please"}], max_tokens=3)
    assert reply.choices[0].message.content == "This is a" and reply.choices[0].finish_reason == "length"


def test_n_becomes_candidate_count_and_each_candidate_a_choice(client):
    reply = client.chat.completions.create(
        model="gemini/gemini-2.5-flash", messages=[{"role": "user", "content": "twice"}], n=2)
    assert [c.index for c in reply.choices] == [0, 1]
    assert {c.message.content for c in reply.choices} == {"This is a mock response from gemini-2.5-flash: twice"}


def test_streaming_with_usage_ends_with_the_usage_chunk(client, mock):
    mid = uuid.uuid4().hex
    chunks = list(client.chat.completions.create(
        model="gemini/gemini-2.5-flash", messages=[{"role": "user", "content": "stream me please"}],
        stream=True, stream_options={"include_usage": True}, extra_headers={"x-bf-eh-x-mock-id": mid},
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "This is a mock response from gemini-2.5-flash: stream me please"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.completion_tokens == len(text.split())
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    (seen,) = attempts(mock, mid)
    assert seen["path"] == "/v1beta/models/gemini-2.5-flash:streamGenerateContent" and seen["query"] == {"alt": "sse"}


def test_streaming_without_usage_has_no_usage_chunk(client):
    chunks = list(client.chat.completions.create(
        model="gemini/gemini-2.5-flash", messages=[{"role": "user", "content": "x"}], stream=True))
    assert all(c.choices for c in chunks) and chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize("model", ["gemini-2.5-flash", "gemini-3-pro-preview"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_tools_round_trip(client, mock, model, stream):
    """The call comes back as tool_calls; sent back with its result (and, for Gemini 3, the
    thought signature the fake provider insists on) it reaches Gemini as functionCall and
    functionResponse, and the answer uses the result."""
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    kwargs = {"model": f"gemini/{model}", "tools": TOOLS, "tool_choice": "required"}
    if stream:
        chunks = list(client.chat.completions.create(messages=messages, stream=True, **kwargs))
        (delta,) = [c.choices[0].delta for c in chunks if c.choices and c.choices[0].delta.tool_calls]
        call = delta.tool_calls[0].model_dump(exclude_none=True)
        call.pop("index")
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        reply = client.chat.completions.create(messages=messages, **kwargs)
        call = reply.choices[0].message.tool_calls[0].model_dump(exclude_none=True)
        finish = [reply.choices[0].finish_reason]
    assert finish == ["tool_calls"]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"mock"}'}
    assert ("extra_content" in call) == model.startswith("gemini-3")

    mid = uuid.uuid4().hex
    messages += [{"role": "assistant", "content": None, "tool_calls": [call]},
                 {"role": "tool", "tool_call_id": call["id"], "content": "sunny and 21 degrees"}]
    answer = client.chat.completions.create(messages=messages, extra_headers={"x-bf-eh-x-mock-id": mid}, **kwargs)
    assert answer.choices[0].message.content == f"This is a mock response from {model}: the tool returned sunny and 21 degrees"
    (seen,) = attempts(mock, mid)
    body = seen["body"]
    assert body["tools"] == [{"functionDeclarations": [{"name": "get_weather", "description": "Weather in a city",
                                                        "parametersJsonSchema": TOOLS[0]["function"]["parameters"]}]}]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    model_turn, result_turn = body["contents"][1:]
    assert model_turn["role"] == "model" and model_turn["parts"][0]["functionCall"] == {"name": "get_weather", "args": {"city": "mock"}}
    assert result_turn == {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"output": "sunny and 21 degrees"}}}]}


def test_gemini_3_call_sent_back_without_its_signature_is_geminis_400(client):
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"x"}'}}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gemini/gemini-3-pro-preview", tools=TOOLS, messages=[
            {"role": "user", "content": "Weather?"}, {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "rain"}])
    assert "thought_signature" in caught.value.body["message"]


def test_a_tool_message_for_an_unknown_call_is_a_400_naming_it(client, mock):
    before = mock.stats()["requests"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gemini/gemini-2.5-flash", messages=[
            {"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "call_nowhere", "content": "x"}])
    assert caught.value.body["param"] == "messages[1].tool_call_id"
    assert mock.stats()["requests"] == before  # refused before any upstream call


def test_invalid_argument_from_gemini_is_a_400_in_the_openai_shape(client, mock):
    mid = uuid.uuid4().hex
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gemini/gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}],
                                       extra_headers={"x-bf-eh-x-mock-fail-status": "400", "x-bf-eh-x-mock-id": mid})
    body = caught.value.body
    assert body["type"] == "invalid_request_error" and body["code"] == "INVALID_ARGUMENT"
    assert body["message"] == "gemini: Mock failure (fail-status): status 400"
    assert len(attempts(mock, mid)) == 1  # a 400 is not retried


def test_429_is_retried_then_answered_429_with_geminis_retry_delay(client, mock):
    mid = uuid.uuid4().hex
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gemini/gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}],
                                       extra_headers={"x-bf-eh-x-mock-fail-status": "429", "x-bf-eh-x-mock-id": mid})
    assert caught.value.body["code"] == "RESOURCE_EXHAUSTED" and caught.value.body["type"] == "rate_limit_error"
    assert caught.value.response.headers["retry-after"] == "1"  # from RetryInfo.retryDelay "1s"
    assert len(attempts(mock, mid)) == 3  # the first attempt and max_retries (2) retries


def test_a_503_then_success_is_retried_to_success(client, mock):
    mid = uuid.uuid4().hex
    reply = client.chat.completions.create(model="gemini/gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}],
                                           extra_headers={"x-bf-eh-x-mock-fail-first": "1", "x-bf-eh-x-mock-fail-status": "503",
                                                          "x-bf-eh-x-mock-id": mid})
    assert reply.choices[0].message.content
    assert len(attempts(mock, mid)) == 2


@pytest.mark.parametrize(("provider", "first", "second"), [("gemdead", "g-status-401-dead", "g-live-0123456789"),
                                                            ("gembusy", "g-status-429-busy", "g-spare-0123456789")])
def test_a_dead_or_busy_key_rotates_to_the_other_key(client, mock, provider, first, second):
    """Gemini answers a bad key 400 API_KEY_INVALID (the gateway treats it as the 401 it is)
    and an exhausted one 429; both move the request to the provider's other key."""
    mid = uuid.uuid4().hex
    reply = client.chat.completions.create(model=f"{provider}/gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}],
                                           extra_headers={"x-bf-eh-x-mock-id": mid})
    assert reply.choices[0].message.content
    assert [a["key"] for a in attempts(mock, mid)] == [first, second]


def test_embeddings_go_through_batch_embed_contents(client, mock):
    mid = uuid.uuid4().hex
    reply = client.embeddings.create(model="gemini/gemini-embedding-001", input=["one", "two"], dimensions=8,
                                     extra_headers={"x-bf-eh-x-mock-id": mid})
    assert [d.index for d in reply.data] == [0, 1] and all(len(d.embedding) == 8 for d in reply.data)
    (seen,) = attempts(mock, mid)
    assert seen["path"] == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert seen["body"]["requests"][0] == {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "one"}]},
                                           "outputDimensionality": 8}


def test_model_list_includes_geminis_models(gateway):
    status, _, body = http_json("GET", gateway.url + "/v1/models")
    assert status == 200 and "gemini/gemini-2.5-flash" in {m["id"] for m in body["data"]}


def test_a_governed_request_is_charged_with_geminis_usage(gateway):
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=VK, max_retries=0, timeout=20) as sdk:
        messages = [{"role": "user", "content": "count my tokens"}]
        whole = sdk.chat.completions.create(model="gemini/gemini-2.5-flash", messages=messages)
        # The client asks for no usage: the gateway asks Gemini's stream for it and still charges it.
        chunks = list(sdk.chat.completions.create(model="gemini/gemini-2.5-flash", messages=messages, stream=True))
    assert all(c.usage is None for c in chunks)
    usage = whole.usage  # the same prompt streamed costs the same
    tokens = 2 * usage.total_tokens
    spend = 2 * (usage.prompt_tokens * PRICE["input_cost_per_token"] + usage.completion_tokens * PRICE["output_cost_per_token"])

    def charged():
        _, _, report = http_json("GET", f"{gateway.url}/api/governance/virtual-keys/gvk/usage", None, ADMIN)
        level = report["levels"][0]
        seen = (level["rate_limit"]["token"]["current_usage"], round(level["budgets"][0]["current_usage"], 9))
        return seen == (tokens, round(spend, 9)) or seen

    eventually(charged, 10, "the virtual key charged with Gemini's usage")


@pytest.mark.parametrize(("control", "message"), [
    ("x-bf-eh-x-mock-error-after", "gemini: The model is overloaded. Please try again later."),
    ("x-bf-eh-x-mock-cut-after", "provider gemini broke the stream"),
])
def test_a_stream_that_breaks_after_its_start_ends_with_an_error_event(client, control, message):
    stream = client.chat.completions.create(model="gemini/gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}],
                                            stream=True, extra_headers={control: "3"})
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert "".join(filter(None, received)) == "This is a"
    assert message in caught.value.message


# --- the anthropic SDK on the Messages route, translated to chat and then to Gemini --------------


@pytest.fixture
def claude(gateway):
    import anthropic

    c = anthropic.Anthropic(base_url=gateway.url + "/anthropic", api_key="unused", max_retries=0, timeout=20)
    yield c
    c.close()


def test_anthropic_sdk_messages_reach_gemini(claude):
    reply = claude.messages.create(model="gemini/gemini-2.5-flash", max_tokens=100,
                                   messages=[{"role": "user", "content": "Hello from claude land"}])
    assert reply.content[0].text == "This is a mock response from gemini-2.5-flash: Hello from claude land"
    assert reply.stop_reason == "end_turn" and reply.usage.output_tokens == len(reply.content[0].text.split())


def test_anthropic_sdk_streaming_tool_use_reaches_gemini(claude):
    tool = {"name": "get_weather", "input_schema": TOOLS[0]["function"]["parameters"]}
    with claude.messages.stream(model="gemini/gemini-2.5-flash", max_tokens=100, tools=[tool],
                                messages=[{"role": "user", "content": "weather?"}]) as stream:
        final = stream.get_final_message()
    (block,) = final.content
    assert block.type == "tool_use" and block.input == {"city": "mock"} and final.stop_reason == "tool_use"


# --- an upstream that does not speak Gemini ------------------------------------------------------


class Scripted:
    """An upstream answering every request 200 with a fixed body."""

    def __init__(self, body: bytes, content_type: str):
        self.response = (b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s"
                         % (content_type.encode(), len(body), body))

    async def handle(self, reader, writer):
        try:
            while True:
                await read_request(reader)
                writer.write(self.response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.mark.parametrize(("body", "content_type", "stream", "error"), [
    (b"<html>not json</html>", "text/html", False, "not in Gemini's format"),
    (b'{"candidates": "many"}', "application/json", False, "not in Gemini's format"),
    (b'data: {"candidates": [{"content": {"parts": [{"text": "Hi"}]}}]}\r\n\r\n', "text/event-stream", True,
     "ended the stream before the answer was complete"),
    (b'data: {"candidates": [7]}\r\n\r\n', "text/event-stream", True, "malformed stream event"),
])
async def test_an_answer_not_in_geminis_format_is_a_clear_error_never_a_500(tmp_path, body, content_type, stream, error):
    server = await asyncio.start_server(Scripted(body, content_type).handle, "127.0.0.1", 0)
    config = {"providers": {"gemini": {"keys": [{"value": KEY}], "network_config": {
        "base_url": f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"}}}}
    gw = await asyncio.to_thread(GatewayProcess, tmp_path, config)
    try:
        async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=20) as sdk:
            with pytest.raises(openai.APIError) as caught:
                reply = await sdk.chat.completions.create(model="gemini/gemini-2.5-flash", stream=stream,
                                                          messages=[{"role": "user", "content": "hi"}])
                if stream:
                    async for _ in reply:
                        pass
        assert error in caught.value.message
        if not stream:
            assert caught.value.status_code == 502 and caught.value.body["code"] == "upstream_protocol_error"
        assert "Traceback" not in gw.log()
    finally:
        await asyncio.to_thread(gw.stop)
        server.close()
