"""The values passed between the HTTP layer and the API handlers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from .controls import Controls


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str  # raw, without the "?"
    headers: dict[str, str]  # lower-case names
    mock_headers: dict[str, str]  # the `x-mock-*` subset, collected while parsing
    body: bytes
    keep_alive: bool


@dataclass(slots=True)
class Call:
    """One validated-to-route API call, as a handler sees it."""

    family: str
    body: dict
    controls: Controls
    seq: int  # per-provider request number; makes ids deterministic
    created: int  # unix seconds
    deployment: str | None = None  # Azure: the model name in the response


@dataclass(slots=True)
class Stream:
    """An SSE body: `head` frames, one `content` frame per token, `tail` frames.

    `error` replaces the rest of the stream when the error-after control fires.
    """

    head: list[bytes]
    content: Iterator[bytes]
    tail: list[bytes]
    error: bytes
    content_type: str = "text/event-stream; charset=utf-8"  # Bedrock: AWS event-stream framing


@dataclass(slots=True)
class Reply:
    status: int = 200
    body: bytes = b""
    stream: Stream | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
