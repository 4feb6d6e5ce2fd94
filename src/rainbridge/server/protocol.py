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
- one request runs at a time per connection; pipelined requests wait in order, and the
  socket is not read while one waits.

Everything else follows RFC 9112 at least as strictly as uvicorn's httptools protocol (the
differential test, tests/test_protocol_differential.py, compares the two and h11 byte for
byte and lists every difference): keep-alive (HTTP/1.1 only, as uvicorn and h11), ``Expect:
100-continue``, chunked bodies both ways, HEAD, the keep-alive timeout, ``shutdown()``
closing idle connections and finishing busy ones, and these refusals, each answered after
the responses to the requests before it, then the connection closes:

- 400 for what httptools cannot parse, an HTTP/1.1 request without exactly one ``Host``
  (§3.2), an HTTP/1.0 request with ``Transfer-Encoding`` (§6.1), a request target in none
  of the forms of §3.2 (the absolute form is accepted: path and query come from it);
- 414 for a request target over ``Limits.max_url_bytes``; 431 for header fields over
  ``Limits.max_header_bytes`` or ``Limits.max_headers``; 505 for a version other than 1.x;
- 405 for CONNECT (not a proxy); any other ``Upgrade`` is ignored (RFC 9110 §7.8): the
  request is answered as plain HTTP/1.1 and the connection closes, since what the client
  sends next may not be HTTP/1.1;
- 408 when a request head is not complete ``Limits.header_timeout`` seconds after its first
  byte arrived, or when the app waits ``Limits.body_timeout`` seconds for a body byte.

A response that is complete before its request body has been read (a 413, say) closes the
connection instead of reading the rest. Closing after a refusal is gentle: our side of the
connection is shut first, and what the client still sends is read and dropped for a moment
(``LINGER_S``), so its kernel does not reset the connection before it has read our answer.
"""

from __future__ import annotations

import asyncio
import collections
import http
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import httptools

from .http import HEAD_LINES

log = logging.getLogger("rainbridge.server")

HIGH_WATER = 64 * 1024  # request body bytes buffered before the socket stops being read
LINGER_S = 2.0  # after a refusal: how long what the client still sends is read and dropped
_STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in http.HTTPStatus}
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_DISCONNECT = {"type": "http.disconnect"}
_ASGI = {"version": "3.0", "spec_version": "2.4"}
_EXTENSIONS: dict[str, dict] = {HEAD_LINES: {}}


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request may make the server hold, and for how long (``rainbridge serve``
    flags of the same names). Defaults as nginx and Apache: a request target of 8 KiB, 100
    header fields, 32 KiB of them (nginx: 4 buffers of 8 KiB)."""

    max_url_bytes: int = 8 * 1024  # request target; longer: 414
    # Header fields of one request (trailer fields of a chunked body are held to it too),
    # counted as name + value + 3 bytes (":" and CRLF) each; more: 431. A head arriving in
    # several reads is also refused once its bytes exceed max_url_bytes + max_header_bytes +
    # 1 KiB (whitespace padding included), before httptools has joined a field that long.
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100  # header fields of one request; more: 431
    header_timeout: float = 20.0  # s from a request head's first byte to its end; then 408
    body_timeout: float = 60.0  # s the app waits for a body byte that does not come; then 408


class _Refused(Exception):
    """Raised in a parser callback to stop parsing; the answer is in ``HttpProtocol.refusal``."""


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d \r\n" % status


def _plain_response(status: int, text: bytes, extra: bytes = b"") -> bytes:
    return b"%sContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n%sConnection: close\r\n\r\n%s" % (
        _status_line(status), len(text), extra, text)


_BAD_REQUEST = _plain_response(400, b"Invalid HTTP request received.")
_TIMEOUT = _plain_response(408, b"Request timed out.")


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    # Slots: more than 30 attributes in an instance dict make every attribute read slower.
    __slots__ = ("__weakref__", "app", "app_state", "body_timeout", "buffered", "client", "closing", "counting", "cycle",
                 "drained", "head_bytes", "head_timer", "header_room", "header_timeout", "headers",
                 "idle_timer", "in_head", "keep_alive_timeout", "loop", "marks", "max_header_bytes",
                 "max_headers", "max_url", "parser", "pipeline", "read_paused", "reading", "refusal",
                 "root_path", "server", "server_state", "stopped", "transport", "url", "write_paused")

    def __init__(self, config: Any, server_state: Any, app_state: dict, _loop: asyncio.AbstractEventLoop | None = None,
                 limits: Limits = Limits()):
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.server_state = server_state
        self.app_state = app_state
        self.keep_alive_timeout = config.timeout_keep_alive
        self.root_path = config.root_path
        self.max_url = limits.max_url_bytes
        self.max_header_bytes = limits.max_header_bytes
        self.max_headers = limits.max_headers
        self.header_timeout = limits.header_timeout
        self.body_timeout = limits.body_timeout
        self.parser = httptools.HttpRequestParser(self)
        # Bytes after a request that closes the connection are not parsed (not a 400 for it).
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.transport: asyncio.Transport | None = None
        self.server: tuple[str, int] | None = None
        self.client: tuple[str, int] | None = None
        self.cycle: Cycle | None = None  # the request being answered
        self.pipeline: collections.deque[Cycle] = collections.deque()  # parsed, waiting their turn
        self.reading: Cycle | None = None  # the request whose body the parser is delivering
        # The request head being parsed: target, header fields, room left for more, and what
        # needs a closer look: 1 per Host, _CODED per Transfer-Encoding, _SPLIT_URL for a
        # target that came in pieces (a plain request has exactly 1).
        self.url: bytes | bytearray = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_room = 0
        self.counting = False  # header bytes are counted in this read (see data_received)
        self.marks = 0
        self.in_head = False
        self.head_bytes = -1  # of a head that came in several reads, after its first read (-1: none)
        self.write_paused = False
        self.drained: asyncio.Future | None = None
        self.read_paused = False
        self.buffered = 0  # body bytes of the request being read, not yet received by the app
        self.idle_timer: asyncio.TimerHandle | None = None
        self.head_timer: asyncio.TimerHandle | None = None
        self.closing = False  # shutdown asked: finish the current response, then close
        self.stopped = False  # no more parsing: a refusal, an upgrade, or closing gently
        self.refusal: bytes | None = None  # to write once the responses before it are out

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
        self._cancel_head_timer()
        for cycle in (self.cycle, self.reading, *self.pipeline):
            if cycle is not None:
                cycle.disconnected = True
                cycle.wake()
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        # The parser holds this protocol (its callbacks) and this protocol the parser, the
        # requests and their headers: drop them all now rather than at the next cyclic GC.
        self.parser = None  # type: ignore[assignment]
        self.pipeline.clear()
        self.cycle = self.reading = None
        self.url = b""
        self.headers = []
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.stopped:
            return  # after a refusal or an upgrade request: nothing more is parsed
        if self.idle_timer is not None:
            self._cancel_idle_timer()
        # A head that starts and ends in this read is at most len(data) bytes long: its header
        # fields need counting only when that could be over the limit, or when it began earlier
        # (or trailer fields began earlier: the trailer list is only filled between reads then).
        if self.in_head or len(data) > self.max_header_bytes or self.headers:
            self._count_from_here()
        elif self.counting:
            self.counting = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgrade_requested()
        except httptools.HttpParserError as exc:
            refusal, self.refusal = self.refusal, None
            if refusal is None:
                log.debug("invalid HTTP request from %s: %s", self.client, exc)
            self._refuse(refusal or _BAD_REQUEST)
        else:
            if self.in_head:
                self._head_incomplete(len(data))

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

    # -- refusals and closing -----------------------------------------------------------------

    def _refuse(self, response: bytes) -> None:
        """Stop parsing; ``response`` goes out after the responses to the requests before, then
        the connection closes. A request whose body was being read never completes: if it was
        waiting its turn it is dropped; if it runs, its app sees the client leave."""
        self.stopped = True
        self._cancel_head_timer()
        reading, self.reading = self.reading, None
        if reading is not None and reading is not self.cycle:
            self.pipeline.pop()  # the newest request is the one being read
        elif reading is not None:
            started = reading.started
            reading.disconnected = True
            reading.wake()
            self._close_gently(None if started else response)
            return
        if self.cycle is None:
            self._close_gently(response)
        else:
            self.refusal = response
            self._pause_reading()

    def _close_gently(self, response: bytes | None) -> None:
        """Write ``response``, shut our side, drop what the client still sends, then close."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.stopped = True
        self._cancel_idle_timer()
        if response is not None:
            transport.write(response)
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self.read_paused = False
        transport.resume_reading()
        self.idle_timer = self.loop.call_later(LINGER_S, transport.close)

    def _upgrade_requested(self) -> None:
        """CONNECT was refused in ``on_headers_complete``; any other ``Upgrade`` is ignored
        (RFC 9110 §7.8): the request is answered as HTTP/1.1, then the connection closes."""
        self.stopped = True
        self._pause_reading()
        cycle = self.pipeline[-1] if self.pipeline else self.cycle
        if cycle is None:  # answered already (its body came in several reads)
            self._close_gently(None)
        else:
            cycle.keep_alive = False

    def _head_incomplete(self, size: int) -> None:
        """A read ended inside a request head (a slow or hostile client): the rest has
        ``header_timeout`` seconds, and the bytes it takes are bounded here, since httptools
        joins a field that spans reads before ``on_header`` can count it (and quadratically)."""
        if self.head_bytes < 0:
            self.head_bytes = 0  # this read's bytes may be a previous request's, not the head's
        else:
            self.head_bytes += size
            if self.head_bytes > self.max_url + self.max_header_bytes + 1024:  # + the request line
                self._refuse(_plain_response(431, b"Request header fields too large."))
                return
        if self.head_timer is None and not self.read_paused:
            self.head_timer = self.loop.call_later(self.header_timeout, self._head_timeout)

    def _head_complete(self) -> None:
        """A head that came in several reads is complete."""
        self.head_bytes = -1
        self._cancel_head_timer()

    def _head_timeout(self) -> None:
        self.head_timer = None
        if self.in_head and not self.stopped:
            log.debug("request head from %s not complete after %.3g s", self.client, self.header_timeout)
            self._refuse(_TIMEOUT)

    def body_timed_out(self, cycle: Cycle) -> None:
        """The app waited ``body_timeout`` s for a body byte: 408 (unless it answered), close."""
        if self.reading is cycle and not self.stopped:
            log.debug("request body from %s stalled for %.3g s", self.client, self.body_timeout)
            self._refuse(_TIMEOUT)

    # -- timers and reading -----------------------------------------------------------------

    def _arm_idle_timer(self) -> None:
        if self.keep_alive_timeout and self.transport is not None:
            self.idle_timer = self.loop.call_later(self.keep_alive_timeout, self._idle_timeout)

    def _cancel_idle_timer(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None

    def _cancel_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _idle_timeout(self) -> None:
        if self.cycle is None and self.transport is not None:
            self.transport.close()

    def _pause_reading(self) -> None:
        # While nothing is read, a half-read head is not the client's delay.
        self._cancel_head_timer()
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Read again, unless requests still wait their turn or the body buffer is full."""
        if self.read_paused and not self.stopped and not self.pipeline and self.buffered <= HIGH_WATER \
                and self.transport is not None:
            self.read_paused = False
            self.transport.resume_reading()
            if self.in_head and self.head_timer is None:
                self.head_timer = self.loop.call_later(self.header_timeout, self._head_timeout)

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        if self.headers:  # trailer fields of the last request
            self.headers = []
        self.header_room = self.max_header_bytes
        self.marks = 0
        self.in_head = True

    def on_url(self, url: bytes) -> None:
        if self.url:  # a target split across reads: grow in place (a long one is not quadratic)
            url = self._longer_url(url)
        elif len(url) > self.max_url:
            self._refuse_head(414, b"Request target too long.")
        self.url = url

    def _longer_url(self, url: bytes) -> bytearray:
        if isinstance(self.url, bytearray):
            so_far = self.url
        else:
            so_far = bytearray(self.url)
            self.marks |= _SPLIT_URL  # made bytes again in _check_unusual
        so_far += url
        if len(so_far) > self.max_url:
            self._refuse_head(414, b"Request target too long.")
        return so_far

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in _WATCHED:
            self.marks += 1 if name == b"host" else _CODED
        # httptools keeps trailing whitespace, which is not part of the value (RFC 9110 §5.5).
        value = value.rstrip(b" \t")
        self.headers.append((name, value))
        if self.counting:
            self._count_header(len(name) + len(value))

    def _count_from_here(self) -> None:
        """Count header bytes in this read; a head (or trailer section) begun in an earlier
        read, uncounted, counts what it has (once: then counting goes on with it)."""
        if not self.counting and self.headers:
            self.header_room = self.max_header_bytes - sum(len(n) + len(v) + 3 for n, v in self.headers)
        self.counting = True

    def _count_header(self, size: int) -> None:
        # 3: the ":" and CRLF around a field, so that a count never exceeds the bytes sent.
        self.header_room -= size + 3
        if self.header_room < 0:
            self._refuse_head(431, b"Request header fields too large.")

    def _refuse_head(self, status: int, text: bytes, extra: bytes = b"") -> None:
        self.refusal = _plain_response(status, text, extra)
        raise _Refused()

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.head_bytes >= 0:
            self._head_complete()
        parser = self.parser
        headers = self.headers
        self.headers = []  # trailer fields of a chunked body land here, never in the scope
        url = self.url
        version = parser.get_http_version()
        method = parser.get_method().decode("ascii", "replace")
        if version != "1.1" or self.marks != 1 or url[:1] != b"/" or method == "CONNECT" \
                or len(headers) > self.max_headers:
            url = self._check_unusual(version, method, url, headers)
        if 35 in url:  # "#" (an int: memchr): a fragment is never sent, never part of the path
            url = url[:url.index(b"#")]
        path, _, query = url.partition(b"?")
        path_text = path.decode("ascii", "replace")
        if "%" in path_text:
            path_text = unquote(path_text)
        scope = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": version,
            "server": self.server,
            "client": self.client,
            "scheme": "http",
            "method": method,
            "root_path": self.root_path,
            "path": path_text,
            "raw_path": path,
            "query_string": query,
            "headers": headers,
            "state": self.app_state.copy(),
            "extensions": _EXTENSIONS,
        }
        # HTTP/1.0 closes after every response, as in uvicorn and h11 (no "keep-alive" option).
        keep_alive = parser.should_keep_alive() and version == "1.1" and not self.closing
        cycle = Cycle(self, scope, keep_alive, method == "HEAD")
        self.reading = cycle
        self.buffered = 0
        self.server_state.total_requests += 1
        if self.cycle is None:
            self._start(cycle)
        else:
            self.pipeline.append(cycle)
            self._pause_reading()  # no more requests read while this one waits

    def _check_unusual(self, version: str, method: str, url: bytes | bytearray,
                       headers: list[tuple[bytes, bytes]]) -> bytes:
        """The rules a plain HTTP/1.1 request passes without looking; the request target in
        origin form (absolute form: its path and query), or a refusal."""
        if version not in ("1.1", "1.0"):
            self._refuse_head(505, b"HTTP version not supported.")
        hosts = self.marks % _CODED
        if hosts > 1 or (hosts == 0 and version == "1.1"):
            self._refuse_head(400, b"An HTTP/1.1 request needs exactly one Host header (RFC 9112 3.2).")
        if self.marks % _SPLIT_URL >= _CODED:
            self._check_coding(version, headers)
        if len(headers) > self.max_headers:
            self._refuse_head(431, b"Too many request header fields.")
        if method == "CONNECT":
            # Not a proxy: no target of ours allows CONNECT (an empty Allow, RFC 9110 §10.2.1).
            self._refuse_head(405, b"CONNECT is not supported.", b"Allow: \r\n")
        url = bytes(url)
        if url[:1] == b"/":
            return url
        if url == b"*" and method == "OPTIONS":  # asterisk form (§3.2.4)
            return url
        try:  # absolute form (§3.2.2)
            parsed = httptools.parse_url(url)
        except httptools.HttpParserInvalidURLError:
            parsed = None
        if parsed is None or parsed.schema not in (b"http", b"https") or not parsed.host \
                or not (parsed.path or b"/").startswith(b"/"):
            self._refuse_head(400, b"Invalid request target.")
        assert parsed is not None
        path = parsed.path or b"/"
        return path + b"?" + parsed.query if parsed.query is not None else path

    def _check_coding(self, version: str, headers: list[tuple[bytes, bytes]]) -> None:
        """Transfer-Encoding (httptools already refuses some mistakes; these are the rest)."""
        if version == "1.0":
            self._refuse_head(400, b"Transfer-Encoding is not allowed in HTTP/1.0 (RFC 9112 6.1).")
        codings = b",".join(value for name, value in headers if name == b"transfer-encoding").lower()
        if codings.strip() == b"chunked":
            return
        if codings.rsplit(b",", 1)[-1].strip() != b"chunked":  # the length cannot be known (§6.3)
            self._refuse_head(400, b"Transfer-Encoding must end in chunked (RFC 9112 6.3).")
        self._refuse_head(501, b"Only the chunked transfer coding is implemented.")

    def on_body(self, body: bytes) -> None:
        cycle = self.reading
        if cycle is None or cycle.response_complete:
            return
        cycle.body.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.read_paused:
            self._pause_reading()
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
        if self.read_paused:
            self.resume_reading()

    def response_done(self, cycle: Cycle) -> None:
        """A response went out completely: next pipelined request, keep-alive or close."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not cycle.keep_alive or self.closing:
            if cycle.more_body or self.stopped:  # input left unread: let the client read this
                self._close_gently(None)
            else:
                transport.close()
            return
        self.cycle = None
        if self.pipeline:
            self._start(self.pipeline.popleft())
            self.resume_reading()
        elif self.refusal is not None:
            refusal, self.refusal = self.refusal, None
            self._close_gently(refusal)
        else:
            if self.read_paused:
                self.resume_reading()
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
        if self.disconnected or transport is None or transport.is_closing():
            return  # the client left, or the connection was refused or failed: nothing to say
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
            if not self.started and not conn.stopped and conn.transport is not None \
                    and _expects_continue(self.scope["headers"]):
                conn.transport.write(_CONTINUE)
        # After the whole body (ASGI): wait until the response is done or the client leaves.
        while not (self.disconnected or self.response_complete) and (self.body_read or (self.more_body and not self.body)):
            waiter = self.waiter  # shared: two coroutines waiting on receive() both wake
            if waiter is None:
                waiter = self.waiter = conn.loop.create_future()
            if self.body_read:
                await waiter
                continue
            timer = conn.loop.call_later(conn.body_timeout, conn.body_timed_out, self)
            try:
                await waiter
            finally:
                timer.cancel()
        if self.disconnected or self.response_complete:
            return _DISCONNECT
        chunks = self.body
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.body = []
        if conn.reading is self or conn.reading is None:  # None: the parser finished this
            conn.body_consumed()  # body; its last part still counted as buffered
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
            if self.more_body:  # answered before the whole body came (a 413): close, unread
                self.keep_alive = False
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
# Request header names the protocol looks at (in on_header); see HttpProtocol.marks.
_WATCHED = frozenset((b"host", b"transfer-encoding"))
_CODED = 1 << 16
_SPLIT_URL = 1 << 32
_FRAMING = frozenset((b"content-length", b"transfer-encoding", b"connection"))


def _expects_continue(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name == b"expect" and value.lower() == b"100-continue" for name, value in headers)


def _address(value: Any) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return str(value[0]), int(value[1])
    return None
