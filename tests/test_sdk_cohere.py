"""The official openai SDK against ``rainbridge serve`` in front of the fake provider speaking
Cohere's v2 API (issue 14): chat, streaming with usage, tools round trip, errors, retries, key
rotation, embeddings, and a governed request charged with Cohere's usage."""

from __future__ import annotations

import asyncio
import uuid

import anthropic
import openai
import pytest

from support import GatewayProcess, eventually, http_json, read_request

TOKEN = "cohere-admin-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
VK = "sk-rb-cohere-" + "0" * 24
PRICE = {"input_cost_per_token": 0.001, "output_cost_per_token": 0.002}
KEY = "co-key-one-0123456789"
MODEL = "command-a-03-2025"
PREAMBLE = 40  # the fake's system preamble: in usage.tokens, not in billed_units
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}}]


@pytest.fixture(scope="module")
def gateway(mock, tmp_path_factory):
    net = {"base_url": mock.url, "max_retries": 2, "retry_backoff_initial": 20, "retry_backoff_max": 50}
    config = {
        "providers": {
            "cohere": {"keys": [{"name": "one", "value": KEY, "models": ["*"], "weight": 1}], "network_config": net},
            # Bifrost's custom provider form; weight 0: the live key is only ever rotated to.
            "codead": {"custom_provider_config": {"base_provider_type": "cohere"}, "network_config": net, "keys": [
                {"name": "dead", "value": "co-status-498-dead", "weight": 1},
                {"name": "live", "value": "co-live-0123456789", "weight": 0}]},
            "cobusy": {"custom_provider_config": {"base_provider_type": "cohere"}, "network_config": net, "keys": [
                {"name": "busy", "value": "co-status-429-busy", "weight": 1},
                {"name": "spare", "value": "co-spare-0123456789", "weight": 0}]},
        },
        "pricing_overrides": {MODEL: PRICE},
        "governance": {"virtual_keys": [{"id": "cvk", "name": "cvk", "value": VK,
                                         "budget": {"max_limit": 1000, "reset_duration": "1d"},
                                         "rate_limit": {"token_max_limit": 10**6, "token_reset_duration": "1h"}}]},
    }
    gw = GatewayProcess(tmp_path_factory.mktemp("cohere"), config, env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
    yield gw
    gw.stop()


@pytest.fixture
def client(gateway):
    c = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=20)
    yield c
    c.close()


def attempts(mock, mock_id: str) -> list[dict]:
    return [r for r in mock.stats()["recent"] if r["headers"].get("x-mock-id") == mock_id]


def test_chat_reaches_v2_chat_with_a_bearer_key_and_translates_back(client, mock):
    mid = uuid.uuid4().hex
    reply = client.chat.completions.create(
        model=f"cohere/{MODEL}",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there gateway"}],
        max_tokens=50, temperature=0.2, top_p=0.9, stop=["END"], extra_headers={"x-bf-eh-x-mock-id": mid},
    )
    assert reply.choices[0].message.content == f"This is a mock response from {MODEL}: Hello there gateway"
    assert reply.choices[0].finish_reason == "stop"
    words = len(reply.choices[0].message.content.split())
    assert reply.usage.completion_tokens == words and reply.usage.total_tokens == reply.usage.prompt_tokens + words
    (seen,) = attempts(mock, mid)
    assert seen["path"] == "/v2/chat" and seen["headers"]["authorization"] == f"Bearer {KEY}"
    assert seen["body"] == {"model": MODEL, "stream": False, "temperature": 0.2, "p": 0.9, "max_tokens": 50,
                            "stop_sequences": ["END"], "messages": [{"role": "system", "content": "Be brief."},
                                                                    {"role": "user", "content": "Hello there gateway"}]}


def test_usage_is_cohere_tokens_not_billed_units(client):
    reply = client.chat.completions.create(model=f"cohere/{MODEL}", messages=[{"role": "user", "content": "one two"}])
    billed_prompt = 3 + 3 + 2  # the fake's request and message overheads and two words
    assert reply.usage.prompt_tokens == billed_prompt + PREAMBLE


def test_max_tokens_cut_is_finish_reason_length(client):
    reply = client.chat.completions.create(
        model=f"cohere/{MODEL}", messages=[{"role": "user", "content": "a long answer please"}], max_tokens=3)
    assert reply.choices[0].finish_reason == "length" and reply.choices[0].message.content == "This is a"


def test_n_above_one_is_a_400_naming_n(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=f"cohere/{MODEL}", messages=[{"role": "user", "content": "x"}], n=2)
    assert caught.value.body["param"] == "n"


def test_streaming_with_usage_ends_with_the_usage_chunk(client, mock):
    mid = uuid.uuid4().hex
    chunks = list(client.chat.completions.create(
        model=f"cohere/{MODEL}", messages=[{"role": "user", "content": "stream me please"}],
        stream=True, stream_options={"include_usage": True}, extra_headers={"x-bf-eh-x-mock-id": mid},
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"This is a mock response from {MODEL}: stream me please"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.completion_tokens == len(text.split())
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    (seen,) = attempts(mock, mid)
    assert seen["path"] == "/v2/chat" and seen["body"]["stream"] is True


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_tools_round_trip(client, mock, stream):
    """The call comes back as tool_calls (finish TOOL_CALL → tool_calls); sent back with its
    result it reaches Cohere as an assistant tool_calls message and a tool message."""
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    kwargs = {"model": f"cohere/{MODEL}", "tools": TOOLS, "tool_choice": "required"}
    if stream:
        chunks = list(client.chat.completions.create(messages=messages, stream=True, **kwargs))
        deltas = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
        call = {"id": deltas[0].id, "type": "function", "function": {
            "name": deltas[0].function.name, "arguments": "".join(d.function.arguments or "" for d in deltas)}}
        assert len(deltas) > 2  # the arguments arrive in fragments, as Cohere streams them
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        reply = client.chat.completions.create(messages=messages, **kwargs)
        call = reply.choices[0].message.tool_calls[0].model_dump(exclude_none=True)
        assert reply.choices[0].message.content is None  # the tool plan is not the answer
        finish = [reply.choices[0].finish_reason]
    assert finish == ["tool_calls"]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"mock"}'}
    assert call["id"].startswith("get_weather_")

    mid = uuid.uuid4().hex
    messages += [{"role": "assistant", "content": None, "tool_calls": [call]},
                 {"role": "tool", "tool_call_id": call["id"], "content": "sunny and 21 degrees"}]
    answer = client.chat.completions.create(messages=messages, extra_headers={"x-bf-eh-x-mock-id": mid}, **kwargs)
    assert answer.choices[0].message.content == f"This is a mock response from {MODEL}: the tool returned sunny and 21 degrees"
    (seen,) = attempts(mock, mid)
    body = seen["body"]
    assert body["tools"] == TOOLS and body["tool_choice"] == "REQUIRED"
    assert body["messages"][1:] == [
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny and 21 degrees"},
    ]


def test_cohere_400_is_a_400_in_the_openai_shape_and_not_retried(client, mock):
    mid = uuid.uuid4().hex
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=f"cohere/{MODEL}", messages=[{"role": "user", "content": "hi"}],
                                       extra_headers={"x-bf-eh-x-mock-fail-status": "400", "x-bf-eh-x-mock-id": mid})
    body = caught.value.body
    assert body["type"] == "invalid_request_error" and body["message"] == "cohere: Mock failure (fail-status): status 400"
    assert len(attempts(mock, mid)) == 1


def test_429_is_retried_then_answered_429(client, mock):
    mid = uuid.uuid4().hex
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=f"cohere/{MODEL}", messages=[{"role": "user", "content": "hi"}],
                                       extra_headers={"x-bf-eh-x-mock-fail-status": "429", "x-bf-eh-x-mock-id": mid})
    assert caught.value.body["type"] == "rate_limit_error"
    assert len(attempts(mock, mid)) == 3  # the first attempt and max_retries (2) retries


def test_a_503_then_success_is_retried_to_success(client, mock):
    mid = uuid.uuid4().hex
    reply = client.chat.completions.create(model=f"cohere/{MODEL}", messages=[{"role": "user", "content": "hi"}],
                                           extra_headers={"x-bf-eh-x-mock-fail-first": "1", "x-bf-eh-x-mock-fail-status": "503",
                                                          "x-bf-eh-x-mock-id": mid})
    assert reply.choices[0].message.content
    assert len(attempts(mock, mid)) == 2


@pytest.mark.parametrize(("provider", "first", "second"), [("codead", "co-status-498-dead", "co-live-0123456789"),
                                                            ("cobusy", "co-status-429-busy", "co-spare-0123456789")])
def test_a_dead_or_busy_key_rotates_to_the_other_key(client, mock, provider, first, second):
    """Cohere's 498 (invalid token) is treated as the 401 it means; a 429 rotates too."""
    mid = uuid.uuid4().hex
    reply = client.chat.completions.create(model=f"{provider}/{MODEL}", messages=[{"role": "user", "content": "hi"}],
                                           extra_headers={"x-bf-eh-x-mock-id": mid})
    assert reply.choices[0].message.content
    assert [a["key"] for a in attempts(mock, mid)] == [first, second]


def test_embeddings_go_through_v2_embed(client, mock):
    mid = uuid.uuid4().hex
    reply = client.embeddings.create(model="cohere/embed-v4.0", input=["one", "two words"], dimensions=256,
                                     extra_headers={"x-bf-eh-x-mock-id": mid})
    assert [d.index for d in reply.data] == [0, 1] and all(len(d.embedding) == 256 for d in reply.data)
    assert reply.usage.prompt_tokens == 3  # Cohere's billed_units.input_tokens
    (seen,) = attempts(mock, mid)
    assert seen["path"] == "/v2/embed"
    assert seen["body"] == {"model": "embed-v4.0", "texts": ["one", "two words"], "input_type": "search_document",
                            "embedding_types": ["float"], "output_dimension": 256}


def test_embeddings_input_type_can_be_chosen(client, mock):
    mid = uuid.uuid4().hex
    client.embeddings.create(model="cohere/embed-v4.0", input="a query", extra_body={"input_type": "search_query"},
                             extra_headers={"x-bf-eh-x-mock-id": mid})
    assert attempts(mock, mid)[0]["body"]["input_type"] == "search_query"


def test_model_list_includes_coheres_chat_models(gateway):
    status, _, body = http_json("GET", gateway.url + "/v1/models")
    assert status == 200 and f"cohere/{MODEL}" in {m["id"] for m in body["data"]}


def test_text_completions_are_a_400_saying_to_use_chat(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=f"cohere/{MODEL}", prompt="hi")
    assert "use chat completions" in caught.value.body["message"]


def test_a_governed_request_is_charged_with_coheres_usage(gateway):
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=VK, max_retries=0, timeout=20) as sdk:
        messages = [{"role": "user", "content": "count my tokens"}]
        whole = sdk.chat.completions.create(model=f"cohere/{MODEL}", messages=messages)
        chunks = list(sdk.chat.completions.create(model=f"cohere/{MODEL}", messages=messages, stream=True))
    assert all(c.usage is None for c in chunks)
    usage = whole.usage
    tokens = 2 * usage.total_tokens
    spend = 2 * (usage.prompt_tokens * PRICE["input_cost_per_token"] + usage.completion_tokens * PRICE["output_cost_per_token"])

    def charged():
        _, _, report = http_json("GET", f"{gateway.url}/api/governance/virtual-keys/cvk/usage", None, ADMIN)
        level = report["levels"][0]
        seen = (level["rate_limit"]["token"]["current_usage"], round(level["budgets"][0]["current_usage"], 9))
        return seen == (tokens, round(spend, 9)) or seen

    eventually(charged, 10, "the virtual key charged with Cohere's usage")


@pytest.mark.parametrize(("control", "message"), [
    ("x-bf-eh-x-mock-error-after", "provider cohere could not finish the answer (finish_reason ERROR)"),
    ("x-bf-eh-x-mock-cut-after", "provider cohere broke the stream"),
])
def test_a_stream_that_breaks_after_its_start_ends_with_an_error_event(client, control, message):
    stream = client.chat.completions.create(model=f"cohere/{MODEL}", messages=[{"role": "user", "content": "hi"}],
                                            stream=True, extra_headers={control: "3"})
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert "".join(filter(None, received)) == "This is a"
    assert message in caught.value.message


def test_anthropic_sdk_messages_reach_cohere(gateway):
    with anthropic.Anthropic(base_url=gateway.url + "/anthropic", api_key="unused", max_retries=0, timeout=20) as claude:
        reply = claude.messages.create(model=f"cohere/{MODEL}", max_tokens=100,
                                       messages=[{"role": "user", "content": "Hi from Claude"}])
    assert reply.content[0].text == f"This is a mock response from {MODEL}: Hi from Claude"
    assert reply.stop_reason == "end_turn"


# --- an upstream that answers something else than Cohere's format -------------------------------


class Scripted:
    """Answers every request with one fixed 200 response (a Cohere endpoint gone wrong)."""

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
    (b"<html>not json</html>", "text/html", False, "not in Cohere's format"),
    (b'{"message": "many"}', "application/json", False, "not in Cohere's format"),
    (b'event: content-delta\ndata: {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "Hi"}}}}\n\n',
     "text/event-stream", True, "ended the stream before the answer was complete"),
    (b'data: [1, 2]\n\n', "text/event-stream", True, "malformed stream event"),
    (b'data: {"type": "tool-call-start", "delta": {"message": {"tool_calls": 7}}}\n\n', "text/event-stream", True,
     "malformed stream event"),
])
async def test_an_answer_not_in_coheres_format_is_a_clear_error_never_a_500(tmp_path, body, content_type, stream, error):
    server = await asyncio.start_server(Scripted(body, content_type).handle, "127.0.0.1", 0)
    config = {"providers": {"cohere": {"keys": [{"value": KEY, "models": ["*"]}], "network_config": {
        "base_url": f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"}}}}
    gw = await asyncio.to_thread(GatewayProcess, tmp_path, config)
    try:
        async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=20) as sdk:
            with pytest.raises(openai.APIError) as caught:
                reply = await sdk.chat.completions.create(model=f"cohere/{MODEL}", stream=stream,
                                                          messages=[{"role": "user", "content": "hi"}])
                if stream:
                    async for _ in reply:
                        pass
            assert error in caught.value.message
            if not stream:
                assert caught.value.status_code == 502 and caught.value.body["code"] == "upstream_protocol_error"
            status, _, listed = await asyncio.to_thread(http_json, "GET", gw.url + "/v1/models")
            assert status == 200 and listed["data"] == []  # the model list says nothing, never a 500
        assert "Traceback" not in gw.log()
    finally:
        await asyncio.to_thread(gw.stop)
        server.close()
