"""Every governed request is settled, however it ends (issue 13, durability): a stream cut
by the graceful-shutdown cap, by the client leaving or by the upstream is charged what it
used (the provider's usage if it came, else an estimate: never nothing), a cancellation
racing the normal end charges once, and at shutdown the final flush comes before the leave.

README (Governance): a request cut before its usage arrived is charged the prompt (request
bytes / 4) and the text relayed so far (bytes / 4)."""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import signal
import threading
import time

import asyncpg
import orjson
import pytest

from rainbridge.cluster.service import ClusterEnv
from rainbridge.config.load import load_data
from rainbridge.gateway.gateway import Gateway
from rainbridge.gateway.record import RequestRecord
from rainbridge.server.app import App
from support import eventually, free_port, http_json, provider_config

KEY = "sk-rb-settle-" + "0" * 24
VK = "vk-settle"
TOKEN = "settle-admin-token"
MAX_TOKENS = 50_000  # the reservation a cut stream must not be charged in full
CAP = 1.0  # RAINBRIDGE_GRACEFUL_TIMEOUT_SECONDS of the shutdown test
SLOW = {"stream_chunks": 100_000, "chunk_delay_ms": 20}  # a stream of half an hour


def governed_config(mock_url: str, **extra) -> dict:
    limits = {"request_max_limit": 1000, "request_reset_duration": "1h",
              "token_max_limit": 10**7, "token_reset_duration": "1h"}
    return {**provider_config(mock_url),
            "governance": {"virtual_keys": [{"id": VK, "name": "settle", "value": KEY, "rate_limit": limits}]},
            **extra}


ROUTES = {
    # OpenAI chat: usage only in the last chunk (the gateway asks for it): a cut stream has none.
    "openai": ("/v1/chat/completions", {"model": "openai/gpt-4o"}),
    # Anthropic native: message_start reports the input and 1 output token, the rest at the end.
    "anthropic": ("/anthropic/v1/messages", {"model": "anthropic/claude-3-5-sonnet-latest"}),
}


def stream_request(route: str, mock: dict) -> tuple[str, bytes]:
    path, fields = ROUTES[route]
    body = {**fields, "max_tokens": MAX_TOKENS, "stream": True, "mock": mock,
            "messages": [{"role": "user", "content": "tell me a long story"}]}
    return path, json.dumps(body).encode()


class Relayed:
    """What a client saw of a stream: the generated text and the prompt tokens reported."""

    def __init__(self) -> None:
        self.text = b""
        self.deltas = 0
        self.prompt_tokens = 0

    def see(self, line: bytes) -> None:
        if not line.startswith(b"data: {"):
            return
        event = json.loads(line[6:])
        pieces = [c.get("delta", {}).get("content") for c in event.get("choices", [])]
        if event.get("type") == "content_block_delta":
            pieces.append(event["delta"].get("text"))
        if event.get("type") == "message_start":
            self.prompt_tokens = event["message"]["usage"]["input_tokens"]
        for piece in pieces:
            if piece:
                self.text += piece.encode()
                self.deltas += 1

    def least_charge(self) -> int:
        """The least a cut stream may be charged: its prompt (reported, else at least one
        token) and the text the client got, at 4 bytes a token."""
        return max(1, self.prompt_tokens) + math.ceil(len(self.text) / 4)


def open_stream(url: str, route: str, mock: dict) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    path, body = stream_request(route, mock)
    conn.request("POST", path, body=body, headers={"content-type": "application/json", "x-bf-vk": KEY})
    response = conn.getresponse()
    assert response.status == 200, response.read()
    return conn, response


def usage(url: str) -> tuple[int, int]:
    """(requests, tokens) of the virtual key, from the management API."""
    status, _, report = http_json("GET", f"{url}/api/governance/virtual-keys/{VK}/usage", None,
                                  {"authorization": f"Bearer {TOKEN}"})
    assert status == 200, report
    rate = report["levels"][0]["rate_limit"]
    return rate["request"]["current_usage"], rate["token"]["current_usage"]


# -- cut streams in a real gateway process --------------------------------------------------


def test_a_stream_cut_by_the_shutdown_cap_is_charged_in_postgres(mock, start_gateway, pg_database):
    config = governed_config(mock.url, config_store={"enabled": True, "type": "postgres", "config": {"dsn": pg_database}})
    gw = start_gateway(config, env={"RAINBRIDGE_GRACEFUL_TIMEOUT_SECONDS": str(CAP)})
    conn, response = open_stream(gw.url, "openai", SLOW)
    relayed = Relayed()
    lock = threading.Lock()

    def read():
        try:
            for line in iter(response.readline, b""):
                with lock:
                    relayed.see(line)
        except (OSError, http.client.HTTPException):
            pass  # cut at the cap

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    eventually(lambda: relayed.deltas >= 5 or relayed.deltas, 10, "the stream started")
    gw.proc.popen.send_signal(signal.SIGTERM)
    assert gw.proc.popen.wait(timeout=CAP + 20) == 0, gw.log()
    reader.join(timeout=5)
    conn.close()
    assert not reader.is_alive()
    assert "Cancel 1 running task(s)" in gw.log()  # cut by the cap, not finished

    async def counters() -> dict[str, float]:
        db = await asyncpg.connect(pg_database)
        try:
            rows = await db.fetch("SELECT counter_key, value FROM counters WHERE scope = 'vk'")
        finally:
            await db.close()
        return {r["counter_key"].rpartition("\x1f")[2]: float(r["value"]) for r in rows if r["counter_key"].startswith(VK)}

    stored = asyncio.run(counters())
    assert stored.get("requests") == 1, stored
    assert relayed.least_charge() <= stored.get("tokens", 0) < MAX_TOKENS, (stored, relayed.least_charge())


@pytest.mark.parametrize("route", ROUTES)
def test_a_stream_the_client_leaves_is_charged_what_was_relayed(mock, start_gateway, route):
    gw = start_gateway(governed_config(mock.url), env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
    conn, response = open_stream(gw.url, route, SLOW)
    relayed = Relayed()
    deadline = time.monotonic() + 20
    while relayed.deltas < 20 and time.monotonic() < deadline:
        relayed.see(response.readline())
    response.close()
    conn.close()  # the client goes away mid-stream
    assert relayed.deltas >= 20

    def charged():
        requests, tokens = usage(gw.url)
        return (requests == 1 and relayed.least_charge() <= tokens < MAX_TOKENS) or (requests, tokens)

    eventually(charged, 10, f"the cut stream charged at least {relayed.least_charge()} tokens")


def test_a_stream_the_upstream_cuts_is_charged_what_was_relayed(mock, start_gateway):
    gw = start_gateway(governed_config(mock.url), env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
    conn, response = open_stream(gw.url, "openai", {"stream_chunks": 1000, "cut_after": 30})
    relayed = Relayed()
    for line in iter(response.readline, b""):
        relayed.see(line)
    conn.close()
    assert relayed.deltas >= 20
    requests, tokens = usage(gw.url)
    assert requests == 1 and relayed.least_charge() <= tokens < MAX_TOKENS, (requests, tokens, relayed.least_charge())


# -- in process: the race, and the order of stop ----------------------------------------------


async def call(app: App, path: str, body: bytes, send) -> None:
    """One request through the ASGI app; ``receive`` then waits, as a connected client's does."""
    delivered = False

    async def receive() -> dict:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays
        return {"type": "http.disconnect"}

    headers = [(b"content-type", b"application/json"), (b"x-bf-vk", KEY.encode())]
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers, "query_string": b""}
    await app(scope, receive, send)


def token_slot(gateway: Gateway):
    [slot] = [s for key, s in gateway.counters.slots.items() if key[1] == VK and key[2] == "tokens"]
    return slot


async def test_a_cancellation_racing_the_end_of_a_stream_charges_its_usage_once(tmp_path, mock):
    gateway = Gateway(load_data(governed_config(mock.url), {}), tmp_path)
    await gateway.start()
    app = App(gateway)
    finished = []
    real_finish = gateway.finish
    gateway.finish = lambda record: (finished.append(record), real_finish(record))
    frames: list[bytes] = []
    task: asyncio.Task | None = None

    async def send(message: dict) -> None:
        frames.append(message.get("body", b""))
        if message["type"] == "http.response.body" and not message.get("more_body"):
            task.cancel()  # the shutdown cap lands as the last byte goes out
            await asyncio.sleep(0)

    try:
        path, _ = ROUTES["openai"]
        body = orjson.dumps({"model": "openai/gpt-4o", "stream": True, "stream_options": {"include_usage": True},
                             "messages": [{"role": "user", "content": "hi"}], "mock": {"stream_chunks": 5}})
        task = asyncio.create_task(call(app, path, body, send))
        with pytest.raises(asyncio.CancelledError):
            await task
        [usage_chunk] = [orjson.loads(f[6:])["usage"] for f in b"".join(frames).split(b"\n\n") if b'"usage":{' in f]
        used = usage_chunk["prompt_tokens"] + usage_chunk["completion_tokens"]
        slot = token_slot(gateway)
        assert len(finished) == 1 and (slot.committed, slot.reserved) == (used, 0)
        real_finish(finished[0])  # a second end reaching finish charges nothing more
        assert (slot.committed, slot.reserved) == (used, 0)
        assert app.unsettled == 0
    finally:
        await gateway.stop()


async def test_stop_flushes_the_counters_before_the_member_leaves(tmp_path, mock, pg_database):
    ip = "127.0.0.61"
    port = free_port(ip)
    config = governed_config(
        mock.url,
        config_store={"enabled": True, "type": "postgres", "config": {"dsn": pg_database}},
        cluster_config={"enabled": True, "node_name": "settler", "peers": [f"{ip}:{port}"], "gossip": {"port": port}},
    )
    gateway = Gateway(load_data(config, {}), tmp_path, cluster_env=ClusterEnv(ip, 8080))
    await gateway.start()
    for _ in range(200):  # governed traffic waits for the fleet counters to sync (readiness)
        if (await gateway.readiness())[0]:
            break
        await asyncio.sleep(0.05)
    app = App(gateway)
    path, _ = ROUTES["openai"]
    body = orjson.dumps({"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    await call(app, path, body, send)
    assert sent[0]["status"] == 200
    at_leave: list[dict] = []
    real_leave = gateway.cluster.stop

    async def leave() -> None:  # what the store holds when the member announces its leave
        rows = await gateway.store.db.fetch("SELECT counter_key, value FROM counters WHERE node_id = $1", gateway.node_id)
        at_leave.extend({r["counter_key"].rpartition("\x1f")[2]: float(r["value"])} for r in rows)
        await real_leave()

    gateway.cluster.stop = leave
    await gateway.stop()
    assert {"requests": 1.0} in at_leave and any(row.get("tokens", 0) > 0 for row in at_leave), at_leave
    assert not gateway.cluster.node.running  # and it did leave


# -- the estimate, as a table ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type", "stream_done", "reported", "expected"),
    [
        (200, None, True, (10, 20), (10, 20)),  # complete, with usage: exact
        (200, "client_disconnected", True, (10, 20), (10, 20)),  # gone after the last frame
        (200, "client_disconnected", False, (None, None), (25, 3)),  # cut, no usage: estimates
        (200, "cancelled", False, (7, 1), (7, 3)),  # cut after message_start: the text wins
        (200, "cancelled", False, (7, 50), (7, 50)),  # ... unless the partial usage says more
        (200, None, True, (None, None), (25, 3)),  # complete, but the upstream sent no usage
        (503, "cancelled", False, (None, None), (25, 3)),  # cancelled before an answer
        (429, "request_limited", False, (None, None), (0, 0)),  # refused: nothing used
        (502, "upstream_error", False, (None, None), (0, 0)),  # failed upstream: nothing used
    ],
)
def test_the_tokens_a_request_is_charged(status, error_type, stream_done, reported, expected):
    record = RequestRecord("chat", False)
    record.status, record.error_type, record.stream_done = status, error_type, stream_done
    record.prompt_tokens, record.completion_tokens = reported
    record.request_bytes = 99  # 25 tokens, rounded up
    record.count_text(b'data: {"choices":[{"delta":{"content":"Hello, w"}}]}\n\n')
    record.count_text(b'event: content_block_delta\ndata: {"delta":{"type":"text_delta","text":"orld"}}\n\n')
    assert record.charged_tokens() == expected  # 12 bytes of text: 3 tokens
