"""Prometheus metrics of the fleet counters, read from their stats at scrape time.

Like ``cluster/metrics.py``: a custom collector in the gateway's own registry reads the
escrow's and the driver's counters when Prometheus scrapes, so admission pays nothing per
request for metrics. Every series carries ``node`` (the cluster member name); nothing is
exported before the fleet counters have attached to the cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .escrow import member_name
from .sync_view import open_windows

if TYPE_CHECKING:
    from .fleet import FleetCounters


class FleetCollector(Collector):
    def __init__(self, counters: FleetCounters) -> None:
        self._counters = counters

    def describe(self) -> list[Metric]:
        return []  # values are read at collect time

    def collect(self) -> Iterator[Metric]:
        c = self._counters
        escrow, service = c.escrow, c.service
        if escrow is None or service is None:
            return
        node = service.name
        es = escrow.stats
        yield _counter("grants", "Allowance grants this member sent as a limit's owner", node, es["grants"])
        yield _counter("allowance_waits",
                       "Admissions that waited for a grant (short of allowance, not of the limit)",
                       node, c.stats["waits"])
        yield _counter("refusals", "Governed requests refused here because the fleet reached a limit (429/402)",
                       node, c.stats["refusals"])
        yield _counter("reclaims", "Reclaim rounds this member started as owner before refusing",
                       node, es["reclaims"])
        volume = CounterMetricFamily(
            "rainbridge_fleet_sync_bytes", "Escrow message bytes (grants, asks, usage, ledgers)",
            labels=["node", "direction"],
        )
        volume.add_metric([node, "sent"], c.sync.bytes_sent)
        volume.add_metric([node, "received"], c.sync.bytes_received)
        yield volume
        yield _gauge("keys", "Counter keys bound to fleet limits on this member", node, len(c.bindings))
        yield _gauge("owned_keys", "Fleet limits this member owns (grants allowances for)", node,
                     sum(1 for lid in escrow.limits if escrow.owns(lid)))
        yield _gauge("allowance_outstanding", "Allowance units this member holds unused", node,
                     sum(max(0, a.spare()) for _, a in escrow.allowances()))
        ages = c.sync.staleness(open_windows(c))
        live = escrow.live - {escrow.name}
        yield _gauge("view_staleness_seconds",
                     "Age of the oldest first-hand usage report of a live member, open windows",
                     node, max((age for m, age in ages.items() if member_name(m) in live), default=0.0))


def _gauge(metric: str, doc: str, node: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(f"rainbridge_fleet_{metric}", doc, labels=["node"])
    family.add_metric([node], value)
    return family


def _counter(metric: str, doc: str, node: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(f"rainbridge_fleet_{metric}", doc, labels=["node"])
    family.add_metric([node], value)
    return family
