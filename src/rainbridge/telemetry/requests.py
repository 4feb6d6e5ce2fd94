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

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from operator import itemgetter
from typing import Any

import orjson
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
FOLD_AT = 256  # answered requests a slot holds before adding them to its series


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

    def add_values(self, bounds: tuple[float, ...], values: Sequence[float]) -> None:
        """Many observations at once: sorted in C, then one bisect per bucket bound."""
        ordered = sorted(values)
        counts = self.counts
        below = 0
        for i, bound in enumerate(bounds):
            upto = bisect_right(ordered, bound)
            counts[i] += upto - below
            below = upto
        counts[-1] += len(ordered) - below
        self.total += sum(ordered)

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
    its bifrost_* series, and its answered requests not yet added to them (``pending``)."""

    __slots__ = ("governed", "http", "pending", "priced", "upstream")

    def __init__(self, http: HttpSeries) -> None:
        self.http = http
        self.upstream: UpstreamSeries | None = None
        self.pending: list[tuple] = []
        self.governed = False  # requests with a virtual key: each is an "allowed" decision
        self.priced = ("", "")  # (provider, model) whose price the cost uses


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
        self._slots: list[Slot] = []  # the same slots, to fold
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
        charged, None when it did not price the request (the series' price is used).

        The request path does as little Python as it can: one lookup finds the request's
        series (the key holds the objects the labels come from, hashed by identity or by
        cached string hashes; label tuples are built once per key in ``_route``), and an
        answered request is one tuple appended to its slot. ``_fold`` adds a slot's pending
        tuples to its series in bulk: columns by ``zip``, histograms by one sort, tokens of
        un-parsed answers by one regex pass over the joined tails of the bodies (all in C); it runs at
        ``FOLD_AT`` pending requests and at every scrape, so the numbers are exact then.
        Errors and refusals (rare) are counted at once, in Python."""
        job = record.job
        if job is not None and job.target is not None:
            target = job.target
            key = (record.path, record.status, target.provider, target.model, job.op, job.stream, record.vk_labels,
                   job.key, job.retries, job.fallback_index, record.dims)
        else:
            job = None
            key = (record.path, record.status, None, None, None, None, record.vk_labels, None, 0, 0, record.dims)
        slot = self._routes.get(key)
        if slot is None:
            slot = self._route(key)
        if job is not None and record.error_type is None and record.status == 200:
            pending = slot.pending
            pending.append((now - record.started, now - job.started, record.request_bytes, record.response_bytes,
                            record.response_body, record.prompt_tokens, record.completion_tokens, cost,
                            record.first_token, record.gaps, record.gap_total))
            if len(pending) >= FOLD_AT:
                self._fold(slot)
            return
        self._observe_now(slot, record, now, cost)

    def _observe_now(self, slot: Slot, record: Any, now: float, cost: float | None) -> None:
        """An error or refusal: counted at once."""
        s = slot.http
        s.requests += 1
        s.duration.observe(DEFAULT_BUCKETS, now - record.started)
        if record.request_bytes > 0:
            s.request_size.observe(SIZE_BUCKETS, record.request_bytes)
        if record.response_bytes > 0:
            s.response_size.observe(SIZE_BUCKETS, record.response_bytes)
        error = record.error_type
        if error in GOVERNANCE_REFUSALS:
            self.decisions[error] = self.decisions.get(error, 0) + 1
        elif slot.governed:
            self.decisions["allowed"] = self.decisions.get("allowed", 0) + 1
        u = slot.upstream
        job = record.job
        if u is None or job is None:
            return  # refused before any provider was asked: no bifrost_* series
        u.requests += 1
        value = now - job.started
        if error is None and record.status == 200:
            u.success += 1
            u.latency_ok.observe(UPSTREAM_BUCKETS, value)
        else:
            u.latency_error.observe(UPSTREAM_BUCKETS, value)
            self._error(u, error or "unknown")
        prompt, completion = record.prompt_tokens or 0, record.completion_tokens or 0
        u.input_tokens += prompt
        u.output_tokens += completion
        if cost is None and (prompt or completion):
            price = self._price(u, slot)
            cost = prompt * price.input_per_token + completion * price.output_per_token if price is not None else 0.0
        if cost:
            u.cost += cost
        if record.first_token is not None:
            u.first_token.observe(DEFAULT_BUCKETS, record.first_token)
            if record.gaps is not None:
                u.inter_token.add(record.gaps, record.gap_total)

    def _price(self, u: UpstreamSeries, slot: Slot) -> Any:
        if u.price is UNPRICED:
            provider, model = slot.priced
            u.price = self.pricing.price(provider, model) if self.pricing is not None else None
        return u.price

    def fold_all(self) -> None:
        for slot in self._slots:
            if slot.pending:
                self._fold(slot)

    def _fold(self, slot: Slot) -> None:
        pending = slot.pending
        slot.pending = []
        n = len(pending)
        durations, latencies, sizes_in, sizes_out, bodies, prompts, completions, costs, firsts, gaps, gap_totals = (
            zip(*pending, strict=True))
        s = slot.http
        s.requests += n
        s.duration.add_values(DEFAULT_BUCKETS, durations)
        s.request_size.add_values(SIZE_BUCKETS, [v for v in sizes_in if v > 0] if 0 in sizes_in else sizes_in)
        s.response_size.add_values(SIZE_BUCKETS, [v for v in sizes_out if v > 0] if 0 in sizes_out else sizes_out)
        if slot.governed:
            self.decisions["allowed"] = self.decisions.get("allowed", 0) + n
        u = slot.upstream
        assert u is not None  # only answered (routed) requests are pending
        u.requests += n
        u.success += n
        u.latency_ok.add_values(UPSTREAM_BUCKETS, latencies)
        tokens_in, tokens_out, unpriced_in, unpriced_out = _tokens(bodies, prompts, completions, costs)
        u.input_tokens += tokens_in
        u.output_tokens += tokens_out
        if None not in costs:
            u.cost += sum(costs)
        else:
            u.cost += sum(c for c in costs if c is not None)
            price = self._price(u, slot) if unpriced_in or unpriced_out else None
            if price is not None:  # cost is linear in tokens: the batch's sum is the sum of costs
                u.cost += unpriced_in * price.input_per_token + unpriced_out * price.output_per_token
        if firsts.count(None) != n:  # streams
            u.first_token.add_values(DEFAULT_BUCKETS, [f for f in firsts if f is not None])
            for counts, total in zip(gaps, gap_totals, strict=True):
                if counts is not None:
                    u.inter_token.add(counts, total)

    def _route(self, key: tuple) -> Slot:
        """The series of a request key seen for the first time (caps applied)."""
        path, status, provider, model, op, stream, vk, pkey, retries, fallback, dims = key
        dims = dims or self.no_dims
        slot = Slot(self.http.get((path, "POST", str(status), *dims)))
        slot.governed = vk is not None and vk is not NO_KEY
        if provider is not None:
            slot.priced = (provider.name, model)
            vk = vk or NO_KEY
            slot.upstream = self.upstream.get((
                provider.name, model, METHODS[op, stream], vk[0], vk[1],
                pkey.id if pkey is not None else "", pkey.name if pkey is not None else "",
                str(retries), str(fallback), vk[2], vk[3], vk[4], vk[5], *dims,
            ))
        if len(self._routes) >= 4 * MAX_SERIES_PER_METRIC:
            self.fold_all()
            self._routes.clear()  # a cache of the tables' lookups: dropping it loses nothing
            self._slots = []
        self._routes[key] = slot
        self._slots.append(slot)
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
        self.fold_all()
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


USAGE_TAIL = 384  # bytes: OpenAI's usage object with its details, service_tier and fingerprint
_tail = itemgetter(slice(-USAGE_TAIL, None))
# OpenAI's usage object as written (record._OPENAI_USAGE without its leading '"usage":'): the
# regex scans for its first byte, and '{' is rare in JSON where '"' is everywhere. Only
# usage opens with prompt_tokens unescaped (in strings a quote is '\"').
_USAGE_IN_TAILS = re.compile(rb'\{"prompt_tokens":(\d+),"completion_tokens":(\d+)')


def _sum_digits(numbers: Sequence[bytes]) -> int:
    """The sum of many decimal byte strings: one JSON parse (in C) instead of an int() each."""
    try:
        return sum(orjson.loads(b"[" + b",".join(numbers) + b"]"))
    except orjson.JSONDecodeError:  # leading zeros are not JSON
        return sum(map(int, numbers))


def _tokens(bodies: Sequence[bytes | None], prompts: Sequence[int | None], completions: Sequence[int | None],
            costs: Sequence[float | None]) -> tuple[int, int, int, int]:
    """(input, output, input without a cost, output without a cost) tokens of a batch. Tokens
    the request path did not read (no governance, no logging) come from the answers' bodies:
    one regex pass over their last ``USAGE_TAIL`` bytes joined (the regex costs per byte
    scanned, and OpenAI writes usage last), when it finds exactly one OpenAI-shaped usage
    each; else each body is read alone."""
    if None not in prompts and None not in completions:
        if None not in costs:
            return sum(prompts), sum(completions), 0, 0
        pairs = [(p, c, k) for p, c, k in zip(prompts, completions, costs, strict=True)]
        return (sum(prompts), sum(completions), sum(p for p, _, k in pairs if k is None),
                sum(c for _, c, k in pairs if k is None))
    from ..gateway.record import extract_usage  # (record imports this module)

    if None not in bodies and prompts.count(None) == len(prompts) and costs.count(None) == len(costs):
        found = _USAGE_IN_TAILS.findall(b"\x00".join(map(_tail, bodies)))  # type: ignore[arg-type]
        if len(found) == len(bodies):
            ins, outs = zip(*found, strict=True)
            total_in, total_out = _sum_digits(ins), _sum_digits(outs)
            return total_in, total_out, total_in, total_out
    total_in = total_out = free_in = free_out = 0
    for body, p, c, k in zip(bodies, prompts, completions, costs, strict=True):
        if p is None and c is None and body is not None:
            p, c = extract_usage(body) or (None, None)
        total_in += p or 0
        total_out += c or 0
        if k is None:
            free_in += p or 0
            free_out += c or 0
    return total_in, total_out, free_in, free_out
