"""HTTP/1.1 for the gateway: httptools parses, this protocol turns requests into ASGI calls.

uvicorn still runs the server (sockets, workers, signals, lifespan, graceful shutdown) and
creates one of these per connection (``uvicorn.Config(http=HttpProtocol)``); what we own is
the per-request work, because on a gateway that is most of the work:

- response headers are checked for what can break HTTP: a name that is not a token (once
  per name), a CR or LF smuggled into a value (one count over the head, when a value
  changed); a rendered line is reused while its value stays. uvicorn runs two regular
  expressions per header on every response;
- a response with a ``content-length`` goes out in one ``write`` (status line, headers and
  body together); a streamed response writes its head at once and then each chunk;
- one request runs at a time per connection; pipelined requests wait in order.

Everything else follows RFC 9112 the way uvicorn's httptools protocol does: keep-alive
(HTTP/1.0 only on request), ``Expect: 100-continue``, chunked bodies in both directions, HEAD,
400 on a request httptools cannot parse, 500 when the app fails before answering, the
keep-alive timeout, and ``shutdown()`` closing idle connections and finishing busy ones.
"""

from __future__ import annotations

import asyncio
import collections
import http
import logging
import re
from typing import Any
from urllib.parse import unquote

import httptools

from .http import HEAD_LINES

log = logging.getLogger("rainbridge.server")

HIGH_WATER = 64 * 1024  # request body bytes buffered before the socket stops being read
_STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in http.HTTPStatus}
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_DISCONNECT = {"type": "http.disconnect"}
_ASGI = {"version": "3.0", "spec_version": "2.4"}
_EXTENSIONS: dict[str, dict] = {HEAD_LINES: {}}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d \r\n" % status


def _plain_response(status: int, text: bytes) -> bytes:
    return b"%sContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (
        _status_line(status), len(text), text)


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, config: Any, server_state: Any, app_state: dict, _loop: asyncio.AbstractEventLoop | None = None):
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.server_state = server_state
        self.app_state = app_state
        self.keep_alive_timeout = config.timeout_keep_alive
        self.root_path = config.root_path
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.server: tuple[str, int] | None = None
        self.client: tuple[str, int] | None = None
        self.cycle: Cycle | None = None  # the request being answered
        self.pipeline: collections.deque[Cycle] = collections.deque()  # parsed, waiting their turn
        self.reading: Cycle | None = None  # the request whose body the parser is delivering
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.write_paused = False
        self.drained: asyncio.Future | None = None
        self.read_paused = False
        self.buffered = 0  # body bytes of the request being read, not yet received by the app
        self.idle_timer: asyncio.TimerHandle | None = None
        self.closing = False  # shutdown asked: finish the current response, then close

    # -- connection -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        self.transport = transport  # type: ignore[assignment]
        self.server_state.connections.add(self)
        self.server = _address(transport.get_extra_info("sockname"))
        self.client = _address(transport.get_extra_info("peername"))
        self._arm_idle_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)
        self._cancel_idle_timer()
        for cycle in (self.cycle, self.reading, *self.pipeline):
            if cycle is not None:
                cycle.disconnected = True
                cycle.wake()
        self.pipeline.clear()
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._cancel_idle_timer()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # No protocol switching here (no WebSocket, no h2c): the request was already
            # parsed as plain HTTP; answer it and close, since what follows is not HTTP/1.1.
            if self.reading is not None:
                self.reading.keep_alive = False
        except httptools.HttpParserError as exc:
            log.debug("invalid HTTP request from %s: %s", self.client, exc)
            self._fail_connection(400, b"Invalid HTTP request received.")

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        self.drained = None

    def shutdown(self) -> None:
        """Server shutdown: close now when idle, else after the response in progress."""
        self.closing = True
        if self.cycle is None and self.transport is not None:
            self.transport.close()

    def _fail_connection(self, status: int, text: bytes) -> None:
        """Answer a request httptools cannot parse (unless a response already began) and close;
        the app of a request still running sees a closed connection and stops writing."""
        assert self.transport is not None
        if self.cycle is None or not self.cycle.started:
            self.transport.write(_plain_response(status, text))
        self.transport.close()

    def _arm_idle_timer(self) -> None:
        if self.keep_alive_timeout and self.transport is not None:
            self.idle_timer = self.loop.call_later(self.keep_alive_timeout, self._idle_timeout)

    def _cancel_idle_timer(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None

    def _idle_timeout(self) -> None:
        if self.cycle is None and self.transport is not None:
            self.transport.close()

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        path, _, query = self.url.partition(b"?")
        raw_path = path
        path_text = path.decode("ascii", "replace")
        if "%" in path_text:
            path_text = unquote(path_text)
        method = parser.get_method().decode("ascii", "replace")
        scope = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": parser.get_http_version(),
            "server": self.server,
            "client": self.client,
            "scheme": "http",
            "method": method,
            "root_path": self.root_path,
            "path": path_text,
            "raw_path": raw_path,
            "query_string": query,
            "headers": self.headers,
            "state": self.app_state.copy(),
            "extensions": _EXTENSIONS,
        }
        cycle = Cycle(self, scope, parser.should_keep_alive() and not self.closing, method == "HEAD")
        self.reading = cycle
        self.buffered = 0
        self.server_state.total_requests += 1
        if self.cycle is None:
            self._start(cycle)
        else:
            self.pipeline.append(cycle)

    def on_body(self, body: bytes) -> None:
        cycle = self.reading
        if cycle is None or cycle.response_complete:
            return
        cycle.body.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()
        cycle.wake()

    def on_message_complete(self) -> None:
        cycle = self.reading
        if cycle is None:
            return
        cycle.more_body = False
        self.reading = None
        cycle.wake()

    # -- requests ---------------------------------------------------------------------------

    def _start(self, cycle: Cycle) -> None:
        self.cycle = cycle
        task = self.loop.create_task(cycle.run(self.app))
        self.server_state.tasks.add(task)
        task.add_done_callback(self.server_state.tasks.discard)

    def body_consumed(self) -> None:
        """The app took the buffered body: read the socket again."""
        self.buffered = 0
        self.resume_reading()

    def resume_reading(self) -> None:
        if self.read_paused and self.transport is not None:
            self.read_paused = False
            self.transport.resume_reading()

    def response_done(self, cycle: Cycle) -> None:
        """A response went out completely: next pipelined request, keep-alive or close."""
        if self.transport is None or self.transport.is_closing():
            return
        if not cycle.keep_alive or self.closing:
            self.transport.close()
            return
        self.cycle = None
        self.resume_reading()
        if self.pipeline:
            self._start(self.pipeline.popleft())
        else:
            self._arm_idle_timer()

    async def wait_drained(self) -> None:
        if self.drained is None:
            self.drained = self.loop.create_future()
        await self.drained


class Cycle:
    """One request and its response: the ASGI ``receive`` and ``send`` of one call."""

    __slots__ = ("body", "body_read", "chunked", "conn", "continue_checked", "disconnected", "head", "head_only",
                 "keep_alive", "more_body", "response_complete", "scope", "started", "waiter")

    def __init__(self, conn: HttpProtocol, scope: dict, keep_alive: bool, head_only: bool):
        self.conn = conn
        self.scope = scope
        self.keep_alive = keep_alive
        self.head_only = head_only
        self.body: list[bytes] = []  # received, not yet handed to the app
        self.more_body = True  # the parser has not seen the end of the request body
        self.body_read = False  # the app has received the last body message
        self.continue_checked = False  # Expect: 100-continue looked for (only when the body is late)
        self.disconnected = False
        self.started = False
        self.response_complete = False
        self.chunked = False
        self.head: bytes | None = None  # status line and headers, not written yet
        self.waiter: asyncio.Future | None = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def run(self, app: Any) -> None:
        transport = self.conn.transport
        try:
            await app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:  # graceful shutdown ran out of time
            if transport is not None:
                transport.close()
            raise
        except Exception as exc:
            log.error("exception in ASGI application", exc_info=exc)
            if not self.started:
                self._write_error()
            elif transport is not None:
                transport.close()  # a half-sent response cannot be finished
            return
        if self.disconnected or transport is None:
            return
        if not self.started:
            log.error("ASGI application returned without starting a response")
            self._write_error()
        elif not self.response_complete:
            log.error("ASGI application returned without completing the response")
            transport.close()

    def _write_error(self) -> None:
        transport = self.conn.transport
        if transport is not None and not self.disconnected:
            transport.write(_plain_response(500, b"Internal Server Error"))
            transport.close()

    async def receive(self) -> dict:
        conn = self.conn
        if self.more_body and not self.body and not self.continue_checked:
            # The app waits for a body that has not come: a client that sent
            # "Expect: 100-continue" waits for our go-ahead first.
            self.continue_checked = True
            if not self.started and conn.transport is not None and _expects_continue(self.scope["headers"]):
                conn.transport.write(_CONTINUE)
        # After the whole body (ASGI): wait until the response is done or the client leaves.
        while not (self.disconnected or self.response_complete) and (self.body_read or (self.more_body and not self.body)):
            waiter = self.waiter  # shared: two coroutines waiting on receive() both wake
            if waiter is None:
                waiter = self.waiter = conn.loop.create_future()
            await waiter
        if self.disconnected or self.response_complete:
            return _DISCONNECT
        chunks = self.body
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.body = []
        if conn.reading is self:
            conn.body_consumed()
        if not self.more_body:
            self.body_read = True
        return {"type": "http.request", "body": body, "more_body": self.more_body}

    async def send(self, message: dict) -> None:
        conn = self.conn
        if conn.write_paused and not self.disconnected:
            await conn.wait_drained()
        transport = conn.transport
        if self.disconnected or transport is None or transport.is_closing():
            return  # the client left, or the connection was failed: nobody reads this
        kind = message["type"]
        if not self.started:
            if kind != "http.response.start":
                raise RuntimeError(f"expected ASGI message 'http.response.start', got {kind!r}")
            self.head = self._head(message["status"], message.get("headers", ()), message.get(HEAD_LINES))
            self.started = True
            self.continue_checked = True  # answering without the body: no 100 any more
            if self.chunked or self.head_only:  # a stream: the client sees the headers now
                transport.write(self.head)
                self.head = None
            return
        if kind != "http.response.body":
            raise RuntimeError(f"expected ASGI message 'http.response.body', got {kind!r}")
        if self.response_complete:
            raise RuntimeError("the response is already complete")
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if self.head is not None:  # content-length known: head and body in one write
            if len(body) > 65536:
                transport.writelines((self.head, body))  # no copy of a big body
            else:
                transport.write(self.head + body if body else self.head)
            self.head = None
        elif self.chunked:
            if body:
                transport.write(b"%x\r\n%s\r\n" % (len(body), body))
            if not more:
                transport.write(b"0\r\n\r\n")
        elif body and not self.head_only:
            transport.write(body)
        if not more:
            self.response_complete = True
            self.wake()
            conn.response_done(self)

    def _head(self, status: int, headers: Any, lines: bytes | None) -> bytes:
        parts = [_status_line(status)]  # one element per line
        known = _KNOWN
        has_length = has_close = False
        fresh = False  # a line whose value has not been checked yet
        for name, value in headers:
            seen = known.get(name)
            if seen is not None:  # a checked name: reuse its line while the value stays
                if value != seen[0]:
                    seen = known[name] = (value, name + b": " + value + b"\r\n")
                    fresh = fresh or not value.isdigit()  # digits need no look (counts)
                parts.append(seen[1])
                continue
            if name == b"content-length" and value.isdigit():  # on nearly every response
                has_length = True
                parts.append(b"content-length: " + value + b"\r\n")
                continue
            lower = name.lower()
            if _TOKEN.fullmatch(lower) is None:
                raise RuntimeError(f"invalid HTTP header name {name!r}")
            fresh = True
            line = lower + b": " + value + b"\r\n"
            if lower in _FRAMING:
                if lower == b"transfer-encoding":
                    continue  # the framing is ours to choose
                if lower == b"content-length":
                    has_length = True
                elif b"close" in value.lower():  # connection
                    self.keep_alive = False
                    has_close = True
            elif lower == name:
                if len(known) >= 1024:
                    known.clear()
                known[name] = (value, line)
            parts.append(line)
        if lines:  # rendered by the app (HEAD_LINES): its own lines, written as they are
            parts.append(lines)
        if not self.keep_alive and not has_close:
            parts.append(b"connection: close\r\n")
        if not has_length and not self.head_only and status not in (204, 304):
            self.chunked = True
            parts.append(b"transfer-encoding: chunked\r\n")
        parts.append(b"\r\n")
        head = b"".join(parts)
        # Every line ends in its one CRLF: any other CR or LF came from a header value.
        if fresh:
            ends = len(parts) - 1 + lines.count(b"\n") if lines else len(parts)
            if head.count(b"\n") != ends or head.count(b"\r") != ends:
                known.clear()  # a kept line may be the bad one
                raise RuntimeError("invalid HTTP header value (contains CR or LF: response splitting)")
        return head


# Header names already checked (lower case, HTTP tokens, not framing), each with its last
# value and rendered line: responses repeat their headers (content-type; on governed answers
# the limit and, for a tenth of a second, the reset of each rate limit), so most lines are
# reused as they are. Framing headers are never kept: they decide how the body is sent.
_KNOWN: dict[bytes, tuple[bytes, bytes]] = {}
_FRAMING = frozenset((b"content-length", b"transfer-encoding", b"connection"))


def _expects_continue(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name == b"expect" and value.lower() == b"100-continue" for name, value in headers)


def _address(value: Any) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return str(value[0]), int(value[1])
    return None
