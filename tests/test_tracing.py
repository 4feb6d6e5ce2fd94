"""Traces (Bifrost's otel plugin): a real gateway process exports OTLP/HTTP protobuf to a test
collector that decodes it with the OpenTelemetry protocol's own message classes (the
receiver follows the OTLP/HTTP specification: POST /v1/traces, application/x-protobuf,
200 with an ExportTraceServiceResponse). One SERVER span per request, one CLIENT span per
provider attempt (retries and fallbacks), GenAI attributes, an incoming traceparent kept,
the configured headers sent, sampling at 0 exporting nothing; bad configs refused."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from rainbridge.config.load import ConfigError, load_data
from support import GatewayProcess, eventually, http_json

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class Collector:
    """An OTLP/HTTP trace receiver on loopback: keeps every span with its resource."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict, object]] = []  # (resource attributes, span)
        self.headers: list[dict] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                ok = self.path == "/v1/traces" and self.headers.get("content-type") == "application/x-protobuf"
                if ok:
                    request = ExportTraceServiceRequest()
                    request.ParseFromString(body)
                    collector.headers.append({k.lower(): v for k, v in self.headers.items()})
                    for rs in request.resource_spans:
                        resource = {a.key: _value(a.value) for a in rs.resource.attributes}
                        for ss in rs.scope_spans:
                            collector.spans.extend((resource, span) for span in ss.spans)
                reply = ExportTraceServiceResponse().SerializeToString() if ok else b""
                self.send_response(200 if ok else 400)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def roots(self) -> list:
        return [s for _, s in self.spans if not s.parent_span_id or s.kind == s.SPAN_KIND_SERVER]

    def children(self, root) -> list:
        return sorted((s for _, s in self.spans if s.parent_span_id == root.span_id), key=lambda s: s.start_time_unix_nano)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(v) -> object:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def attrs(span) -> dict:
    return {a.key: _value(a.value) for a in span.attributes}


@pytest.fixture
def collector():
    c = Collector()
    yield c
    c.close()


def gateway_config(mock_url: str, collector_url: str, **extra) -> dict:
    net = {"base_url": mock_url, "max_retries": 1, "retry_backoff_initial": 10, "retry_backoff_max": 20}
    return {
        "providers": {
            "openai": {"keys": [{"name": "good", "value": "sk-good-trace"}], "network_config": net},
            "flaky": {"type": "openai", "keys": [{"name": "broken", "value": "sk-status-500-trace"}], "network_config": net},
        },
        "plugins": [{"name": "otel", "enabled": True, "config": {
            "service_name": "rb-trace-test", "collector_url": collector_url, "trace_type": "genai_extension",
            "protocol": "http", "headers": {"authorization": "env.TEST_OTEL_AUTH"}, **extra}}],
    }


def chat(url: str, model: str, headers: dict | None = None, **body) -> int:
    payload = {"model": model, "messages": [{"role": "user", "content": "hi"}], **body}
    return http_json("POST", url + "/v1/chat/completions", payload, headers)[0]


def test_one_server_span_per_request_and_one_client_span_per_attempt(mock, collector, tmp_path):
    gw = GatewayProcess(tmp_path, gateway_config(mock.url, collector.url),
                        env={"TEST_OTEL_AUTH": "Bearer otel-secret", "OTEL_BSP_SCHEDULE_DELAY": "100"})
    try:
        assert chat(gw.url, "openai/gpt-4o-mini") == 200
        assert chat(gw.url, "flaky/gpt-4o", fallbacks=["openai/gpt-4o"]) == 200  # 2 failed tries, then the fallback
        assert chat(gw.url, "openai/gpt-4.1", {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}) == 200
        eventually(lambda: len(collector.roots()) == 3 or len(collector.roots()), 10, "three request spans")
    finally:
        gw.stop()

    resource = collector.spans[0][0]
    assert resource["service.name"] == "rb-trace-test" and resource["service.instance.id"]
    assert all(h.get("authorization") == "Bearer otel-secret" for h in collector.headers)
    by_model = {attrs(r)["gen_ai.request.model"]: r for r in collector.roots()}

    plain = by_model["gpt-4o-mini"]
    a = attrs(plain)
    assert plain.name == "chat gpt-4o-mini" and plain.kind == plain.SPAN_KIND_SERVER
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert a["http.response.status_code"] == 200 and "error.type" not in a
    [attempt] = collector.children(plain)
    assert attempt.kind == attempt.SPAN_KIND_CLIENT and attempt.trace_id == plain.trace_id
    assert attrs(attempt)["rainbridge.key.name"] == "good" and "sk-good" not in str(attrs(attempt))

    fallback = by_model["gpt-4o"]
    tries = collector.children(fallback)
    assert [(attrs(s)["gen_ai.provider.name"], attrs(s)["rainbridge.attempt"]) for s in tries] == [
        ("flaky", 1), ("flaky", 2), ("openai", 1)]
    assert [attrs(s).get("http.response.status_code") for s in tries[:2]] == [500, 500]
    assert all(s.status.code == s.status.STATUS_CODE_ERROR for s in tries[:2])
    assert tries[2].status.code != tries[2].status.STATUS_CODE_ERROR
    assert attrs(fallback)["gen_ai.provider.name"] == "openai"  # who answered

    continued = by_model["gpt-4.1"]
    assert continued.trace_id.hex() == TRACE_ID and continued.parent_span_id.hex() == PARENT_ID


def test_sample_rate_zero_exports_nothing(mock, collector, tmp_path):
    gw = GatewayProcess(tmp_path, gateway_config(mock.url, collector.url, sample_rate=0),
                        env={"TEST_OTEL_AUTH": "x", "OTEL_BSP_SCHEDULE_DELAY": "100"})
    try:
        for _ in range(5):
            assert chat(gw.url, "openai/gpt-4o-mini") == 200
    finally:
        assert gw.stop() == 0  # shutdown exports whatever was buffered
    assert collector.spans == []


@pytest.mark.parametrize(("config", "path"), [
    ({"protocol": "http", "trace_type": "genai_extension"}, "$.plugins[0].config.collector_url"),
    ({"collector_url": "http://c:4318/v1/traces", "trace_type": 5}, "$.plugins[0].config.trace_type"),
    ({"collector_url": "http://c:4318/v1/traces", "protocol": "udp"}, "$.plugins[0].config.protocol"),
    ({"collector_url": "c:4317", "protocol": "http"}, "$.plugins[0].config.collector_url"),
    ({"collector_url": "http://c/v1/traces", "sample_rate": 2}, "$.plugins[0].config.sample_rate"),
    ({"profiles": [{"collector_url": "http://c/v1/traces", "headers": {"a": 1}}]}, "$.plugins[0].config.profiles[0].headers"),
])
def test_an_otel_config_that_cannot_work_stops_start_up_naming_the_field(config, path):
    with pytest.raises(ConfigError) as err:
        load_data({"plugins": [{"name": "otel", "enabled": True, "config": config}]}, {})
    assert any(str(p).startswith(path + ":") for p in err.value.problems), err.value.problems


def test_a_trace_type_other_than_genai_extension_starts_with_a_warning_naming_it():
    """Bifrost's examples/configs/withobservability says "otel"; Bifrost exports every value
    in its one format, so the file must start (warned), not be refused."""
    loaded = load_data({"plugins": [{"name": "otel", "enabled": True, "config": {"profiles": [
        {"collector_url": "http://c:4318/v1/traces", "trace_type": "otel", "protocol": "http"}]}}]}, {})
    assert [(w.path, w.message) for w in loaded.warnings if "trace_type" in w.path] == [
        ("$.plugins[0].config.profiles[0].trace_type", "'otel': spans are exported as 'genai_extension', as Bifrost does")]


def test_a_disabled_otel_plugin_or_profile_configures_nothing():
    from rainbridge.telemetry.tracing import settings_from_plugins

    assert settings_from_plugins([{"name": "otel", "enabled": False, "config": {}}]) is None
    assert settings_from_plugins({"otel": {"enabled": True, "config": {"profiles": [
        {"enabled": False, "collector_url": "http://a/v1/traces"},
        {"collector_url": "http://b/v1/traces", "headers": {"x-k": "env.K"}}]}}}, {"K": "v"}).headers == {"x-k": "v"}


def test_protocol_grpc_exports_to_an_otlp_grpc_receiver(mock, tmp_path):
    """The same spans over OTLP/gRPC: a grpcio server implementing the OTLP TraceService."""
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    received: list = []
    metadata: list[dict] = []

    class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            metadata.append(dict(context.invocation_metadata()))
            received.extend(s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans)
            return ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        config = gateway_config(mock.url, f"127.0.0.1:{port}", protocol="grpc")
        gw = GatewayProcess(tmp_path, config, env={"TEST_OTEL_AUTH": "Bearer grpc-secret", "OTEL_BSP_SCHEDULE_DELAY": "100"})
        try:
            assert chat(gw.url, "openai/gpt-4o-mini") == 200
            eventually(lambda: len(received) == 2 or len(received), 10, "the request's two spans")
        finally:
            gw.stop()
    finally:
        server.stop(None)
    assert sorted(s.name for s in received) == ["chat gpt-4o-mini", "chat gpt-4o-mini"]
    assert metadata[0]["authorization"] == "Bearer grpc-secret"
