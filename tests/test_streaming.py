"""SSE behaviour: framing, client disconnects, upstream failures in the middle of a stream."""

import asyncio
import itertools
import json
import time

import aiohttp
import openai
import pytest

from support import GatewayProcess


@pytest.fixture(scope="module")
def gateway(mock, tmp_path_factory):
    net = {"base_url": mock.url}
    config = {
        "providers": {
            "openai": {"keys": [{"value": "sk-stream"}], "network_config": net},
            "anthropic": {"keys": [{"value": "sk-ant-stream"}], "network_config": net},
            "one": {"type": "openai", "keys": [{"value": "sk-one"}], "network_config": net, "concurrency_and_buffer_size": {"concurrency": 1, "buffer_size": 10}},
            "idle": {"type": "openai", "keys": [{"value": "sk-idle"}], "network_config": {**net, "stream_idle_timeout_in_seconds": 1}},
        }
    }
    gw = GatewayProcess(tmp_path_factory.mktemp("gw"), config)
    yield gw
    gw.stop()


BODY = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "count for me"}], "stream": True}


async def read_events(resp, limit=None):
    events = []
    buf = b""
    async for chunk in resp.content.iter_any():
        buf += chunk
        while b"\n\n" in buf:
            frame, buf = buf.split(b"\n\n", 1)
            events.append(frame)
            if limit and len(events) >= limit:
                return events
    return events


async def test_sse_frames_and_done(gateway):
    async with aiohttp.ClientSession() as s, s.post(gateway.url + "/v1/chat/completions", json=BODY, headers={"x-bf-eh-x-mock-stream-chunks": "5"}) as resp:
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = await read_events(resp)
    assert events[-1] == b"data: [DONE]"
    payloads = [json.loads(e[len(b"data: "):]) for e in events[:-1]]
    assert all(e.startswith(b"data: {") for e in events[:-1])
    content = "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads)
    assert len(content.split()) == 5


async def test_each_event_is_flushed_as_it_arrives(gateway):
    headers = {"x-bf-eh-x-mock-stream-chunks": "4", "x-bf-eh-x-mock-chunk-delay-ms": "300"}
    arrivals = []
    started = time.monotonic()
    async with aiohttp.ClientSession() as s, s.post(gateway.url + "/v1/chat/completions", json=BODY, headers=headers) as resp:
        buf = b""
        async for chunk in resp.content.iter_any():
            buf += chunk
            while b"\n\n" in buf:
                frame, buf = buf.split(b"\n\n", 1)
                if b'"content":"' in frame and b'"content":""' not in frame:
                    arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 4
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert all(g > 0.2 for g in gaps), gaps  # not buffered into one write


async def test_client_disconnect_cancels_the_upstream_at_once(gateway, mock):
    mock.reset()
    headers = {"x-bf-eh-x-mock-stream-chunks": "50", "x-bf-eh-x-mock-chunk-delay-ms": "200"}
    body = {**BODY, "model": "one/gpt-4o"}
    async with aiohttp.ClientSession() as s:
        resp = await s.post(gateway.url + "/v1/chat/completions", json=body, headers=headers)
        await read_events(resp, limit=3)
        resp.close()  # hang up with ~9 s of stream left
    deadline = time.monotonic() + 3
    while mock.stats()["disconnects"] < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    stats = mock.stats()
    assert stats["disconnects"] == 1 and stats["streams_completed"] == 0
    # The provider's only concurrency slot was released: the next request goes through now.
    async with aiohttp.ClientSession() as s, s.post(gateway.url + "/v1/chat/completions", json={**body, "stream": False}, timeout=aiohttp.ClientTimeout(total=3)) as resp:
        assert resp.status == 200


def test_upstream_error_event_mid_stream_reaches_the_openai_sdk(gateway):
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    stream = client.chat.completions.create(
        model="openai/gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True,
        extra_headers={"x-bf-eh-x-mock-stream-chunks": "10", "x-bf-eh-x-mock-error-after": "3"},
    )
    got = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            got.append(chunk)
    assert 1 <= len(got) <= 5


async def test_broken_upstream_stream_becomes_an_sse_error_event_then_ends(gateway):
    headers = {"x-bf-eh-x-mock-stream-chunks": "10", "x-bf-eh-x-mock-cut-after": "3"}
    async with aiohttp.ClientSession() as s, s.post(gateway.url + "/v1/chat/completions", json=BODY, headers=headers) as resp:
        events = await read_events(resp)
    last = json.loads(events[-1][len(b"data: "):])
    assert last["error"]["type"] == "upstream_stream_error"
    assert "openai" in last["error"]["message"]
    assert b"data: [DONE]" not in events


async def test_broken_stream_on_the_anthropic_route_is_an_error_event(gateway):
    body = {"model": "openai/gpt-4o", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"x-bf-eh-x-mock-stream-chunks": "10", "x-bf-eh-x-mock-cut-after": "3"}
    async with aiohttp.ClientSession() as s, s.post(gateway.url + "/anthropic/v1/messages", json=body, headers=headers) as resp:
        events = await read_events(resp)
    assert events[0].startswith(b"event: message_start")
    assert events[-1].startswith(b"event: error\ndata: ")
    assert json.loads(events[-1].split(b"data: ", 1)[1])["error"]["type"] == "api_error"


async def test_stream_idle_timeout_ends_a_silent_stream(gateway):
    headers = {"x-bf-eh-x-mock-stream-chunks": "5", "x-bf-eh-x-mock-chunk-delay-ms": "3000"}
    started = time.monotonic()
    async with aiohttp.ClientSession() as s, s.post(gateway.url + "/v1/chat/completions", json={**BODY, "model": "idle/gpt-4o"}, headers=headers) as resp:
        events = await read_events(resp)
    assert time.monotonic() - started < 2.8
    assert b"did not answer" in events[-1] or b"upstream_stream_error" in events[-1]
