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
    targets = gateway.routes.targets(req.get("model"), req.pop("fallbacks", None), "openai")
    job = Job(op, req, stream, headers.extra)
    result, target = await gateway.router.run(job, targets)
    record.provider = target.provider.name
    record.model = target.model
    record.status = 200
    if type(result) is UpstreamStream:
        await stream_events(receive, send, result, _frames(result, record), _error_frame, record)
    else:
        assert isinstance(result, Reply)
        record.response_body = result.body
        await send_json(send, 200, result.body)


async def _frames(upstream: UpstreamStream, record: RequestRecord) -> AsyncIterator[bytes]:
    async for payload in upstream:
        record.see_stream_payload(payload)
        yield b"data: " + payload + b"\n\n"
    yield DONE


def _error_frame(exc: StreamError) -> bytes:
    return b"data: " + error_body(exc.type, exc.message) + b"\n\n"


async def models(gateway: Gateway, scope: dict, headers: Headers, record: RequestRecord | None, receive: Any, send: Any) -> None:
    data = await gateway.list_models()
    await send_json(send, 200, orjson.dumps({"object": "list", "data": data}))
