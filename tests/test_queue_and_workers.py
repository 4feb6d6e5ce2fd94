"""Per-provider concurrency queue (with and without drop_excess_requests) and --workers."""

import asyncio
import os
import re
import time

import aiohttp

from support import http_json


def one_slot_config(mock_url, drop):
    return {
        "client": {"drop_excess_requests": drop},
        "providers": {
            "openai": {
                "keys": [{"value": "sk-q"}],
                "network_config": {"base_url": mock_url},
                "concurrency_and_buffer_size": {"concurrency": 1, "buffer_size": 1},
            }
        },
    }


async def fire(url, n, latency_ms):
    body = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"x-bf-eh-x-mock-latency-ms": str(latency_ms)}
    async with aiohttp.ClientSession() as s:
        async def one(i):
            await asyncio.sleep(0.05 * i)  # arrive in order
            started = time.monotonic()
            async with s.post(url + "/v1/chat/completions", json=body, headers=headers) as resp:
                return resp.status, await resp.json(), resp.headers.get("retry-after"), time.monotonic() - started

        return await asyncio.gather(*(one(i) for i in range(n)))


async def test_queue_full_with_drop_excess_answers_429_at_once(mock, start_gateway):
    gw = start_gateway(one_slot_config(mock.url, drop=True))
    results = await fire(gw.url, 3, 600)
    statuses = [r[0] for r in results]
    assert statuses[:2] == [200, 200]  # one in flight, one waiting in the buffer
    status, body, retry_after, elapsed = results[2]
    assert status == 429 and body["error"]["type"] == "queue_full"
    assert "openai" in body["error"]["message"] and retry_after == "1"
    assert elapsed < 0.3  # refused at once, not after waiting


async def test_queue_full_without_drop_waits_and_serves_everyone(mock, start_gateway):
    gw = start_gateway(one_slot_config(mock.url, drop=False))
    started = time.monotonic()
    results = await fire(gw.url, 4, 300)
    assert [r[0] for r in results] == [200] * 4
    assert time.monotonic() - started >= 4 * 0.3 * 0.95  # concurrency 1: served one after another


def test_workers_share_the_port_and_all_serve(mock, start_gateway):
    gw = start_gateway({"providers": {"openai": {"keys": [{"value": "sk-w"}], "network_config": {"base_url": mock.url}}}}, workers=2)
    gw.proc.wait_for(r"(?s)worker \d+ serving.*worker \d+ serving", timeout=20)
    pids = {int(p) for p in re.findall(r"worker (\d+) serving", gw.log())}
    assert len(pids) == 2
    for _ in range(20):
        status, _, _ = http_json("POST", gw.url + "/v1/chat/completions", {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
        assert status == 200
    # Kill one worker: the supervisor starts a new one and the port keeps answering.
    victim = sorted(pids)[0]
    os.kill(victim, 9)
    gw.proc.wait_for(rf"worker {victim} exited", timeout=10)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        pids_now = {int(p) for p in re.findall(r"worker (\d+) serving", gw.log())}
        if len(pids_now - {victim}) >= 2:
            break
        time.sleep(0.1)
    assert len(pids_now - {victim}) >= 2
    for _ in range(10):
        assert http_json("GET", gw.url + "/health")[0] == 200
