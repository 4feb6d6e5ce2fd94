"""One keep-alive HTTP/1.1 connection to an upstream, parsed with httptools.

Why not aiohttp: its client spends ~45 % of a gateway worker's CPU per request (a task per
request body, multidicts, payload registries, trace hooks). Here a request is one
``transport.write`` of a prebuilt head plus the body, and the response is parsed in C by
httptools; the measured difference is in ``bench/README.md``.

A connection carries one exchange at a time. ``Exchange`` is what the caller awaits: the
status and headers, then either the whole body or a stream of body chunks.
"""

from __future__ import annotations

import asyncio
from collections import deque

import httptools

# Read no more from the socket while this many body bytes wait for the consumer.
STREAM_HIGH_WATER = 256 * 1024
STREAM_LOW_WATER = 64 * 1024


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
    """The upstream's response is not valid HTTP/1.1."""


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
        if self.stream and self.status < 400:
            self._chunks.append(data)
            self._size += len(data)
            if self._size > STREAM_HIGH_WATER:
                self._conn.pause_reading()
        else:
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


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class Connection(asyncio.Protocol):
    """A pooled connection. ``pool.release`` gets it back after a complete exchange."""

    def __init__(self, loop: asyncio.AbstractEventLoop, release):
        self.loop = loop
        self._release = release
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.closed = False
        self.reused = False  # has carried an exchange before
        self.idle_since = 0.0
        self._received = False  # any byte of the current response
        self._paused = False

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # pragma: no cover - we never ask to upgrade
            self._broken(ProtocolError("unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._broken(ProtocolError(f"malformed HTTP response: {exc}"))

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

    def pause_writing(self) -> None:  # requests are small; nothing to pause
        pass

    # -- httptools callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._has_length = False

    def on_header(self, name: bytes, value: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            return
        lower = name.lower()
        if lower == b"content-length" or lower == b"transfer-encoding":
            self._has_length = True
        elif lower == b"retry-after":
            exchange.retry_after = value.decode("latin-1")
        elif lower == b"content-type":
            exchange.content_type = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.status = self.parser.get_status_code()
            exchange.headers_done = True
            exchange._wake()

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange._body_data(body)

    def on_message_complete(self) -> None:
        exchange = self.exchange
        if exchange is None:
            return
        exchange.done = True
        exchange._wake()
        self.exchange = None
        if self.parser.should_keep_alive() and not self.closed:
            self.resume_reading()
            self._release(self)
        else:
            self.close()

    # -- used by the pool and the client --------------------------------------------------

    _has_length = False

    def start(self, head: bytes, body: bytes, stream: bool) -> Exchange:
        exchange = Exchange(self, stream)
        self.exchange = exchange
        self._received = False
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
        self.exchange = None
        if exchange is not None:
            exchange._fail(error)
        self.abort()

    def abort(self) -> None:
        """Drop the connection now (an abandoned or failed exchange): never reused."""
        self.closed = True
        self.exchange = None
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
