"""Reading query parameters and JSON bodies of the management API, with errors naming the field."""

from __future__ import annotations

import datetime
from typing import Any

import orjson
from starlette.requests import Request

from ...errors import InvalidRequest, RequestTooLarge

MAX_BODY = 1024 * 1024  # management bodies are small


def int_param(request: Request, name: str, default: int | None = None, lo: int | None = None, hi: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"query parameter '{name}' must be an integer", param=name, code="invalid_type") from None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise InvalidRequest(f"query parameter '{name}' must be between {lo} and {hi}", param=name, code="out_of_range")
    return value


def time_param(request: Request, name: str) -> int | None:
    """Epoch milliseconds, from epoch ms/seconds or an ISO 8601 / RFC 3339 time."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if raw.isdigit():
        value = int(raw)
        return value if value > 10**11 else value * 1000
    try:
        parsed = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"query parameter '{name}' must be epoch milliseconds or an ISO 8601 time", param=name, code="invalid_type") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return int(parsed.timestamp() * 1000)


def bool_param(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("1", "true", "yes")


async def json_body(request: Request) -> dict[str, Any]:
    size = request.headers.get("content-length")
    if size and size.isdigit() and int(size) > MAX_BODY:
        raise RequestTooLarge(f"request body is larger than {MAX_BODY // 1024} KB", code="request_too_large")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise RequestTooLarge(f"request body is larger than {MAX_BODY // 1024} KB", code="request_too_large")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if type(data) is not dict:
        raise InvalidRequest("request body must be a JSON object", code="invalid_json")
    return data
