"""A minimal HTTP/1.1 server connection on `asyncio.Protocol` and httptools.

Requests are answered strictly in arrival order: while one response is in
flight as a task (a wait, a stream), later pipelined requests queue behind it.
Plain responses are written synchronously from the parser callback, with no
task and no await, which is what makes the fake fast.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Protocol

import httptools

from .reply import Reply, Request

log = logging.getLogger(__name__)

JSON = b"application/json"
SSE = b"text/event-stream; charset=utf-8"
# Stop reading a pipelining client once this many requests wait behind a slow one.
MAX_QUEUED = 64

_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}
_STATUS_LINES[529] = b"HTTP/1.1 529 Site Overloaded\r\n"
_OK_JSON_HEAD = _STATUS_LINES[200] + b"content-type: application/json\r\ncontent-length: "
_BAD_REQUEST = b'{"error":{"message":"Malformed HTTP request","type":"invalid_request_error","param":null,"code":null}}'
_INTERNAL_ERROR = b'{"error":{"message":"Mock provider bug; see its log","type":"server_error","param":null,"code":null}}'


class ClientGone(ConnectionError):
    """The connection closed while a response was being written."""


Deferred = Callable[["HttpConnection"], Awaitable[None]]


class App(Protocol):
    def handle(self, request: Request) -> Reply | Deferred: ...

    def disconnected(self) -> None: ...


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else f"HTTP/1.1 {status} Status {status}\r\n".encode()


class HttpConnection(asyncio.Protocol):
    """One client connection: parses requests, writes responses, honours flow control."""

    def __init__(self, app: App, connections: set[HttpConnection]) -> None:
        self._app = app
        self._connections = connections
        self._parser = httptools.HttpRequestParser(self)
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._queue: deque[Request | None] = deque()  # None: a parse error, answered in turn
        self._task: asyncio.Task | None = None
        self._keep_alive = True
        self._closing = False  # we decided to close (Connection: close, cut, parse error)
        self._closed = False  # connection_lost happened
        self._write_paused = False
        self._drain_waiter: asyncio.Future | None = None
        self._reading_paused = False
        self._parse_failed = False
        self._reset_message()

    # --- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._connections.discard(self)
        self._queue.clear()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        task = self._task
        if task is not None and not task.done():
            if not self._closing:
                self._app.disconnected()
            task.cancel()

    def data_received(self, data: bytes) -> None:
        if self._closing or self._parse_failed:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            log.exception("mock provider: error while handling a request")
            self._parse_failed = True
            self._enqueue(None)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            # The parser cannot resynchronise; answer 400 in turn and close.
            self._parse_failed = True
            self._enqueue(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        elif self._task is None:
            self._next()  # requests held back while the client was not reading

    # --- httptools callbacks ------------------------------------------------

    def _reset_message(self) -> None:
        self._url = b""
        self._headers: dict[str, str] = {}
        self._mock_headers: dict[str, str] = {}
        self._body: list[bytes] = []

    def on_message_begin(self) -> None:
        self._reset_message()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self._headers[key] = text
        if key.startswith("x-mock-"):
            self._mock_headers[key] = text

    def on_headers_complete(self) -> None:
        if (
            self._headers.get("expect", "").lower() == "100-continue"
            and self._task is None
            and not self._queue
        ):
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        path, _, query = self._url.partition(b"?")
        request = Request(
            method=self._parser.get_method().decode("latin-1"),
            path=path.decode("latin-1"),
            query=query.decode("latin-1"),
            headers=self._headers,
            mock_headers=self._mock_headers,
            body=b"".join(self._body) if self._body else b"",
            keep_alive=self._parser.should_keep_alive(),
        )
        self._enqueue(request)

    # --- ordering -----------------------------------------------------------

    def _enqueue(self, request: Request | None) -> None:
        # Queue behind a response in flight, or while the client is not reading ours.
        if self._task is None and not self._queue and not self._write_paused:
            self._dispatch(request)
            return
        self._queue.append(request)
        if len(self._queue) >= MAX_QUEUED and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()  # type: ignore[union-attr]

    def _dispatch(self, request: Request | None) -> None:
        if request is None:
            self._keep_alive = False
            self.send(400, _BAD_REQUEST)
            return
        self._keep_alive = request.keep_alive
        try:
            result = self._app.handle(request)
        except Exception:
            log.exception("mock provider: error while handling %s %s", request.method, request.path)
            result = Reply(500, _INTERNAL_ERROR)
        if isinstance(result, Reply):
            self.send(result.status, result.body, result.headers)
        else:
            self._task = self._loop.create_task(self._run(result))

    async def _run(self, deferred: Deferred) -> None:
        try:
            await deferred(self)
        except ClientGone:
            pass
        except Exception:
            log.exception("mock provider: error in a deferred response")
            self.abort()
        self._task = None
        self._next()

    def _next(self) -> None:
        while (
            self._queue
            and self._task is None
            and not (self._write_paused or self._closing or self._closed)
        ):
            self._dispatch(self._queue.popleft())
        if self._reading_paused and len(self._queue) < MAX_QUEUED // 2 and not self._closed:
            self._reading_paused = False
            self._transport.resume_reading()  # type: ignore[union-attr]

    # --- writing responses ----------------------------------------------------

    def send(self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None) -> None:
        """A complete response with Content-Length."""
        if self._closing or self._closed:
            raise ClientGone
        if status == 200 and not headers and self._keep_alive:
            self._transport.write(b"%b%d\r\n\r\n%b" % (_OK_JSON_HEAD, len(body), body))  # type: ignore[union-attr]
            return
        head = [status_line(status), b"content-type: application/json\r\n"]
        head.extend(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers or ())
        head.append(b"content-length: %d\r\n" % len(body))
        if not self._keep_alive:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        head.append(body)
        self._transport.write(b"".join(head))  # type: ignore[union-attr]
        self._finish()

    def start_stream(self, status: int = 200, headers: list[tuple[str, str]] | None = None,
                     content_type: str = "text/event-stream; charset=utf-8") -> None:
        if self._closing or self._closed:
            raise ClientGone
        head = [
            status_line(status),
            b"content-type: " + content_type.encode("latin-1") + b"\r\n"
            b"cache-control: no-cache\r\n"
            b"transfer-encoding: chunked\r\n",
        ]
        head.extend(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers or ())
        if not self._keep_alive:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        self._transport.write(b"".join(head))  # type: ignore[union-attr]

    def send_frame(self, frame: bytes) -> None:
        """One stream event (SSE or event-stream message) as one chunk, written now."""
        if self._closing or self._closed:
            raise ClientGone
        self._transport.write(b"%x\r\n%b\r\n" % (len(frame), frame))  # type: ignore[union-attr]

    def end_stream(self) -> None:
        if self._closing or self._closed:
            raise ClientGone
        self._transport.write(b"0\r\n\r\n")  # type: ignore[union-attr]
        self._finish()

    def abort(self) -> None:
        """Drop the connection without finishing the response."""
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

    @property
    def write_paused(self) -> bool:
        return self._write_paused

    async def drain(self) -> None:
        """Wait until the transport's buffer is below its low-water mark."""
        while self._write_paused and not self._closed:
            self._drain_waiter = self._loop.create_future()
            await self._drain_waiter
        if self._closed:
            raise ClientGone

    def _finish(self) -> None:
        if not self._keep_alive:
            self._closing = True
            self._transport.close()  # type: ignore[union-attr]
