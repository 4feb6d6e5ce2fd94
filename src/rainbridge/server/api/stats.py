"""``GET /api/stats``: this node's traffic totals (requests, errors, latency sum, uptime),
the dashboard's per-node numbers when cluster mode is off (in cluster mode every member's
row of ``/api/cluster/status`` carries the same block under ``counters.traffic``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

if TYPE_CHECKING:
    from ...gateway.gateway import Gateway


def routes(gateway: Gateway) -> list[Route]:
    async def stats(request: Request) -> Response:
        body = {
            "node_id": gateway.node_id,
            "region": gateway.config.cluster_config.region or "",
            "traffic": gateway.traffic.snapshot(),
        }
        return Response(orjson.dumps(body), media_type="application/json")

    return [Route("/api/stats", stats, methods=["GET"])]
