"""The fake provider's Gemini API, driven by Google's own SDK (google-genai) and raw HTTP: if
the official client understands every answer, the fake speaks the wire format it claims."""

from __future__ import annotations

import orjson
import pytest
from google import genai
from google.genai import errors, types

from mock_helpers import open_raw, post
from rainbridge.mock import MockProvider

KEY = "g-test-key"
WEATHER = types.FunctionDeclaration(
    name="get_weather", description="Weather for a city",
    parameters_json_schema={"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                            "required": ["city", "days"]},
)
NO_AFC = types.AutomaticFunctionCallingConfig(disable=True)


@pytest.fixture
async def provider():
    mock = MockProvider(port=0)
    await mock.start()
    try:
        yield mock
    finally:
        await mock.stop()


@pytest.fixture
def client(provider):
    return genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=provider.url, api_version="v1beta")).aio


async def test_generate_content_answers_with_text_and_usage(client, provider):
    reply = await client.models.generate_content(
        model="gemini-2.5-flash", contents="Hello there fake gemini",
        config=types.GenerateContentConfig(system_instruction="Be brief", temperature=0.1, max_output_tokens=50))
    assert reply.text == "This is a mock response from gemini-2.5-flash: Hello there fake gemini"
    assert reply.candidates[0].finish_reason == types.FinishReason.STOP
    usage = reply.usage_metadata
    assert usage.candidates_token_count == len(reply.text.split())
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count
    seen = provider.stats.snapshot()["recent"][-1]
    assert seen["path"] == "/v1beta/models/gemini-2.5-flash:generateContent" and seen["key"] == KEY
    assert seen["body"]["generationConfig"] == {"temperature": 0.1, "maxOutputTokens": 50}


async def test_max_output_tokens_cuts_with_max_tokens(client):
    reply = await client.models.generate_content(model="gemini-2.5-flash", contents="x",
                                                 config=types.GenerateContentConfig(max_output_tokens=2))
    assert reply.text == "This is" and reply.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS


async def test_stream_sends_one_event_per_token_then_the_finish_and_final_usage(client):
    chunks = [c async for c in await client.models.generate_content_stream(model="gemini-2.5-flash", contents="stream this")]
    assert "".join(c.text or "" for c in chunks) == "This is a mock response from gemini-2.5-flash: stream this"
    assert [c.candidates[0].finish_reason for c in chunks if c.candidates[0].finish_reason] == [types.FinishReason.STOP]
    assert chunks[-1].usage_metadata.candidates_token_count == len(chunks) - 1


async def test_function_call_with_tools_and_its_result_answered(client):
    config = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[WEATHER])], automatic_function_calling=NO_AFC)
    first = await client.models.generate_content(model="gemini-2.5-flash", contents="Weather in Paris?", config=config)
    (call,) = first.function_calls
    assert (call.name, call.args) == ("get_weather", {"city": "mock", "days": 1})
    contents = [types.Content(role="user", parts=[types.Part(text="Weather in Paris?")]), first.candidates[0].content,
                types.Content(role="user", parts=[types.Part.from_function_response(name="get_weather", response={"output": "sunny"})])]
    second = await client.models.generate_content(model="gemini-2.5-flash", contents=contents, config=config)
    assert second.text == "This is a mock response from gemini-2.5-flash: the tool returned sunny"


async def test_mode_none_answers_text_and_allowed_names_pick_the_function(client):
    other = types.FunctionDeclaration(name="get_time", parameters_json_schema={"type": "object"})
    tools = [types.Tool(function_declarations=[WEATHER, other])]
    def config(mode, names=None):
        calling = types.FunctionCallingConfig(mode=mode, allowed_function_names=names)
        return types.GenerateContentConfig(tools=tools, tool_config=types.ToolConfig(function_calling_config=calling),
                                           automatic_function_calling=NO_AFC)
    plain = await client.models.generate_content(model="gemini-2.5-flash", contents="hi", config=config("NONE"))
    assert plain.text and not plain.function_calls
    chosen = await client.models.generate_content(model="gemini-2.5-flash", contents="hi", config=config("ANY", ["get_time"]))
    assert chosen.function_calls[0].name == "get_time"


async def test_gemini_3_signs_its_calls_and_refuses_a_call_sent_back_unsigned(client):
    config = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[WEATHER])], automatic_function_calling=NO_AFC)
    first = await client.models.generate_content(model="gemini-3-pro-preview", contents="Weather?", config=config)
    signed = first.candidates[0].content
    assert signed.parts[0].thought_signature
    answer = types.Content(role="user", parts=[types.Part.from_function_response(name="get_weather", response={"output": "rain"})])
    ok = await client.models.generate_content(model="gemini-3-pro-preview", contents=[
        types.Content(role="user", parts=[types.Part(text="Weather?")]), signed, answer], config=config)
    assert ok.text.endswith("the tool returned rain")
    unsigned = types.Content(role="model", parts=[types.Part(function_call=signed.parts[0].function_call)])
    with pytest.raises(errors.ClientError) as caught:
        await client.models.generate_content(model="gemini-3-pro-preview", contents=[
            types.Content(role="user", parts=[types.Part(text="Weather?")]), unsigned, answer], config=config)
    assert caught.value.code == 400 and "thought_signature" in caught.value.message


async def test_embeddings_batch_and_dimensions(client):
    reply = await client.models.embed_content(model="gemini-embedding-001", contents=["one", "two"],
                                              config=types.EmbedContentConfig(output_dimensionality=16))
    assert [len(e.values) for e in reply.embeddings] == [16, 16] and reply.embeddings[0].values != reply.embeddings[1].values


async def test_models_list_and_get(client):
    names = [m.name async for m in await client.models.list()]
    assert "models/gemini-2.5-flash" in names
    assert (await client.models.get(model="gemini-2.5-pro")).display_name == "Gemini 2.5 Pro"


@pytest.mark.parametrize(("key", "status", "name"), [
    ("g-status-401-bad", 400, "INVALID_ARGUMENT"),  # Google's answer to a bad key
    ("g-status-429-busy", 429, "RESOURCE_EXHAUSTED"),
    ("g-status-503-down", 503, "UNAVAILABLE"),
])
async def test_errors_are_in_googles_shape(provider, key, status, name):
    client = genai.Client(api_key=key, http_options=types.HttpOptions(base_url=provider.url, api_version="v1beta")).aio
    kind = errors.ClientError if status < 500 else errors.ServerError
    with pytest.raises(kind) as caught:
        await client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert (caught.value.code, caught.value.status) == (status, name)


async def raw(provider, path: str, body: dict, headers: dict) -> tuple[int, dict, bytes]:
    _reader, writer, responses = await open_raw(provider.port)
    writer.write(post(path, orjson.dumps(body), headers, close=True))
    (resp,) = await responses.read()
    writer.close()
    return resp.status, resp.headers, resp.body


BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


async def test_a_429_carries_retry_info_and_no_retry_after_header(provider):
    status, headers, body = await raw(provider, "/v1beta/models/gemini-2.5-flash:generateContent", BODY,
                                      {"x-goog-api-key": KEY, "x-mock-fail-status": "429", "x-mock-retry-after": "7"})
    assert status == 429 and "retry-after" not in headers
    assert orjson.loads(body)["error"]["details"] == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]


@pytest.mark.parametrize(("headers", "path", "body", "status", "message"), [
    ({}, ":generateContent", BODY, 403, "Method doesn't allow unregistered callers"),
    ({"authorization": "Bearer " + KEY}, ":generateContent", BODY, 403, "unregistered callers"),  # Bearer is OAuth
    ({"x-goog-api-key": KEY}, ":generateContent", {**BODY, "generationConfig": {"max_tokens": 5}}, 400,
     'Unknown name "max_tokens" at \'generation_config\''),
    ({"x-goog-api-key": KEY}, ":generateContent", {"contents": []}, 400, "contents is not specified"),
    ({"x-goog-api-key": KEY}, ":generateContent", {"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, 400, "valid role"),
])
async def test_refusals(provider, headers, path, body, status, message):
    got, _, raw_body = await raw(provider, "/v1beta/models/gemini-2.5-flash" + path, body, headers)
    error = orjson.loads(raw_body)["error"]
    assert (got, error["code"]) == (status, status) and message in error["message"]


async def test_the_v1_api_version_is_served_too(provider):
    client = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=provider.url, api_version="v1")).aio
    assert (await client.models.generate_content(model="gemini-2.5-flash", contents="v1 please")).text.endswith("v1 please")


async def test_key_in_the_query_string_is_accepted(provider):
    status, _, body = await raw(provider, f"/v1beta/models/gemini-2.5-flash:generateContent?key={KEY}", BODY, {})
    assert status == 200 and orjson.loads(body)["candidates"][0]["finishReason"] == "STOP"


async def test_stream_is_crlf_separated_sse_with_alt_sse_and_a_json_array_without(provider):
    path = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    status, headers, body = await raw(provider, path + "?alt=sse", BODY, {"x-goog-api-key": KEY})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [orjson.loads(block[len(b"data: "):]) for block in body.split(b"\r\n\r\n") if block]
    assert events[-1]["candidates"][0]["finishReason"] == "STOP" and "candidatesTokenCount" in events[-1]["usageMetadata"]
    status, headers, body = await raw(provider, path, BODY, {"x-goog-api-key": KEY})
    assert status == 200 and [e["candidates"][0].get("finishReason") for e in orjson.loads(body)][-1] == "STOP"


async def test_error_after_sends_geminis_error_event(provider):
    status, _, body = await raw(provider, "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", BODY,
                                {"x-goog-api-key": KEY, "x-mock-error-after": "2"})
    blocks = [block for block in body.split(b"\r\n\r\n") if block]
    assert status == 200 and len(blocks) == 3
    assert orjson.loads(blocks[-1][len(b"data: "):]) == {"error": {"code": 503, "status": "UNAVAILABLE",
                                                                   "message": "The model is overloaded. Please try again later."}}
