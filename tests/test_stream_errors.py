"""An upstream's error event in the middle of a stream reaches the client as our SSE error
event, scrubbed of the provider key, on both routes; a native Anthropic client's
``anthropic-version`` replaces ours instead of following it as a second header."""

import asyncio
import json

import aiohttp
import pytest

from support import GatewayProcess, read_request

PROVIDER_KEY = "sk-up-0123456789abcdef"
ECHO = f"Incorrect API key provided: {PROVIDER_KEY} (also {PROVIDER_KEY[:12]}… and ...{PROVIDER_KEY[-6:]})"


def sse(event: str | None, data: dict) -> bytes:
    line = b"event: %s\n" % event.encode() if event else b""
    return line + b"data: " + json.dumps(data).encode() + b"\n\n"


OPENAI_STREAM = (
    sse(None, {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
               "choices": [{"index": 0, "delta": {"role": "assistant", "content": "par"}, "finish_reason": None}]})
    + sse(None, {"error": {"message": ECHO, "type": "invalid_request_error"}})
)
ANTHROPIC_STREAM = (
    sse("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [],
        "stop_reason": None, "usage": {"input_tokens": 5, "output_tokens": 0}}})
    + sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": ECHO}})
)


class Upstream:
    """Streams a chunk, then an error event echoing the key; keeps every request head."""

    def __init__(self):
        self.heads: list[bytes] = []

    async def handle(self, reader, writer):
        try:
            while True:
                head, _ = await read_request(reader)
                self.heads.append(head)
                body = ANTHROPIC_STREAM if b"/v1/messages" in head.split(b"\r\n")[0] else OPENAI_STREAM
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def setup(tmp_path):
    upstream = Upstream()
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    key = [{"name": "k", "value": PROVIDER_KEY}]
    config = {"providers": {
        "oa": {"type": "openai", "keys": key, "network_config": {"base_url": base}},
        "an": {"type": "anthropic", "keys": key, "network_config": {"base_url": base}},
    }}
    gw = await asyncio.to_thread(GatewayProcess, tmp_path, config)
    yield gw, upstream
    await asyncio.to_thread(gw.stop)
    server.close()


async def post_stream(url: str, body: dict, headers: dict | None = None) -> str:
    async with aiohttp.ClientSession() as s, s.post(url, json=body, headers=headers or {}) as resp:
        assert resp.status == 200
        return await resp.text()


def assert_scrubbed(text: str) -> None:
    assert PROVIDER_KEY[:8] not in text and PROVIDER_KEY[-6:] not in text, text
    assert "Incorrect API key provided" in text  # the message itself still reaches the client


async def test_openai_stream_error_event_is_relayed_scrubbed_and_ends_the_stream(setup):
    gw, _ = setup
    text = await post_stream(gw.url + "/v1/chat/completions", {
        "model": "oa/m", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    frames = [f for f in text.split("\n\n") if f]
    assert json.loads(frames[0].removeprefix("data: "))["choices"][0]["delta"]["content"] == "par"
    error = json.loads(frames[-1].removeprefix("data: "))
    assert error["error"]["type"] == "invalid_request_error"
    assert_scrubbed(error["error"]["message"])
    assert "[DONE]" not in text  # the stream broke: no success marker after an error


async def test_native_anthropic_error_event_is_relayed_scrubbed(setup):
    gw, _ = setup
    text = await post_stream(gw.url + "/anthropic/v1/messages", {
        "model": "an/m", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert text.startswith("event: message_start\n")
    name, data = text.rstrip("\n").split("\n\n")[-1].split("\n")
    assert name == "event: error"
    error = json.loads(data.removeprefix("data: "))
    assert error["type"] == "error" and error["error"]["type"] == "overloaded_error"
    assert_scrubbed(error["error"]["message"])


async def test_native_client_anthropic_version_replaces_ours(setup):
    gw, upstream = setup
    body = {"model": "an/m", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    await post_stream(gw.url + "/anthropic/v1/messages", body, {"anthropic-version": "2099-01-01"})
    await post_stream(gw.url + "/anthropic/v1/messages", body)
    with_client, without = ([line for line in head.split(b"\r\n") if line.lower().startswith(b"anthropic-version:")]
                            for head in upstream.heads[-2:])
    assert [v.split(b":", 1)[1].strip() for v in with_client] == [b"2099-01-01"]
    assert [v.split(b":", 1)[1].strip() for v in without] == [b"2023-06-01"]


async def test_openai_error_event_translated_to_the_anthropic_route_is_scrubbed(setup):
    gw, _ = setup
    text = await post_stream(gw.url + "/anthropic/v1/messages", {
        "model": "oa/m", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    name, data = text.rstrip("\n").split("\n\n")[-1].split("\n")
    assert name == "event: error"
    error = json.loads(data.removeprefix("data: "))
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert_scrubbed(error["error"]["message"])
