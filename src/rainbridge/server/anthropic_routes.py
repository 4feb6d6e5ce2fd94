"""``POST /anthropic/v1/messages``: the Anthropic Messages API, routed to any provider.

Anthropic providers get the request natively; every other provider gets it translated to
OpenAI chat, and its answer (or stream) is translated back to Messages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson

from ..counters.fleet import AwaitGrant
from ..errors import InvalidRequest
from ..gateway.record import RequestRecord
from ..gateway.router import Job
from ..providers.base import StreamError, UpstreamStream
from ..translate import ChatStreamToMessages, chat_response_to_message
from .http import Headers, parse_object, read_body, require, send_json, stream_flag
from .schemas import MessagesRequest, check
from .sse import stream_events

if TYPE_CHECKING:
    from ..gateway.gateway import Gateway


def validate_messages(req: dict) -> None:
    require(req, "max_tokens", int, "an integer")
    messages = require(req, "messages", list, "a non-empty array of messages")
    if not messages:
        raise InvalidRequest("'messages' must contain at least one message", param="messages", code="empty_messages")
    for i, message in enumerate(messages):
        if type(message) is not dict or message.get("role") not in ("user", "assistant"):
            raise InvalidRequest(
                f"messages[{i}] must be an object with role 'user' or 'assistant'",
                param=f"messages[{i}].role",
                code="invalid_type",
            )
    check(req, MessagesRequest)  # before translation trusts any field's type


async def handle(gateway: Gateway, scope: dict, headers: Headers, record: RequestRecord, receive: Any, send: Any) -> None:
    raw = await read_body(receive, gateway.max_body_bytes)
    record.request_bytes = len(raw)
    if record.content:
        record.request_body = raw
    req = parse_object(raw)
    validate_messages(req)
    stream = record.stream = stream_flag(req)
    model = req.get("model")
    try:
        targets, allowed_keys = gateway.plan(headers.vk, req, len(raw), "anthropic", record, scope)
    except AwaitGrant as pending:  # near a fleet-wide limit
        targets, allowed_keys = await gateway.admit_later(pending)
    job = Job("messages", req, stream, headers.extra, headers.native, allowed_keys, record.fall_back)
    if gateway.request_metrics is not None:
        record.job = job  # read by the metrics (and frame timing) when the request ends
    if record.span is not None:
        job.span, job.tracing = record.span, gateway.tracing
    result, target = await gateway.router.run(job, targets)
    record.provider = target.provider.name
    record.model = target.model
    record.status = 200
    native = target.provider.adapter.native_messages
    if type(result) is UpstreamStream:
        frames = _native_frames(result, record) if native else _translated_frames(result, str(model), record)
        await stream_events(receive, send, result, frames, _error_frame, record, record.head_lines)
        return
    body = result.body if native else orjson.dumps(chat_response_to_message(result.data, str(model)))
    record.response_body = body
    record.response_bytes = len(body)
    await send_json(send, 200, body, head_lines=record.head_lines)


def _event(name: bytes, data: bytes) -> bytes:
    return b"event: " + name + b"\ndata: " + data + b"\n\n"


async def _native_frames(upstream: UpstreamStream, record: RequestRecord) -> AsyncIterator[bytes]:
    async for event, data in upstream:
        if b'"usage":{' in data:
            _see_usage(record, data)
        if record.content:
            record.keep_content(data)
        if not event:
            try:
                event = orjson.loads(data).get("type", "").encode()
            except (orjson.JSONDecodeError, AttributeError):
                event = b"message"
        yield _event(event, data)


def _see_usage(record: RequestRecord, data: bytes) -> None:
    """message_start carries input tokens (in ``message.usage``), message_delta the output."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return
    found = parsed.get("usage") or (parsed.get("message") or {}).get("usage")
    if isinstance(found, dict):
        record.set_usage(found)


async def _translated_frames(upstream: UpstreamStream, model: str, record: RequestRecord) -> AsyncIterator[bytes]:
    translator = ChatStreamToMessages(model)
    async for payload in upstream:
        record.see_stream_payload(payload)
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise StreamError("provider sent a malformed stream chunk") from None
        for name, data in translator.feed(chunk):
            yield _event(name.encode(), orjson.dumps(data))
    for name, data in translator.finish():
        yield _event(name.encode(), orjson.dumps(data))


def _error_frame(exc: StreamError) -> bytes:
    body = orjson.dumps({"type": "error", "error": {"type": _anthropic_type(exc.type), "message": exc.message}})
    return _event(b"error", body)


def _anthropic_type(type_: str) -> str:
    known = {"invalid_request_error", "authentication_error", "permission_error", "not_found_error",
             "rate_limit_error", "api_error", "overloaded_error", "request_too_large"}
    return type_ if type_ in known else "api_error"
