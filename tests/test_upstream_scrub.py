"""scrub(): no part of a provider key that an upstream echoes reaches a client."""

import asyncio
import json

import aiohttp
import pytest

from rainbridge.providers.base import ProviderKey, scrub, upstream_error
from support import GatewayProcess
from test_upstream_client import Script
from test_upstream_limits import post, scripted, writes  # noqa: F401 - scripted is a fixture

KEY = "sk-proj-Xq7RmT2vLp9sKd4NfW8bZc1HyJ6uEa3GtQ0wxyz"


def key(value=KEY):
    return ProviderKey("main", value, None, 1.0)


def leaks(text: str, value: str = KEY) -> list[str]:
    """Every run of 8+ characters of the key, and its last 4, found in text."""
    found = [value[i : i + 8] for i in range(len(value) - 7) if value[i : i + 8] in text]
    return found + ([value[-4:]] if value[-4:] in text else [])


ECHOES = [
    # OpenAI today and before
    f"Incorrect API key provided: sk-proj-{'*' * 36}0wxyz. You can find your API key at https://platform.openai.com/account/api-keys.",
    f"Incorrect API key provided: {KEY[:10]}***************************************{KEY[-4:]}.",
    f"Incorrect API key provided: {KEY[:6]}***...{KEY[-4:]}.",
    # shortened with an ellipsis
    f"invalid x-api-key sk-...{KEY[-4:]}",
    f"invalid key ending in …{KEY[-6:]}",
    # whole, and pieces of it
    f"key '{KEY}' is invalid",
    f"{{\"api_key\": \"{KEY}\"}}",
    f"bad token segment {KEY[12:24]} at offset 12",
    f"prefix {KEY[:8]} / suffix {KEY[-9:]}",
    f"Authorization: Bearer {KEY[:20]}\n{KEY[20:]}",
]


@pytest.mark.parametrize("text", ECHOES)
def test_echoed_keys_masked_or_in_pieces_are_removed(text):
    assert leaks(text) or "***" in text  # the case really echoes something
    cleaned = scrub(text, key())
    assert leaks(cleaned) == [], cleaned
    assert "***" in cleaned


@pytest.mark.parametrize("text", [
    "Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM): Limit 30000, Used 29000.",
    "You can find your API key at https://platform.openai.com/account/api-keys.",
    "Please wait... retrying in 20s",
    "Loading...done",
    "The model `gpt-4o-2024-08-06` does not exist or you do not have access to it.",
])
def test_ordinary_messages_are_left_alone(text):
    assert scrub(text, key()) == text


def test_short_keys_are_replaced_whole_and_no_key_is_a_no_op():
    assert scrub("bad key abc123", key("abc123")) == "bad key ***"
    assert scrub("nothing...here", key("")) == "nothing...here"


def test_upstream_error_scrubs_and_bounds_the_message():
    body = json.dumps({"error": {"message": f"Incorrect API key provided: {KEY}" + " x" * 5000, "type": "invalid_request_error"}})
    err = upstream_error("openai", 401, body.encode(), key(), None)
    assert leaks(err.message) == []
    assert len(err.message) < 2100 and err.message.startswith("openai: Incorrect API key provided: ***")


async def test_the_gateway_passes_on_the_status_without_the_echoed_key(scripted):  # noqa: F811
    gw, replies = scripted
    secret = "sk-scripted-0123456789"
    message = f"Incorrect API key provided: {secret[:9]}***...{secret[-4:]}; also {secret[3:15]}"
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "code": "invalid_api_key"}}).encode()
    replies["badkey"] = writes(b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
    status, _, data = await post(gw, "badkey")
    assert status == 401
    text = json.loads(data)["error"]["message"]
    assert text.startswith("s: Incorrect API key provided: ***")
    assert leaks(text, secret) == [], text


async def test_a_key_echoed_in_an_anthropic_stream_error_is_scrubbed_on_the_chat_route(tmp_path):
    secret = "sk-ant-scripted-0123456789abcdef"
    events = (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","type":"message","role":"assistant",'
        b'"model":"c","content":[],"stop_reason":null,"usage":{"input_tokens":1,"output_tokens":0}}}\n\n'
        b'event: error\ndata: {"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key '
        + secret[4:20].encode() + b'...' + secret[-4:].encode() + b'"}}\n\n'
    )

    async def respond(w, n):
        w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n%s" % (len(events), events))
        return True

    srv = await Script(respond).start()
    config = {"providers": {"c": {"type": "anthropic", "keys": [{"value": secret}], "network_config": {"base_url": f"http://127.0.0.1:{srv.port}"}}}}
    gw = await asyncio.to_thread(GatewayProcess, tmp_path, config)
    try:
        body = {"model": "c/claude", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        async with aiohttp.ClientSession() as s, s.post(gw.url + "/v1/chat/completions", json=body) as resp:
            data = await resp.read()
    finally:
        await asyncio.to_thread(gw.stop)
        await srv.stop()
    last = json.loads(data.strip().split(b"\n\n")[-1][len(b"data: "):])
    assert "invalid x-api-key ***" in last["error"]["message"]
    assert leaks(last["error"]["message"], secret) == [], last
