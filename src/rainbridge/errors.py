"""Every error a client can see, by cause, each with a stable ``type`` string and status.

One body shape serves both SDK families::

    {"type": "error", "error": {"type": ..., "message": ..., "code": ..., "param": ...}}

The OpenAI SDKs read ``error.message``; the Anthropic SDKs read the top-level
``type: "error"`` and ``error.type`` / ``error.message``. Messages say what to do and never
contain a secret.
"""

from __future__ import annotations

import orjson


class GatewayError(Exception):
    """An error answered to the client. Subclasses fix the status and type."""

    status = 500
    type = "api_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        status: int | None = None,
        type: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.headers = headers or []

    def body(self) -> bytes:
        return error_body(self.type, self.message, self.code, self.param)


def error_body(type_: str, message: str, code: str | None = None, param: str | None = None) -> bytes:
    return orjson.dumps(
        {
            "type": "error",
            "error": {"type": type_, "message": message, "code": code, "param": param},
        }
    )


class InvalidRequest(GatewayError):
    """The client sent something we cannot use (400)."""

    status = 400
    type = "invalid_request_error"


class MissingRequiredHeaders(InvalidRequest):
    """A header the config requires on every inference request is absent (Bifrost's type)."""

    type = "missing_required_headers"


class NotFound(GatewayError):
    status = 404
    type = "not_found_error"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "method_not_allowed"


class UnsupportedMediaType(GatewayError):
    """An inference POST whose body is not declared JSON (415)."""

    status = 415
    type = "unsupported_media_type"


class RequestTooLarge(GatewayError):
    status = 413
    type = "request_too_large"


class QueueFull(GatewayError):
    """The provider's queue is full and ``drop_excess_requests`` is on (429)."""

    status = 429
    type = "queue_full"


class UpstreamError(GatewayError):
    """The provider answered with an error status; we pass its status on."""

    status = 502
    type = "provider_error"

    def __init__(self, message: str, *, provider: str, status: int, retry_after: str | None = None, **kw):
        super().__init__(message, status=status, **kw)
        self.provider = provider
        self.retry_after = retry_after
        if retry_after and not self.headers:
            self.headers = [(b"retry-after", retry_after.encode("latin-1"))]


class UpstreamUnreachable(GatewayError):
    """Connecting to or reading from the provider failed (502)."""

    status = 502
    type = "upstream_unreachable"

    def __init__(self, message: str, *, provider: str, **kw):
        super().__init__(message, **kw)
        self.provider = provider


class UpstreamTimeout(UpstreamUnreachable):
    status = 504
    type = "upstream_timeout"


class Unavailable(GatewayError):
    status = 503
    type = "service_unavailable"


# --------------------------------------------------------------------------- governance
# The error ``type`` is the governance decision.


class VirtualKeyRequired(GatewayError):
    status = 401
    type = "virtual_key_required"


class VirtualKeyNotFound(GatewayError):
    status = 403
    type = "virtual_key_not_found"


class VirtualKeyBlocked(GatewayError):
    status = 403
    type = "virtual_key_blocked"


class ProviderBlocked(GatewayError):
    status = 403
    type = "provider_blocked"


class ModelBlocked(GatewayError):
    status = 403
    type = "model_blocked"


class BudgetExceeded(GatewayError):
    status = 402
    type = "budget_exceeded"


class RequestLimited(GatewayError):
    status = 429
    type = "request_limited"


class TokenLimited(GatewayError):
    status = 429
    type = "token_limited"
