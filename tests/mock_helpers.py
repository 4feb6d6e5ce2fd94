"""Raw-socket HTTP/1.1 helpers for testing the fake provider's server layer."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import httptools


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    chunks: list[bytes] = field(default_factory=list)  # body pieces as the parser saw them


class ResponseReader:
    """Parses responses off a stream, one at a time, in order."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._done: list[RawResponse] = []
        self._parser = httptools.HttpResponseParser(self)
        self._current: RawResponse | None = None

    def on_message_begin(self) -> None:
        self._current = RawResponse(0, {}, b"")

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._current is not None
        self._current.headers[name.decode().lower()] = value.decode()

    def on_headers_complete(self) -> None:
        assert self._current is not None
        self._current.status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        assert self._current is not None
        self._current.chunks.append(body)

    def on_message_complete(self) -> None:
        assert self._current is not None
        self._current.body = b"".join(self._current.chunks)
        self._done.append(self._current)
        self._current = None

    async def read(self, count: int = 1, timeout: float = 5.0) -> list[RawResponse]:
        async with asyncio.timeout(timeout):
            while len(self._done) < count:
                data = await self._reader.read(65536)
                if not data:
                    raise ConnectionError(f"closed after {len(self._done)} of {count} responses")
                self._parser.feed_data(data)
        out, self._done = self._done[:count], self._done[count:]
        return out


async def open_raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, ResponseReader]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return reader, writer, ResponseReader(reader)


def post(
    path: str, body: bytes, headers: dict[str, str] | None = None, *, close: bool = False
) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: mock",
        f"Content-Length: {len(body)}",
        "Content-Type: application/json",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def sse_events(body: bytes) -> list[tuple[str | None, str]]:
    """(event name, data) for each SSE event in a body."""
    events = []
    for block in body.decode().split("\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        events.append((name, "\n".join(data)))
    return events
