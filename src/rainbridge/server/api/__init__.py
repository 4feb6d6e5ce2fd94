"""The management API (``/api/...``): Starlette routing behind an admin-token gate.

Every request is authenticated before routing, so an unauthenticated caller learns nothing
about which paths or ids exist. Errors use the same JSON shape as the inference routes.
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ...errors import GatewayError, error_body
from ..http import send_error
from . import cluster, governance, logs, model_configs, providers, routing_rules, stats

if TYPE_CHECKING:
    from ...gateway.gateway import Gateway

log = logging.getLogger("rainbridge.api")

JSON_TYPE = "application/json"


class Unauthorized(GatewayError):
    status = 401
    type = "authentication_error"


class Disabled(GatewayError):
    status = 403
    type = "management_api_disabled"


def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return Response(exc.body(), exc.status, media_type=JSON_TYPE, headers={k.decode(): v.decode() for k, v in exc.headers})


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = {404: "not_found_error", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request_error")
    path = request.url.path
    if "sk-rb-" in path or "sk-bf-" in path:  # never echo a virtual key value
        path = "(a path holding a virtual key value)"
    message = f"no route for {request.method} {path}" if exc.status_code == 404 else str(exc.detail)
    return Response(error_body(kind, message), exc.status_code, media_type=JSON_TYPE)


class AdminApp:
    def __init__(self, gateway: Gateway, token: str | None, allow_unauthenticated: bool):
        self.token = token.encode() if token else None
        self.open = allow_unauthenticated and not token
        self.app = Starlette(
            routes=[*logs.routes(gateway), *stats.routes(gateway), *governance.routes(gateway), *model_configs.routes(gateway),
                    *providers.routes(gateway), *routing_rules.routes(gateway),
                    *cluster.routes(gateway)],
            exception_handlers={GatewayError: _gateway_error, HTTPException: _http_error},
        )
        if self.token:
            log.info("management API /api/ enabled (admin token required)")
        elif self.open:
            log.warning("management API /api/ enabled WITHOUT authentication (--allow-unauthenticated-admin)")
        else:
            log.info("management API /api/ disabled: set RAINBRIDGE_ADMIN_TOKEN (or client.admin_token)")

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if not self.open:
            if self.token is None:
                await send_error(send, Disabled(
                    "the management API is disabled: set RAINBRIDGE_ADMIN_TOKEN (or client.admin_token), "
                    "or start with --allow-unauthenticated-admin", code="management_api_disabled"))
                return
            if not self._authorized(scope):
                await send_error(send, Unauthorized("missing or wrong admin token (Authorization: Bearer ...)", code="invalid_admin_token"),
                                 [(b"www-authenticate", b"Bearer")])
                return
        await self.app(scope, receive, send)

    def _authorized(self, scope: dict) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, presented = value.partition(b" ")
                return scheme.lower() == b"bearer" and self.token is not None and hmac.compare_digest(presented.strip(), self.token)
        return False
