"""Differential testing of HTTP/1.1 servers: the same bytes to several, outcomes compared.

Three servers run in the test's event loop under a real ``uvicorn.Server`` on port 0, each
serving its own copy of a small recording ASGI app: ours (``server/protocol.py``),
uvicorn's httptools protocol and uvicorn's h11 protocol. A case is a byte string, sent over
a real socket in the given pieces; its ``Outcome`` is what a client and the app could tell:
the statuses in order, whether the server closed the connection, and what the app saw
(method, path, query, headers, body of each request).

No sleeps: the protocol classes are wrapped to count the bytes they read and wrote and to
note when they shut or lost their connection, so the client knows when the server has read
a piece, when it has nothing left to do (every byte read, every app call either finished or
waiting for more body, nothing left to write) or has closed, and how much to read back.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from rainbridge.server.protocol import HttpProtocol

SETTLE_S = 5.0  # a server that has not settled by then is reported as stalled


@dataclass(frozen=True)
class Seen:
    """One request as the app received it."""

    method: str
    path: str
    query: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes  # empty unless complete
    complete: bool  # the whole body arrived (False: the connection closed first)


@dataclass(frozen=True)
class Outcome:
    """What one server did with one case."""

    statuses: tuple[int, ...]  # final responses in order, then ("interim" statuses are left out)
    closed: bool  # the server closed the connection (after the responses)
    seen: tuple[Seen, ...]  # app calls in order
    stalled: bool = False  # neither settled nor closed within SETTLE_S
    trailing: bytes = b""  # response bytes that did not parse as a response

    def completed(self) -> Outcome:
        """Without the requests that never completed: when a broken one reaches the app (or
        is refused before it does) depends on how the bytes were split."""
        return Outcome(self.statuses, self.closed, tuple(s for s in self.seen if s.complete), self.stalled,
                       self.trailing)

    def brief(self) -> str:
        seen = "; ".join(f"{s.method} {_cut(s.path)}?{_cut(s.query.decode('latin-1'))} body={s.body[:20]!r}"
                         f"{'' if s.complete else ' (incomplete)'}" for s in self.seen)
        return (f"statuses={list(self.statuses)} closed={self.closed} stalled={self.stalled} "
                f"seen=[{seen}]{' trailing=' + repr(self.trailing[:40]) if self.trailing else ''}")


def _cut(text: str, size: int = 40) -> str:
    return text if len(text) <= size else f"{text[:size]}...({len(text)})"


class RecordingApp:
    """An ASGI app that records every request it is called with and answers ``200 ok``.

    ``/413...`` answers 413 at once, without reading the body (as the gateway does for a
    body over its limit); a HEAD answer carries ``x-head: 1`` so the client knows it has no body.
    """

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.waiting = 0  # calls blocked in receive()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        body, complete = b"", True
        if not path.startswith("/413"):
            while True:
                self.waiting += 1
                try:
                    message = await receive()
                finally:
                    self.waiting -= 1
                if message["type"] == "http.disconnect":
                    complete = False
                    break
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
        # A body that never completed is not compared: the app cannot use it either way.
        self.seen.append(Seen(scope["method"], path, scope["query_string"], tuple(scope["headers"]),
                              body if complete else b"", complete))
        if not complete:
            return
        status = 413 if path.startswith("/413") else 200
        headers = [(b"content-type", b"text/plain")]
        headers.append((b"x-head", b"1") if scope["method"] == "HEAD" else (b"content-length", b"2"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})


def _instrumented(base: type) -> type:
    """``base`` that counts what it received and wrote, and records its connections."""

    class Recorded(base):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: Any) -> None:
            self.rx = self.tx = 0
            self.lost = self.shut = False
            self.recorder.connections.append(self)
            write, writelines, write_eof = transport.write, transport.writelines, transport.write_eof

            def counted_write(data: bytes) -> None:
                self.tx += len(data)
                write(data)

            def counted_writelines(parts: Any) -> None:
                parts = list(parts)
                self.tx += sum(map(len, parts))
                writelines(parts)

            def noted_write_eof() -> None:
                self.shut = True
                write_eof()

            transport.write, transport.writelines, transport.write_eof = counted_write, counted_writelines, noted_write_eof
            super().connection_made(transport)

        def data_received(self, data: bytes) -> None:
            self.rx += len(data)
            super().data_received(data)

        def connection_lost(self, exc: Exception | None) -> None:
            self.lost = True
            super().connection_lost(exc)

    return Recorded


@dataclass(repr=False)
class Server:
    """One uvicorn server with one protocol, serving its own ``RecordingApp``."""

    name: str
    app: RecordingApp
    uvicorn_server: uvicorn.Server
    sock: socket.socket
    task: asyncio.Task | None = None
    connections: list = field(default_factory=list)

    def __repr__(self) -> str:
        return f"<{self.name} server on port {self.port}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis prints fixtures so
        printer.text(repr(self))

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    async def exchange(self, pieces: list[bytes], settle_each: bool = False) -> Outcome:
        """Send ``pieces`` on a new connection, each read by the server before the next is sent
        (``settle_each``: and each handled, as far as it goes, before the next)."""
        self.app.seen.clear()
        loop = asyncio.get_running_loop()
        client = socket.create_connection(("127.0.0.1", self.port))
        client.setblocking(False)
        known = len(self.connections)
        try:
            await _until(lambda: len(self.connections) > known, "the server to accept")
            conn = self.connections[known]
            sent = 0
            for piece in pieces:
                if conn.lost or conn.shut:
                    break
                try:
                    await loop.sock_sendall(client, piece)
                except ConnectionError:
                    break
                sent += len(piece)
                # Until read (or refused): the next piece then comes in a read of its own.
                # A pipeline may pause reading; then the pieces merge, as they would for real.
                with contextlib.suppress(TimeoutError):
                    if settle_each:
                        await _until(lambda s=sent: self._settled(conn, s), "the server to settle", 1.0, turns=5)
                    else:
                        await _until(lambda s=sent: conn.rx >= s or conn.lost or conn.transport.is_closing()
                                     or not conn.transport.is_reading(), "the server to read", 1.0)
            stalled = False
            try:
                await _until(lambda: self._settled(conn, sent), "the server to settle", SETTLE_S, turns=5)
            except TimeoutError:
                stalled = True
            data, closed = await _receive(client, conn)
        finally:
            client.close()
            with contextlib.suppress(TimeoutError):
                await _until(lambda: len(self.connections) <= known or self.connections[known].lost, "close", 2.0)
        statuses, trailing = parse_responses(data)
        return Outcome(tuple(statuses), closed, tuple(self.app.seen), stalled, trailing)

    def _settled(self, conn: Any, sent: int) -> bool:
        """The connection closed and every app call finished, or it is open with every byte
        read, nothing left to write, and every app call waiting for more body."""
        tasks = len(self.uvicorn_server.server_state.tasks)
        if conn.lost:
            return tasks == 0  # an app waiting for body hears of the disconnect and returns
        if tasks != self.app.waiting:
            return False
        transport = conn.transport
        if transport.is_closing():
            return False  # connection_lost is on its way
        return conn.rx >= sent and transport.get_write_buffer_size() == 0


async def _until(cond: Any, what: str, timeout: float = SETTLE_S, turns: int = 1) -> None:
    """Let the loop run until ``cond()`` holds ``turns`` loop turns in a row, at most ``timeout`` s.

    Several turns: an app woken by the last read still counts as waiting until its task runs,
    and a closed transport tells its protocol a turn later; a few turns let such chains end."""
    deadline = time.monotonic() + timeout
    held = spins = 0
    while held < turns:
        held = held + 1 if cond() else 0
        if held >= turns:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        spins += 1
        # Mostly single loop turns (the servers run in this loop); now and then a short
        # sleep so a busy machine's socket buffers can move.
        await asyncio.sleep(0 if spins % 50 else 0.001)


async def _receive(client: socket.socket, conn: Any) -> tuple[bytes, bool]:
    """Every byte the server wrote (loopback may still be carrying some), then, if the server
    closed or shut its side, the end of the stream; and whether the server closed."""
    loop = asyncio.get_running_loop()
    parts: list[bytes] = []
    got = 0
    deadline = time.monotonic() + 2.0
    while got < conn.tx or conn.lost or conn.shut:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            chunk = await asyncio.wait_for(loop.sock_recv(client, 65536), left)
        except TimeoutError:
            break
        except ConnectionResetError:
            return b"".join(parts), True
        if not chunk:
            return b"".join(parts), True
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts), False


def parse_responses(data: bytes) -> tuple[list[int], bytes]:
    """Statuses of the final responses in ``data`` (1xx skipped); bytes that do not parse."""
    statuses = []
    while data:
        head_end = data.find(b"\r\n\r\n")
        if head_end < 0 or not data.startswith(b"HTTP/1.1 "):
            return statuses, data
        lines = data[:head_end].split(b"\r\n")
        status = int(lines[0][9:12])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        rest = data[head_end + 4:]
        if 100 <= status < 200:
            data = rest
            continue
        statuses.append(status)
        if b"x-head" in headers or status in (204, 304):
            data = rest
        elif b"content-length" in headers:
            data = rest[int(headers[b"content-length"]):]
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            data = _skip_chunked(rest)
        else:  # delimited by the close
            data = b""
    return statuses, b""


def _skip_chunked(data: bytes) -> bytes:
    for _ in range(10000):
        line_end = data.find(b"\r\n")
        if line_end < 0:
            return data
        size = int(data[:line_end].split(b";")[0], 16)
        data = data[line_end + 2 + size + 2:] if size else data[line_end + 2:]
        if not size:
            end = data.find(b"\r\n")  # trailers end with an empty line
            return data[end + 2:] if end >= 0 else data
    return data


async def start(name: str, http: Any, **config: Any) -> Server:
    """A uvicorn server with protocol ``http`` (a class) on 127.0.0.1, port 0."""
    app = RecordingApp()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    cls = _instrumented(http)
    options = {"lifespan": "off", "log_config": None, "ws": "none", "timeout_keep_alive": 60,
               "timeout_graceful_shutdown": 2, **config}
    uv = uvicorn.Server(uvicorn.Config(app, http=cls, **options))
    server = Server(name, app, uv, sock)
    cls.recorder = server  # the wrapper records its connections on the Server
    server.task = asyncio.get_running_loop().create_task(uv.serve(sockets=[sock]))
    await _until(lambda: uv.started or server.task.done(), f"{name} to start")
    assert uv.started, f"{name} did not start"
    return server


async def stop(server: Server) -> None:
    server.uvicorn_server.should_exit = True
    if server.task is not None:
        await asyncio.wait_for(server.task, 10)
    server.sock.close()


PROTOCOLS = {"ours": HttpProtocol, "uvicorn": HttpToolsProtocol, "h11": H11Protocol}
