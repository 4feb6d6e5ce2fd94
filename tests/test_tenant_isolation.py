"""Two tenants through a real gateway and one pooled upstream: each gets its own completion
and is charged its own usage, even when the upstream sends interim (1xx) responses.

The bug this guards against: A's ``100 Continue`` completed A's exchange, A's connection went
back to the pool while A's real answer was still coming, B's request took that connection,
and B received A's completion (and was charged A's tokens).
"""

import asyncio
import json

import openai
import pytest

from support import GatewayProcess, http_json, read_request

TOKEN = "iso-admin-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
USAGE = {"A": (100, 11), "B": (200, 22)}


def vk_value(name):
    return f"sk-rb-{name}-" + "0" * 24


def completion(tenant: str) -> bytes:
    prompt, out = USAGE[tenant]
    return json.dumps({
        "id": f"chatcmpl-{tenant}", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": f"answer for {tenant}"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out},
    }).encode()


def stream_events(tenant: str) -> bytes:
    prompt, out = USAGE[tenant]
    base = {"id": f"chatcmpl-{tenant}", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    events = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": f"answer for {tenant}"}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**base, "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out}},
    ]
    compact = (",", ":")  # as OpenAI sends it
    return b"".join(b"data: " + json.dumps(e, separators=compact).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


class Upstream:
    """Answers A with an interim response, then (once B's request is in, or after a bound)
    with A's completion, slowly; answers B at once."""

    def __init__(self, interim: bytes):
        self.interim = interim
        self.a_interim_sent = asyncio.Event()
        self.b_arrived = asyncio.Event()
        self.requests: list[bytes] = []

    async def handle(self, reader, writer):
        try:
            while True:
                head, body = await read_request(reader)
                self.requests.append(head + body)
                request = json.loads(body)
                tenant = "A" if "I am A" in request["messages"][0]["content"] else "B"
                await self.answer(writer, tenant, bool(request.get("stream")))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def answer(self, writer, tenant, stream):
        if tenant == "A":
            writer.write(self.interim)
            await writer.drain()
            self.a_interim_sent.set()
            try:
                await asyncio.wait_for(self.b_arrived.wait(), 1.5)
            except TimeoutError:
                pass
        else:
            self.b_arrived.set()
        body = stream_events(tenant) if stream else completion(tenant)
        ctype = b"text/event-stream" if stream else b"application/json"
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n" % (ctype, len(body)))
        await writer.drain()
        await asyncio.sleep(0.05)  # the body comes slowly, in a later read
        writer.write(body)
        await writer.drain()


@pytest.fixture
async def setup(tmp_path, request):
    upstream = Upstream(request.param)
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    limits = {"token_max_limit": 10**6, "token_reset_duration": "1h"}
    config = {
        "providers": {"up": {"type": "openai", "keys": [{"name": "k", "value": "sk-up-0123456789"}],
                             "network_config": {"base_url": f"http://127.0.0.1:{port}", "default_request_timeout_in_seconds": 10}}},
        "governance": {"is_vk_mandatory": True, "virtual_keys": [
            {"id": name, "name": name, "value": vk_value(name), "rate_limit": limits} for name in ("ta", "tb")
        ]},
    }
    gw = await asyncio.to_thread(GatewayProcess, tmp_path, config, env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
    yield gw, upstream
    await asyncio.to_thread(gw.stop)
    server.close()


def sdk(gw, name):
    return openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=vk_value(name), max_retries=0, timeout=20)


async def ask(gw, name, tenant, stream):
    messages = [{"role": "user", "content": f"I am {tenant}"}]
    async with sdk(gw, name) as client:
        if not stream:
            reply = await client.chat.completions.create(model="up/m", messages=messages)
            return reply.choices[0].message.content, reply.usage.total_tokens
        text, total = "", None
        chunks = await client.chat.completions.create(model="up/m", messages=messages, stream=True, stream_options={"include_usage": True})
        async for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
            if chunk.usage:
                total = chunk.usage.total_tokens
        return text, total


async def tokens_charged(gw, name, expected, bound=5.0):
    """The key's token usage, polled until it is ``expected`` (streams settle at their end)."""
    value = None
    for _ in range(int(bound / 0.05)):
        _, _, report = await asyncio.to_thread(http_json, "GET", f"{gw.url}/api/governance/virtual-keys/{name}/usage", None, ADMIN)
        value = report["levels"][0]["rate_limit"]["token"]["current_usage"]
        if value == expected:
            return value
        await asyncio.sleep(0.05)
    return value


INTERIMS = [
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n",
]


@pytest.mark.parametrize("setup", INTERIMS, indirect=True, ids=["100", "103"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_each_tenant_gets_its_own_completion_and_pays_its_own_usage(setup, stream):
    gw, upstream = setup
    warm = await ask(gw, "tb", "B", stream)  # leaves an idle keep-alive connection in the pool
    assert warm == ("answer for B", 222)
    upstream.b_arrived.clear()
    task_a = asyncio.create_task(ask(gw, "ta", "A", stream))
    await asyncio.wait_for(upstream.a_interim_sent.wait(), 10)
    result_b = await ask(gw, "tb", "B", stream)
    result_a = await task_a
    assert result_a == ("answer for A", 111)
    assert result_b == ("answer for B", 222)
    assert await tokens_charged(gw, "ta", 111) == 111
    assert await tokens_charged(gw, "tb", 444) == 444


@pytest.mark.parametrize("setup", INTERIMS[:1], indirect=True, ids=["100"])
async def test_a_client_asking_for_expect_100_continue_gets_400_and_the_other_tenant_is_untouched(setup):
    gw, upstream = setup
    async with sdk(gw, "ta") as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(model="up/m", messages=[{"role": "user", "content": "I am A"}],
                                                 extra_headers={"x-bf-eh-expect": "100-continue"})
    assert info.value.body["param"] == "x-bf-eh-expect"
    assert await ask(gw, "tb", "B", False) == ("answer for B", 222)
    assert all(b"I am A" not in r for r in upstream.requests)
    assert await tokens_charged(gw, "tb", 222) == 222
