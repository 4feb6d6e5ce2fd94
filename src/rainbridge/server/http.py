"""Small ASGI helpers for the hot path: read a bounded body, parse it, send JSON or an error."""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import GatewayError, InvalidRequest, RequestTooLarge

JSON = b"application/json"

# An ASGI extension of our own server (server.protocol): ``http.response.start`` may carry
# ``HEAD_LINES``, header lines already rendered (``name: value\r\n`` each), written as they
# are after ``headers``. Governed answers carry six x-ratelimit-* headers whose counts change
# on every request; one bytes % format beats six tuples checked and rendered one by one.
# Only the app's own, well-formed lines go there. Servers without the extension (it is in
# ``scope["extensions"]``) get ordinary headers: see ``split_head_lines``.
HEAD_LINES = "rainbridge.head_lines"


class ClientDisconnected(Exception):
    """The client went away before we finished reading its request."""


async def read_body(receive: Any, limit: int) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise _too_large(limit)
        return body
    parts = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def _too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(
        f"request body is larger than {limit // (1024 * 1024)} MB (client.max_request_body_size_mb)",
        code="request_too_large",
    )


class Headers:
    """What the gateway needs from the request headers, found in one pass."""

    __slots__ = ("content_length", "content_type", "extra", "native", "no_content_log", "origin", "vk", "vk_conflict")

    def __init__(self, raw: list[tuple[bytes, bytes]]):
        self.content_length = -1
        self.content_type: bytes | None = None
        self.origin: bytes | None = None
        # x-bf-eh-<name>: forwarded upstream as <name> (Bifrost's extra headers).
        self.extra: dict[str, str] | None = None
        # anthropic-version / anthropic-beta: passed to a native Anthropic upstream.
        self.native: dict[str, str] | None = None
        self.no_content_log = False  # x-bf-disable-content-logging: true
        # The virtual key: x-bf-vk, or a key with our (or Bifrost's) prefix in
        # Authorization: Bearer, x-api-key or api-key (what the OpenAI/Anthropic SDKs send).
        # Each value is trimmed. Several headers may carry it (an SDK's own header plus
        # x-bf-vk) but must agree: two different keys would charge one tenant for another's
        # request, so that is a 400 (see App.http), whichever header came first.
        self.vk: str | None = None
        self.vk_conflict = False
        for name, value in raw:
            if name == b"content-length":
                if value.isdigit():
                    self.content_length = int(value)
            elif name == b"content-type":
                self.content_type = value
            elif name == b"origin":
                self.origin = value
            elif name.startswith(b"x-bf-eh-"):
                if self.extra is None:
                    self.extra = {}
                self.extra[name[8:].decode("latin-1")] = value.decode("latin-1")
            elif name == b"x-bf-vk":
                self._see_vk(value.strip())
            elif name == b"authorization" or name == b"x-api-key" or name == b"api-key":
                value = value.strip()
                if name == b"authorization":
                    scheme, _, value = value.partition(b" ")
                    if scheme.lower() != b"bearer":
                        continue
                    value = value.strip()
                if value.startswith(b"sk-rb-") or value.startswith(b"sk-bf-"):
                    self._see_vk(value)
            elif name == b"x-bf-disable-content-logging":
                self.no_content_log = value.lower() in (b"true", b"1", b"yes")
            elif name == b"anthropic-version" or name == b"anthropic-beta":
                if self.native is None:
                    self.native = {}
                self.native[name.decode()] = value.decode("latin-1")

    def _see_vk(self, value: bytes) -> None:
        if not value:
            return  # an empty header is no key
        text = value.decode("latin-1")
        if self.vk is None:
            self.vk = text
        elif self.vk != text:
            self.vk_conflict = True

    def json_body(self) -> bool:
        """Whether the body is declared JSON (application/json or application/*+json).

        Inference routes insist: a browser sends text/plain (or no type) cross-origin
        without asking first (a CORS "simple request"), JSON only after a preflight."""
        kind = self.content_type
        if kind is None:
            return False
        kind = kind.partition(b";")[0].strip().lower()
        return kind == JSON or (kind.startswith(b"application/") and kind.endswith(b"+json"))

    def check_size(self, limit: int) -> None:
        if self.content_length > limit:
            raise _too_large(limit)


# Deepest nesting of arrays and objects we accept. orjson parses up to 1024 levels but
# serializes only 255, and a forwarded request gains a few levels in translation; real
# requests (JSON schemas of tools included) stay far below 100.
MAX_DEPTH = 100


def parse_object(body: bytes) -> dict:
    if not body:
        raise InvalidRequest("request body is empty; send a JSON object", code="invalid_json")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if type(data) is not dict:
        raise InvalidRequest("request body must be a JSON object", code="invalid_json")
    # Nesting deeper than MAX_DEPTH needs more than MAX_DEPTH opening brackets (and as many
    # closing ones): counting them (C speed) spares the walk for nearly every request.
    if len(body) > 2 * MAX_DEPTH and body.count(b"[") + body.count(b"{") > MAX_DEPTH and too_deep(data, MAX_DEPTH):
        raise InvalidRequest(f"request body nests arrays and objects more than {MAX_DEPTH} levels deep",
                             code="too_deep")
    return data


def too_deep(data: object, limit: int) -> bool:
    """Whether arrays and objects in ``data`` nest more than ``limit`` levels (the top is 1)."""
    stack = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if type(node) is dict else node
        for child in children:  # type: ignore[union-attr]
            kind = type(child)
            if kind is dict or kind is list:
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


async def send_json(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None,
                    head_lines: bytes = b"") -> None:
    out = [(b"content-type", JSON), (b"content-length", b"%d" % len(body))]
    if headers:
        out.extend(headers)
    start = {"type": "http.response.start", "status": status, "headers": out}
    if head_lines:
        start[HEAD_LINES] = head_lines
    await send(start)
    await send({"type": "http.response.body", "body": body})


def split_head_lines(lines: bytes) -> list[tuple[bytes, bytes]]:
    """Rendered header lines back into ASGI header pairs."""
    pairs = []
    for line in lines.split(b"\r\n"):
        if line:
            name, _, value = line.partition(b": ")
            pairs.append((name, value))
    return pairs


async def send_error(send: Any, error: GatewayError, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    extra = list(error.headers)
    if headers:
        extra.extend(headers)
    await send_json(send, error.status, error.body(), extra)


def require(req: dict, field: str, kind: type | tuple[type, ...], what: str) -> Any:
    """The value of a required field of the expected JSON type, else a 400 naming it."""
    value = req.get(field)
    if value is None:
        raise InvalidRequest(f"missing required field '{field}'", param=field, code="missing_field")
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise InvalidRequest(f"'{field}' must be {what}", param=field, code="invalid_type")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def stream_flag(req: dict) -> bool:
    value = req.get("stream", False)
    if value is None or value is False:
        return False
    if value is True:
        return True
    raise InvalidRequest("'stream' must be a boolean", param="stream", code="invalid_type")
