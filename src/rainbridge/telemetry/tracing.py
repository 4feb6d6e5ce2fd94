"""OpenTelemetry traces, configured as Bifrost's ``otel`` plugin: one span per request and one
child span per provider attempt (retries and fallbacks included), with the GenAI semantic
conventions' attributes, exported over OTLP (HTTP/protobuf or gRPC) by the OpenTelemetry
SDK's batch processor, a background thread that never blocks a request.

Off unless an enabled ``otel`` plugin names a ``collector_url``; the SDK is the optional
extra ``rainbridge[otel]``. With tracing off the request path pays one ``is None`` test per
request and per attempt. Message content is never exported (as Bifrost with
``disable_content_logging``): prompts and answers stay in the request log, behind the admin
token.

Config (the plugin's ``config``, a single profile or Bifrost's ``{"profiles": [...]}``: the
first enabled profile is used): ``collector_url`` (HTTP: the full OTLP URL, e.g.
``http://collector:4318/v1/traces``; gRPC: ``host:port``), ``protocol`` (``http`` | ``grpc``),
``trace_type`` (spans are exported as ``genai_extension``, whatever the value: Bifrost's own
examples say ``"otel"`` and Bifrost exports that format for every value, so another value is
warned about at start-up, never refused),
``service_name`` (``rainbridge``), ``headers`` (``env.VAR`` values resolved), ``insecure``
(gRPC without TLS, default true), ``tls_ca_cert``, and ours: ``sample_rate`` (0..1, default 1;
a request that carries a W3C ``traceparent`` follows its parent's sampling decision).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("rainbridge.tracing")

PLUGIN = "otel"
TRACE_TYPES = ("genai_extension",)
OPERATIONS = {"chat": "chat", "messages": "chat", "completions": "text_completion", "embeddings": "embeddings"}


class TracingConfigError(ValueError):
    """An otel plugin configuration that can never work; the message names the path."""


@dataclass(frozen=True, slots=True)
class OtelSettings:
    collector_url: str
    protocol: str = "http"
    service_name: str = "rainbridge"
    headers: dict[str, str] = field(default_factory=dict)
    insecure: bool = True
    tls_ca_cert: str | None = None
    sample_rate: float = 1.0


def settings_from_plugins(plugins: Any, environ: Mapping[str, str] = os.environ) -> OtelSettings | None:
    """The tracing settings of the first enabled ``otel`` plugin profile, or None."""
    from ..config.bifrost import plugin_entries

    for path, name, entry in plugin_entries(plugins):
        if name != PLUGIN or entry.get("enabled") is False:
            continue
        config = entry.get("config")
        if not isinstance(config, dict):
            raise TracingConfigError(f"{path}.config: expected the otel plugin's settings (an object)")
        profiles = config.get("profiles")
        if profiles is None:
            candidates = [(f"{path}.config", config)]
        elif isinstance(profiles, list):
            candidates = [(f"{path}.config.profiles[{i}]", p) for i, p in enumerate(profiles)]
        else:
            raise TracingConfigError(f"{path}.config.profiles: expected an array")
        for where, profile in candidates:
            if not isinstance(profile, dict):
                raise TracingConfigError(f"{where}: expected an object")
            if profile.get("enabled") is False or profile.get("traces_enabled") is False:
                continue
            return _profile(where, profile, environ)
    return None


def _profile(where: str, p: dict[str, Any], environ: Mapping[str, str]) -> OtelSettings:
    url = _resolve(p.get("collector_url"), environ)
    if not isinstance(url, str) or not url.strip():
        raise TracingConfigError(f"{where}.collector_url: required (the OTLP collector's endpoint)")
    protocol = p.get("protocol", "http")
    if protocol not in ("http", "grpc"):
        raise TracingConfigError(f"{where}.protocol: expected 'http' or 'grpc', got {protocol!r}")
    if not isinstance(p.get("trace_type", ""), str):
        raise TracingConfigError(f"{where}.trace_type: expected a string, got {p['trace_type']!r}")
    if protocol == "http" and not url.startswith(("http://", "https://")):
        raise TracingConfigError(f"{where}.collector_url: an http(s) URL for protocol http, got {url!r}")
    headers = p.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise TracingConfigError(f"{where}.headers: expected an object of strings")
    resolved = {k: _resolve(v, environ) or "" for k, v in headers.items()}
    rate = p.get("sample_rate", 1.0)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        raise TracingConfigError(f"{where}.sample_rate: expected a number between 0 and 1, got {rate!r}")
    service = p.get("service_name") or "rainbridge"
    return OtelSettings(url.strip(), protocol, str(service), resolved, p.get("insecure", True) is not False,
                        p.get("tls_ca_cert") or None, float(rate))


def foreign_trace_types(config: Any, where: str) -> Iterator[tuple[str, str]]:
    """(path, value) of each profile's ``trace_type`` other than the format exported."""
    profiles = config.get("profiles") if isinstance(config, dict) else None
    candidates = ([(where, config)] if profiles is None else
                  [(f"{where}.profiles[{i}]", p) for i, p in enumerate(profiles)] if isinstance(profiles, list) else [])
    for path, profile in candidates:
        value = profile.get("trace_type") if isinstance(profile, dict) else None
        if isinstance(value, str) and value and value not in TRACE_TYPES:
            yield f"{path}.trace_type", value


def _resolve(value: Any, environ: Mapping[str, str]) -> Any:
    if isinstance(value, str) and value.startswith("env."):
        return environ.get(value[4:])
    return value


class Tracing:
    """The tracer provider and the few calls the request path makes."""

    def __init__(self, settings: OtelSettings, instance_id: str) -> None:
        try:
            from opentelemetry import trace
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        except ImportError:
            raise TracingConfigError(
                "$.plugins (otel): tracing needs the OpenTelemetry SDK: pip install 'rainbridge[otel]'"
            ) from None
        from .. import __version__

        self.settings = settings
        self._trace = trace
        self._propagator = TraceContextTextMapPropagator()
        resource = Resource.create({
            "service.name": settings.service_name, "service.version": __version__,
            "service.instance.id": instance_id,
        })
        self.provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.sample_rate)))
        self.provider.add_span_processor(BatchSpanProcessor(_exporter(settings)))
        self.tracer = self.provider.get_tracer("rainbridge")
        self._server = trace.SpanKind.SERVER
        self._client = trace.SpanKind.CLIENT

    def start_request(self, op: str, raw_headers: list[tuple[bytes, bytes]]) -> Any:
        """The request's span (SERVER), child of an incoming ``traceparent`` if any."""
        parent = None
        for name, value in raw_headers:
            if name == b"traceparent":
                parent = self._propagator.extract({"traceparent": value.decode("latin-1")})
                break
        operation = OPERATIONS.get(op, op)
        span = self.tracer.start_span(operation, context=parent, kind=self._server,
                                      attributes={"gen_ai.operation.name": operation})
        return span if span.is_recording() else None

    def start_attempt(self, parent: Any, op: str, provider: str, model: str, key: str, attempt: int) -> Any:
        """One call to a provider (CLIENT), child of the request's span."""
        operation = OPERATIONS.get(op, op)
        return self.tracer.start_span(
            f"{operation} {model}", context=self._trace.set_span_in_context(parent), kind=self._client,
            attributes={
                "gen_ai.operation.name": operation, "gen_ai.provider.name": provider,
                "gen_ai.system": provider, "gen_ai.request.model": model,
                "rainbridge.key.name": key, "rainbridge.attempt": attempt,
            },
        )

    def end_attempt(self, span: Any, error: BaseException | None) -> None:
        if error is not None:
            kind = getattr(error, "type", None) or type(error).__name__
            span.set_attribute("error.type", str(kind))
            status = getattr(error, "status", None)
            if isinstance(status, int):
                span.set_attribute("http.response.status_code", status)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, str(kind)))
        span.end()

    def end_request(self, span: Any, record: Any, cost: float | None) -> None:
        """Attributes known once the request is over (model served, tokens, status), then end."""
        if record.model:
            span.update_name(f"{OPERATIONS.get(record.endpoint, record.endpoint)} {record.model}")
            span.set_attribute("gen_ai.request.model", record.model)
            span.set_attribute("gen_ai.response.model", record.model)
        if record.provider:
            span.set_attribute("gen_ai.provider.name", record.provider)
            span.set_attribute("gen_ai.system", record.provider)
        if record.prompt_tokens is not None:
            span.set_attribute("gen_ai.usage.input_tokens", record.prompt_tokens)
        if record.completion_tokens is not None:
            span.set_attribute("gen_ai.usage.output_tokens", record.completion_tokens)
        if record.virtual_key_id:
            span.set_attribute("rainbridge.virtual_key.id", record.virtual_key_id)
        if cost is not None:
            span.set_attribute("rainbridge.cost_usd", cost)
        span.set_attribute("rainbridge.stream", record.stream)
        if record.status:
            span.set_attribute("http.response.status_code", record.status)
        if record.status >= 400 or record.error_type:
            span.set_attribute("error.type", record.error_type or str(record.status))
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, record.error_type or ""))
        span.end()

    def shutdown(self) -> None:
        """Export what is buffered (bounded by the SDK's export timeout) and stop."""
        self.provider.shutdown()


def _exporter(settings: OtelSettings) -> Any:
    if settings.protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError:
            raise TracingConfigError(
                "$.plugins (otel): protocol grpc needs the gRPC exporter: pip install 'rainbridge[otel]'"
            ) from None
        credentials = None
        if settings.tls_ca_cert:
            import grpc

            with open(settings.tls_ca_cert, "rb") as f:
                credentials = grpc.ssl_channel_credentials(f.read())
        return GrpcExporter(endpoint=settings.collector_url, headers=settings.headers or None,
                            insecure=settings.insecure and credentials is None, credentials=credentials)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter(endpoint=settings.collector_url, headers=settings.headers or None,
                        certificate_file=settings.tls_ca_cert or None)
