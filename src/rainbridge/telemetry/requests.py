"""Bifrost's request metrics: the telemetry plugin's names, types and labels, so Bifrost
dashboards and PromQL work unchanged against rainbridge.

Cost on the request path is what shapes this module: a request adds plain ints and floats
into a slot found by one dict lookup on a tuple of its label values (the virtual key's six
labels are a cached tuple); nothing is locked (one event loop per worker), no dict is
built, no string formatted. The families are built from the slots at scrape time only.

Bounded cardinality: each label keeps at most ``MAX_VALUES_PER_LABEL`` distinct values per
table, later values read ``other``; each table holds at most ``MAX_SERIES_PER_METRIC``
label combinations, later combinations all count in one series whose every label is
``other``. Nothing is ever dropped: the totals stay right, only the split is coarser.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

MAX_VALUES_PER_LABEL = 200
MAX_SERIES_PER_METRIC = 2000
OTHER = "other"

# Bucket bounds as Bifrost's plugin sets them (seconds, bytes).
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # prometheus.DefBuckets
SIZE_BUCKETS = tuple(100.0 * 10**i for i in range(8))  # ExponentialBuckets(100, 10, 8): 100 B .. 1 GB
UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 45.0, 60.0, 90.0)

HTTP_LABELS = ("path", "method", "status")
BIFROST_LABELS = (
    "provider", "model", "method", "virtual_key_id", "virtual_key_name", "selected_key_id", "selected_key_name",
    "number_of_retries", "fallback_index", "team_id", "team_name", "customer_id", "customer_name",
)
NO_KEY = ("", "", "", "", "", "")  # the virtual key labels of a request without one
# Bifrost's request types (the ``method`` label of bifrost_* series) per route and streaming.
METHODS = {
    ("chat", False): "chat_completion", ("chat", True): "chat_completion_stream",
    ("messages", False): "chat_completion", ("messages", True): "chat_completion_stream",
    ("completions", False): "text_completion", ("completions", True): "text_completion_stream",
    ("embeddings", False): "embedding", ("embeddings", True): "embedding",
}
# Error types of governance refusals (errors.py): rainbridge_governance_decisions' values
# besides "allowed".
GOVERNANCE_REFUSALS = frozenset({
    "virtual_key_required", "virtual_key_not_found", "virtual_key_blocked", "provider_blocked", "model_blocked",
    "budget_exceeded", "request_limited", "token_limited",
})
UNPRICED = object()


def metrics_enabled(plugins: Any) -> bool:
    """Bifrost's telemetry plugin is on by default; an entry with ``enabled: false`` turns
    the request metrics off (the cluster and health series stay)."""
    from ..config.bifrost import plugin_entries

    return not any(name == "telemetry" and entry.get("enabled") is False for _, name, entry in plugin_entries(plugins))


class Histogram:
    """Counts per bucket (non-cumulative; the last slot is +Inf) and the sum."""

    __slots__ = ("counts", "total")

    def __init__(self, width: int) -> None:
        self.counts = [0] * (width + 1)
        self.total = 0.0

    def observe(self, bounds: tuple[float, ...], value: float) -> None:
        self.counts[bisect_left(bounds, value)] += 1
        self.total += value

    def add(self, counts: Sequence[int], total: float) -> None:
        mine = self.counts
        for i, n in enumerate(counts):
            mine[i] += n
        self.total += total

    def buckets(self, bounds: tuple[float, ...]) -> list[tuple[str, int]]:
        out, running = [], 0
        for bound, n in zip((*bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out


class HttpSeries:
    __slots__ = ("duration", "request_size", "requests", "response_size")

    def __init__(self) -> None:
        self.requests = 0
        self.duration = Histogram(len(DEFAULT_BUCKETS))
        self.request_size = Histogram(len(SIZE_BUCKETS))
        self.response_size = Histogram(len(SIZE_BUCKETS))


class UpstreamSeries:
    __slots__ = ("cost", "errors", "first_token", "input_tokens", "inter_token", "latency_error", "latency_ok",
                 "output_tokens", "price", "requests", "success")

    def __init__(self) -> None:
        self.requests = 0
        self.success = 0
        self.errors: dict[str, int] = {}  # reason -> count
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost = 0.0
        self.latency_ok = Histogram(len(UPSTREAM_BUCKETS))
        self.latency_error = Histogram(len(UPSTREAM_BUCKETS))
        self.first_token = Histogram(len(DEFAULT_BUCKETS))
        self.inter_token = Histogram(len(DEFAULT_BUCKETS))
        self.price: Any = UNPRICED  # the model's price, looked up once per series


class Slot:
    """The series one kind of request counts in: its http_* and (when a provider was asked)
    its bifrost_* series."""

    __slots__ = ("http", "upstream")

    def __init__(self, http: HttpSeries) -> None:
        self.http = http
        self.upstream: UpstreamSeries | None = None


class SeriesTable:
    """Label tuple -> slot, with the cardinality bounds. ``get`` is one dict lookup once a
    label tuple was seen; a new one goes through ``_admit`` (caps applied)."""

    def __init__(self, width: int, make: Callable[[], Any], max_values: int = MAX_VALUES_PER_LABEL,
                 max_series: int = MAX_SERIES_PER_METRIC) -> None:
        self.width = width
        self.make = make
        self.max_values = max_values
        self.max_series = max_series
        self.values: list[set[str]] = [set() for _ in range(width)]
        self.series: dict[tuple, Any] = {}  # bounded label tuple -> slot (what is rendered)
        self._seen: dict[tuple, Any] = {}  # raw label tuple -> slot (the fast path)
        self.overflow = (OTHER,) * width

    def get(self, key: tuple) -> Any:
        slot = self._seen.get(key)
        return slot if slot is not None else self._admit(key)

    def _admit(self, key: tuple) -> Any:
        bounded = tuple(self.bound_value(i, v) for i, v in enumerate(key))
        slot = self.series.get(bounded)
        if slot is None:
            if len(self.series) >= self.max_series:
                bounded = self.overflow
                slot = self.series.get(bounded)
            if slot is None:
                slot = self.series[bounded] = self.make()
        if len(self._seen) < 4 * self.max_series:  # past it, new tuples take this slow path
            self._seen[key] = slot
        return slot

    def bound_value(self, position: int, value: str) -> str:
        seen = self.values[position]
        if value in seen:
            return value
        if len(seen) < self.max_values:
            seen.add(value)
            return value
        return OTHER


class RequestMetrics:
    """Every Bifrost request metric of one worker, plus rainbridge's governance decisions.

    ``custom_labels``: ``client.prometheus_labels``, filled per request from the
    ``x-bf-dim-<label>`` headers (empty when absent)."""

    def __init__(self, custom_labels: Sequence[str] = (), pricing: Any = None) -> None:
        self.pricing = pricing  # governance.pricing.Pricing: the cost of requests governance did not price
        self.custom_labels = tuple(custom_labels)
        self.dim_headers = tuple(b"x-bf-dim-" + label.encode() for label in self.custom_labels)
        self.no_dims = ("",) * len(self.custom_labels)
        self.http = SeriesTable(len(HTTP_LABELS) + len(self.custom_labels), HttpSeries)
        self.upstream = SeriesTable(len(BIFROST_LABELS) + len(self.custom_labels), UpstreamSeries)
        self.reasons = SeriesTable(1, lambda: None)  # bounds the values of `reason`
        self.error_series = 0
        self._routes: dict[tuple, Slot] = {}  # request key -> its series (see observe)
        self.decisions: dict[str, int] = {}  # governance decision -> count
        self._vk_labels: dict[str, tuple[str, ...]] = {}
        self._vk_state: object = None

    # -- the request path -------------------------------------------------------------------

    def dims(self, headers: Sequence[tuple[bytes, bytes]]) -> tuple[str, ...]:
        """The custom label values of a request from its ``x-bf-dim-*`` headers."""
        if not self.dim_headers:
            return ()
        found = dict(headers)
        return tuple(found.get(name, b"").decode("latin-1") for name in self.dim_headers)

    def vk_labels(self, vk: Any, state: Any) -> tuple[str, ...]:
        """(virtual_key_id, virtual_key_name, team_id, team_name, customer_id, customer_name),
        cached per key until the governance data changes."""
        if state is not self._vk_state:
            self._vk_labels = {}
            self._vk_state = state
        labels = self._vk_labels.get(vk.id)
        if labels is None:
            team = state.teams.get(vk.team_id) if vk.team_id else None
            customer_id = vk.customer_id or (team.customer_id if team is not None else None)
            customer = state.customers.get(customer_id) if customer_id else None
            labels = (vk.id, vk.name, team.id if team else "", team.name if team else "",
                      customer.id if customer else "", customer.name if customer else "")
            if len(self._vk_labels) < 10_000:
                self._vk_labels[vk.id] = labels
        return labels

    def observe(self, record: Any, now: float, cost: float | None) -> None:
        """One finished inference request (``Gateway.finish``); ``cost``: what governance
        charged, None when it did not price the request (the series' price is used)."""
        # One lookup finds both series (http_* and bifrost_*): the key holds the objects the
        # label values come from (hashed by identity or cached string hashes), the label
        # tuples are built once per key in _route. Histogram observes are written out: a
        # method call each would cost more than the add.
        vk = record.vk_labels
        status = record.status
        job = record.job
        if job is not None and job.target is not None:
            target = job.target
            key = (record.path, status, target.provider, target.model, job.op, job.stream, vk, job.key, job.retries,
                   job.fallback_index, record.dims)
        else:
            job = None
            key = (record.path, status, None, None, None, None, None, None, 0, 0, record.dims)
        slot = self._routes.get(key)
        if slot is None:
            slot = self._route(key)
        s = slot.http
        s.requests += 1
        h = s.duration
        value = now - record.started
        h.counts[bisect_left(DEFAULT_BUCKETS, value)] += 1
        h.total += value
        size = record.request_bytes
        if size > 0:
            h = s.request_size
            h.counts[bisect_left(SIZE_BUCKETS, size)] += 1
            h.total += size
        size = record.response_bytes
        if size > 0:
            h = s.response_size
            h.counts[bisect_left(SIZE_BUCKETS, size)] += 1
            h.total += size
        error = record.error_type
        if error in GOVERNANCE_REFUSALS:
            self.decisions[error] = self.decisions.get(error, 0) + 1
        elif vk is not NO_KEY:
            self.decisions["allowed"] = self.decisions.get("allowed", 0) + 1
        if job is None:
            return  # refused before any provider was asked: no bifrost_* series
        u = slot.upstream
        u.requests += 1
        value = now - job.started
        if error is None and status == 200:
            u.success += 1
            h = u.latency_ok
        else:
            h = u.latency_error
            self._error(u, error or "unknown")
        h.counts[bisect_left(UPSTREAM_BUCKETS, value)] += 1
        h.total += value
        prompt = record.prompt_tokens
        completion = record.completion_tokens
        if prompt or completion:
            u.input_tokens += prompt or 0
            u.output_tokens += completion or 0
            if cost is None:
                price = u.price
                if price is UNPRICED:
                    price = u.price = self.pricing.price(target.provider.name, target.model) if self.pricing else None
                if price is not None:
                    cost = (prompt or 0) * price.input_per_token + (completion or 0) * price.output_per_token
        if cost:
            u.cost += cost
        if record.first_token is not None:
            u.first_token.observe(DEFAULT_BUCKETS, record.first_token)
            gaps = record.gaps
            if gaps is not None:
                u.inter_token.add(gaps, record.gap_total)

    def _route(self, key: tuple) -> Slot:
        """The series of a request key seen for the first time (caps applied)."""
        path, status, provider, model, op, stream, vk, pkey, retries, fallback, dims = key
        dims = dims or self.no_dims
        slot = Slot(self.http.get((path, "POST", str(status), *dims)))
        if provider is not None:
            vk = vk or NO_KEY
            slot.upstream = self.upstream.get((
                provider.name, model, METHODS[op, stream], vk[0], vk[1],
                pkey.id if pkey is not None else "", pkey.name if pkey is not None else "",
                str(retries), str(fallback), vk[2], vk[3], vk[4], vk[5], *dims,
            ))
        if len(self._routes) >= 4 * MAX_SERIES_PER_METRIC:
            self._routes.clear()  # a cache of the tables' lookups: dropping it loses nothing
        self._routes[key] = slot
        return slot

    def _error(self, series: UpstreamSeries, reason: str) -> None:
        reason = self.reasons.bound_value(0, reason)
        errors = series.errors
        if reason not in errors:
            if self.error_series >= MAX_SERIES_PER_METRIC:
                series = self.upstream.series.get(self.upstream.overflow) or self.upstream.series.setdefault(
                    self.upstream.overflow, UpstreamSeries())
                errors, reason = series.errors, OTHER
            if reason not in errors:
                self.error_series += 1
                errors[reason] = 0
        errors[reason] += 1

    # -- scrape time ------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        custom = list(self.custom_labels)
        http_labels = [*HTTP_LABELS, *custom]
        requests = CounterMetricFamily("http_requests", "Total number of HTTP requests.", labels=http_labels)
        duration = HistogramMetricFamily("http_request_duration_seconds", "Duration of HTTP requests.", labels=http_labels)
        req_size = HistogramMetricFamily("http_request_size_bytes", "Size of HTTP requests.", labels=http_labels)
        resp_size = HistogramMetricFamily("http_response_size_bytes", "Size of HTTP responses.", labels=http_labels)
        for labels, s in list(self.http.series.items()):
            values = list(labels)
            requests.add_metric(values, s.requests)
            duration.add_metric(values, s.duration.buckets(DEFAULT_BUCKETS), s.duration.total)
            req_size.add_metric(values, s.request_size.buckets(SIZE_BUCKETS), s.request_size.total)
            resp_size.add_metric(values, s.response_size.buckets(SIZE_BUCKETS), s.response_size.total)
        yield from (requests, duration, req_size, resp_size)

        base = [*BIFROST_LABELS, *custom]
        n = len(BIFROST_LABELS)
        families = {
            "upstream": CounterMetricFamily("bifrost_upstream_requests", "Total number of requests forwarded to upstream providers by Bifrost.", labels=base),
            "success": CounterMetricFamily("bifrost_success_requests", "Total number of successful requests forwarded to upstream providers by Bifrost.", labels=base),
            "errors": CounterMetricFamily("bifrost_error_requests", "Total number of error requests forwarded to upstream providers by Bifrost.", labels=[*BIFROST_LABELS, "reason", *custom]),
            "input": CounterMetricFamily("bifrost_input_tokens", "Total number of input tokens forwarded to upstream providers by Bifrost.", labels=base),
            "output": CounterMetricFamily("bifrost_output_tokens", "Total number of output tokens forwarded to upstream providers by Bifrost.", labels=base),
            "cost": CounterMetricFamily("bifrost_cost", "Total cost in USD for requests to upstream providers.", labels=base),
            "cache": CounterMetricFamily("bifrost_cache_hits", "Total number of cache hits forwarded to upstream providers by Bifrost, separated by cache type (direct/semantic).", labels=[*BIFROST_LABELS, "cache_type", *custom]),
            "latency": HistogramMetricFamily("bifrost_upstream_latency_seconds", "Latency of requests forwarded to upstream providers by Bifrost.", labels=[*BIFROST_LABELS, "is_success", *custom]),
            "first": HistogramMetricFamily("bifrost_stream_first_token_latency_seconds", "Latency of the first token of a stream response.", labels=base),
            "inter": HistogramMetricFamily("bifrost_stream_inter_token_latency_seconds", "Latency of the intermediate tokens of a stream response.", labels=base),
        }
        for labels, u in list(self.upstream.series.items()):
            values = list(labels)
            head, tail = values[:n], values[n:]
            families["upstream"].add_metric(values, u.requests)
            families["success"].add_metric(values, u.success)
            for reason, count in list(u.errors.items()):
                families["errors"].add_metric([*head, reason, *tail], count)
            families["input"].add_metric(values, u.input_tokens)
            families["output"].add_metric(values, u.output_tokens)
            families["cost"].add_metric(values, u.cost)
            for flag, hist in (("true", u.latency_ok), ("false", u.latency_error)):
                if any(hist.counts):
                    families["latency"].add_metric([*head, flag, *tail], hist.buckets(UPSTREAM_BUCKETS), hist.total)
            if any(u.first_token.counts):
                families["first"].add_metric(values, u.first_token.buckets(DEFAULT_BUCKETS), u.first_token.total)
                families["inter"].add_metric(values, u.inter_token.buckets(DEFAULT_BUCKETS), u.inter_token.total)
        yield from families.values()

        decisions = CounterMetricFamily("rainbridge_governance_decisions",
                                        "Governance admissions by outcome: allowed, or the refusal's error type.",
                                        labels=["decision"])
        for decision, count in sorted(self.decisions.items()):
            decisions.add_metric([decision], count)
        yield decisions


def provider_gauges(providers: dict[str, Any]) -> Iterator[Metric]:
    """Queue depth and active requests per provider (``concurrency_and_buffer_size``)."""
    depth = GaugeMetricFamily("rainbridge_provider_queue_depth",
                              "Requests waiting for a free slot of the provider's concurrency limit.", labels=["provider"])
    active = GaugeMetricFamily("rainbridge_provider_active_requests",
                               "Requests holding one of the provider's concurrency slots.", labels=["provider"])
    for name, provider in sorted(providers.items()):
        depth.add_metric([name], provider.queue.waiting)
        active.add_metric([name], provider.queue.active)
    yield depth
    yield active
