"""``GET /api/logs``: the request log, newest first, with filters and cursor pagination."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...errors import InvalidRequest, Unavailable
from ...store import StoreUnavailable
from ...store.request_log import query_logs
from .params import bool_param, int_param, time_param

if TYPE_CHECKING:
    from ...gateway.gateway import Gateway


def routes(gateway: Gateway) -> list[Route]:
    async def list_logs(request: Request) -> Response:
        if gateway.logs_db is None:
            raise Unavailable("request logging is off: set client.enable_logging to true", code="logging_disabled")
        filters = {
            "start_ms": time_param(request, "start"),
            "end_ms": time_param(request, "end"),
            "provider": request.query_params.get("provider") or None,
            "model": request.query_params.get("model") or None,
            "virtual_key_id": request.query_params.get("virtual_key_id") or None,
            "status": int_param(request, "status", None, 100, 599),
            "errors_only": bool_param(request, "errors_only"),
        }
        limit = int_param(request, "limit", 50, 1, 1000)
        try:
            rows, cursor = await query_logs(
                gateway.logs_db, filters, limit, request.query_params.get("cursor") or None,
                with_content=bool_param(request, "content"),
            )
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="cursor", code="invalid_cursor") from None
        except StoreUnavailable as exc:
            raise Unavailable(f"logs store unavailable: {exc}", code="store_unavailable") from None
        writer = gateway.log_writer
        body = {"logs": rows, "next_cursor": cursor, "dropped": writer.dropped if writer else 0}
        return Response(orjson.dumps(body), media_type="application/json")

    return [Route("/api/logs", list_logs, methods=["GET"])]
