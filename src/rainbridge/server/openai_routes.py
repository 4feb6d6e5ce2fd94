"""``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``, ``/v1/models``.

The hot path: parse the body once, resolve targets, run the router, write upstream bytes
back. Fields we do not know are passed on untouched.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson

from ..counters.fleet import AwaitGrant
from ..errors import InvalidRequest, error_body
from ..gateway.record import RequestRecord
from ..gateway.router import Job
from ..governance.engine import needs_usage
from ..governance.model import VirtualKey
from ..providers.base import Reply, StreamError, UpstreamStream
from .http import Headers, parse_object, read_body, require, send_json, stream_flag
from .schemas import ChatRequest, check
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
    check(req, ChatRequest)  # every field we (or a translation to Anthropic) may read


def validate_completions(req: dict) -> None:
    require(req, "prompt", (str, list), "a string or an array")


def validate_embeddings(req: dict) -> None:
    value = require(req, "input", (str, list), "a string or an array")
    if not value:
        raise InvalidRequest("'input' must not be empty", param="input", code="empty_input")


VALIDATORS = {"chat": validate_chat, "completions": validate_completions, "embeddings": validate_embeddings}


async def handle(gateway: Gateway, op: str, scope: dict, headers: Headers, record: RequestRecord, receive: Any, send: Any,
                 model: str | None = None) -> None:
    """``model``: set by the route (an Azure deployment URL names it), whatever the body says."""
    body = await read_body(receive, gateway.max_body_bytes)
    record.request_bytes = len(body)
    if record.content:
        record.request_body = body
    req = parse_object(body)
    if model is not None:
        req["model"] = model
    VALIDATORS[op](req)
    stream = record.stream = stream_flag(req) if op != "embeddings" else False
    try:
        targets, allowed_keys = gateway.plan(headers.vk, req, len(body), "openai", record, scope)
    except AwaitGrant as pending:  # near a fleet-wide limit
        targets, allowed_keys = await gateway.admit_later(pending)
    # (a fallback may have token limits or budgets the first target has not: record.fall_back)
    strip_usage = stream and _ask_for_usage(req, gateway.wants_usage or record.fall_back is not None
                                            or (record.admission is not None and needs_usage(record.admission)))
    job = Job(op, req, stream, headers.extra, None, allowed_keys, record.fall_back)
    if gateway.request_metrics is not None:
        record.job = job  # read by the metrics (and frame timing) when the request ends
    if record.span is not None:
        job.span, job.tracing = record.span, gateway.tracing
    result, target = await gateway.router.run(job, targets)
    record.provider = target.provider.name
    record.model = target.model
    record.status = 200
    if type(result) is UpstreamStream:
        frames = _frames(result, record, strip_usage)
        await stream_events(receive, send, result, frames, _error_frame, record, record.head_lines, final_frame=DONE)
    else:
        assert isinstance(result, Reply)
        record.response_body = result.body
        record.response_bytes = len(result.body)
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


_NO_CHOICES = re.compile(rb'"choices"\s*:\s*\[\s*\]')


async def _frames(upstream: UpstreamStream, record: RequestRecord, strip_usage: bool) -> AsyncIterator[bytes]:
    async for payload in upstream:
        if record.see_stream_payload(payload) and strip_usage and _NO_CHOICES.search(payload) is not None:
            continue  # the usage chunk we asked for; the client did not
        yield b"data: " + payload + b"\n\n"
    yield DONE


def _error_frame(exc: StreamError) -> bytes:
    return b"data: " + error_body(exc.type, exc.message) + b"\n\n"


async def models(gateway: Gateway, scope: dict, headers: Headers, record: RequestRecord | None, receive: Any, send: Any) -> None:
    """The models a caller may use: with a virtual key (required when inference needs one)
    only those its provider grants allow, so the list tells no more than a request could."""
    gov = gateway.governance
    vk = gov.identify(headers.vk, int(time.time() * 1000)) if headers.vk is not None or gov.mandatory else None
    data = await gateway.list_models()
    if vk is not None and not (vk.allow_all_providers and not vk.provider_configs):
        data = [m for m in data if _granted(vk, m["owned_by"], m["id"][len(m["owned_by"]) + 1:])]
    await send_json(send, 200, orjson.dumps({"object": "list", "data": data}))


def _granted(vk: VirtualKey, provider: str, model: str) -> bool:
    """Whether a request for ``provider/model`` would pass the key's grants (as Governance.targets)."""
    grant = vk.grant(provider)
    if grant is None:
        return vk.allow_all_providers
    return grant.allows(model)
