# ruff: noqa: F811  (tests take the imported `make` fixture as an argument)
"""The cluster service's request/reply helper and its broadcast size limit, between real
members on loopback UDP/TCP (the ``make`` / ``form`` fixtures of test_cluster_node.py).

The members' own clock probes (also requests) are off here: these tests count requests.
Loss is injected on the real receive path: a member's ``ClusterNode._on_datagram`` is
wrapped so the first datagram carrying a request (or a reply) is dropped on arrival.
"""

from __future__ import annotations

import asyncio
import base64

import pytest

from rainbridge.cluster.appmessages import APP_MARKER, max_broadcast_payload, max_packet_frame
from rainbridge.cluster.rpc import (
    KIND_REPLY,
    KIND_REQUEST,
    RequestError,
    decode_request,
    encode_request,
)
from rainbridge.cluster.security import Keyring
from rainbridge.cluster.wire import WireConfig
from test_cluster_node import form, handler, make, wait_until  # noqa: F401  (make: a fixture)

KEY = base64.b64encode(bytes(range(32))).decode()


def echo(requester: str, payload: bytes) -> bytes:
    return requester.encode() + b":" + payload


def drop_first(service, marker: bytes) -> list[bytes]:
    """Drop the first datagram ``service`` receives that contains ``marker``; returns the
    list of dropped datagrams (for the assertion that one was dropped)."""
    node = service.node
    real = node._on_datagram
    dropped: list[bytes] = []

    def on_datagram(data: bytes, sender) -> None:
        if not dropped and marker in data:
            dropped.append(data)
            return
        real(data, sender)

    node._on_datagram = on_datagram
    return dropped


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("udp", "label", "encrypted", "broadcast", "frame"),
    [
        (1400, "", False, 1380, 1394),  # 5 bytes of CRC; 2 compound, 3 framing, 10 ours
        (1400, "prod", False, 1374, 1388),  # + 6-byte label header
        (1400, "", True, 1351, 1365),  # + 29 bytes of AES-GCM (version 1)
        (1400, "prod", True, 1345, 1359),
        (65000, "", False, 64980, 64994),  # the wan / custom budgets scale with it
    ],
)
def test_packet_budget_formula(udp, label, encrypted, broadcast, frame):
    wire = WireConfig(label=label, keyring=Keyring([bytes(32)]) if encrypted else None)
    assert max_broadcast_payload(udp, wire) == broadcast
    assert max_packet_frame(udp, wire) == frame


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "label+encryption"])
async def test_broadcast_at_the_limit_arrives_and_one_byte_more_raises(make, secure):
    extra = {"label": "prod", "encryption_keys": [KEY]} if secure else {}
    a, b = await form(make, 2, clock_interval=None, **extra)
    limit = a.messages.max_broadcast
    assert limit == (1345 if secure else 1380)
    biggest = b"x" * limit
    a.broadcast(biggest)
    await wait_until(lambda: biggest in handler(b).messages, 5, "largest broadcast")
    with pytest.raises(ValueError, match=rf"is {limit + 1} bytes; .* at most {limit}"):
        a.broadcast(b"y" * (limit + 1))
    assert len(a.messages.queue) <= 1  # nothing oversized was queued


# --------------------------------------------------------------------------- request/reply


def test_request_frame_round_trip():
    body = encode_request(b"12345678", "nödé-1", "escrow.ask", b"\x00payload")
    assert body[:1] == KIND_REQUEST
    assert decode_request(body[1:]) == (b"12345678", "nödé-1", "escrow.ask", b"\x00payload")
    for cut in range(1, 12):
        with pytest.raises(ValueError):
            decode_request(body[1:cut])


async def test_reply_is_delivered_small_over_udp_and_large_over_tcp(make):
    a, b = await form(make, 2, clock_interval=None)
    b.on_request("echo", echo)
    sent: list[tuple[str, bool]] = []  # (service, reliable) of every frame either one sends
    for service in (a, b):
        real = service.rpc._send
        service.rpc._send = lambda m, f, r, real=real, who=service.name: sent.append((who, r)) or real(m, f, r)
    assert await a.request("n1", "echo", b"hi", timeout=1.0, retries=0) == b"n0:hi"
    assert sent == [("n0", False), ("n1", False)]  # one datagram each way
    big = bytes(range(256)) * 40  # 10 KB: larger than one packet both ways
    assert await a.request("n1", "echo", big, timeout=2.0, retries=0) == b"n0:" + big
    assert sent[2:] == [("n0", True), ("n1", True)]  # TCP both ways
    assert a.rpc.pending == 0 and a.rpc.stats["requests_sent"] == 2


async def test_async_handler_and_handler_errors(make):
    a, b = await form(make, 2, clock_interval=None)

    async def slow_echo(requester: str, payload: bytes) -> bytes:
        await asyncio.sleep(0)
        return payload[::-1]

    def broken(requester: str, payload: bytes) -> bytes:
        raise RuntimeError("boom")

    b.on_request("rev", slow_echo)
    b.on_request("broken", broken)
    assert await a.request("n1", "rev", b"abc", timeout=1.0, retries=0) == b"cba"
    with pytest.raises(RequestError) as failed:
        await a.request("n1", "broken", b"", timeout=1.0, retries=0)
    assert failed.value.type == "handler_failed"
    with pytest.raises(RequestError) as missing:
        await a.request("n1", "nobody-handles-this", b"", timeout=1.0, retries=0)
    assert missing.value.type == "no_handler"
    with pytest.raises(RequestError) as unknown:
        await a.request("no-such-member", "rev", b"", timeout=1.0, retries=0)
    assert unknown.value.type == "unknown_member"
    assert a.rpc.pending == 0


async def test_a_lost_request_is_retried(make):
    a, b = await form(make, 2, clock_interval=None)
    calls: list[bytes] = []
    b.on_request("count", lambda requester, payload: calls.append(payload) or b"ok")
    dropped = drop_first(b, APP_MARKER + KIND_REQUEST)
    assert await a.request("n1", "count", b"1", timeout=0.3, retries=2) == b"ok"
    assert len(dropped) == 1 and calls == [b"1"]
    assert a.rpc.stats["requests_sent"] == 2 and a.rpc.stats["request_attempts_timed_out"] == 1


async def test_a_lost_reply_is_answered_again_without_running_the_handler_twice(make):
    a, b = await form(make, 2, clock_interval=None)
    calls: list[bytes] = []
    b.on_request("grant", lambda requester, payload: calls.append(payload) or b"granted")
    dropped = drop_first(a, APP_MARKER + KIND_REPLY)
    assert await a.request("n1", "grant", b"5", timeout=0.3, retries=2) == b"granted"
    assert len(dropped) == 1
    assert calls == [b"5"]  # at most once: the retry was answered from the reply cache
    assert b.rpc.stats["repeated_requests"] == 1


async def test_timeout_when_the_peer_is_gone_leaves_nothing_pending(make):
    a, b = await form(make, 2, clock_interval=None)
    b.on_request("echo", echo)
    await b.abort()  # sockets closed, no leave: a still lists it alive for a while
    with pytest.raises(RequestError) as gone:
        await a.request("n1", "echo", b"?", timeout=0.1, retries=2)
    assert gone.value.type == "timeout"
    assert a.rpc.stats["requests_sent"] == 3 and a.rpc.pending == 0


async def test_pending_table_is_bounded_and_cancellation_frees_it(make):
    a, b = await form(make, 2, clock_interval=None)
    release = asyncio.Event()

    async def stall(requester: str, payload: bytes) -> bytes:
        await release.wait()
        return b"late"

    b.on_request("stall", stall)
    a.rpc.max_pending = 2
    waiting = [
        asyncio.create_task(a.request("n1", "stall", b"", timeout=5.0, retries=0)) for _ in range(2)
    ]
    await wait_until(lambda: a.rpc.pending == 2, 2, "two requests pending")
    with pytest.raises(RequestError) as busy:
        await a.request("n1", "stall", b"", timeout=5.0, retries=0)
    assert busy.value.type == "busy"
    waiting[0].cancel()
    await asyncio.gather(waiting[0], return_exceptions=True)
    assert a.rpc.pending == 1
    release.set()  # the second one gets its (late) reply; the first one's is dropped
    assert await waiting[1] == b"late"
    assert a.rpc.pending == 0
    await wait_until(lambda: a.rpc.stats["late_replies"] == 1, 2, "the cancelled one's reply")


async def test_the_reply_cache_is_bounded_in_entries_and_bytes(monkeypatch):
    from rainbridge.cluster import rpc

    monkeypatch.setattr(rpc, "REPLY_CACHE", 8)
    monkeypatch.setattr(rpc, "REPLY_CACHE_BYTES", 5000)
    sent: list[tuple[str, bytes, bool]] = []
    server = rpc.RequestReply("srv", lambda m, f, r: sent.append((m, f, r)), 1394)
    runs: list[bytes] = []
    server.handlers["big"] = lambda requester, payload: runs.append(payload) or b"r" * 1000

    async def ask(i: int) -> None:
        server.on_request(APP_MARKER, encode_request(i.to_bytes(8, "big"), "cli", "big", b"%d" % i)[1:])
        await asyncio.sleep(0)  # the handler runs on the next loop turn

    for i in range(20):
        await ask(i)
    assert len(runs) == 20 and len(sent) == 20
    assert len(server._served) <= 8 and server._served_bytes <= 5000
    await ask(19)  # a retry of a cached one: answered again, not run again
    assert len(runs) == 20 and sent[-1] == sent[-2]
    await ask(0)  # evicted long ago: runs again (the cache is bounded, not exact forever)
    assert len(runs) == 21
