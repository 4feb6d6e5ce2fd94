"""Our HTTP/1.1 protocol (server/protocol.py) on raw sockets, under a real uvicorn server.

A small ASGI app stands in for the gateway so each HTTP rule can be driven directly:
keep-alive, pipelining, chunked bodies both ways, 100-continue, HEAD, HTTP/1.0, bad
requests, header injection, client disconnects, big bodies and shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import socket
import weakref

import pytest
import uvicorn

from rainbridge.server.http import HEAD_LINES
from rainbridge.server.protocol import HttpProtocol, Limits


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
    elif path == "/hold":  # answers once the test sets HOLD
        await HOLD["event"].wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
        await send({"type": "http.response.body", "body": b"held"})
    elif path == "/too-large":  # answers 413 without reading the body, as the gateway does
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-length", b"3")]})
        await send({"type": "http.response.body", "body": b"big"})
    elif path == "/wait-body":  # reports each body message, then what receive() said last
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                EVENTS.append(message["type"])
                return
            EVENTS.append(message["body"].decode())
    elif path == "/slow":
        await asyncio.sleep(0.3)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
        await send({"type": "http.response.body", "body": b"done"})


EVENTS: list[str] = []
HOLD: dict[str, asyncio.Event] = {}  # "event": set by a test to let /hold answer (one per server)


@contextlib.asynccontextmanager
async def serving(limits: Limits | None = None):
    """A uvicorn server with our protocol (and these limits) on a free loopback port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    http = HttpProtocol if limits is None else functools.partial(HttpProtocol, limits=limits)
    config = uvicorn.Config(app, http=http, lifespan="off", log_config=None, timeout_keep_alive=1,
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
    HOLD["event"] = asyncio.Event()
    try:
        yield srv, sock.getsockname()[1]
    finally:
        HOLD["event"].set()
        srv.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


@pytest.fixture
async def server():
    async with serving() as running:
        yield running


async def until(cond, what: str, timeout: float = 5.0):
    """Poll ``cond()`` (each loop turn, then every 10 ms) until it is truthy; bounded."""
    deadline = asyncio.get_running_loop().time() + timeout
    value = cond()
    while not value:
        assert asyncio.get_running_loop().time() < deadline, f"{what}: not within {timeout} s (last: {value!r})"
        await asyncio.sleep(0.01)
        value = cond()
    return value


def the_connection(srv) -> HttpProtocol:
    """The server's one open connection (a test with one client)."""
    (conn,) = srv.server_state.connections
    return conn


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


async def test_big_bodies_one_after_another_on_one_connection_are_all_answered(server):
    """The last part of a big body may arrive after the parser finished the request: the
    buffered count must still be released, or reading stays paused and the next request
    on the connection is never read."""
    _, port = server
    reader, writer = await connect(port)
    for size in (400_000, 400_000, 1_000_000, 10):
        writer.write(b"POST /size HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size)
        await writer.drain()
        status, _, body = await asyncio.wait_for(read_response(reader), 5)
        assert (status, body) == (200, b"%d" % size)
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


# -- issue 12: pipelining, limits, memory, timeouts, upgrades, RFC 9112 details, logs ----------

async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), 5)


async def test_pipelined_requests_stop_the_reading_until_they_are_answered(server):
    srv, port = server
    reader, writer = await connect(port)
    one = b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n"
    count = 1024 * 1024 // len(one)  # 1 MB of requests behind one that does not answer yet
    writer.write(b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\n" + one * count)
    conn = await until(lambda: srv.server_state.connections and the_connection(srv), "the connection")
    await until(lambda: conn.pipeline and not conn.transport.is_reading(), "reading paused for the pipeline")
    for _ in range(20):  # the socket stays unread: what waits is at most one read's worth
        await asyncio.sleep(0.01)
        assert not conn.transport.is_reading()
    assert len(conn.pipeline) <= 256 * 1024 // len(one) + 1  # asyncio reads 256 KiB at most
    HOLD["event"].set()
    assert (await read_response(reader))[2] == b"held"
    for _ in range(count):  # then every one, in order; the reading resumed
        assert (await read_response(reader))[2] == b"GET /echo  q="
    writer.close()


@pytest.mark.parametrize(("request_head", "status"), [
    (b"GET /" + b"u" * 200 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
    (b"GET /echo HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(11)) + b"\r\n", 431),
    (b"GET /echo HTTP/1.1\r\nHost: t\r\nX-Big: " + b"v" * 600 + b"\r\n\r\n", 431),
])
async def test_limits_are_configurable_and_answered_with_414_or_431(request_head, status):
    async with serving(Limits(max_url_bytes=100, max_header_bytes=512, max_headers=10)) as (_, port):
        reader, writer = await connect(port)
        writer.write(request_head)
        assert (await read_response(reader))[0] == status
        assert await read_until_closed(reader) == b""
        writer.close()
        reader, writer = await connect(port)  # under the limits, the same server answers
        writer.write(b"GET /echo?" + b"q" * 80 + b" HTTP/1.1\r\nHost: t\r\n" + b"X-A: v\r\n" * 8 + b"\r\n")
        assert (await read_response(reader))[0] == 200
        writer.close()


@pytest.mark.parametrize(("start", "piece", "status"), [
    (b"GET /", b"u" * 512, 414),  # a target growing read by read
    (b"GET /echo HTTP/1.1\r\nHost: t\r\nX-A: ", b"v" * 512, 431),  # one header value growing
    (b"GET /echo HTTP/1.1\r\nHost: t\r\nX-", b"n" * 512, 431),  # one header name growing
    (b"GET /echo HTTP/1.1\r\nHost: t\r\n", b"X-F: v\r\n" * 64, 431),  # header fields that never end
    (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n", b"X-T: v\r\n" * 64, 431),  # trailers
])
async def test_a_request_head_growing_in_many_reads_is_refused_once_over_the_limit(server, start, piece, status):
    """The cap is checked as the head grows: the answer comes long before the head would end
    (httptools joins a field split across reads before the protocol sees it, quadratically)."""
    _, port = server
    reader, writer = await connect(port)
    writer.write(start)
    sent = 0
    answer = asyncio.ensure_future(reader.readuntil(b"\r\n\r\n"))
    while not answer.done() and sent < 4 * 1024 * 1024:
        writer.write(piece)
        sent += len(piece)
        await writer.drain()
        await asyncio.sleep(0)  # one read each: the server sees the head grow piece by piece
    head = await asyncio.wait_for(answer, 5)
    assert head.startswith(b"HTTP/1.1 %d " % status)
    assert sent < 512 * 1024  # default limits: 8 KiB of target, 32 KiB of fields
    writer.close()


async def test_a_closed_connection_is_freed_without_the_cyclic_gc(server):
    srv, port = server
    gc.collect()
    gc.disable()
    try:
        reader, writer = await connect(port)
        writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nX-Big: " + b"h" * 30_000 + b"\r\nContent-Length: 3\r\n\r\nabc"
                     b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\nGET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
        await read_response(reader)
        conn = await until(lambda: srv.server_state.connections and the_connection(srv).pipeline
                           and the_connection(srv), "a request queued")
        ref = weakref.ref(conn)
        del conn
        writer.close()  # while /hold runs and /echo waits its turn (reading paused: unseen)
        HOLD["event"].set()
        await until(lambda: not srv.server_state.connections, "the connection to close")
        await until(lambda: not srv.server_state.tasks, "the app to see the client leave")
        await until(lambda: ref() is None, "the protocol freed by reference counting")
    finally:
        gc.enable()


@pytest.mark.parametrize("trickle", [False, True])
async def test_a_request_head_must_be_complete_within_the_header_timeout(trickle):
    """Slowloris: a head that never ends, or ends a byte at a time, gets 408 and a close
    header_timeout after its first byte, whatever the gaps between bytes."""
    async with serving(Limits(header_timeout=0.5)) as (_, port):
        clients = [await connect(port) for _ in range(30)]
        for _, writer in clients:
            writer.write(b"GET /echo HTTP/1.1\r\nHost: t\r\n")
        started = asyncio.get_running_loop().time()
        while trickle and asyncio.get_running_loop().time() - started < 1.5:
            for _, writer in clients:
                with contextlib.suppress(ConnectionError):
                    writer.write(b"X")  # a never-ending header name, 10 bytes a second
            await asyncio.sleep(0.1)
        for reader, writer in clients:
            assert (await read_response(reader))[0] == 408
            assert await read_until_closed(reader) == b""
            writer.close()


async def test_a_body_that_stops_coming_gets_408_and_the_app_sees_the_client_leave():
    async with serving(Limits(body_timeout=0.3)) as (_, port):
        reader, writer = await connect(port)
        writer.write(b"POST /wait-body HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        status, headers, _ = await read_response(reader)
        assert status == 408 and headers[b"connection"] == b"close"
        assert await read_until_closed(reader) == b""
        await until(lambda: EVENTS, "the app to see the disconnect")
        assert EVENTS == ["abc", "http.disconnect"]
        writer.close()


async def test_a_slow_body_within_the_timeout_between_bytes_arrives_whole():
    async with serving(Limits(body_timeout=0.5)) as (_, port):
        reader, writer = await connect(port)
        writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\n")
        for byte in b"abcdef":  # 1.2 s in all, 0.2 s between bytes
            await asyncio.sleep(0.2)
            writer.write(bytes([byte]))
        assert (await read_response(reader))[2] == b"POST /echo abcdef q="
        writer.close()


async def test_an_upgrade_request_is_answered_then_the_connection_closes(server):
    _, port = server
    reader, writer = await connect(port)
    writer.write(b"GET /echo HTTP/1.1\r\nHost: t\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n"
                 b"GET /echo?second HTTP/1.1\r\nHost: t\r\n\r\n")
    status, headers, body = await read_response(reader)
    assert status == 200 and body == b"GET /echo  q=" and headers[b"connection"] == b"close"
    assert await read_until_closed(reader) == b""  # the request behind it is not read as HTTP/1.1
    writer.close()


async def test_connect_gets_405_and_a_close(server):
    _, port = server
    reader, writer = await connect(port)
    writer.write(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    status, headers, _ = await read_response(reader)
    assert status == 405 and headers[b"allow"] == b""  # no target of ours allows CONNECT
    assert await read_until_closed(reader) == b""
    writer.close()


async def test_an_answer_before_the_body_closes_the_connection_instead_of_reading_it(server):
    _, port = server
    reader, writer = await connect(port)
    writer.write(b"POST /too-large HTTP/1.1\r\nHost: t\r\nContent-Length: 100000000\r\n\r\n" + b"x" * 65536)
    status, headers, _ = await read_response(reader)
    assert status == 413 and headers[b"connection"] == b"close"
    # The rest is not read: the server shut its side at once (the client may keep sending for
    # a moment, dropped, so that its kernel does not reset the connection before it read this).
    assert await read_until_closed(reader) == b""
    writer.close()


@pytest.mark.parametrize(("raw", "status", "path"), [
    (b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400, None),  # RFC 9112 §6.1
    (b"GET /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nNOT HTTP\r\n\r\n", 200, b"GET /echo  q="),
    (b"GET http://t/echo?a=1#frag HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 200, b"GET /echo  q=a=1"),
    (b"GET /echo#frag HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 200, b"GET /echo  q="),
    (b"GET /echo HTTP/1.1\r\n\r\n", 400, None),  # RFC 9112 §3.2: no Host
])
async def test_rfc_9112_details(server, raw, status, path):
    _, port = server
    reader, writer = await connect(port)
    writer.write(raw)
    got, _, body = await read_response(reader)
    assert got == status
    if path is not None:
        assert body == path
    assert await read_until_closed(reader) == b""
    writer.close()


@pytest.mark.parametrize("raw", [
    b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\nGARBAGE\r\n\r\n",  # a bad request after a good one
    b"POST /silent HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # a bad body
    b"POST /wait-body HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nab",  # the client leaves
])
async def test_no_error_is_logged_when_the_app_cannot_answer_a_refused_or_abandoned_request(server, raw, caplog):
    _, port = server
    caplog.set_level(logging.ERROR, logger="rainbridge.server")
    reader, writer = await connect(port)
    writer.write(raw)
    if raw.startswith(b"POST /wait-body"):
        await until(lambda: EVENTS, "the app to get the first part of the body")
        writer.close()
    else:
        await read_until_closed(reader)
    await until(lambda: not server[0].server_state.tasks and not server[0].server_state.connections, "all done")
    assert [r.getMessage() for r in caplog.records] == []
    writer.close()
    status, _, _ = await get(port, b"/silent")  # an app that really forgets to answer still logs
    assert status == 500 and any("without starting a response" in r.getMessage() for r in caplog.records)


def test_serve_flags_set_the_limits_and_timeouts(start_gateway):
    """``rainbridge serve`` (uvloop, our protocol) applies --max-url-bytes and --header-timeout."""
    gw = start_gateway(None, "--max-url-bytes", "100", "--header-timeout", "0.5")
    host, port = gw.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GET /health?" + b"q" * 120 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 414 ")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n")  # the head never ends
        answer = b""
        while chunk := sock.recv(65536):  # until the server closes (bounded by the 5 s timeout)
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408 ")
