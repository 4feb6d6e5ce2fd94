"""Prometheus metrics of this cluster member, read from its counters at scrape time.

A custom collector (registered in the gateway's own registry, never the global one) reads
the state machine's ``stats``, the driver's ``stats`` and the member table when Prometheus
scrapes, so the protocol pays nothing per packet for metrics. Every series carries
``node`` (the member name): with ``--workers N`` each worker is a member of its own.

Clock offsets are one series per measured member (``member`` label), at most
``CLOCK_SERIES`` (64) of them: past that only the members farthest off are exported (the
set may change between scrapes), while ``rainbridge_cluster_clock_offset_max_abs_seconds``
always covers every member measured.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .messages import NodeState

if TYPE_CHECKING:
    from .service import ClusterService

CLOCK_SERIES = 64  # members with an offset series at most (label cardinality)

# (name, help, key in Membership.stats)
_PROTOCOL_COUNTERS = (
    ("probes", "Direct probes sent (UDP pings of the next member)", "probes"),
    ("probe_failures", "Probes that ended without an ack (the member became suspect)",
     "probe_failures"),
    ("indirect_pings", "Indirect pings asked of other members", "indirect_pings"),
    ("tcp_pings", "TCP fallback pings sent", "tcp_pings"),
    ("ping_resends", "Direct UDP pings re-sent to a member that missed the first",
     "ping_resends"),
    ("probes_stalled", "Probes dropped without suspicion: this node was stopped past the "
     "deadline", "probes_stalled"),
    ("suspicions_extended", "Suspicion timeouts this node slept through, extended once to read "
     "a refutation first", "suspicions_extended"),
    ("suspicions", "Members this node started to suspect (or learned were suspected)",
     "suspicions"),
    ("refutations", "Suspicions of this node that it refuted with a new incarnation",
     "refutations"),
    ("deaths", "Members this node saw declared dead", "deaths"),
    ("leaves", "Members this node saw leave gracefully", "leaves"),
)


class ClusterCollector(Collector):
    def __init__(self, service: ClusterService) -> None:
        self._service = service

    def describe(self) -> list[Metric]:
        return []  # values are read at collect time; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        service = self._service
        node = service.node
        if node is None or node.membership is None:
            return
        m = node.membership
        name = service.name

        members = GaugeMetricFamily(
            "rainbridge_cluster_members", "Members in this node's view, by state",
            labels=["node", "state"],
        )
        counts = {state: 0 for state in NodeState}
        for member in m.members():
            counts[member.state] += 1
        for state, count in counts.items():
            members.add_metric([name, state.name.lower()], count)
        yield members
        yield _gauge("local_health_score", "Lifeguard local health score (0 is healthy)",
                     name, m.local_health)
        yield _gauge("incarnation", "This node's incarnation number", name, m.incarnation)

        for metric, doc, key in _PROTOCOL_COUNTERS:
            yield _counter(metric, doc, name, m.stats[key])

        push_pulls = CounterMetricFamily(
            "rainbridge_cluster_push_pulls",
            "Full-state TCP exchanges: initiated, served, failed, rejected (version mismatch)",
            labels=["node", "kind"],
        )
        for kind, key in (("initiated", "push_pulls"), ("served", "push_pulls_served"),
                          ("failed", "push_pull_failures"), ("rejected", "push_pull_rejected")):
            push_pulls.add_metric([name, kind], m.stats[key])
        yield push_pulls

        stats = node.stats
        messages = CounterMetricFamily(
            "rainbridge_cluster_messages",
            "Gossip messages (UDP) and streams (TCP), by direction",
            labels=["node", "direction", "transport"],
        )
        messages.add_metric([name, "in", "udp"], stats["messages_in"])
        messages.add_metric([name, "out", "udp"], stats["messages_out"])
        messages.add_metric([name, "in", "tcp"], stats["tcp_streams_in"])
        messages.add_metric([name, "out", "tcp"], stats["tcp_streams_out"])
        yield messages

        volume = CounterMetricFamily(
            "rainbridge_cluster_bytes", "Gossip bytes on the wire, by direction",
            labels=["node", "direction", "transport"],
        )
        for direction in ("in", "out"):
            volume.add_metric([name, direction, "udp"], stats[f"udp_bytes_{direction}"])
            volume.add_metric([name, direction, "tcp"], stats[f"tcp_bytes_{direction}"])
        yield volume

        dropped = CounterMetricFamily(
            "rainbridge_cluster_dropped",
            "Packets and streams refused (bad label, key, CRC, address space, ...), by reason",
            labels=["node", "reason"],
        )
        for key, value in sorted(stats.items()):
            for prefix in ("dropped:", "stream_errors:"):
                if key.startswith(prefix):
                    dropped.add_metric([name, key[len(prefix):]], value)
        yield dropped

        events = CounterMetricFamily(
            "rainbridge_cluster_member_events", "Member state changes seen, by kind",
            labels=["node", "kind"],
        )
        for key, value in sorted(stats.items()):
            if key.startswith("events:"):
                events.add_metric([name, key[len("events:"):]], value)
        yield events
        yield from _clock(service)
        yield from _discovery(service)
        yield _counter("foreign_messages",
                       "Messages of other memberlist applications (e.g. Serf) ignored",
                       name, service.stats["foreign_messages"])


def _clock(service: ClusterService) -> Iterator[Metric]:
    offsets = service.clock.offsets.offsets()
    name = service.name
    family = GaugeMetricFamily(
        "rainbridge_cluster_clock_offset_seconds",
        f"A member's wall clock minus this member's (NTP-style estimate, lowest-RTT sample); "
        f"the {CLOCK_SERIES} members farthest off at most",
        labels=["node", "member"],
    )
    farthest = sorted(offsets.items(), key=lambda kv: (-abs(kv[1].offset), kv[0]))
    for member, sample in farthest[:CLOCK_SERIES]:
        family.add_metric([name, member], sample.offset)
    yield family
    yield _gauge("clock_offset_max_abs_seconds",
                 "The largest absolute clock offset among the members measured (0: none yet)",
                 name, max((abs(s.offset) for s in offsets.values()), default=0.0))


def _discovery(service: ClusterService) -> Iterator[Metric]:
    """``rainbridge_cluster_discovery_*``: rounds, joins, rejections, backend health."""
    runner = service.joining.discovery
    if runner is None:
        return
    name = service.name
    yield _counter("discovery_rounds", "Discovery rounds run (peers and the backend)",
                   name, runner.stats["rounds"])
    joins = CounterMetricFamily(
        "rainbridge_cluster_discovery_joins", "Joins of discovered candidates, by result",
        labels=["node", "result"],
    )
    joins.add_metric([name, "ok"], runner.stats["joins"])
    joins.add_metric([name, "failed"], runner.stats["join_failures"])
    yield joins
    rejected = CounterMetricFamily(
        "rainbridge_cluster_discovery_rejected",
        "Candidates never contacted (outside allowed_address_space, not an IP, ...), by reason",
        labels=["node", "reason"],
    )
    for reason in ("address_space", "not_ip", "bad_port", "unusable"):
        rejected.add_metric([name, reason], runner.filter.rejected[reason])
    yield rejected
    healthy = GaugeMetricFamily(
        "rainbridge_cluster_discovery_healthy",
        "1 when the discovery backend's last round succeeded, 0 while it is degraded",
        labels=["node", "backend"],
    )
    failures = GaugeMetricFamily(
        "rainbridge_cluster_discovery_consecutive_failures",
        "Failed discovery rounds in a row, per backend (0 when healthy)",
        labels=["node", "backend"],
    )
    candidates = GaugeMetricFamily(
        "rainbridge_cluster_discovery_candidates",
        "Candidates the backend's last good round found", labels=["node", "backend"],
    )
    for source in runner.sources:
        h = source.health
        healthy.add_metric([name, h.backend], 1.0 if h.healthy else 0.0)
        failures.add_metric([name, h.backend], h.failures)
        candidates.add_metric([name, h.backend], h.candidates)
    yield healthy
    yield failures
    yield candidates


def _gauge(metric: str, doc: str, node: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(f"rainbridge_cluster_{metric}", doc, labels=["node"])
    family.add_metric([node], value)
    return family


def _counter(metric: str, doc: str, node: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(f"rainbridge_cluster_{metric}", doc, labels=["node"])
    family.add_metric([node], value)
    return family
