"""Stream usage is counted however the upstream spaces its JSON, and the usage chunk the
gateway asked for (the client did not) never reaches the client.

Providers differ in how they write JSON: OpenAI sends it compact, others (and Python servers)
write ``"usage": {`` with spaces; both are the same usage and must be charged.
"""

import asyncio
import json

import openai
import pytest

from support import GatewayProcess, eventually, http_json, read_request

TOKEN = "usage-admin-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
KEY = "sk-rb-usage-" + "0" * 24


def stream_body(separators) -> bytes:
    base = {"id": "chatcmpl-u", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    events = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": None}], "usage": None},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None},
        {**base, "choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 7, "total_tokens": 37}},
    ]
    frames = (b"data: " + json.dumps(e, separators=separators).encode() + b"\n\n" for e in events)
    return b"".join(frames) + b"data: [DONE]\n\n"


class Upstream:
    def __init__(self, separators):
        self.body = stream_body(separators)
        self.asked_for_usage: list[bool] = []

    async def handle(self, reader, writer):
        try:
            while True:
                _, body = await read_request(reader)
                request = json.loads(body)
                self.asked_for_usage.append(request.get("stream_options", {}).get("include_usage") is True)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(self.body), self.body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture(params=[(",", ":"), (", ", ": ")], ids=["compact", "spaced"])
async def setup(tmp_path, request):
    upstream = Upstream(request.param)
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = {
        "providers": {"up": {"type": "openai", "keys": [{"name": "k", "value": "sk-up-0123456789"}],
                             "network_config": {"base_url": f"http://127.0.0.1:{port}"}}},
        "governance": {"virtual_keys": [{"id": "vk", "name": "vk", "value": KEY,
                                         "rate_limit": {"token_max_limit": 10**6, "token_reset_duration": "1h"}}]},
    }
    gw = await asyncio.to_thread(GatewayProcess, tmp_path, config, env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
    yield gw, upstream
    await asyncio.to_thread(gw.stop)
    server.close()


def tokens_used(gw) -> int:
    _, _, report = http_json("GET", f"{gw.url}/api/governance/virtual-keys/vk/usage", None, ADMIN)
    return report["levels"][0]["rate_limit"]["token"]["current_usage"]


async def test_stream_usage_is_charged_and_the_usage_chunk_we_asked_for_is_not_relayed(setup):
    gw, upstream = setup
    chunks = []
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0, timeout=20) as client:
        stream = await client.chat.completions.create(model="up/m", messages=[{"role": "user", "content": "x"}], stream=True)
        async for chunk in stream:
            chunks.append(chunk)
    assert upstream.asked_for_usage == [True]  # the token limit needs it; the client did not ask
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "hi"
    assert all(c.choices for c in chunks), "the usage-only chunk reached a client that did not ask for it"
    await asyncio.to_thread(eventually, lambda: tokens_used(gw) == 37, 5.0, "the stream's 37 tokens charged")
