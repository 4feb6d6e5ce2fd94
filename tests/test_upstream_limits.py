"""What the upstream client refuses from an upstream: oversized heads and bodies, statuses
outside 100-599, content codings it did not ask for; and what no-content statuses do.

Client-level cases use scripted servers on real sockets; the gateway-level ones put the
scripted server behind a real gateway process as an OpenAI-type provider.
"""

import asyncio
import json

import aiohttp
import pytest

from rainbridge.upstream import ProtocolError, UpstreamClient
from rainbridge.upstream.connection import MAX_HEAD_BYTES, ResponseTooLarge
from support import GatewayProcess
from test_upstream_client import Script, answer, head


async def one(respond, client=None, stream=False):
    """Run one request against a scripted server; return (exchange or error, server, origin)."""
    srv = await Script(respond).start()
    client = client or UpstreamClient()
    origin = client.origin(f"http://127.0.0.1:{srv.port}")
    try:
        call = client.stream if stream else client.request
        ex = await call(origin, head(srv.port), b"{}", 5)
        result = await ex.read() if not stream else ex
    except ProtocolError as exc:
        result = exc
    return result, srv, origin, client


async def test_a_response_head_over_the_limit_fails_and_drops_the_connection():
    async def respond(w, n):
        w.write(b"HTTP/1.1 200 OK\r\n")
        for i in range(200):  # 200 x 1 KB headers, one read each
            w.write(b"x-h%d: %s\r\n" % (i, b"v" * 1024))
            await w.drain()
        w.write(b"content-length: 2\r\n\r\n{}")
        return True

    result, srv, origin, client = await one(respond)
    assert isinstance(result, ResponseTooLarge) and str(MAX_HEAD_BYTES) in str(result)
    assert not origin.idle
    await client.close()
    await srv.stop()


async def test_an_endless_run_of_interim_responses_counts_against_the_head_limit():
    async def respond(w, n):
        for _ in range(5000):
            w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await w.drain()
        w.write(answer(b"{}"))
        return True

    result, srv, origin, client = await one(respond)
    assert isinstance(result, ResponseTooLarge)
    assert not origin.idle
    await client.close()
    await srv.stop()


@pytest.mark.parametrize("stream", [False, True])
async def test_a_body_read_whole_over_the_limit_fails(stream):
    async def respond(w, n):
        status = b"500 Internal Server Error" if stream else b"200 OK"  # streams buffer error bodies
        w.write(b"HTTP/1.1 %s\r\ncontent-length: %d\r\n\r\n" % (status, 4 * 1024 * 1024))
        for _ in range(64):
            w.write(b"x" * 65536)
            await w.drain()
        return True

    client = UpstreamClient(max_body_bytes=1024 * 1024)
    result, srv, origin, client = await one(respond, client, stream)
    if stream:
        assert result.status == 500
        with pytest.raises(ResponseTooLarge):
            await result.read()
    else:
        assert isinstance(result, ResponseTooLarge)
    assert not origin.idle
    await client.close()
    await srv.stop()


@pytest.mark.parametrize("status", [b"600", b"999", b"099", b"000"])
async def test_a_status_outside_100_to_599_is_a_protocol_error(status):
    async def respond(w, n):
        w.write(b"HTTP/1.1 " + status + b" Odd\r\ncontent-length: 2\r\n\r\n{}")
        return True

    result, srv, origin, client = await one(respond)
    assert isinstance(result, ProtocolError)
    assert not origin.idle
    await client.close()
    await srv.stop()


@pytest.mark.parametrize("coding", [b"content-encoding: gzip", b"Content-Encoding: br", b"transfer-encoding: gzip, chunked"])
async def test_a_coding_we_did_not_ask_for_is_a_protocol_error(coding):
    async def respond(w, n):
        w.write(b"HTTP/1.1 200 OK\r\n" + coding + b"\r\ntransfer-encoding: chunked\r\n\r\n2\r\n\x1f\x8b\r\n0\r\n\r\n")
        return True

    result, srv, origin, client = await one(respond)
    assert isinstance(result, ProtocolError) and "not asked for" in str(result)
    assert not origin.idle
    await client.close()
    await srv.stop()


async def test_identity_coding_is_accepted():
    result, srv, _origin, client = await one(lambda w, n: _write(w, answer(b"{}", b"content-encoding: identity\r\n")))
    assert result == b"{}"
    await client.close()
    await srv.stop()


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
async def test_no_content_statuses_complete_at_once_and_keep_the_connection(status):
    async def respond(w, n):
        w.write(b"HTTP/1.1 " + status + b"\r\n\r\n" if n == 1 else answer(b"{}"))
        return True

    result, srv, origin, client = await one(respond)
    assert result == b""
    ex = await client.request(origin, head(srv.port), b"{}", 5)
    assert await ex.read() == b"{}"
    assert srv.connections == 1
    await client.close()
    await srv.stop()


async def _write(w, data):
    w.write(data)
    return True


# -- through a gateway ------------------------------------------------------------------------


@pytest.fixture
async def scripted(tmp_path):
    """A scripted upstream behind a real gateway (provider ``s``, OpenAI type)."""
    replies = {}

    async def respond(w, n):
        request = srv.requests[-1]
        for marker, reply in replies.items():
            if marker.encode() in request:
                return await reply(w)
        w.write(answer(b'{"id": "x", "choices": []}'))
        return True

    srv = await Script(respond).start()
    config = {"providers": {"s": {"type": "openai", "keys": [{"value": "sk-scripted-0123456789"}],
                                  "network_config": {"base_url": f"http://127.0.0.1:{srv.port}", "default_request_timeout_in_seconds": 5}}}}
    gw = await asyncio.to_thread(GatewayProcess, tmp_path, config)
    yield gw, replies
    await asyncio.to_thread(gw.stop)
    await srv.stop()


async def post(gw, marker, stream=False):
    body = {"model": "s/m", "messages": [{"role": "user", "content": marker}], "stream": stream}
    async with aiohttp.ClientSession() as s, s.post(gw.url + "/v1/chat/completions", json=body) as resp:
        return resp.status, resp.headers.get("content-type", ""), await resp.read()


def writes(*parts):
    async def reply(w):
        for part in parts:
            w.write(part)
            await w.drain()
        return True

    return reply


async def test_gateway_answers_502_for_a_gzip_body_and_never_relays_it(scripted):
    gw, replies = scripted
    replies["gz"] = writes(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\ncontent-length: 4\r\n\r\n\x1f\x8b\x08\x00")
    replies["st600"] = writes(b"HTTP/1.1 600 Odd\r\ncontent-length: 2\r\n\r\n{}")
    replies["nc204"] = writes(b"HTTP/1.1 204 No Content\r\n\r\n")
    replies["re302"] = writes(b"HTTP/1.1 302 Found\r\nlocation: http://elsewhere/\r\ncontent-length: 0\r\n\r\n")
    for marker, code in (("gz", "upstream_protocol_error"), ("st600", "upstream_protocol_error"),
                         ("nc204", "unexpected_status"), ("re302", "unexpected_status")):
        for stream in (False, True):
            status, _, data = await post(gw, marker, stream)
            assert status == 502, (marker, stream, data)
            error = json.loads(data)["error"]
            assert (error["type"], error["code"]) == ("upstream_unreachable", code), (marker, stream)
            assert b"\x1f\x8b" not in data


async def test_an_sse_stream_without_separators_ends_in_a_well_formed_error_event(scripted):
    gw, replies = scripted
    chunk = b"data: " + b"x" * 65530
    replies["nosep"] = writes(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
        *([b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 40),  # 2.6 MB, no event separator
        b"0\r\n\r\n",
    )
    status, ctype, data = await post(gw, "nosep", stream=True)
    assert status == 200 and ctype.startswith("text/event-stream")
    frames = [f for f in data.split(b"\n\n") if f]
    assert len(frames) == 1 and frames[0].startswith(b"data: ")
    error = json.loads(frames[0][6:])["error"]
    assert error["type"] == "upstream_stream_error"
    assert "larger than 1048576 bytes" in error["message"] and "provider s" in error["message"]
