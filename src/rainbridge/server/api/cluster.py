"""``GET /api/cluster/status`` and ``GET /api/cluster/nodes``: this member's view of the cluster.

``status``: this node (name, node id, addresses, incarnation), every member with its state,
region, HTTP address, incarnation and last change, and a health summary (``healthy``,
``degraded``: someone is suspect or dead or our own Lifeguard score is up, ``alone``: peers
are configured but nobody answered, ``left``), and the fleet counters of the worker that
answered (``fleet_counters``: see ``FleetCounters.status``), with per member row its
``clock_offset_ms`` / ``clock_error_ms`` (``cluster/clock.py``) and this worker's
``last_sync_s`` / ``view_staleness_s`` (``counters/sync_view.py``), and ``counters``: that
member's own summary (keys held and owned, allowance outstanding, windows and bytes of usage
state), asked of it when the status is read. ``nodes``: the member list
only. With cluster mode off both answer ``{"enabled": false, ...}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...counters.fleet import FleetCounters
from ...counters.sync_view import add_summaries, add_to_members

if TYPE_CHECKING:
    from ...gateway.gateway import Gateway

_OFF = "cluster mode is off (cluster_config.enabled is false)"


def routes(gateway: Gateway) -> list[Route]:
    async def status(request: Request) -> Response:
        cluster = gateway.cluster
        body = cluster.status() if cluster is not None else {"enabled": False, "message": _OFF}
        counters = gateway.counters
        if cluster is not None and isinstance(counters, FleetCounters):
            body["fleet_counters"] = counters.status()
            add_to_members(body["members"], counters)
            await add_summaries(body["members"], counters)
        return Response(orjson.dumps(body), media_type="application/json")

    async def nodes(request: Request) -> Response:
        cluster = gateway.cluster
        if cluster is None:
            body: dict = {"enabled": False, "message": _OFF, "nodes": []}
        else:
            body = {"enabled": True, "node": cluster.name, "nodes": cluster.nodes()}
        return Response(orjson.dumps(body), media_type="application/json")

    return [
        Route("/api/cluster/status", status, methods=["GET"]),
        Route("/api/cluster/nodes", nodes, methods=["GET"]),
    ]
