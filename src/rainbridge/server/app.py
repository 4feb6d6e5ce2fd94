"""The ASGI application: an exact-match route table in front of small handlers.

The proxy routes are raw ASGI (one dict lookup, no framework layers); every error becomes
the JSON error shape with its status. Nothing here holds module-level state: ``create_app``
builds one app around one ``Gateway``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..errors import GatewayError, InvalidRequest, MethodNotAllowed, NotFound, UnsupportedMediaType
from ..gateway.gateway import Gateway
from ..gateway.record import CANCELLED, RequestRecord
from . import anthropic_routes, openai_routes
from .api import AdminApp
from .http import HEAD_LINES, ClientDisconnected, Headers, send_error, send_json, split_head_lines
from .ui import FILES, Dashboard

log = logging.getLogger("rainbridge.server")

_DEPLOYMENT = re.compile(r"(?:/openai)?/openai/deployments/([^/]+)/(chat/completions|completions|embeddings)/?")
_DEPLOYMENT_OPS = {"chat/completions": "chat", "completions": "completions", "embeddings": "embeddings"}

SETTLE_WAIT_S = 5.0  # at shutdown, for the requests cancelled at the graceful timeout to settle

Handler = Callable[[dict, Headers, RequestRecord | None, Any, Any], Awaitable[None]]


class App:
    def __init__(self, gateway: Gateway, allow_unauthenticated_admin: bool = False):
        self.gateway = gateway
        token = os.environ.get("RAINBRIDGE_ADMIN_TOKEN") or gateway.config.client.admin_token
        self.admin = AdminApp(gateway, token, allow_unauthenticated_admin)
        self.started = False
        self.unsettled = 0  # inference requests started and not yet settled (Gateway.finish)
        self._all_settled: asyncio.Event | None = None  # set when that reaches 0 (shutdown)
        # path -> (methods, handler, endpoint name of an inference route, for its log entry)
        self.routes: dict[str, tuple[frozenset[str], Handler, str | None]] = {}
        post = frozenset({"POST"})
        get = frozenset({"GET", "HEAD"})
        for prefix in ("/v1", "/openai/v1", "/openai"):
            self.routes[f"{prefix}/chat/completions"] = (post, partial(openai_routes.handle, gateway, "chat"), "chat")
            self.routes[f"{prefix}/completions"] = (post, partial(openai_routes.handle, gateway, "completions"), "completions")
            self.routes[f"{prefix}/embeddings"] = (post, partial(openai_routes.handle, gateway, "embeddings"), "embeddings")
            self.routes[f"{prefix}/models"] = (get, partial(openai_routes.models, gateway), None)
        self.routes["/anthropic/v1/messages"] = (post, partial(anthropic_routes.handle, gateway), "messages")
        self.routes["/health"] = (get, self.health, None)
        self.routes["/health/ready"] = (get, self.ready, None)
        self.routes["/metrics"] = (get, self.metrics, None)  # Prometheus; no admin token
        dashboard = Dashboard()  # static page; its data comes from /api with the admin token
        for path in FILES:
            self.routes[path] = (frozenset({"GET", "HEAD"}), dashboard.serve, None)
        self.content_logging = not gateway.config.client.disable_content_logging
        origins = gateway.config.client.allowed_origins
        self.cors_any = "*" in origins
        self.cors_origins = frozenset(o.encode() for o in origins)
        allowed = ["authorization", "content-type", "x-api-key", "api-key", "x-bf-vk",
                   "anthropic-version", "anthropic-beta", *gateway.config.client.allowed_headers]
        self.cors_allow_headers = ", ".join(allowed).encode()

    def _deployment_route(self, path: str) -> tuple[frozenset[str], Handler, str | None] | None:
        """Azure OpenAI's deployment URLs, as Bifrost serves them under its OpenAI integration
        (``/openai/openai/deployments/{deployment}/chat/completions?api-version=…``, what the
        AzureOpenAI SDK sends with ``azure_endpoint=<gateway>/openai``; without the first
        ``/openai`` too): the request goes to provider ``azure``, model ``{deployment}``."""
        found = _DEPLOYMENT.fullmatch(path)
        if found is None:
            return None
        deployment, op = found.group(1), _DEPLOYMENT_OPS[found.group(2)]
        handler = partial(openai_routes.handle, self.gateway, op, model=f"azure/{deployment}")
        return frozenset({"POST"}), handler, op

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.http(scope, receive, send)
        elif kind == "lifespan":
            await self.lifespan(receive, send)

    async def http(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope["path"]
        if path.startswith("/api/"):
            await self.admin(scope, receive, send)
            return
        route = self.routes.get(path)
        if route is None and path.endswith("/") and len(path) > 1:
            route = self.routes.get(path.rstrip("/"))
        if route is None and "/deployments/" in path:
            route = self._deployment_route(path)
        headers = Headers(scope["headers"])
        cors = self._cors_headers(headers.origin) if headers.origin is not None else None
        if cors is not None:
            send = _with_headers(send, cors)
        if HEAD_LINES not in (scope.get("extensions") or _NO_EXTENSIONS):
            send = _without_head_lines(send)
        method = scope["method"]
        record = None
        try:
            if route is None:
                raise NotFound(f"no route for {method} {path}", code="unknown_route")
            methods, handler, endpoint = route
            if method not in methods:
                if method == "OPTIONS" and cors is not None:
                    await self._preflight(send)
                    return
                raise MethodNotAllowed(
                    f"{method} is not allowed on {path}; use {' or '.join(sorted(methods))}",
                    code="method_not_allowed",
                    headers=[(b"allow", ", ".join(sorted(methods)).encode())],
                )
            if endpoint is not None:
                record = RequestRecord(endpoint, self.content_logging and not headers.no_content_log)
                self.unsettled += 1  # (no await before the try that settles it)
                if self.gateway.tracing is not None:
                    record.span = self.gateway.tracing.start_request(endpoint, scope["headers"])
                if not headers.json_body():
                    raise UnsupportedMediaType("send the request body as JSON with content-type: application/json",
                                               code="unsupported_media_type")
            if headers.vk_conflict:
                raise InvalidRequest("the request carries two different virtual keys (x-bf-vk, Authorization, "
                                     "x-api-key, api-key); send one", code="conflicting_virtual_keys")
            if method == "POST":
                headers.check_size(self.gateway.max_body_bytes)
            await handler(scope, headers, record, receive, send)
        except GatewayError as error:
            if record is not None:
                record.status = error.status
                record.error_type = error.type
            await send_error(send, error)
        except ClientDisconnected:
            if record is not None:
                record.status = 499
                record.error_type = "client_disconnected"
        except asyncio.CancelledError:  # the shutdown cap (or anyone) cancelled the request
            if record is not None and record.error_type is None and not record.stream_done:
                record.error_type = CANCELLED
                if not record.status:
                    record.status = 503
            raise
        except Exception:  # a bug: log it, answer without a traceback
            log.exception("unhandled error on %s %s", method, path)
            if record is not None:
                record.status = 500
                record.error_type = "internal_error"
            await send_error(send, GatewayError("internal error; see the gateway log", code="internal_error"))
        finally:
            if record is not None:
                self._settle(record)

    def _settle(self, record: RequestRecord) -> None:
        """Charge and log a request however it ended (see ``Gateway.finish``), then count it
        settled for ``settled``."""
        try:
            self.gateway.finish(record)
        except Exception:  # a bug: the request is over all the same
            log.exception("settling a request failed")
        finally:
            self.unsettled -= 1
            if not self.unsettled and self._all_settled is not None:
                self._all_settled.set()

    async def settled(self, timeout: float = SETTLE_WAIT_S) -> bool:
        """Wait (bounded) until every request that started is settled: at shutdown, the
        requests cancelled at the graceful timeout settle in their ``finally`` blocks after
        the server stopped waiting for them, and the final flush must include them."""
        if not self.unsettled:
            return True
        self._all_settled = asyncio.Event()
        try:
            await asyncio.wait_for(self._all_settled.wait(), timeout)
        except TimeoutError:
            log.error("%d request(s) still not settled %gs into shutdown: their usage is not in the final flush",
                      self.unsettled, timeout)
            return False
        finally:
            self._all_settled = None
        return True

    def _cors_headers(self, origin: bytes) -> list[tuple[bytes, bytes]] | None:
        if self.cors_any or origin in self.cors_origins:
            return [(b"access-control-allow-origin", b"*" if self.cors_any else origin), (b"vary", b"origin")]
        return None

    async def _preflight(self, send: Any) -> None:
        headers = [
            (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
            (b"access-control-allow-headers", self.cors_allow_headers),
            (b"access-control-max-age", b"600"),
            (b"content-length", b"0"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def health(self, scope: dict, headers: Headers, record: RequestRecord | None, receive: Any, send: Any) -> None:
        """Statuses for everyone (load balancers have no token); when inference needs a
        virtual key, the provider names only for the admin token's holder."""
        ok, report = await self.gateway.health()
        if self.gateway.governance.mandatory and not self.admin._authorized(scope):
            report["components"]["providers"].pop("configured", None)
        await send_json(send, 200 if ok else 503, orjson.dumps(report))

    async def ready(self, scope: dict, headers: Headers, record: RequestRecord | None, receive: Any, send: Any) -> None:
        """Readiness for load balancers and Kubernetes (no token): see ``Gateway.readiness``."""
        ok, report = await self.gateway.readiness()
        await send_json(send, 200 if ok else 503, orjson.dumps(report))

    async def metrics(self, scope: dict, headers: Headers, record: RequestRecord | None, receive: Any, send: Any) -> None:
        body = generate_latest(self.gateway.metrics)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode()), (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})

    async def lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.gateway.start()
                except Exception as exc:
                    log.error("startup failed: %s", exc)
                    await self.gateway.stop()
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                self.started = True
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.settled()  # every request charged before the final flush
                await self.gateway.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _with_headers(send: Any, extra: list[tuple[bytes, bytes]]) -> Any:
    async def wrapped(message: dict) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return wrapped


def _without_head_lines(send: Any) -> Any:
    """For a server without our head-lines extension: send them as ordinary headers."""
    async def wrapped(message: dict) -> None:
        lines = message.get(HEAD_LINES)
        if lines is not None:
            message = {k: v for k, v in message.items() if k != HEAD_LINES}
            message["headers"] = [*message.get("headers", []), *split_head_lines(lines)]
        await send(message)

    return wrapped


_NO_EXTENSIONS: dict = {}


def create_app(gateway: Gateway, allow_unauthenticated_admin: bool = False) -> App:
    return App(gateway, allow_unauthenticated_admin)
