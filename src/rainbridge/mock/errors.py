"""Errors, rendered in the shape of the API family that was called."""

from __future__ import annotations

import orjson

# API families: how a path is authenticated and how its errors look.
OPENAI = "openai"
AZURE = "azure"
ANTHROPIC = "anthropic"
GEMINI = "gemini"
COHERE = "cohere"
ENTRA = "entra"  # Microsoft Entra ID's token endpoint
BEDROCK = "bedrock"
VERTEX = "vertex"  # Google's error format, OAuth bearer tokens

# google.rpc.Code names Google's APIs put in `error.status`, by HTTP status.
_GEMINI_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


class ApiError(Exception):
    """A request the provider refuses; `param` names the offending field (OpenAI shape)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        details: list[dict] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type
        self.details = details  # Gemini: google.rpc detail objects (ErrorInfo, RetryInfo …)


def openai_type(status: int) -> str:
    if status == 429:
        return "requests"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def anthropic_type(status: int) -> str:
    if status in _ANTHROPIC_TYPES:
        return _ANTHROPIC_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def gemini_status(status: int) -> str:
    if status in _GEMINI_STATUS:
        return _GEMINI_STATUS[status]
    return "INTERNAL" if status >= 500 else "FAILED_PRECONDITION"


def error_object(family: str, err: ApiError) -> dict:
    """The JSON error document, as each provider returns it."""
    if family == BEDROCK:
        return {"message": err.message}
    if family in (GEMINI, VERTEX):
        doc = {"code": err.status, "message": err.message, "status": err.type or gemini_status(err.status)}
        if err.details:
            doc["details"] = err.details
        return {"error": doc}
    if family == COHERE:
        return {"id": "00000000-0000-0000-0000-00000000e770", "message": err.message}
    if family == ENTRA:
        zero = "00000000-0000-0000-0000-000000000000"
        codes = [d["error_code"] for d in err.details or () if "error_code" in d]
        return {"error": err.code or "invalid_request", "error_description": err.message, "error_codes": codes,
                "timestamp": "2026-01-01 00:00:00Z", "trace_id": zero, "correlation_id": zero}
    if family == ANTHROPIC:
        return {
            "type": "error",
            "error": {"type": err.type or anthropic_type(err.status), "message": err.message},
            "request_id": "req_mock",
        }
    code = err.code
    if family == AZURE and code is None:
        code = str(err.status)
    return {
        "error": {
            "message": err.message,
            "type": err.type or openai_type(err.status),
            "param": err.param,
            "code": code,
        }
    }


def error_body(family: str, err: ApiError) -> bytes:
    return orjson.dumps(error_object(family, err))


def stream_error_frame(family: str, err: ApiError) -> bytes:
    """A mid-stream error event: Anthropic's `event: error`, OpenAI's and Gemini's `data: {"error": ...}`."""
    doc = error_object(family, err)
    if family == ANTHROPIC:
        doc.pop("request_id")
        return b"event: error\ndata: " + orjson.dumps(doc) + b"\n\n"
    return b"data: " + orjson.dumps(doc) + b"\n\n"


def mock_failure(status: int, why: str) -> ApiError:
    return ApiError(status, f"Mock failure ({why}): status {status}")
