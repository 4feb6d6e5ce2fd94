"""The cluster as this member sees it, as plain data for the API and the CLI.

``status``: this node, every member and a health summary: ``healthy``; ``degraded`` when a
member is suspect or dead (until it is reaped, ``gossip_to_the_dead_time`` later) or our
own Lifeguard score is above 0; ``alone`` when peers are configured but nobody else is
alive; ``left`` after a graceful leave. Times are UTC wall-clock (``last_change``) and
seconds since then. ``clock_offset_ms`` / ``clock_error_ms``: the member's wall clock minus
ours, and the bound of that estimate (``clock.py``); 0 for this member, null until measured.
``discovery``: the rounds, candidates, rejections (by reason) and each backend's health
(``healthy`` / ``degraded`` with the last error); ``GET /health`` carries its status.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .. import __version__
from .addresses import format_address
from .codec import WireError, decode_tags
from .events import Member
from .messages import NodeState

if TYPE_CHECKING:
    from .service import ClusterService


def member_view(service: ClusterService, member: Member) -> dict[str, Any]:
    assert service.node is not None
    try:
        tags = decode_tags(member.meta)
    except WireError:
        tags = {}
    changed = service.node.wall_time(member.state_change)
    me = member.name == service.name
    sample = None if me else service.clock.offsets.best(member.name)
    return {
        "name": member.name,
        "self": me,
        "state": member.state.name.lower(),
        "address": format_address(member.address),
        "http": tags.get("http", ""),
        "region": tags.get("region", ""),
        "node_id": tags.get("id", ""),
        "boot": tags.get("boot", ""),
        "version": tags.get("version", ""),
        "readiness": tags.get("state", ""),
        "role": tags.get("role", ""),
        "incarnation": member.incarnation,
        "healthy": member.healthy,
        "last_change": datetime.fromtimestamp(changed, UTC).isoformat(timespec="milliseconds"),
        "seconds_since_change": round(max(0.0, time.time() - changed), 1),
        "clock_offset_ms": 0.0 if me else _ms(sample.offset if sample else None),
        "clock_error_ms": 0.0 if me else _ms(sample.error if sample else None),
        "tags": tags,
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def nodes(service: ClusterService) -> list[dict[str, Any]]:
    node = service.node
    if node is None or node.membership is None:
        return []
    return [member_view(service, m) for m in node.members()]


def regions(members: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Members grouped by region (``""``: no region): names and counts by state."""
    out: dict[str, dict[str, Any]] = {}
    for v in sorted(members, key=lambda v: v["name"]):
        group = out.setdefault(v["region"], {"members": [], "states": Counter()})
        group["members"].append(v["name"])
        group["states"][v["state"]] += 1
    for group in out.values():
        group["states"] = dict(group["states"])
    return out


def status(service: ClusterService) -> dict[str, Any]:
    node = service.node
    identity = {
        "name": service.name,
        "node_id": service.node_id,
        "boot": service.boot,
        "region": service.region,
        "http": service.http_address,
        "version": __version__,
    }
    if node is None or node.membership is None:
        return {"enabled": True, "running": False, "node": identity, "members": [],
                "health": {"status": "stopped"}}
    m = node.membership
    members = nodes(service)
    counts = Counter(v["state"] for v in members)
    verdict = _verdict(service, counts)
    me = m.member(service.name)
    return {
        "enabled": True,
        "running": node.running,
        "node": {
            **identity,
            "address": format_address(node.address),
            "bind": format_address(node.bind),
            "state": me.state.name.lower() if me else "unknown",
            "incarnation": m.incarnation,
            "readiness": service.readiness,
        },
        "members": members,
        "regions": regions(members),
        "health": {
            "status": verdict,
            "members": len(members),
            **{s.name.lower(): counts[s.name.lower()] for s in NodeState},
            "local_health_score": m.local_health,
            "joined": service.joining.joined,
            "peers": list(service.cluster.peers),
            "discovery": _discovery_status(service),
        },
        "discovery": discovery(service),
    }


def discovery(service: ClusterService) -> dict[str, Any]:
    config = service.cluster.discovery
    runner = service.joining.discovery
    block: dict[str, Any] = {
        "enabled": config.enabled,
        "type": config.type if config.enabled else None,
        "allowed_address_space": list(config.allowed_address_space),
    }
    if runner is not None:
        block.update(runner.report())
    return block


def _discovery_status(service: ClusterService) -> str:
    """``off`` (no peers, no backend), ``healthy`` or ``degraded``."""
    runner = service.joining.discovery
    if runner is None or not runner.sources:
        return "off"
    return "degraded" if any(not s.health.healthy for s in runner.sources) else "healthy"


def _verdict(service: ClusterService, counts: Counter) -> str:
    """``healthy``, ``degraded``, ``alone`` or ``left`` (see the module docstring)."""
    m = service.node.membership  # type: ignore[union-attr]
    if m.has_left:
        return "left"
    looking = service.cluster.peers or service.cluster.discovery.enabled
    if counts["alive"] + counts["suspect"] <= 1 and looking:
        return "alone"
    if counts["suspect"] or counts["dead"] or m.local_health:
        return "degraded"
    return "healthy"


def health(service: ClusterService) -> dict[str, Any]:
    """The cluster component of ``GET /health``: ``failing`` only when our member is not
    running (the gateway cannot share state); a lone or degraded cluster still serves, so
    it reports the membership verdict without failing the probe."""
    node = service.node
    if node is None or node.membership is None or not node.running:
        return {"status": "failing", "membership": "stopped", "readiness": service.readiness}
    counts = Counter(m.state.name.lower() for m in node.members())
    return {
        "status": "ok",
        "membership": _verdict(service, counts),
        "readiness": service.readiness,
        "alive": counts["alive"],
        "suspect": counts["suspect"],
        "dead": counts["dead"],
        "discovery": _discovery_status(service),
    }
