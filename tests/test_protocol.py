"""Our HTTP/1.1 protocol (server/protocol.py) on raw sockets, under a real uvicorn server.

A small ASGI app stands in for the gateway so each HTTP rule can be driven directly:
keep-alive, pipelining, chunked bodies both ways, 100-continue, HEAD, HTTP/1.0, bad
requests, header injection, client disconnects, big bodies and shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest
import uvicorn

from rainbridge.server.http import HEAD_LINES
from rainbridge.server.protocol import HttpProtocol


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/echo":  # the whole request body back, with a content-length
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        text = b"%s %s %s q=%s" % (scope["method"].encode(), scope["path"].encode(), body, scope["query_string"])
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(text))]})
        await send({"type": "http.response.body", "body": text})
    elif path == "/size":  # only the size of a big body
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        text = b"%d" % size
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(text))]})
        await send({"type": "http.response.body", "body": text})
    elif path == "/stream":  # no content-length: chunked
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for i in range(3):
            await send({"type": "http.response.body", "body": b"data: %d\n\n" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    elif path == "/wait-disconnect":  # start a stream, then report what receive() says
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"started", "more_body": True})
        await receive()  # the (empty) request body
        message = await receive()
        EVENTS.append(message["type"])
    elif path == "/big":  # a body far above one socket buffer, with a content-length
        body = bytes(range(256)) * 8192
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})
    elif path == "/two-waiters":  # two coroutines wait on receive(): both see the disconnect
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"started", "more_body": True})
        await receive()
        got = await asyncio.gather(receive(), receive())
        EVENTS.extend(m["type"] for m in got)
    elif path == "/inject":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-evil", b"a\r\nset-cookie: stolen=1"), (b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
    elif path in ("/lines", "/lines-inject"):  # rendered header lines (our extension) next to headers
        value = b"a\r\nset-cookie: stolen=1" if path == "/lines-inject" else b"plain"
        await send({"type": "http.response.start", "status": 200, HEAD_LINES: b"x-rendered-a: 1\r\nx-rendered-b: two\r\n",
                    "headers": [(b"x-plain", value), (b"content-length", b"%d" % len(scope["extensions"]))]})
        await send({"type": "http.response.body", "body": b"%d" % len(scope["extensions"])})
    elif path == "/boom":
        raise ValueError("a bug")
    elif path == "/silent":
        return
    elif path == "/slow":
        await asyncio.sleep(0.3)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
        await send({"type": "http.response.body", "body": b"done"})


EVENTS: list[str] = []


@pytest.fixture
async def server():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, http=HttpProtocol, lifespan="off", log_config=None, timeout_keep_alive=1,
                            timeout_graceful_shutdown=5)
    srv = uvicorn.Server(config)
    srv.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.get_running_loop().create_task(srv.serve(sockets=[sock]))
    for _ in range(100):
        if srv.started:
            break
        await asyncio.sleep(0.02)
    assert srv.started
    EVENTS.clear()
    yield srv, sock.getsockname()[1]
    srv.should_exit = True
    await asyncio.wait_for(task, 10)
    sock.close()


async def connect(port: int):
    return await asyncio.open_connection("127.0.0.1", port)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
    """One response, framed by content-length or chunked encoding."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(b":")
            assert name.lower() not in headers, f"duplicate header {name!r}"
            headers[name.lower()] = value.strip()
    if b"content-length" in headers:
        body = await asyncio.wait_for(reader.readexactly(int(headers[b"content-length"])), 5)
    elif headers.get(b"transfer-encoding") == b"chunked":
        body = b""
        for _ in range(100):
            size = int((await asyncio.wait_for(reader.readuntil(b"\r\n"), 5))[:-2], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = b""
    return status, headers, body


async def get(port: int, path: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """One GET on a new connection: its response."""
    reader, writer = await connect(port)
    writer.write(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path)
    try:
        return await read_response(reader)
    finally:
        writer.close()


async def test_keep_alive_serves_several_requests_on_one_connection(server):
    _, port = server
    reader, writer = await connect(port)
    for i in range(3):
        body = b"n%d" % i
        writer.write(b"POST /echo?x=%d HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (i, len(body), body))
        status, headers, got = await read_response(reader)
        assert status == 200 and got == b"POST /echo n%d q=x=%d" % (i, i)
        assert b"connection" not in headers
    writer.close()


async def test_pipelined_requests_are_answered_in_order(server):
    _, port = server
    reader, writer = await connect(port)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n"
                 b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
                 b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (await read_response(reader))[2] == b"done"
    assert (await read_response(reader))[2] == b"POST /echo abc q="
    assert (await read_response(reader))[2] == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    writer.close()


async def test_chunked_request_body_and_chunked_response(server):
    _, port = server
    reader, writer = await connect(port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert (await read_response(reader))[2] == b"POST /echo abcde q="
    writer.write(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
    _, headers, body = await read_response(reader)
    assert headers[b"transfer-encoding"] == b"chunked" and b"content-length" not in headers
    assert body == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    writer.close()


async def test_expect_100_continue_is_answered_before_the_body_is_sent(server):
    _, port = server
    reader, writer = await connect(port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"hello")
    assert (await read_response(reader))[2] == b"POST /echo hello q="
    writer.close()


async def test_head_has_headers_but_no_body(server):
    _, port = server
    reader, writer = await connect(port)
    writer.write(b"HEAD /echo HTTP/1.1\r\nHost: t\r\n\r\nGET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 14\r\n" in head  # len(b"HEAD /echo  q=")
    # The next bytes are the second response, not a body of the first.
    assert (await read_response(reader))[2] == b"GET /echo  q="
    writer.close()


async def test_http_1_0_closes_after_the_response(server):
    _, port = server
    reader, writer = await connect(port)
    writer.write(b"GET /echo HTTP/1.0\r\n\r\n")
    status, headers, _ = await read_response(reader)
    assert status == 200 and headers[b"connection"] == b"close"
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
    writer.close()


async def test_unparseable_request_gets_400_and_the_connection_closes(server):
    _, port = server
    reader, writer = await connect(port)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    status, _, body = await read_response(reader)
    assert status == 400 and b"Invalid HTTP request" in body
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_header_value_with_crlf_is_refused_not_sent_nor_kept(server):
    _, port = server
    for _ in range(2):  # the second time the name is known: the value must still be checked
        status, headers, _ = await get(port, b"/inject")
        assert status == 500 and b"set-cookie" not in headers and b"x-evil" not in headers


async def test_rendered_head_lines_go_out_as_they_are_and_values_are_still_checked(server):
    _, port = server
    status, headers, body = await get(port, b"/lines")
    assert status == 200 and body == b"1"  # the extension is announced in the scope
    assert headers[b"x-rendered-a"] == b"1" and headers[b"x-rendered-b"] == b"two" and headers[b"x-plain"] == b"plain"
    status, headers, _ = await get(port, b"/lines-inject")  # the line count allows for the rendered lines
    assert status == 500 and b"set-cookie" not in headers


async def test_app_errors_and_missing_responses_become_500(server):
    _, port = server
    for path in (b"/boom", b"/silent"):
        status, _, body = await get(port, path)
        assert status == 500 and body == b"Internal Server Error"


@pytest.mark.parametrize(("path", "expected"), [
    (b"/wait-disconnect", ["http.disconnect"]),
    # two coroutines waiting on receive() at once (a shared waiter): both wake
    (b"/two-waiters", ["http.disconnect", "http.disconnect"]),
])
async def test_client_disconnect_reaches_the_app(server, path, expected):
    _, port = server
    reader, writer = await connect(port)
    writer.write(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path)
    await asyncio.wait_for(reader.readuntil(b"started"), 5)
    writer.close()
    for _ in range(100):
        if len(EVENTS) == len(expected):
            break
        await asyncio.sleep(0.02)
    assert EVENTS == expected


async def test_big_body_arrives_whole(server):
    _, port = server
    reader, writer = await connect(port)
    size = 3 * 1024 * 1024 + 7  # far above the read buffer: reading pauses and resumes
    writer.write(b"POST /size HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size)
    chunk = b"x" * 65536
    sent = 0
    while sent < size:
        part = chunk[: min(len(chunk), size - sent)]
        writer.write(part)
        sent += len(part)
        await writer.drain()
    assert (await read_response(reader))[2] == b"%d" % size
    writer.close()


async def test_idle_keep_alive_connection_is_closed_after_the_timeout(server):
    _, port = server
    reader, writer = await connect(port)
    writer.write(b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
    await read_response(reader)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # timeout_keep_alive=1
    writer.close()


async def test_shutdown_finishes_the_request_in_progress_then_closes(server):
    srv, port = server
    reader, writer = await connect(port)
    idle_reader, idle_writer = await connect(port)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
    await asyncio.sleep(0.1)
    srv.should_exit = True
    assert await asyncio.wait_for(idle_reader.read(), 5) == b""  # idle: closed at once
    status, _, body = await read_response(reader)
    assert status == 200 and body == b"done"
    assert await asyncio.wait_for(reader.read(), 5) == b""
    for w in (writer, idle_writer):
        with contextlib.suppress(OSError):
            w.close()


async def test_big_response_body_arrives_whole(server):
    _, port = server
    status, _, body = await get(port, b"/big")
    assert status == 200 and body == bytes(range(256)) * 8192


async def test_a_malformed_body_gets_400_while_the_app_waits_for_it(server):
    _, port = server
    reader, writer = await connect(port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    await asyncio.sleep(0.1)  # the app is now waiting in receive() for more body
    writer.write(b"zz-not-a-chunk-size\r\n")
    status, _, body = await read_response(reader)
    assert status == 400 and b"Invalid HTTP request" in body
    assert await asyncio.wait_for(reader.read(), 5) == b""  # nothing after the 400, then closed
    writer.close()


async def test_no_100_continue_without_the_expect_header(server):
    _, port = server
    reader, writer = await connect(port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n")
    await asyncio.sleep(0.2)  # the app waits in receive() for the late body
    writer.write(b"hello")
    status, _, body = await read_response(reader)  # the first thing on the wire is the answer
    assert status == 200 and body == b"POST /echo hello q="
    writer.close()
