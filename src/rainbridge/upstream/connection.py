"""One keep-alive HTTP/1.1 connection to an upstream, parsed with httptools.

Why not aiohttp: its client spends ~45 % of a gateway worker's CPU per request (a task per
request body, multidicts, payload registries, trace hooks). Here a request is one
``transport.write`` of a prebuilt head plus the body, and the response is parsed in C by
httptools; the measured difference is in ``bench/README.md``.

A connection carries one exchange at a time. ``Exchange`` is what the caller awaits: the
status and headers, then either the whole body or a stream of body chunks.

The pool must never hand a response to the wrong request. So (RFC 9110 §15.2, RFC 9112):

- interim responses (1xx but 101) are parsed and skipped; the exchange waits for the final
  response on the same connection. A 101 (a protocol switch we never asked for) fails it;
- a connection goes back to the pool only after a complete final response, with nothing
  after it in the same read, and reading on, so that a byte (or EOF) arriving while it is
  idle is noticed: such a connection is dropped, never reused;
- the response head is bounded (``MAX_HEAD_BYTES``), so is a body buffered whole
  (``MAX_BODY_BYTES``); a status outside 100-599 or a content coding we did not ask for
  (we send ``Accept-Encoding: identity``) is a ``ProtocolError``.
"""

from __future__ import annotations

import asyncio
from collections import deque

import httptools

# Read no more from the socket while this many body bytes wait for the consumer.
STREAM_HIGH_WATER = 256 * 1024
STREAM_LOW_WATER = 64 * 1024

# The status line and headers of a response (interim ones included) may take this many bytes.
# Checked per read, so a head that arrives in one read may exceed it by up to that read.
MAX_HEAD_BYTES = 64 * 1024
# Interim responses one exchange may skip (servers send one or two: 100, 103). Counting them
# bounds a run of them whatever the reads' sizes: bytes are counted per read only while the
# final head is incomplete, and one read may hold many interims and the final head at once.
MAX_INTERIM_RESPONSES = 100

# A body read whole (non-streaming answers, error bodies) may take this many bytes. The
# largest legitimate answer we know of is an embeddings batch (2,048 inputs × 3,072 floats
# as JSON ≈ 120 MB); streamed bodies are bounded by the flow control above instead.
MAX_BODY_BYTES = 128 * 1024 * 1024


class ConnectionLost(ConnectionError):
    """The upstream closed or broke the connection during an exchange.

    ``before_response`` is True when not a byte of the response had arrived: on a reused
    keep-alive connection that means the upstream had closed it while idle, and the request
    can be sent again safely.
    """

    def __init__(self, message: str, before_response: bool):
        super().__init__(message)
        self.before_response = before_response


class ProtocolError(ConnectionError):
    """The upstream's response is not valid HTTP/1.1, or not one we accept (502)."""


class ResponseTooLarge(ProtocolError):
    """The response head or a body read whole is larger than the client accepts."""


class Exchange:
    """The response side of one request: headers first, then the body (whole or streamed)."""

    __slots__ = (
        "_body",
        "_chunks",
        "_conn",
        "_size",
        "_waiter",
        "content_type",
        "done",
        "error",
        "error_type",
        "headers_done",
        "retry_after",
        "status",
        "stream",
    )

    def __init__(self, conn: Connection, stream: bool):
        self._conn = conn
        self.stream = stream
        self.status = 0
        self.retry_after: str | None = None
        self.content_type: str | None = None
        self.error_type: str | None = None  # x-amzn-ErrorType
        self.headers_done = False
        self.done = False
        self.error: BaseException | None = None
        self._body: list[bytes] = []
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._waiter: asyncio.Future | None = None

    # -- called by the connection ---------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _body_data(self, data: bytes) -> None:
        self._size += len(data)
        if self.stream and self.status < 400:
            self._chunks.append(data)
            if self._size > STREAM_HIGH_WATER:
                self._conn.pause_reading()
        else:
            if self._size > self._conn.max_body:
                raise ResponseTooLarge(f"response body larger than {self._conn.max_body} bytes")
            self._body.append(data)
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if not self.done:
            self.error = error
            self.done = True
        self._wake()

    # -- used by the caller ---------------------------------------------------------------

    async def _wait(self, timeout: float | None = None) -> None:
        loop = self._conn.loop
        waiter = self._waiter = loop.create_future()
        if timeout is None:
            await waiter
            return
        timer = loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()

    async def headers(self) -> None:
        """Wait for the status line and headers."""
        while not self.headers_done:
            if self.error is not None:
                raise self.error
            await self._wait()

    async def read(self) -> bytes:
        """The whole body (for non-streaming requests and for error responses)."""
        while not self.done:
            await self._wait()
        if self.error is not None:
            raise self.error
        body = self._body
        return body[0] if len(body) == 1 else b"".join(body)

    async def chunks(self, idle_timeout: float | None = None):
        """Iterate over the streamed body."""
        while (data := await self.next_chunk(idle_timeout)) is not None:
            yield data

    async def next_chunk(self, idle_timeout: float | None = None) -> bytes | None:
        """The next piece of a streamed body; None at its end.

        Raises ``TimeoutError`` when nothing arrives for ``idle_timeout`` seconds.
        """
        while True:
            if self._chunks:
                data = self._chunks.popleft()
                self._size -= len(data)
                if self._size < STREAM_LOW_WATER and not self.done:
                    self._conn.resume_reading()
                return data
            if self.error is not None:
                raise self.error
            if self.done:
                return None
            await self._wait(idle_timeout)

    def abort(self) -> None:
        """Give up on this exchange (client gone, consumer done early): drop the connection."""
        if not self.done:
            self._conn.abort()
            self.done = True


_LENGTH, _TYPE, _TRANSFER, _RETRY, _ENCODING, _ERROR_TYPE = range(6)
_WATCHED = {
    b"x-amzn-errortype": _ERROR_TYPE,  # AWS: the exception an error status is
    b"content-length": _LENGTH,
    b"content-type": _TYPE,
    b"transfer-encoding": _TRANSFER,
    b"retry-after": _RETRY,
    b"content-encoding": _ENCODING,
}


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class Connection(asyncio.Protocol):
    """A pooled connection. ``pool.release`` gets it back after a complete exchange.

    Per exchange: ``start`` sends the request; interim responses are skipped; the final
    response completes the exchange, and only then, at the end of the read that completed
    it (``data_received``), does the connection go back to the pool.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, release, max_body: int = MAX_BODY_BYTES):
        self.loop = loop
        self._release = release
        self.max_body = max_body
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.closed = False
        self.reused = False  # has carried an exchange before
        self.idle_since = 0.0
        self._received = False  # any byte of the current response
        self._paused = False
        self._interim = False  # the message being parsed is a 1xx
        self._finished = False  # the final response ended in the read being parsed
        self._keep_alive = False
        self._head_bytes = 0  # bytes read while the final response's head is incomplete
        self._interims = 0  # interim responses skipped in this exchange
        self._coding: bytes | None = None  # a content/transfer coding we cannot relay

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:  # a byte while idle: a stray or forged response
            self.abort()
            return
        self._received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._broken(ProtocolError("unexpected protocol upgrade"))
            return
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            self._broken(cause if isinstance(cause, ProtocolError) else ProtocolError(f"malformed HTTP response: {exc}"))
            return
        if self._finished:  # back to the pool (reading on, so a stray byte or EOF is seen)
            self._finished = False
            if self._keep_alive and not self.closed:
                self.resume_reading()
                self._release(self)
            else:
                self.close()
        elif not exchange.headers_done:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._broken(ResponseTooLarge(f"response head larger than {MAX_HEAD_BYTES} bytes"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        exchange = self.exchange
        if exchange is not None and not exchange.done:
            if exchange.headers_done and not self._has_length:
                exchange.done = True  # a body delimited by the connection's end
                exchange._wake()
            else:
                reason = f": {exc}" if exc else ""
                exchange._fail(ConnectionLost(f"connection closed by upstream{reason}", not self._received))
        self.exchange = None

    def pause_writing(self) -> None:  # requests are small; nothing to pause
        pass

    # -- httptools callbacks --------------------------------------------------------------
    # Raising a ProtocolError in a callback stops the parser; data_received reports it.

    def on_message_begin(self) -> None:
        if self.exchange is None:  # bytes after the final response, in the same read
            raise ProtocolError("response data after the end of the response")
        self._has_length = False
        self._coding = None

    def on_header(self, name: bytes, value: bytes) -> None:
        kind = _WATCHED.get(name.lower())  # one lookup: most headers are none of these
        if kind is None:
            return
        exchange = self.exchange
        if exchange is None:
            return
        if kind == _LENGTH:
            self._has_length = True
        elif kind == _TYPE:
            exchange.content_type = value.decode("latin-1")
        elif kind == _TRANSFER:
            self._has_length = True
            if value.lower() != b"chunked":
                self._coding = value
        elif kind == _RETRY:
            exchange.retry_after = value.decode("latin-1")
        elif kind == _ERROR_TYPE:
            exchange.error_type = value[:200].decode("latin-1")
        elif value.lower() != b"identity":  # content-encoding
            self._coding = value

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        if exchange is None:
            return
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101 or status < 100:
                raise ProtocolError(f"unexpected status {status}")
            self._interim = True  # skipped; its headers are not the answer's
            self._interims += 1
            if self._interims > MAX_INTERIM_RESPONSES:
                raise ResponseTooLarge(f"more than {MAX_INTERIM_RESPONSES} interim responses")
            exchange.retry_after = exchange.content_type = exchange.error_type = None
            return
        if status > 599:
            raise ProtocolError(f"invalid status {status}")
        if self._coding is not None:
            coding = self._coding.decode("latin-1")[:40]
            raise ProtocolError(f"response coding {coding!r} was not asked for")
        exchange.status = status
        exchange.headers_done = True
        exchange._wake()

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange._body_data(body)

    def on_message_complete(self) -> None:
        exchange = self.exchange
        if exchange is None:
            return
        if self._interim:  # wait for the final response on this same exchange
            self._interim = False
            return
        exchange.done = True
        exchange._wake()
        self.exchange = None
        self._keep_alive = self.parser.should_keep_alive()
        self._finished = True  # released by data_received once the whole read is parsed

    # -- used by the pool and the client --------------------------------------------------

    _has_length = False

    def start(self, head: bytes, body: bytes, stream: bool) -> Exchange:
        assert self.exchange is None and not self.closed
        exchange = Exchange(self, stream)
        self.exchange = exchange
        self._received = False
        self._head_bytes = 0
        self._interims = 0
        transport = self.transport
        assert transport is not None
        if body:
            transport.writelines((head, body))
        else:
            transport.write(head)
        return exchange

    def pause_reading(self) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def _broken(self, error: BaseException) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange._fail(error)
        self.abort()

    def abort(self) -> None:
        """Drop the connection now (an abandoned or failed exchange): never reused."""
        self.closed = True
        self.exchange = None
        self._finished = False
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
