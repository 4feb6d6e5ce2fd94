"""The gateway's own health as metrics, read at scrape time (nothing on the request path):
the config store's last readiness ping, the request-log writer's progress and backlog, and
the providers' queues."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .requests import provider_gauges


class GatewayCollector:
    """A prometheus_client collector over one ``Gateway``: its request metrics and health."""

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[Metric]:
        gw = self.gateway
        if gw.request_metrics is not None:
            yield from gw.request_metrics.collect()
        yield from provider_gauges(gw.providers)
        yield from store_families(gw)
        yield from log_writer_families(gw.log_writer)


def store_families(gw: Any) -> Iterator[Metric]:
    up = GaugeMetricFamily("rainbridge_store_up",
                           "1 when the config store answered its last readiness ping (at most one per 2 s), "
                           "0 when it did not; absent without a config store.", labels=["store", "type"])
    if gw.store is not None:
        _, reachable = gw._store_check
        up.add_metric(["config", gw.store.kind], 1.0 if reachable else 0.0)
    yield up


def log_writer_families(writer: Any) -> Iterator[Metric]:
    written = CounterMetricFamily("rainbridge_log_writer_written", "Request log entries written to the logs store.")
    dropped = CounterMetricFamily("rainbridge_log_writer_dropped",
                                  "Request log entries dropped: the writer's queue was full, or the database refused the row.")
    queued = GaugeMetricFamily("rainbridge_log_writer_queue_depth", "Request log entries waiting to be written.")
    if writer is not None:
        written.add_metric([], getattr(writer, "written", 0))
        dropped.add_metric([], getattr(writer, "dropped", 0))
        queued.add_metric([], getattr(writer, "depth", 0))
    yield from (written, dropped, queued)
