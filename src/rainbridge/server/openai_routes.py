"""``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``, ``/v1/models``.

The hot path: parse the body once, resolve targets, run the router, write upstream bytes
back. Fields we do not know are passed on untouched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import InvalidRequest, error_body
from ..gateway.record import RequestRecord
from ..gateway.router import Job
from ..governance.engine import needs_usage
from ..providers.base import Reply, StreamError, UpstreamStream
from .http import Headers, parse_object, read_body, require, send_json, stream_flag
from .sse import stream_events

if TYPE_CHECKING:
    from ..gateway.gateway import Gateway

DONE = b"data: [DONE]\n\n"


def validate_chat(req: dict) -> None:
    messages = require(req, "messages", list, "a non-empty array of messages")
    if not messages:
        raise InvalidRequest("'messages' must contain at least one message", param="messages", code="empty_messages")
    for i, message in enumerate(messages):
        if type(message) is not dict or "role" not in message:
            raise InvalidRequest(
                f"messages[{i}] must be an object with a 'role'", param=f"messages[{i}]", code="invalid_type"
            )


def validate_completions(req: dict) -> None:
    require(req, "prompt", (str, list), "a string or an array")


def validate_embeddings(req: dict) -> None:
    value = require(req, "input", (str, list), "a string or an array")
    if not value:
        raise InvalidRequest("'input' must not be empty", param="input", code="empty_input")


VALIDATORS = {"chat": validate_chat, "completions": validate_completions, "embeddings": validate_embeddings}


async def handle(gateway: Gateway, op: str, scope: dict, headers: Headers, record: RequestRecord, receive: Any, send: Any) -> None:
    body = await read_body(receive, gateway.max_body_bytes)
    if record.content:
        record.request_body = body
    req = parse_object(body)
    VALIDATORS[op](req)
    stream = record.stream = stream_flag(req) if op != "embeddings" else False
    targets, allowed_keys = gateway.plan(headers.vk, req, len(body), "openai", record)
    strip_usage = stream and _ask_for_usage(req, gateway.wants_usage or (record.admission is not None and needs_usage(record.admission)))
    job = Job(op, req, stream, headers.extra, None, allowed_keys)
    result, target = await gateway.router.run(job, targets)
    record.provider = target.provider.name
    record.model = target.model
    record.status = 200
    if type(result) is UpstreamStream:
        frames = _frames(result, record, strip_usage)
        await stream_events(receive, send, result, frames, _error_frame, record, record.head_lines)
    else:
        assert isinstance(result, Reply)
        record.response_body = result.body
        await send_json(send, 200, result.body, head_lines=record.head_lines)


def _ask_for_usage(req: dict, needed: bool) -> bool:
    """Make the upstream report usage on a stream when we need it; True when the client did
    not ask for it itself, so the usage chunk must not reach the client."""
    options = req.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return False
    if not needed:
        return False
    req["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return True


async def _frames(upstream: UpstreamStream, record: RequestRecord, strip_usage: bool) -> AsyncIterator[bytes]:
    async for payload in upstream:
        record.see_stream_payload(payload)
        if strip_usage and b'"choices":[]' in payload and b'"usage":{' in payload:
            continue  # the usage chunk we asked for; the client did not
        yield b"data: " + payload + b"\n\n"
    yield DONE


def _error_frame(exc: StreamError) -> bytes:
    return b"data: " + error_body(exc.type, exc.message) + b"\n\n"


async def models(gateway: Gateway, scope: dict, headers: Headers, record: RequestRecord | None, receive: Any, send: Any) -> None:
    data = await gateway.list_models()
    await send_json(send, 200, orjson.dumps({"object": "list", "data": data}))
