"""What every provider adapter shares: keys, the call description, replies, upstream errors.

An adapter turns one attempt (a body, a key) into one upstream HTTP exchange. It does not
retry, choose keys or queue: the gateway's router does that around it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import orjson

from ..errors import InvalidRequest, UpstreamError


class ProviderKey:
    """One API key of a provider, with the headers it sends prebuilt (never logged)."""

    __slots__ = (
        "aliases", "azure", "bedrock", "blacklist", "headers", "id", "models", "name", "regions",
        "value", "vertex", "weight",
    )

    def __init__(
        self,
        name: str,
        value: str,
        models: frozenset[str] | None,
        weight: float,
        aliases: dict[str, str] | None = None,
        blacklist: frozenset[str] = frozenset(),
        azure: object | None = None,
        key_id: str | None = None,
        bedrock: object | None = None,
        vertex: object | None = None,
        regions: frozenset[str] = frozenset(),
    ):
        self.id = key_id or name
        self.name = name
        self.value = value
        self.models = models  # None: every model
        self.weight = weight
        self.aliases = aliases or {}
        self.blacklist = blacklist
        self.azure = azure
        self.bedrock = bedrock  # BedrockKeyConfig
        self.vertex = vertex  # VertexKeyConfig
        self.regions = regions  # empty: no region (see gateway/keys.py for the preference)
        self.headers: dict[str, str] = {}

    def serves(self, model: str) -> bool:
        if model in self.blacklist:
            return False
        return self.models is None or model in self.models

    def __repr__(self) -> str:  # never the value
        return f"ProviderKey({self.name!r})"


@dataclass(slots=True)
class Call:
    """One upstream attempt: the request body (model already upstream's name) and the key."""

    body: dict
    key: ProviderKey
    extra_headers: dict[str, str] | None = None  # from the client's x-bf-eh-* headers
    raw_headers: dict[str, str] | None = None  # client headers an adapter may pass on natively


class Reply:
    """A complete upstream answer. ``body`` is what the client gets; ``data`` its parsed form."""

    __slots__ = ("_data", "body")

    def __init__(self, body: bytes, data: dict | None = None):
        self.body = body
        self._data = data

    @property
    def data(self) -> dict:
        if self._data is None:
            self._data = orjson.loads(self.body)
        return self._data


class UpstreamStream:
    """An open upstream stream. Iterate it for payloads; ``close()`` must always run.

    The upstream response (and the provider queue slot) must be released even when the
    iterator was never started, which an async generator's ``finally`` cannot promise.
    """

    __slots__ = ("_closers", "_iter", "closed")

    def __init__(self, iterator: AsyncIterator, closer: Callable[[], None]):
        self._iter = iterator
        self._closers = [closer]
        self.closed = False

    def on_close(self, closer: Callable[[], None]) -> None:
        self._closers.append(closer)

    def __aiter__(self) -> AsyncIterator:
        return self._iter

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await self._iter.aclose()  # type: ignore[attr-defined]
        finally:
            for closer in self._closers:
                closer()


class StreamError(Exception):
    """The upstream stream broke after it started; becomes an SSE error event."""

    def __init__(self, message: str, type_: str = "upstream_stream_error"):
        super().__init__(message)
        self.message = message
        self.type = type_


class UnsupportedOperation(InvalidRequest):
    type = "unsupported_operation"


def error_message(body: bytes) -> tuple[str, str | None, str | None]:
    """(message, type, code) from an OpenAI- or Anthropic-shaped error body."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body[:300].decode("utf-8", "replace").strip()
        return text or "no error message", None, None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        code = err.get("code")
        return str(err.get("message") or err), err.get("type"), str(code) if code else None
    if isinstance(err, str):
        return err, None, None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return data["message"], None, None
    return body[:300].decode("utf-8", "replace"), None, None


_MASKED = re.compile(r"[^\s'\"]*\*{3,}[^\s'\".,]*")
# "sk-...wxyz", "…wxyz": a key shown by its last characters after an ellipsis.
_ELLIPSIS = re.compile(r"[^\s'\"]*(?:\.{3}|…)([A-Za-z0-9_\-]{4,})")
FRAGMENT = 8  # a run of this many characters of the key is a fragment of it
MAX_MESSAGE = 2000  # characters of an upstream error message passed on


def scrub(text: str, key: ProviderKey) -> str:
    """Remove the key from upstream text. Providers echo it whole, masked
    (``sk-abc1***wxyz``), shortened (``sk-...wxyz``) or in pieces; none belongs in our
    errors. Rule: every run of ``FRAGMENT`` or more characters of the key, every token
    with ``***`` in it, and every ellipsis followed by 4+ characters of the key go."""
    value = key.value
    if value:
        if len(value) <= FRAGMENT:
            text = text.replace(value, "***")
        else:
            text = _mask_fragments(text, value)
    text = _MASKED.sub("***", text)
    if value:
        text = _ELLIPSIS.sub(lambda m: "***" if m.group(1) in value else m.group(0), text)
    return text


def _mask_fragments(text: str, value: str) -> str:
    """Replace each run of text made of ``FRAGMENT``-grams of ``value`` by ``***``
    (errors are the slow path: a set of the key's n-grams, one pass over the text)."""
    grams = {value[i : i + FRAGMENT] for i in range(len(value) - FRAGMENT + 1)}
    spans: list[list[int]] = []  # merged [start, end) of the runs to mask
    for i in range(len(text) - FRAGMENT + 1):
        if text[i : i + FRAGMENT] in grams:
            if spans and i <= spans[-1][1]:
                spans[-1][1] = i + FRAGMENT
            else:
                spans.append([i, i + FRAGMENT])
    if not spans:
        return text
    out, last = [], 0
    for start, end in spans:
        out.append(text[last:start])
        out.append("***")
        last = end
    out.append(text[last:])
    return "".join(out)


def stream_error_event(provider: str, data: bytes, key: ProviderKey) -> StreamError | None:
    """The error an SSE payload reports (OpenAI's ``{"error": …}``, Anthropic's
    ``{"type": "error", "error": …}``), as a StreamError with its message bounded and
    scrubbed; None for any other payload. Callers look only at payloads with "error" in them."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(parsed, dict) or "error" not in parsed or "choices" in parsed:
        return None
    message, type_, _ = error_message(data)
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + " …"
    return StreamError(f"{provider}: {scrub(message, key)}", str(type_ or "api_error"))


def upstream_error(provider: str, status: int, body: bytes, key: ProviderKey, retry_after: str | None) -> UpstreamError:
    message, type_, code = error_message(body)
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + " …"
    return UpstreamError(
        f"{provider}: {scrub(message, key)}",
        provider=provider,
        status=status,
        type=type_ or "provider_error",
        code=code,
        retry_after=retry_after,
    )


# One server-sent event may take this many bytes; a larger one fails the stream. Chat and
# Messages stream events are deltas of a few hundred bytes; this bounds what a stream
# without event separators makes us hold.
MAX_SSE_EVENT_BYTES = 1024 * 1024


async def iter_sse(chunks: AsyncIterator[bytes], limit: int = MAX_SSE_EVENT_BYTES) -> AsyncIterator[tuple[bytes, bytes]]:
    """Yield (event, data) of each server-sent event; event is b"" when not named.

    Linear in the stream's size: a chunk is searched once for separators, and only an
    unfinished event is kept (at most ``limit`` bytes, else ``StreamError``). The common
    case, chunks that hold whole events, copies nothing.
    """
    pending = bytearray()  # the start of an unfinished event
    cr = False  # the previous chunk ended in b"\r" (held back: it may start a b"\r\n")
    async for chunk in chunks:
        if cr or b"\r" in chunk:
            if cr:
                chunk = b"\r" + chunk
            cr = chunk.endswith(b"\r")
            if cr:
                chunk = chunk[:-1]
            chunk = chunk.replace(b"\r\n", b"\n")
        if pending:
            scan = len(pending) - 1  # a separator may straddle the two
            pending += chunk
            if pending.find(b"\n\n", scan) < 0:
                if len(pending) > limit:
                    raise StreamError(f"stream event larger than {limit} bytes")
                continue
            data = bytes(pending)
            pending.clear()
        else:
            data = chunk
        start = 0
        while (end := data.find(b"\n\n", start)) >= 0:
            block = data[start:end]
            start = end + 2
            if block.startswith(b"data: ") and b"\n" not in block:
                yield b"", block[6:]
                continue
            event, payload = _parse_block(block)
            if payload is not None:
                yield event, payload
        if start < len(data):
            if len(data) - start > limit:
                raise StreamError(f"stream event larger than {limit} bytes")
            pending += data[start:] if start else data
    rest = bytes(pending).strip(b"\n")
    if rest.strip():
        event, payload = _parse_block(rest)
        if payload is not None:
            yield event, payload


def _parse_block(block: bytes) -> tuple[bytes, bytes | None]:
    event = b""
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event = value
    return event, (b"\n".join(data) if data else None)
